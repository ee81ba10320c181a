"""``python -m codec.sweep status [SWEEP] [--runs DIR] [--json]`` and
``python -m codec.sweep plan SWEEP [OVERRIDES ...] [--bench FILE | --flops-per-second F] [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from codec.sweep.status import find_sweep_dir, format_table, sweep_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.sweep")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="print each run's overrides, state, step and best metrics")
    status.add_argument("sweep", nargs="?", help="sweep directory, or sweep name under <runs>/multirun (default: all)")
    status.add_argument("--runs", default="runs", help="the runs directory (paths.runs)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    price = commands.add_parser(
        "plan",
        help="price a ready sweep before submitting it: bitrate, tokens/s, parameters, "
        "training FLOPs and GPU-hours per run (nothing is trained)",
    )
    price.add_argument("sweep", help="a ready sweep name (sweeps/*.yaml)")
    price.add_argument(
        "overrides", nargs="*", help="Hydra overrides applied to every point, e.g. trainer.max_steps=100000"
    )
    rate = price.add_mutually_exclusive_group()
    rate.add_argument(
        "--bench", type=Path, help="a codec.bench JSON from the target GPU: its measured FLOP/s prices the runs"
    )
    rate.add_argument("--flops-per-second", type=float, help="sustained training FLOP/s of the target device")
    price.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    if args.command == "plan":
        return _plan(args)
    try:
        sweep_dirs = find_sweep_dir(args.sweep, Path(args.runs))
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not sweep_dirs:
        print(f"no sweeps under {Path(args.runs) / 'multirun'}")
        return 0
    for sweep_dir in sweep_dirs:
        sweep, rows = sweep_rows(sweep_dir)
        print(
            json.dumps({"sweep_id": sweep.sweep_id, "runs": rows}, indent=2) if args.json else format_table(sweep, rows)
        )
    return 0


def _plan(args: argparse.Namespace) -> int:
    from codec.config import ConfigError
    from codec.sweep.plan import format_plan, plan, throughput_from_bench

    try:
        rate = throughput_from_bench(args.bench) if args.bench else args.flops_per_second
        source = (
            f"{rate / 1e12:.1f} TFLOP/s measured by {args.bench}"
            if args.bench
            else f"{rate / 1e12:.1f} TFLOP/s (given)"
            if rate
            else None
        )
        rows = plan(args.sweep, args.overrides, rate)
    except (FileNotFoundError, ConfigError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=2) if args.json else format_plan(rows, source))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
