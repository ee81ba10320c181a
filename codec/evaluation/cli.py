"""Score a codec, or any codec's outputs, on full utterances with the project's metrics.

Two modes:

  codec-eval checkpoint=PATH [data=folder data.path=DIR] [split=test|valid|train|all] [overrides]
      Reconstruct every file of a split (``all``: every file of the data) with a trained
      checkpoint and score it against the original.

  codec-eval reference=DIR decoded=DIR [sample_rate=16000] [grammar=FILE.jsgf] [overrides]
      No checkpoint: score a folder of decoded audio (any external codec) against a folder of
      references, paired by relative path and file stem (``a/b.wav`` <-> ``a/b.flac``).

Metrics come from ``eval.metrics`` (e.g. ``'eval.metrics=[pesq_wb,stoi,visqol,dnsmos,wer]'``).
WER uses ``<reference>.txt`` beside a reference file as its transcript where one exists, and a
JSGF grammar (``grammar=FILE``, or ``grammar.jsgf`` at the data's root) as the language model.
Prints a table and writes JSON with per-utterance scores and file names.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from codec.config import ConfigError, build, compose_config
from codec.data import AudioFileError, DataError, read_audio
from codec.data.audio_io import AUDIO_SUFFIXES
from codec.evaluation import EvalResult, Evaluator
from codec.evaluation.evaluator import aggregate
from codec.inference import load_codec

OWN_KEYS = ("checkpoint", "split", "output", "device", "reference", "decoded", "grammar")
USAGE = (
    "usage: codec-eval checkpoint=PATH [data=folder data.path=DIR] [split=test|valid|train|all] [output=FILE.json] "
    "[device=cpu]\n"
    "       codec-eval reference=DIR decoded=DIR [sample_rate=HZ] [grammar=FILE.jsgf] [output=FILE.json]"
)


def parse(argv: list[str]) -> tuple[dict[str, str | None], list[str]]:
    own: dict[str, str | None] = {"split": "test", "output": None, "device": "cpu", "grammar": None}
    overrides = []
    for arg in argv:
        key, _, value = arg.partition("=")
        (own.__setitem__(key, value) if key in OWN_KEYS else overrides.append(arg))
    folders = bool(own.get("reference")) + bool(own.get("decoded"))
    if folders == 1:
        raise ConfigError("reference=DIR and decoded=DIR go together\n" + USAGE)
    if not own.get("checkpoint") and not folders:
        raise ConfigError(USAGE)
    if own.get("checkpoint") and folders:
        raise ConfigError("give checkpoint=PATH or reference=DIR decoded=DIR, not both\n" + USAGE)
    return own, overrides


def audio_files(folder: Path) -> dict[str, Path]:
    """Audio files under ``folder`` keyed by relative path without suffix."""
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist or is not a directory")
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES:
            files[str(path.relative_to(folder).with_suffix(""))] = path
    if not files:
        raise DataError(f"{folder} holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    return files


def score_folders(
    evaluator: Evaluator, reference_dir: Path, decoded_dir: Path, sample_rate: int, grammar: str | None
) -> EvalResult:
    """Pairs of files with the same relative stem, cut to the shorter (codecs pad to whole frames)."""
    references, decoded = audio_files(reference_dir), audio_files(decoded_dir)
    missing = sorted(set(references) - set(decoded))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{len(missing)} reference file(s) have no decoded counterpart in {decoded_dir}: {shown}")
    names, pairs, transcripts = [], [], []
    for key, reference_path in references.items():
        reference = read_audio(reference_path, sample_rate)
        estimate = read_audio(decoded[key], sample_rate)
        length = min(reference.shape[-1], estimate.shape[-1])
        pairs.append((reference[:, :length], estimate[:, :length]))
        names.append(str(reference_path))
        sidecar = reference_path.with_suffix(".txt")
        transcripts.append(sidecar.read_text().strip() if sidecar.is_file() else None)
    if grammar is None and (reference_dir / "grammar.jsgf").is_file():
        grammar = str(reference_dir / "grammar.jsgf")
    per_utterance = evaluator.score_pairs(pairs, transcripts, grammar)
    return EvalResult(aggregate(per_utterance), per_utterance, names=names, packages=evaluator.packages())


def score_checkpoint(evaluator: Evaluator, cfg, own: dict) -> EvalResult:
    codec = load_codec(own["checkpoint"], own["device"])
    data = build(cfg.data, "data")
    utterances = data.utterances(own["split"], None, evaluator.max_seconds)
    grammar = own["grammar"] or data.asr_grammar()
    return evaluator.evaluate(
        codec, utterances, own["device"], data.transcripts(own["split"]), str(grammar) if grammar else None
    )


def print_table(result: EvalResult) -> None:
    print(f"{'metric':<28}{'mean':>12}{'std':>12}")
    for key, value in result.metrics.items():
        if key.endswith("_std"):
            continue
        std = result.metrics.get(f"{key}_std")
        print(f"{key:<28}{value:>12.4f}{'' if std is None else f'{std:>12.4f}'}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__.strip())
        print("\n" + USAGE)
        return 0
    try:
        own, overrides = parse(argv)
        checkpoint, reference, decoded = own.get("checkpoint"), own.get("reference"), own.get("decoded")
        if checkpoint:
            sample_rate = load_codec(checkpoint, "cpu").sample_rate
            overrides = [f"sample_rate={sample_rate}", *overrides]
        cfg = compose_config(overrides)
        if own["split"] == "all" and "valid_count" in cfg.data:  # no split needed: score every file
            cfg = compose_config([*overrides, "data.valid_count=0", "data.test_count=0"])
        with build(cfg.eval, "eval") as evaluator:
            source: dict[str, str | int | None]
            if checkpoint:
                result = score_checkpoint(evaluator, cfg, own)
                source = {"checkpoint": checkpoint, "split": own["split"]}
                default_output = Path(checkpoint).with_suffix(f".{own['split']}_metrics.json")
            else:
                assert reference and decoded  # parse() requires both without a checkpoint
                result = score_folders(evaluator, Path(reference), Path(decoded), int(cfg.sample_rate), own["grammar"])
                source = {"reference": reference, "decoded": decoded, "sample_rate": int(cfg.sample_rate)}
                default_output = Path(decoded).with_name(Path(decoded).name + "_metrics.json")
    except (ConfigError, DataError, AudioFileError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_table(result)
    output = Path(own["output"] or default_output)
    output.write_text(
        json.dumps(
            {
                **source,
                "utterances": len(result.per_utterance),
                "metrics": result.metrics,
                "packages": result.packages,
                "per_utterance": result.per_utterance_records(),
                "codebook": result.codebook,
            },
            indent=2,
        )
    )
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
