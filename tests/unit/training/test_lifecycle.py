"""The run's lifecycle parts in process: checkpoints, the run lock, the MLflow logger and warm start.

The CLI tests reach these through train.py; here each part is driven directly, so a failure
points at the part and the tier runs in seconds.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from codec.config import build_codec, build_discriminator, compose_config
from codec.tracking.loggers import MLflowLogger
from codec.training.checkpoint import CheckpointError, CheckpointManager
from codec.training.run_lock import RunDirectoryBusy, RunLock
from codec.training.warm_start import WarmStartError, warm_start


def _state(step: int) -> dict:
    return {"step": step, "codec": {"weight": torch.full((3,), float(step))}}


def test_checkpoints_keep_the_newest_steps_and_latest_is_the_newest(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "checkpoints", keep_last=3)
    for step in (5, 10, 100, 1000, 10000):  # names sort differently from numbers past a digit boundary
        manager.save(_state(step), step)
    assert [p.name for p in manager.history()] == ["step_000000100.pt", "step_000001000.pt", "step_000010000.pt"]
    loaded = manager.load()
    assert loaded is not None and loaded.path == manager.latest and loaded.state["step"] == 10000


def test_a_truncated_latest_resumes_from_the_newest_intact_step_and_says_why(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "checkpoints")
    manager.save(_state(1), 1)
    newest = manager.save(_state(2), 2)
    for path in (manager.latest, newest):
        path.write_bytes(path.read_bytes()[:40])
    loaded = manager.load()
    assert loaded is not None and loaded.state["step"] == 1
    assert set(loaded.skipped) == {str(manager.latest), str(newest)}


def test_no_loadable_checkpoint_is_an_error_naming_every_file(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path / "checkpoints")
    assert manager.load() is None  # a fresh run directory
    manager.save(_state(3), 3)
    for path in (manager.latest, *manager.history()):
        path.write_bytes(b"")
    with pytest.raises(CheckpointError) as error:
        manager.load()
    assert "latest.pt" in str(error.value) and "step_000000003.pt" in str(error.value)


def test_a_killed_writers_temporary_file_is_cleared_and_never_loaded(tmp_path: Path) -> None:
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    stale = directory / ".step_000000009.pt.tmp123"
    stale.write_bytes(b"half a file")
    manager = CheckpointManager(directory)
    assert not stale.exists() and manager.load() is None


def _hold_lock(
    run_dir: Path, held: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event
) -> None:
    lock = RunLock(run_dir).acquire()
    held.set()
    release.wait(600)
    lock.release()


def test_the_run_lock_refuses_a_second_process_and_frees_on_release(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    held, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(tmp_path, held, release))
    holder.start()
    try:
        assert held.wait(600), "the holder never took the lock"
        with pytest.raises(RunDirectoryBusy) as error:
            RunLock(tmp_path).acquire()
        assert f"pid {holder.pid}" in str(error.value)
    finally:
        release.set()
        holder.join(600)
    RunLock(tmp_path).acquire().release()  # free again once the holder let go


def test_mlflow_logger_records_a_run_and_a_resume_never_logs_a_step_twice(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLflowLogger(uri, experiment_name="lifecycle")
    run_id = logger.start("run", params={"quantizer.groups": "2"}, tags={"kind": "unit"})
    for step in (1, 2, 3):
        logger.log_metrics({"train/loss_generator": float(step), "train/skipped": float("nan")}, step)
    logger.finish("KILLED")

    resumed = MLflowLogger(uri, experiment_name="lifecycle")
    resumed.start("run", params={"quantizer.groups": "2", "quantizer.layers": "1"}, tags={}, run_id=run_id)
    # Steps up to the last one logged (read back from the store) are not logged again.
    resumed.log_metrics({"train/loss_generator": 99.0}, 2)
    resumed.log_metrics({"train/loss_generator": 4.0}, 4)
    resumed.finish()

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    history = [(m.step, m.value) for m in client.get_metric_history(run_id, "train/loss_generator")]
    assert sorted(history) == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    assert "train/skipped" not in run.data.metrics  # non-finite values are not logged
    assert run.data.params == {"quantizer.groups": "2", "quantizer.layers": "1"}
    assert run.data.tags["kind"] == "unit" and run.info.status == "FINISHED"


def test_warm_start_copies_the_asked_parts_exactly_and_refuses_what_does_not_fit(tmp_path: Path) -> None:
    cfg = compose_config(["experiment=smoke"])
    source, target = build_codec(cfg), build_codec(cfg)
    discriminator = build_discriminator(cfg)
    file = tmp_path / "source.pt"
    torch.save({"step": 7, "codec": source.state_dict()}, file)

    record = warm_start(target, discriminator, file, ["encoder", "decoder"])
    assert record["step"] == 7 and record["parts"] == ["encoder", "decoder"]
    for part in ("encoder", "decoder"):
        wanted, got = getattr(source, part).state_dict(), getattr(target, part).state_dict()
        assert all(torch.equal(wanted[key], got[key]) for key in wanted)

    other = build_codec(compose_config(["experiment=smoke", "encoder.channels=8"]))
    with pytest.raises(WarmStartError, match="its encoder does not fit"):
        warm_start(other, discriminator, file, ["encoder"])
    with pytest.raises(WarmStartError, match="holds no discriminator weights"):
        warm_start(target, discriminator, file, ["discriminator"])
    with pytest.raises(WarmStartError, match="does not exist: train that run first"):
        warm_start(target, discriminator, tmp_path / "absent.pt", ["encoder"])
