"""``python -m codec.sweep status [SWEEP] [--runs DIR] [--json]``."""
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
    args = parser.parse_args(argv)
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
        print(json.dumps({"sweep_id": sweep.sweep_id, "runs": rows}, indent=2) if args.json else format_table(sweep, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
