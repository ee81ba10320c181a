"""Does ``loss.semantic`` put content into the group it supervises? ``codec-bench-semantic``.

    python -m codec.bench_semantic --seeds 0,1,2 --out semantic.json [OVERRIDES ...]

Trains the same composition with and without ``semantic=characters`` (group 0, its default
weight) for each seed, runs the token probes on each final codec, and writes per seed and on
average:

- ``content_cer_group0_only``: the content probe's character error rate reading group 0 alone
  (every other group masked); lower means more of the transcript is recoverable from group 0;
- ``content_cer``: the same with every codebook, and ``mel_distance`` on the test split, so
  the price in reconstruction is beside the gain;
- seconds per training step, so the cost of the extra CTC pass is there too.

The runs go side by side, each pinned to one of the cores this process may use (one run per
core: two runs on the same cores each slow down far more than twice). Figures, not assertions
(docs/results.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# The demo with 2 groups of 32 codes (10 bits per frame), whose codes a 200-step probe can read;
# 2000 steps: the CTC term waits for the codebooks to spread (conf/semantic/characters.yaml), which
# on this demo takes 300-800 steps, and still has 1200 or more.
DEFAULT_OVERRIDES = (
    "experiment=demo",
    "quantizer=grvq_10bit",
    "trainer.max_steps=2000",
    "trainer.num_workers=0",
    "trainer.eval_every=100000",
    "trainer.eval_at_start=false",
    "logger=none",
    "probe=default",
    "eval.metrics=[mel_distance]",
)
SEMANTIC_ARM = ("semantic=characters",)


def train_and_probe(overrides: Sequence[str], run_dir: Path, cache: Path, core: int | None = None) -> dict[str, Any]:
    """One ``train.py`` run with the probes on (pinned to ``core`` if given); its final record."""
    train = Path(__file__).resolve().parents[1] / "train.py"
    command = [sys.executable, str(train), *overrides, f"hydra.run.dir={run_dir}", f"paths.cache={cache}"]
    pin = None if core is None else (lambda: os.sched_setaffinity(0, {core}))
    done = subprocess.run(command, cwd=run_dir.parent, capture_output=True, text=True, preexec_fn=pin)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads((run_dir / "status.json").read_text())


def figures(status: dict[str, Any], group: int) -> dict[str, float]:
    """The probe and cost figures of one finished run; ``group`` is the supervised group."""
    probe = status.get("probe") or {}
    others = sorted(k for k in probe if k.startswith("probe/content_cer_without_group") and not k.endswith(str(group)))
    if len(others) != 1:
        raise ValueError(f"expected a two-group quantizer's probe keys; found {sorted(probe)}")
    return {
        f"content_cer_group{group}_only": probe[others[0]],
        f"content_cer_without_group{group}": probe[f"probe/content_cer_without_group{group}"],
        "content_cer": probe["probe/content_cer"],
        "content_cer_shuffled": probe["probe/content_cer_shuffled"],
        "mel_distance": status["test"]["mel_distance"],
        "seconds_per_step": status["cost"].get("seconds_per_step", float("nan")),
    }


def run(
    seeds: Sequence[int], overrides: Sequence[str], workdir: Path, semantic: Sequence[str] = SEMANTIC_ARM
) -> dict[str, Any]:
    """Both arms for every seed, side by side; ``semantic`` is what the semantic arm adds."""
    arms = {"baseline": [], "semantic": list(semantic)}
    jobs = [(arm, seed) for seed in seeds for arm in arms]
    free: queue.Queue[int] = queue.Queue()
    for core in sorted(os.sched_getaffinity(0)):
        free.put(core)

    def one(job: tuple[str, int]) -> dict[str, Any]:
        core = free.get()
        try:
            arm, seed = job
            return train_and_probe(
                [*overrides, *arms[arm], f"trainer.seed={seed}"], workdir / f"{arm}_seed{seed}", workdir / "cache", core
            )
        finally:
            free.put(core)

    runs: dict[str, list[dict[str, float]]] = {arm: [] for arm in arms}
    with ThreadPoolExecutor(max_workers=free.qsize()) as pool:
        for (arm, seed), status in zip(jobs, pool.map(one, jobs)):
            runs[arm].append({"seed": seed, **figures(status, 0)})
            print(f"{arm} seed {seed}: {runs[arm][-1]}", flush=True)
    means = {
        arm: {key: statistics.fmean(r[key] for r in rows) for key in rows[0] if key != "seed"}
        for arm, rows in runs.items()
    }
    wins = sum(
        s["content_cer_group0_only"] < b["content_cer_group0_only"] for s, b in zip(runs["semantic"], runs["baseline"])
    )
    return {
        "overrides": list(overrides),
        "arms": arms,
        "runs": runs,
        "mean": means,
        "seeds_where_semantic_lowers_group0_cer": f"{wins}/{len(seeds)}",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0", help="comma-separated trainer seeds (one pair of runs each)")
    parser.add_argument("--out", type=Path, default=Path("semantic.json"))
    parser.add_argument(
        "--semantic",
        default=" ".join(SEMANTIC_ARM),
        help="overrides the semantic arm adds, space-separated (default: %(default)s)",
    )
    parser.add_argument("overrides", nargs="*", help=f"train.py overrides (default: {' '.join(DEFAULT_OVERRIDES)})")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench_semantic_") as tmp:
        report = run(seeds, args.overrides or DEFAULT_OVERRIDES, Path(tmp), args.semantic.split())
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["mean"], indent=2))
    print(f"semantic lowers group 0's content CER on {report['seeds_where_semantic_lowers_group0_cer']} seed(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
