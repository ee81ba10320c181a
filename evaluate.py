"""Evaluate a checkpoint on full utterances: ``python evaluate.py checkpoint=PATH [overrides]``.

The model comes from the checkpoint; data and eval settings come from the overrides
(e.g. ``data=folder data.path=DIR split=test``). Prints a table and writes JSON.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


from codec.config import ConfigError, build, compose_config
from codec.data import AudioFileError, DataError
from codec.inference import load_codec

OWN_KEYS = ("checkpoint", "split", "output", "device")


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    own, overrides = {"split": "test", "output": None, "device": "cpu"}, []
    for arg in argv:
        key, _, value = arg.partition("=")
        (own.__setitem__(key, value) if key in OWN_KEYS else overrides.append(arg))
    if not own.get("checkpoint"):
        raise ConfigError("usage: python evaluate.py checkpoint=PATH [data=folder data.path=DIR] [split=test|valid] [output=FILE.json]")
    return own, overrides


def main(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__.strip())
        print("\nusage: python evaluate.py checkpoint=PATH [data=folder data.path=DIR] [split=test|valid] [output=FILE.json] [device=cpu]")
        return 0
    try:
        own, overrides = parse(argv)
        codec = load_codec(own["checkpoint"], own["device"])
        cfg = compose_config([f"sample_rate={codec.sample_rate}", *overrides])
        data = build(cfg.data, "data")
        with build(cfg.eval, "eval") as evaluator:
            utterances = data.utterances(own["split"], None, evaluator.max_seconds)
            result = evaluator.evaluate(codec, utterances, own["device"])
    except (ConfigError, DataError, AudioFileError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{'metric':<28}{'mean':>12}{'std':>12}")
    for key, value in result.metrics.items():
        if key.endswith("_std"):
            continue
        std = result.metrics.get(f"{key}_std")
        print(f"{key:<28}{value:>12.4f}{'' if std is None else f'{std:>12.4f}'}")
    output = Path(own["output"] or Path(own["checkpoint"]).with_suffix(f".{own['split']}_metrics.json"))
    output.write_text(json.dumps({"checkpoint": str(own["checkpoint"]), "split": own["split"], "utterances": len(utterances),
                                  "metrics": result.metrics, "per_utterance": result.per_utterance,
                                  "codebook": result.codebook}, indent=2))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
