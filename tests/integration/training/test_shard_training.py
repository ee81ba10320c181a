"""train.py from prepared shards: a run killed and resumed ends with the weights of an
uninterrupted one, its checkpoints carry the data position, and bad data paths stop it early."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from codec.data.prepare import PrepareSettings, prepare
from tests.conftest import HANG_GUARD_S
from tests.integration.training.test_train_cli import TRAIN, train
from tests.unit.data.test_shards import write_corpus


def test_a_killed_shard_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    prepare(write_corpus(tmp_path / "source", 24), prepared, PrepareSettings(16000, shard_files=4, valid_count=2,
                                                                            test_count=2))  # fmt: skip
    common = ["experiment=smoke", "data=shards", f"data.path={prepared}", "trainer.num_workers=2", "logger=none",
              "trainer.deterministic=true", "trainer.max_steps=40", "trainer.checkpoint_every=3"]  # fmt: skip
    train([*common, f"hydra.run.dir={tmp_path / 'straight'}"], cwd=tmp_path)
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, TRAIN, *common, f"hydra.run.dir={killed}"], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + HANG_GUARD_S
    while time.time() < deadline and not (killed / "checkpoints" / "step_000000003.pt").exists():
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert json.loads((killed / "status.json").read_text())["state"] == "running"
    resumed = train([*common, f"hydra.run.dir={killed}"], cwd=tmp_path)
    assert "resumed from" in resumed.stdout + resumed.stderr
    final = torch.load(killed / "checkpoints" / "latest.pt", weights_only=True)
    reference = torch.load(tmp_path / "straight" / "checkpoints" / "latest.pt", weights_only=True)
    # the loader workers are capped by the cores the test process has: the stream keeps that count
    assert final["data_position"]["kind"] == "shards" and final["data_position"]["step"] == 40
    assert final["data_position"]["stream_workers"] == reference["data_position"]["stream_workers"]
    for key, value in reference["codec"].items():
        assert torch.equal(final["codec"][key], value), f"codec.{key} differs after the resume"


def test_an_unprepared_or_wrong_rate_corpus_stops_before_training(tmp_path: Path) -> None:
    result = train(["experiment=smoke", "data=shards", f"data.path={tmp_path}", "logger=none"], cwd=tmp_path,
                   check=False)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "is not a prepared corpus" in output and "Traceback" not in output
