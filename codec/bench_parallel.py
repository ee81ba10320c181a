"""How much of the machine N runs at once keep: ``codec-bench-parallel``.

    python -m codec.bench_parallel --copies 2 --out parallel.json [OVERRIDES ...]

Trains the same composition N times one after another (each run on every core), then N times at
once on the same cores, each copy pinned to its own 1/N of them as the ``submitit_local``
launcher pins a sweep's jobs, and writes the ratio of aggregate throughputs:

- steady state: the sum of the concurrent runs' training rates (audio seconds per second, median
  of their logged windows after the first) over one run's rate alone;
- wall time: all audio trained per second of wall time, start-up included, concurrent over
  sequential.

1.0 means running side by side costs nothing; the thread budget per run is what makes it so.
``--unpinned`` starts the concurrent copies without pinning, as two plain commands would.
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

RATE = re.compile(r"step (\d+)/\d+ .*\(([\d.]+) audio-s/s\)")
DEFAULT_OVERRIDES = (
    "trainer.max_steps=150",
    "trainer.eval_at_start=false",
    "trainer.eval_every=100000",
    "logger=none",
    "eval.metrics=[mel_distance]",
)


def window_rates(log_file: Path) -> list[float]:
    """The training rate of each logged window after the first (which holds start-up costs)."""
    rates = [float(match.group(2)) for match in RATE.finditer(log_file.read_text())]
    return rates[1:] if len(rates) > 1 else rates


def start_run(overrides: Sequence[str], run_dir: Path, cores: Sequence[int], workdir: Path) -> subprocess.Popen:
    """``train.py`` with ``overrides`` in ``run_dir``; pinned to ``cores`` (all of them: not pinned)."""
    train = Path(__file__).resolve().parents[1] / "train.py"
    command = [sys.executable, str(train), *overrides, f"hydra.run.dir={run_dir}", f"paths.cache={workdir / 'cache'}"]
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return subprocess.Popen(
        command,
        cwd=workdir,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, list(cores)),
    )


def run_batch(
    overrides: Sequence[str], workdir: Path, label: str, core_sets: Sequence[Sequence[int]]
) -> dict[str, Any]:
    """Start one run per core set at once and wait for all; their rates, audio and wall time."""
    started = time.perf_counter()
    runs = []
    for index, cores in enumerate(core_sets):
        run_dir = workdir / f"{label}_{index}"
        runs.append((run_dir, start_run(overrides, run_dir, cores, workdir)))
    for run_dir, process in runs:
        _, errors = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"{run_dir} failed:\n{errors[-3000:]}")
    wall = time.perf_counter() - started
    rates = [statistics.median(window_rates(run_dir / "train.log")) for run_dir, _ in runs]
    audio = sum(json.loads((run_dir / "status.json").read_text())["cost"]["audio_seconds"] for run_dir, _ in runs)
    return {"rates": rates, "wall_seconds": wall, "audio_seconds": audio}


def measure(copies: int, overrides: Sequence[str], pinned: bool = True) -> dict[str, Any]:
    cores = sorted(os.sched_getaffinity(0))
    if pinned and len(cores) < copies:
        raise SystemExit(f"--copies {copies} needs at least {copies} cores; this process may use {len(cores)}")
    share = len(cores) // copies
    slots = [cores[i * share : (i + 1) * share] for i in range(copies)] if pinned else [cores] * copies
    with tempfile.TemporaryDirectory(prefix="bench_parallel_") as folder:
        workdir = Path(folder)
        run_batch(overrides, workdir, "warmup", [cores])  # builds caches (corpus, manifests) outside the timing
        sequential = [run_batch(overrides, workdir, f"alone{i}", [cores]) for i in range(copies)]
        together = run_batch(overrides, workdir, "together", slots)
    alone_rate = statistics.median(r["rates"][0] for r in sequential)
    alone_wall = sum(r["wall_seconds"] for r in sequential)
    alone_audio = sum(r["audio_seconds"] for r in sequential)
    return {
        "copies": copies,
        "cores": cores,
        "pinned": pinned,
        "concurrent_core_sets": slots,
        "overrides": list(overrides),
        "alone_rates_audio_s_per_s": [r["rates"][0] for r in sequential],
        "together_rates_audio_s_per_s": together["rates"],
        "steady_state_ratio": sum(together["rates"]) / alone_rate,
        "wall_time_ratio": (together["audio_seconds"] / together["wall_seconds"]) / (alone_audio / alone_wall),
        "alone_wall_seconds": alone_wall,
        "together_wall_seconds": together["wall_seconds"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="codec-bench-parallel", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the composition (default: the demo)")
    parser.add_argument("--copies", type=int, default=2, help="runs at once (N)")
    parser.add_argument("--repeats", type=int, default=1, help="measure this many times and report each")
    parser.add_argument("--unpinned", action="store_true", help="start the concurrent copies without pinning")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    args = parser.parse_args(argv)
    overrides = [*DEFAULT_OVERRIDES, *args.overrides]
    results = [measure(args.copies, overrides, pinned=not args.unpinned) for _ in range(args.repeats)]
    ratios = [r["steady_state_ratio"] for r in results]
    report = {
        "measurements": results,
        "steady_state_ratio_median": statistics.median(ratios),
        "steady_state_ratio_range": [min(ratios), max(ratios)],
        "wall_time_ratio_median": statistics.median(r["wall_time_ratio"] for r in results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(
        f"{args.copies} runs at once keep {report['steady_state_ratio_median']:.2f}x the steady-state throughput "
        f"of one run alone (range {min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} measurement(s)); "
        f"by wall time, start-up included, {report['wall_time_ratio_median']:.2f}x. Wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
