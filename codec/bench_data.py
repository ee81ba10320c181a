"""Data preparation and loading at scale: ``codec-bench-data``.

    python -m codec.bench_data --files 1000 --seconds 7.5 --out data.json

1. Generates a LibriTTS-style corpus (speech-like synthetic FLAC at 24 kHz, ``--files`` x
   ``--seconds``; not timed), prepares it at 16 kHz with 1 and then 2 workers, and writes the
   audio-hours prepared per core-minute, the speed-up from 1 to 2 workers and the size of the
   prepared corpus against its source.
2. Measures what 2 loader workers deliver from those shards at the demo composition (batch 4 x
   0.5 s) against what the demo's training step consumes (its logged audio-seconds per second
   over ``--train-steps`` steps of ``train.py experiment=demo``), and writes the ratio.

Figures, not assertions (docs/performance.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from codec.data.demo_corpus import synthesize_utterance
from codec.data.prepare import PrepareSettings, prepare
from codec.data.shards import ShardDataModule

SOURCE_RATE, MODEL_RATE = 24000, 16000
RATE = re.compile(r"\(([\d.]+) audio-s/s\)")


def generate_corpus(root: Path, files: int, seconds: float) -> Path:
    """``files`` utterances in ``speaker/chapter/`` folders, 16-bit FLAC, with transcripts."""
    rng = np.random.default_rng(0)
    for index in range(files):
        folder = root / f"{100 + index % 40}" / f"{1000 + index % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"{100 + index % 40}_{1000 + index % 7}_{index:06d}"
        sf.write(stem.with_suffix(".flac"), synthesize_utterance(rng, seconds, SOURCE_RATE), SOURCE_RATE)
        stem.with_suffix(".normalized.txt").write_text(f"synthetic utterance number {index}")
    return root


def folder_bytes(root: Path, patterns: Sequence[str]) -> int:
    return sum(p.stat().st_size for pattern in patterns for p in root.rglob(pattern) if p.is_file())


def measure_preparation(source: Path, workdir: Path, hours: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for workers in (1, 2):
        out = workdir / f"prepared_{workers}"
        started = time.monotonic()
        prepare(source, out, PrepareSettings(MODEL_RATE, shard_files=256), workers=workers)
        wall = time.monotonic() - started
        results[f"workers_{workers}"] = {
            "wall_seconds": round(wall, 2),
            "audio_hours_per_core_minute": round(hours / (wall * workers / 60), 2),
        }
    results["speedup_1_to_2_workers"] = round(
        results["workers_1"]["wall_seconds"] / results["workers_2"]["wall_seconds"], 3
    )
    source_bytes = folder_bytes(source, ["*.flac", "*.txt"])
    prepared_bytes = folder_bytes(workdir / "prepared_2", ["*.tar", "*.flac", "*.txt", "*.json"])
    results["storage"] = {
        "source_mb": round(source_bytes / 2**20, 1),
        "prepared_mb": round(prepared_bytes / 2**20, 1),
        "prepared_over_source": round(prepared_bytes / source_bytes, 3),
    }
    return results


def measure_loader(prepared: Path, batches: int, workers: int = 2) -> dict[str, Any]:
    """Audio-seconds per second that ``workers`` loader workers deliver at batch 4 x 0.5 s."""
    data = ShardDataModule(MODEL_RATE, "unused", path=str(prepared))
    loader = data.train_loader(4, 0.5, seed=0, start_step=0, max_steps=batches + 20, num_workers=workers)
    iterator = iter(loader)
    for _ in range(20):  # worker start-up and the shuffle buffers filling
        next(iterator)
    started = time.monotonic()
    for _ in range(batches):
        next(iterator)
    elapsed = time.monotonic() - started
    return {"workers": workers, "batches": batches, "audio_seconds_per_second": round(batches * 2.0 / elapsed, 1)}


def measure_training_rate(workdir: Path, steps: int) -> float:
    """The demo step's consumption: the median of its logged windows after the first."""
    train = Path(__file__).resolve().parents[1] / "train.py"
    command = [
        sys.executable, str(train), "experiment=demo", f"trainer.max_steps={steps}", "trainer.log_every=10",
        "trainer.eval_at_start=false", "trainer.eval_every=100000", "eval.metrics=[mel_distance]", "logger=none",
        f"hydra.run.dir={workdir / 'demo_rate'}", f"paths.cache={workdir / 'cache'}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    rates = [float(r) for r in RATE.findall(done.stderr + done.stdout)]
    if len(rates) < 2:
        raise RuntimeError(f"the demo run logged no training rate:\n{done.stderr[-2000:]}")
    return statistics.median(rates[1:])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=7.5)
    parser.add_argument("--loader-batches", type=int, default=300)
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("data.json"))
    args = parser.parse_args(argv)
    hours = args.files * args.seconds / 3600
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        workdir = Path(tmp)
        source = generate_corpus(workdir / "source", args.files, args.seconds)
        report: dict[str, Any] = {
            "corpus": {"files": args.files, "hours": round(hours, 3), "source_rate": SOURCE_RATE},
            "model_rate": MODEL_RATE,
            "cores": len(os.sched_getaffinity(0)),
            "preparation": measure_preparation(source, workdir, hours),
        }
        loader = measure_loader(workdir / "prepared_2", args.loader_batches)
        consumed = measure_training_rate(workdir, args.train_steps)
        report["loading"] = {
            **loader,
            "demo_step_consumes_audio_seconds_per_second": consumed,
            "delivered_over_consumed": round(loader["audio_seconds_per_second"] / consumed, 2),
        }
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
