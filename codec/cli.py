"""``python -m codec`` subcommands: info, encode, decode."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from codec.config import ConfigError, compose_config, describe, describe_preset_overrides, preset_overrides_of_choices


def _info(args: argparse.Namespace) -> int:
    cfg, choices = compose_config(args.overrides, with_choices=True)
    shadowed = preset_overrides_of_choices(choices, args.overrides)
    for line in describe_preset_overrides(str(choices.get("experiment")), shadowed):
        print(f"note: {line}", file=sys.stderr)
    print(json.dumps(describe(cfg), indent=2))
    return 0


def _encode(args: argparse.Namespace) -> int:
    from codec.inference import encode_file, load_codec

    codec = load_codec(args.checkpoint, args.device)
    payload = encode_file(codec, args.input, args.output, n_layers=args.layers)
    print(json.dumps({"codes_shape": list(payload["codes"].shape), "bitrate_kbps": codec.bitrate_kbps(int(payload["layers"]))}))
    return 0


def _decode(args: argparse.Namespace) -> int:
    from codec.inference import decode_file, load_codec

    codec = load_codec(args.checkpoint, args.device)
    wav = decode_file(codec, args.input, args.output)
    print(json.dumps({"samples": wav.shape[-1], "sample_rate": codec.sample_rate}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m codec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="compose a config and print its rates, bitrate and sizes as JSON")
    info.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=hificodec_24k_240x_4cb")
    info.set_defaults(handler=_info)
    encode = commands.add_parser("encode", help="audio file -> codes file (.npz: codes, sample rate, length, groups/layers, codec identity)")
    encode.add_argument("input")
    encode.add_argument("output")
    encode.add_argument("--checkpoint", required=True)
    encode.add_argument("--layers", type=int, default=None, help="residual layers per group (variable bitrate)")
    encode.add_argument("--device", default="cpu")
    encode.set_defaults(handler=_encode)
    decode = commands.add_parser("decode", help="codes file (.npz from encode) -> audio file")
    decode.add_argument("input")
    decode.add_argument("output")
    decode.add_argument("--checkpoint", required=True)
    decode.add_argument("--device", default="cpu")
    decode.set_defaults(handler=_decode)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
