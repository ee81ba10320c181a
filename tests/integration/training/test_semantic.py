"""loss.semantic through train.py: the term is trained and logged, its head is checkpointed and
resumes exactly, and settings that cannot work stop before training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from tests.conftest import HANG_GUARD_S
from tests.integration.training.test_train_cli import train

COMMON = [
    "experiment=smoke",
    "semantic=characters",
    # The term starts at step 1 and ramps up until step 4, so the run is split inside the ramp.
    "loss.semantic.start_step=1",
    "loss.semantic.start_entropy_bits=null",
    "loss.semantic.warmup_steps=4",
    "trainer.deterministic=true",
    "trainer.checkpoint_every=2",
    "trainer.log_every=2",
]


def test_semantic_training_logs_the_term_and_resumes_exactly(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    tracking = f"logger.tracking_uri=sqlite:///{db}"
    train([*COMMON, "trainer.max_steps=6", tracking, f"hydra.run.dir={tmp_path / 'straight'}"], cwd=tmp_path)
    split = tmp_path / "split"
    train([*COMMON, "trainer.max_steps=4", tracking, f"hydra.run.dir={split}"], cwd=tmp_path)
    resumed = train([*COMMON, "trainer.max_steps=6", tracking, f"hydra.run.dir={split}"], cwd=tmp_path)
    assert "resumed from" in resumed.stdout + resumed.stderr

    final = torch.load(split / "checkpoints" / "latest.pt", weights_only=True)
    reference = torch.load(tmp_path / "straight" / "checkpoints" / "latest.pt", weights_only=True)
    head = reference["semantic"]
    assert head and any(k.startswith("head.") for k in head), "the semantic head is saved with the optimizer state"
    for key, value in head.items():  # the head's weights, and the start latch (extra state)
        same = torch.equal(final["semantic"][key], value) if torch.is_tensor(value) else final["semantic"][key] == value
        assert same, f"semantic head {key} differs after resume"
    for key, value in reference["codec"].items():
        assert torch.equal(final["codec"][key], value), f"codec.{key} differs after resume"

    run_id = json.loads((split / "status.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    history = client.get_metric_history(run_id, "train/semantic")
    assert [m.step for m in history] == [2, 4, 6] and all(m.value > 0 for m in history)
    assert client.get_run(run_id).data.params["loss.semantic.units"] == "characters"


def test_semantic_supervision_without_transcripts_stops_before_training(tmp_path: Path) -> None:
    result = train(
        ["experiment=smoke", "semantic=characters", "data=synthetic", "logger=none", f"hydra.run.dir={tmp_path / 'r'}"],
        cwd=tmp_path,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "loss.semantic needs training utterances" in output, output[-2000:]
    assert "Traceback" not in output and not list((tmp_path / "r").glob("checkpoints/*.pt"))


def test_the_semantic_benchmark_writes_both_arms_figures(tmp_path: Path) -> None:
    """codec-bench-semantic at tiny settings: both arms train side by side and their probe figures
    (group 0 alone, without group 0, all codebooks) and costs are written per seed and on average."""
    out = tmp_path / "semantic.json"
    quick = ["experiment=smoke", "trainer.max_steps=4", "trainer.eval_at_start=false", "logger=none",
             "probe=default", "probe.steps=5", "probe.held_out_every=2", "data.utterances.train=24",
             "eval.metrics=[mel_distance]"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "codec.bench_semantic", "--seeds", "0", "--out", str(out),
         "--semantic", "semantic=characters loss.semantic.start_step=0 loss.semantic.start_entropy_bits=null", *quick],
        cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["arms"] == {
        "baseline": [],
        "semantic": ["semantic=characters", "loss.semantic.start_step=0", "loss.semantic.start_entropy_bits=null"],
    }
    for arm in ("baseline", "semantic"):
        (row,) = report["runs"][arm]
        assert row["seed"] == 0 and 0 <= row["content_cer_group0_only"] <= 2 and row["mel_distance"] > 0
        assert report["mean"][arm]["content_cer"] == row["content_cer"]
    assert report["seeds_where_semantic_lowers_group0_cer"] in ("0/1", "1/1")
