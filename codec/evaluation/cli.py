"""Score a codec, or any codec's outputs, on full utterances with the project's metrics.

Two modes:

  codec-eval checkpoint=PATH [data=folder data.path=DIR] [split=test|valid|train|all] [overrides]
      Reconstruct every file of a split (``all``: every file of the data) with a trained
      checkpoint and score it against the original. ``bitrates=all`` (or ``bitrates=1,2``)
      scores it again at each number of residual layers per group it can decode, from one
      checkpoint: a rate-distortion curve, one row per bitrate (JSON and CSV).

  codec-eval reference=DIR decoded=DIR [sample_rate=16000] [grammar=FILE.jsgf] [overrides]
      No checkpoint: score a folder of decoded audio (any external codec) against a folder of
      references, paired by relative path and file stem (``a/b.wav`` <-> ``a/b.flac``). Missing,
      extra and doubled stems, and pairs whose lengths differ by more than ``hop`` samples
      (default 1024), are all listed and nothing is scored.

Metrics come from ``eval.metrics`` (e.g. ``'eval.metrics=[pesq_wb,stoi,visqol,dnsmos,wer]'``).
WER uses ``<reference>.txt`` beside a reference file as its transcript where one exists, and a
JSGF grammar (``grammar=FILE``, or ``grammar.jsgf`` at the data's root) as the language model.
Prints a table and writes JSON with per-utterance scores and file names.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from codec.config import ConfigError, build, compose_config
from codec.data import AudioFileError, DataError, read_audio
from codec.data.audio_io import AUDIO_SUFFIXES
from codec.data.modules import ALL_FILES
from codec.data.split_record import read_record
from codec.evaluation import EvalResult, Evaluator
from codec.evaluation.evaluator import aggregate
from codec.inference import load_codec

log = logging.getLogger(__name__)

OWN_KEYS = ("checkpoint", "split", "output", "device", "reference", "decoded", "grammar", "hop", "bitrates")
# The largest length gap between a reference and its decoded file that is still padding to whole
# frames, in samples at sample_rate: at or above the hop of the common codecs (EnCodec 320, DAC 512).
DEFAULT_HOP = 1024
USAGE = (
    "usage: codec-eval checkpoint=PATH [data=folder data.path=DIR] [split=test|valid|train|all] [output=FILE.json] "
    "[device=cpu]\n"
    "       codec-eval reference=DIR decoded=DIR [sample_rate=HZ] [hop=SAMPLES] [grammar=FILE.jsgf] [output=FILE.json]"
)


def parse(argv: list[str]) -> tuple[dict[str, str | None], list[str]]:
    own: dict[str, str | None] = {
        "split": "test", "output": None, "device": "cpu", "grammar": None, "hop": None, "bitrates": None,
    }  # fmt: skip
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
    if own.get("bitrates") and not own.get("checkpoint"):
        raise ConfigError("bitrates=... scores a checkpoint at several bitrates: give checkpoint=PATH\n" + USAGE)
    return own, overrides


def layer_counts(spec: str | None, layers: int) -> list[int | None]:
    """``bitrates=``: None (the full bitrate only), ``all`` (1..layers) or a list such as ``1,2``."""
    if not spec:
        return [None]
    counts = list(range(1, layers + 1)) if spec == "all" else [int(part) for part in spec.strip("[]").split(",")]
    wrong = [n for n in counts if not 1 <= n <= layers]
    if wrong:
        raise ConfigError(f"bitrates={spec}: {wrong} outside 1..{layers}, the residual layers per group this codec has")
    return list(counts)


def audio_files(folder: Path) -> dict[str, list[Path]]:
    """Audio files under ``folder`` keyed by relative path without suffix (two files may share a key)."""
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist or is not a directory")
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES:
            files.setdefault(str(path.relative_to(folder).with_suffix("")), []).append(path)
    if not files:
        raise DataError(f"{folder} holds no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    return files


def _listed(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def pairing_problems(references: dict[str, list[Path]], decoded: dict[str, list[Path]], decoded_dir: Path) -> list[str]:
    """Every reason the two folders do not pair one to one, one line each."""
    problems = []
    missing = sorted(set(references) - set(decoded))
    if missing:
        problems.append(
            f"{len(missing)} reference file(s) have no decoded counterpart in {decoded_dir}: {_listed(missing)}"
        )
    extra = sorted(set(decoded) - set(references))
    if extra:
        problems.append(f"{len(extra)} decoded file(s) have no reference: {_listed(extra)}")
    for side, files in (("reference", references), ("decoded", decoded)):
        doubled = sorted(" and ".join(p.name for p in paths) for paths in files.values() if len(paths) > 1)
        if doubled:
            problems.append(f"{len(doubled)} {side} stem(s) name two files (ambiguous): {_listed(doubled)}")
    return problems


def score_folders(
    evaluator: Evaluator, reference_dir: Path, decoded_dir: Path, sample_rate: int, grammar: str | None, hop: int
) -> EvalResult:
    """Pairs of files with the same relative stem. Their lengths may differ by at most ``hop``
    samples (codecs pad to whole frames), and are cut to the shorter; a bigger gap (a truncated
    or padded file) is refused, since scoring the overlap would flatter it."""
    references, decoded = audio_files(reference_dir), audio_files(decoded_dir)
    problems = pairing_problems(references, decoded, decoded_dir)
    names, pairs, transcripts = [], [], []
    for key in sorted(set(references) & set(decoded)):
        if len(references[key]) > 1 or len(decoded[key]) > 1:
            continue
        reference_path, decoded_path = references[key][0], decoded[key][0]
        reference = read_audio(reference_path, sample_rate)
        estimate = read_audio(decoded_path, sample_rate)
        gap = abs(reference.shape[-1] - estimate.shape[-1])
        if gap > hop:
            problems.append(
                f"{decoded_path}: {estimate.shape[-1]} samples against {reference.shape[-1]} in {reference_path} "
                f"(at {sample_rate} Hz; more than hop={hop} apart)"
            )
            continue
        length = min(reference.shape[-1], estimate.shape[-1])
        pairs.append((reference[:, :length], estimate[:, :length]))
        names.append(str(reference_path))
        sidecar = reference_path.with_suffix(".txt")
        transcripts.append(sidecar.read_text().strip() if sidecar.is_file() else None)
    if problems:
        raise DataError("the folders do not pair one to one; nothing was scored:\n  " + "\n  ".join(problems))
    if grammar is None and (reference_dir / "grammar.jsgf").is_file():
        grammar = str(reference_dir / "grammar.jsgf")
    per_utterance = evaluator.score_pairs(pairs, transcripts, grammar)
    return EvalResult(aggregate(per_utterance), per_utterance, names=names, packages=evaluator.packages())


def score_checkpoint(evaluator: Evaluator, cfg, own: dict, codec) -> dict[int, EvalResult]:
    """The run's own split: the one its checkpoint (or its ``splits.json``) recorded, never one drawn
    afresh, so no training file is scored as held out. One result per number of layers per group
    scored (``bitrates=``; the full bitrate alone by default)."""
    data = build(cfg.data, "data")
    split = own["split"]
    record = read_record(Path(own["checkpoint"]).resolve().parent.parent) or codec.split_record
    if split != ALL_FILES and record and split in record["splits"]:
        for warning in data.keep_recorded_split({**record, "splits": {split: record["splits"][split]}}):
            log.warning(warning)
        log.info("scoring the run's recorded %s split (%d files)", split, len(record["splits"][split]))
    elif split != ALL_FILES:
        log.warning(
            "%s records no %s split (written before splits were recorded): drawing one from the data.* settings, "
            "which may differ from the run's",
            own["checkpoint"],
            split,
        )
    utterances = data.utterances(split, None, evaluator.max_seconds)
    grammar = own["grammar"] or data.asr_grammar()
    transcripts, jsgf = data.transcripts(own["split"]), str(grammar) if grammar else None
    results = {}
    for n_layers in layer_counts(own.get("bitrates"), codec.quantizer.layers):
        result = evaluator.evaluate(codec, utterances, own["device"], transcripts, jsgf, n_layers)
        results[n_layers or codec.quantizer.layers] = result
        log.info("%d layer(s) per group: %.3g kbps", n_layers or codec.quantizer.layers, result.metrics["bitrate_kbps"])
    return results


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
            codec = load_codec(checkpoint, str(own["device"]))
            overrides = [f"sample_rate={codec.sample_rate}", *overrides]
        cfg = compose_config(overrides)
        if own["split"] == "all" and "valid_count" in cfg.data:  # no split needed: score every file
            cfg = compose_config([*overrides, "data.valid_count=0", "data.test_count=0"])
        with build(cfg.eval, "eval") as evaluator:
            source: dict[str, str | int | None]
            by_layers: dict[int, EvalResult] = {}
            if checkpoint:
                by_layers = score_checkpoint(evaluator, cfg, own, codec)
                result = by_layers[max(by_layers)]
                source = {"checkpoint": checkpoint, "split": own["split"]}
                default_output = Path(checkpoint).with_suffix(f".{own['split']}_metrics.json")
            else:
                assert reference and decoded  # parse() requires both without a checkpoint
                hop = int(own["hop"] or DEFAULT_HOP)
                result = score_folders(
                    evaluator, Path(reference), Path(decoded), int(cfg.sample_rate), own["grammar"], hop
                )
                source = {"reference": reference, "decoded": decoded, "sample_rate": int(cfg.sample_rate)}
                default_output = Path(decoded).with_name(Path(decoded).name + "_metrics.json")
    except (ConfigError, DataError, AudioFileError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_table(result)
    rows = rate_distortion_rows(by_layers) if own.get("bitrates") else []
    output = write_report(json.dumps(report_of(source, result, rows), indent=2), Path(own["output"] or default_output))
    print(f"wrote {output}")
    if rows:
        print(f"wrote {write_report(rows_as_csv(rows), output.with_suffix('.rate_distortion.csv'))}")
    return 0


def report_of(source: dict, result: EvalResult, rows: list[dict[str, float]]) -> dict:
    """The JSON report: where the audio came from, the means, per-utterance scores, codebook
    health, and the rate-distortion rows when several bitrates were scored."""
    report = {
        **source,
        "utterances": len(result.per_utterance),
        "metrics": result.metrics,
        "packages": result.packages,
        "per_utterance": result.per_utterance_records(),
        "codebook": result.codebook,
    }
    return {**report, "rate_distortion": rows} if rows else report


def rate_distortion_rows(by_layers: dict[int, EvalResult]) -> list[dict[str, float]]:
    """One row per bitrate, lowest first: the layers per group, then every metric's mean."""
    rows = []
    for layers, result in sorted(by_layers.items()):
        means = {k: v for k, v in result.metrics.items() if not k.endswith("_std")}
        rows.append({"layers_per_group": layers, **means})
    for row in rows:
        print(
            f"{row['layers_per_group']} layer(s) per group, {row['bitrate_kbps']:.3g} kbps: "
            + ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in ("layers_per_group", "bitrate_kbps"))
        )
    return rows


def rows_as_csv(rows: list[dict[str, float]]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_report(text: str, output: Path) -> Path:
    """Write the scores where asked; if that fails (a read-only folder, a full disk), to the working
    directory, then to the temporary directory, saying where: computed scores are never lost."""
    for place in (output, Path.cwd() / output.name, Path(tempfile.gettempdir()) / output.name):
        try:
            place.write_text(text)
        except OSError as error:
            print(f"warning: could not write {place} ({error.strerror or error})", file=sys.stderr)
            continue
        if place != output:
            print(f"warning: the scores were written to {place} instead of {output}", file=sys.stderr)
        return place
    raise OSError(f"the scores could not be written to {output}, the working directory or the temporary directory")


if __name__ == "__main__":
    raise SystemExit(main())
