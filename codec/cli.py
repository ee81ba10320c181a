"""``python -m codec`` subcommands."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from codec.config import ConfigError, compose_config, describe


def _info(args: argparse.Namespace) -> int:
    cfg = compose_config(args.overrides)
    print(json.dumps(describe(cfg), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m codec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="compose a config and print its rates, bitrate and sizes as JSON")
    info.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=hificodec_24k_240x_4cb")
    info.set_defaults(handler=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
