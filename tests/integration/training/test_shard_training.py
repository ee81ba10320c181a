"""train.py from prepared shards: a run stopped and resumed ends with the weights of an
uninterrupted one, its checkpoints carry the data position, and bad data paths stop it early."""

from __future__ import annotations

from pathlib import Path

import torch

from codec.data.prepare import PrepareSettings, prepare
from tests.integration.training.test_train_cli import train
from tests.unit.data.test_shards import write_corpus


def test_a_resumed_shard_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    prepare(write_corpus(tmp_path / "source", 24), prepared, PrepareSettings(16000, shard_files=4, valid_count=2,
                                                                            test_count=2))  # fmt: skip
    common = ["experiment=smoke", "data=shards", f"data.path={prepared}", "trainer.num_workers=2",
              "trainer.deterministic=true", "trainer.checkpoint_every=2", "logger=none"]  # fmt: skip
    train([*common, "trainer.max_steps=6", f"hydra.run.dir={tmp_path / 'straight'}"], cwd=tmp_path)
    train([*common, "trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'split'}"], cwd=tmp_path)
    resumed = train([*common, "trainer.max_steps=6", f"hydra.run.dir={tmp_path / 'split'}"], cwd=tmp_path)
    assert "resumed from" in resumed.stdout + resumed.stderr
    final = torch.load(tmp_path / "split" / "checkpoints" / "latest.pt", weights_only=True)
    reference = torch.load(tmp_path / "straight" / "checkpoints" / "latest.pt", weights_only=True)
    assert final["data_position"] == {"kind": "shards", "step": 6, "stream_workers": 2}
    for key, value in reference["codec"].items():
        assert torch.equal(final["codec"][key], value), f"codec.{key} differs after the resume"


def test_an_unprepared_or_wrong_rate_corpus_stops_before_training(tmp_path: Path) -> None:
    result = train(["experiment=smoke", "data=shards", f"data.path={tmp_path}", "logger=none"], cwd=tmp_path,
                   check=False)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "is not a prepared corpus" in output and "Traceback" not in output
