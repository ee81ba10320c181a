"""``codec-sweep status [SWEEP] [--runs DIR] [--json]``,
``codec-sweep plan SWEEP [OVERRIDES ...] [--bench FILE | --flops-per-second F] [--json]`` and
``codec-sweep sync [SWEEP | RUN_DIR] [--runs DIR]`` and
``codec-sweep decide SWEEP --metric M [--max-seeds N] [--budget H] [--alpha A] [--dry-run]``
(``python -m codec.sweep`` works the same)."""

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
    sync = commands.add_parser(
        "sync", help="send to MLflow what runs' tracking journals still hold (after a tracking server outage)"
    )
    sync.add_argument("sweep", nargs="?", help="sweep directory or name, or a run directory (default: all sweeps)")
    sync.add_argument("--runs", default="runs", help="the runs directory (paths.runs)")
    add_decide_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "decide":
        return _decide(args)
    if args.command == "plan":
        return _plan(args)
    if args.command == "sync":
        return _sync(args)
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


def _sync(args: argparse.Namespace) -> int:
    from codec.sweep.registry import Sweep
    from codec.tracking.sync import RunDirectoryBusy, pending_records, sync_run

    if args.sweep and (Path(args.sweep) / "status.json").exists():
        run_dirs = [Path(args.sweep)]
    else:
        try:
            sweep_dirs = find_sweep_dir(args.sweep, Path(args.runs))
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        run_dirs = [Path(job.run_dir) for d in sweep_dirs if (sweep := Sweep.load(d)) for job in sweep.jobs]
    failures = 0
    for run_dir in run_dirs:
        waiting = pending_records(run_dir)
        if not waiting:
            continue
        try:
            sent = sync_run(run_dir)
            print(f"{run_dir}: sent {sent} record(s)")
        except RunDirectoryBusy:
            print(f"{run_dir}: training now; its own sender sends its {waiting} record(s)")
        except Exception as error:  # the server is still away, or the run's config is gone
            failures += 1
            print(f"{run_dir}: {waiting} record(s) not sent: {error}", file=sys.stderr)
    return 1 if failures else 0


def add_decide_parser(commands) -> None:
    decide = commands.add_parser(
        "decide",
        help="add seeds, round by round, only to designs whose comparisons are undecided "
        "(group-sequential paired t-test, Holm across pairs)",
    )
    decide.add_argument("sweep", help="sweep directory, or sweep name under <runs>/multirun")
    decide.add_argument("--metric", required=True, help="the metric compared, e.g. best/mel_distance")
    decide.add_argument("--max-seeds", type=int, default=10, help="seed cap per design (the last look)")
    decide.add_argument("--budget", type=float, default=None, help="stop before the sweep's device-hours pass this")
    decide.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate over the sweep's pairs")
    decide.add_argument("--dry-run", action="store_true", help="estimate seeds and cost; launch nothing")
    decide.add_argument("--effect", type=float, default=None, help="effect size for --dry-run (default: observed)")
    decide.add_argument("--runs", default="runs", help="the runs directory (paths.runs)")


def _decide(args: argparse.Namespace) -> int:
    from analysis.report import LOWER_IS_BETTER
    from codec.sweep.decide import DecideError, decide

    higher = not any(marker in args.metric for marker in LOWER_IS_BETTER)
    try:
        (sweep_dir,) = find_sweep_dir(args.sweep, Path(args.runs))
        return decide(
            sweep_dir, args.metric, higher, args.max_seeds, args.alpha, args.budget, args.dry_run, args.effect
        )
    except (FileNotFoundError, LookupError, KeyError, ValueError, DecideError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
