"""What each evaluation metric costs: ``python -m codec.evaluation.cost [--out metric_cost.json]``.

Scores held-out utterances of the demo speech corpus against a degraded copy, one metric at a
time in one process, and writes seconds of compute per second of audio, plus the one-off cost
of the first call (model loading, JIT compilation) that every worker process pays once.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from codec.config import build, compose_config
from codec.evaluation.evaluator import Evaluator
from codec.evaluation.metrics import KNOWN_METRICS


def measure(metrics: Sequence[str], utterances: int, cache: Path) -> dict:
    cfg = compose_config([f"paths.cache={cache}"])
    data = build(cfg.data, "data")
    clips = (data.utterances("valid") + data.utterances("test"))[:utterances]
    transcripts = {**data.transcripts("valid"), **data.transcripts("test")}
    grammar = str(data.asr_grammar())
    generator = torch.Generator().manual_seed(0)
    pairs = [(wav, wav + 0.01 * torch.randn(wav.shape, generator=generator)) for _, wav in clips]
    texts = [transcripts.get(name) for name, _ in clips]
    audio_seconds = sum(wav.shape[-1] for _, wav in clips) / data.sample_rate
    results = {}
    for metric in metrics:
        with Evaluator(data.sample_rate, metrics=[metric], workers=0) as evaluator:
            start = time.perf_counter()
            evaluator.score_pairs(pairs[:1], texts[:1], grammar)
            first = time.perf_counter() - start
            start = time.perf_counter()
            evaluator.score_pairs(pairs, texts, grammar)
            elapsed = time.perf_counter() - start
        results[metric] = {"first_call_s": first, "seconds_per_audio_second": elapsed / audio_seconds}
    return {
        "utterances": len(pairs),
        "audio_seconds": audio_seconds,
        "sample_rate": data.sample_rate,
        "threads": torch.get_num_threads(),
        "metrics": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m codec.evaluation.cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--metrics", nargs="*", default=list(KNOWN_METRICS))
    parser.add_argument("--utterances", type=int, default=16)
    parser.add_argument("--out", default="metric_cost.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        report = measure(args.metrics, args.utterances, Path(cache))
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(
        f"{report['utterances']} utterances, {report['audio_seconds']:.1f} s of audio at {report['sample_rate']} Hz, "
        "one process"
    )
    print(f"{'metric':<14}{'s per audio-s':>14}{'first call s':>14}")
    for name, row in report["metrics"].items():
        print(f"{name:<14}{row['seconds_per_audio_second']:>14.4f}{row['first_call_s']:>14.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
