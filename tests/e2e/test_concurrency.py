"""Races: eight training processes start at once on one fresh MLflow store (SQLite, then a real
``mlflow server``), and every run finishes with its own MLflow run."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import HANG_GUARD_S
from tests.integration.training.test_reliability import SMOKE, start
from tests.mlflow_server import MlflowServer


def assert_concurrent_runs_all_finish(tmp_path: Path, tracking_uri: str, count: int = 8) -> MlflowClient:
    # One thread each: eight processes share two cores. A small corpus keeps the final evaluation short.
    small = [
        "trainer.max_steps=1",
        "trainer.log_every=1",
        "data.utterances.train=4",
        "data.utterances.valid=1",
        "data.utterances.test=1",
    ]
    processes = [
        start(
            [
                *SMOKE,
                *small,
                f"logger.tracking_uri={tracking_uri}",
                f"hydra.run.dir={tmp_path / f'run{i}'}",
                f"trainer.seed={i}",
            ],
            cwd=tmp_path,
            env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )
        for i in range(count)
    ]
    outputs = [p.communicate(timeout=HANG_GUARD_S)[0] for p in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    client = MlflowClient(tracking_uri=tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * count
    default = client.get_experiment_by_name("Default")
    assert default is None or not client.search_runs([default.experiment_id])
    return client


def test_eight_runs_start_at_once_on_a_fresh_sqlite_store(tmp_path: Path) -> None:
    assert_concurrent_runs_all_finish(tmp_path, f"sqlite:///{tmp_path / 'fresh.db'}")


def test_eight_runs_start_at_once_against_an_mlflow_server(tmp_path: Path) -> None:
    server = MlflowServer(tmp_path).start()
    try:
        assert_concurrent_runs_all_finish(tmp_path, server.uri)
    finally:
        server.stop()
