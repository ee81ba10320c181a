"""``python -m codec`` subcommands: info, tables, encode, decode."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from codec.config import ConfigError, compose_config, describe, describe_preset_overrides, preset_overrides_of_choices
from codec.data.audio_io import AudioFileError
from codec.messages import error_summary


def _info(args: argparse.Namespace) -> int:
    cfg, choices = compose_config(args.overrides, with_choices=True)
    shadowed = preset_overrides_of_choices(choices, args.overrides)
    for line in describe_preset_overrides(str(choices.get("experiment")), shadowed):
        print(f"note: {line}", file=sys.stderr)
    print(json.dumps(describe(cfg), indent=2))
    return 0


def _tables(args: argparse.Namespace) -> int:
    from codec.doc_tables import stale_files, write_tables

    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"{name}: its generated tables are not current; run `python -m codec tables`", file=sys.stderr)
        return 1 if stale else 0
    for name in write_tables():
        print(f"rewrote the generated tables of {name}")
    return 0


def _pairs(source: Path, target: Path, suffixes: tuple[str, ...], new_suffix: str) -> list[tuple[Path, Path]]:
    """(input, output) pairs: one file, or every matching file under a folder, mirrored into ``target``."""
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    if source.is_file():
        return [(source, target)]
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise FileNotFoundError(f"{source} holds no {'/'.join(suffixes)} files")
    return [(f, (target / f.relative_to(source)).with_suffix(new_suffix)) for f in files]


class SomeFilesFailed(Exception):
    """A folder was processed past its bad files; names each with its reason."""


def _each(pairs: list[tuple[Path, Path]], action) -> list:
    """``action`` on every pair. A folder goes on past a bad file and lists every bad one at the end
    (:class:`SomeFilesFailed`); a single file fails at once."""
    if len(pairs) == 1:
        return [action(*pairs[0])]
    results, failures = [], []
    for index, (source, target) in enumerate(pairs, 1):
        try:
            results.append(action(source, target))
        except (ValueError, AudioFileError, OSError, RuntimeError) as error:
            failures.append(f"  {source}: {error_summary(error, 300)}")
            print(f"[{index}/{len(pairs)}] {source}: FAILED ({error_summary(error, 120)})", file=sys.stderr)
            continue
        print(f"[{index}/{len(pairs)}] {source} -> {target}", file=sys.stderr)
    if failures:
        raise SomeFilesFailed(
            f"{len(failures)} of {len(pairs)} file(s) failed; the other {len(results)} were written:\n"
            + "\n".join(failures)
        )
    return results


def _encode(args: argparse.Namespace) -> int:
    from codec.data.audio_io import AUDIO_SUFFIXES
    from codec.inference import encode_file, load_codec

    pairs = _pairs(Path(args.input), Path(args.output), AUDIO_SUFFIXES, ".npz")
    codec = load_codec(args.checkpoint, args.device)
    payloads = _each(pairs, lambda source, target: encode_file(codec, source, target, n_layers=args.layers))
    print(
        json.dumps(
            {
                "files": len(payloads),
                "codes_shape": list(payloads[0]["codes"].shape),
                "bitrate_kbps": codec.bitrate_kbps(int(payloads[0]["layers"])),
            }
        )
    )
    return 0


def _decode(args: argparse.Namespace) -> int:
    from codec.inference import decode_file, load_codec

    pairs = _pairs(Path(args.input), Path(args.output), (".npz",), ".wav")
    codec = load_codec(args.checkpoint, args.device)
    waves = _each(pairs, lambda source, target: decode_file(codec, source, target))
    print(json.dumps({"files": len(waves), "samples": waves[0].shape[-1], "sample_rate": codec.sample_rate}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m codec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="compose a config and print its rates, bitrate and sizes as JSON")
    info.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=hificodec_24k_240x_4cb")
    info.set_defaults(handler=_info)
    tables = commands.add_parser("tables", help="regenerate the docs' group and preset tables (--check: compare)")
    tables.add_argument("--check", action="store_true", help="only compare; exit 1 when a table is stale")
    tables.set_defaults(handler=_tables)
    encode = commands.add_parser(
        "encode",
        help="audio file or folder (recursively) -> codes file(s) "
        "(.npz: codes, sample rate, length, groups/layers, codec identity)",
    )
    encode.add_argument("input")
    encode.add_argument("output")
    encode.add_argument("--checkpoint", required=True)
    encode.add_argument("--layers", type=int, default=None, help="residual layers per group (variable bitrate)")
    encode.add_argument("--device", default="cpu")
    encode.set_defaults(handler=_encode)
    decode = commands.add_parser(
        "decode", help="codes file or folder of them (.npz from encode) -> audio file(s), same names"
    )
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
    except (ConfigError, FileNotFoundError, ValueError, AudioFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SomeFilesFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
