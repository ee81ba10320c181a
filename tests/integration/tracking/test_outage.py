"""A tracking server that goes away mid-run: training never waits for it, never fails over it,
and every metric reaches MLflow exactly once when it is back (a real ``mlflow server``)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import HANG_GUARD_S, REPO_ROOT
from tests.integration.sweep.test_local_sweeps import codec_sweep, run
from tests.integration.training.test_reliability import wait_for
from tests.mlflow_server import MlflowServer

LOG_EVERY = 10
MARKER = "train/loss_generator"


def train_args(run_dir: Path, uri: str, max_steps: int) -> list[str]:
    return [
        "experiment=smoke",
        f"trainer.max_steps={max_steps}",
        f"trainer.log_every={LOG_EVERY}",
        "trainer.checkpoint_every=20",
        "trainer.eval_at_start=false",
        "trainer.eval_every=1000000",
        "eval.metrics=[mel_distance]",
        "eval.workers=0",
        f"logger.tracking_uri={uri}",
        "logger.flush_timeout_s=600",
        f"hydra.run.dir={run_dir}",
    ]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "train.py"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def status(run_dir: Path) -> dict:
    path = run_dir / "status.json"
    return json.loads(path.read_text()) if path.exists() else {}


def marker_steps(uri: str, run_dir: Path) -> list[int]:
    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], f"tags.run_dir = '{run_dir.resolve()}'"
    )
    assert len(runs) <= 1, [r.info.run_id for r in runs]
    return [m.step for m in client.get_metric_history(runs[0].info.run_id, MARKER)] if runs else []


def log_text(run_dir: Path) -> str:
    path = run_dir / "train.log"
    return path.read_text() if path.exists() else ""


def stop_server_once_metrics_arrive(server: MlflowServer, process: subprocess.Popen, run_dir: Path) -> int:
    """Wait until MLflow holds the run's first steps, stop the server, and return the step then."""
    wait_for(lambda: len(marker_steps(server.uri, run_dir)) >= 1, "the first metrics in MLflow", process)
    server.stop()
    return int(status(run_dir).get("step", 0))


def test_training_goes_on_through_an_outage_and_every_step_arrives_once(tmp_path: Path) -> None:
    server = MlflowServer(tmp_path).start()
    run_dir = tmp_path / "run"
    process = start(train_args(run_dir, server.uri, max_steps=300), tmp_path)
    try:
        down_at = stop_server_once_metrics_arrive(server, process, run_dir)
        wait_for(lambda: "tracking is behind" in log_text(run_dir), "the tracking-behind warning", process)
        # Steps go on while the server is down: the loop never waits on tracking.
        wait_for(lambda: status(run_dir).get("step", 0) >= down_at + 5 * LOG_EVERY, "steps during the outage", process)
        server.start()
        output, _ = process.communicate(timeout=HANG_GUARD_S)
    finally:
        process.kill()
        server.stop()
    assert process.returncode == 0, output[-3000:]
    assert status(run_dir)["state"] == "finished"
    assert "tracking caught up" in log_text(run_dir)
    server.start()
    try:
        steps = marker_steps(server.uri, run_dir)
        client = MlflowClient(server.uri)
        run = client.get_run(client.search_runs([run_dir_experiment(client)])[0].info.run_id)
    finally:
        server.stop()
    assert sorted(steps) == list(range(LOG_EVERY, 301, LOG_EVERY))  # every logged step, each once
    assert run.info.status == "FINISHED"


def run_dir_experiment(client: MlflowClient) -> str:
    return next(e.experiment_id for e in client.search_experiments() if e.name != "Default")


def test_a_run_killed_during_an_outage_delivers_every_step_once_after_restart(tmp_path: Path) -> None:
    """The first run has no reachable end, so it is always killed mid-outage however long MLflow
    takes to show its first steps (with max_steps=200 a loaded machine once let it finish and
    wait in its final flush instead); the rerun sets the end a few log steps later (max_steps
    does not change what is trained, so it is the same run)."""
    server = MlflowServer(tmp_path).start()
    run_dir = tmp_path / "run"
    process = start(train_args(run_dir, server.uri, max_steps=1_000_000), tmp_path)
    try:
        down_at = stop_server_once_metrics_arrive(server, process, run_dir)
        wait_for(lambda: status(run_dir).get("step", 0) >= down_at + 6 * LOG_EVERY, "steps during the outage", process)
        process.kill()  # SIGKILL: nothing is flushed, the journal holds what was not sent
        process.wait(timeout=HANG_GUARD_S)
        final = (int(status(run_dir)["step"]) // LOG_EVERY + 2) * LOG_EVERY
        server.start()
        run(train_args(run_dir, server.uri, max_steps=final), cwd=tmp_path)  # resumes, sends what the journal holds
        steps = marker_steps(server.uri, run_dir)
    finally:
        process.kill()
        server.stop()
    assert status(run_dir)["state"] == "finished" and status(run_dir)["step"] == final
    assert sorted(steps) == list(range(LOG_EVERY, final + 1, LOG_EVERY)), sorted(steps)  # exactly once each


def test_sigterm_during_an_outage_stops_at_a_step_with_its_checkpoint(tmp_path: Path) -> None:
    server = MlflowServer(tmp_path).start()
    run_dir = tmp_path / "run"
    args = train_args(run_dir, server.uri, max_steps=1_000_000) + ["logger.flush_timeout_s=1"]
    process = start(args, tmp_path)
    try:
        stop_server_once_metrics_arrive(server, process, run_dir)
        wait_for(lambda: "tracking is behind" in log_text(run_dir), "the tracking-behind warning", process)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=HANG_GUARD_S)
    finally:
        process.kill()
        server.stop()
    assert process.returncode == 143, output[-3000:]
    record = status(run_dir)
    assert record["state"] == "preempted" and record["checkpoint_step"] == record["step"] > 0
    assert (run_dir / "checkpoints" / f"step_{record['step']:09d}.pt").exists()
    assert "record(s) not sent" in log_text(run_dir)  # they wait in the journal for the next start


def test_a_sweep_trains_with_its_server_down_and_sync_delivers_every_run_later(tmp_path: Path) -> None:
    server = MlflowServer(tmp_path)  # not started: nothing listens on its port
    result = run(
        ["-m", "experiment=smoke", "quantizer.groups=1,2", f"trainer.log_every={LOG_EVERY}", "trainer.max_steps=20"]
        + ["eval.workers=0", f"logger.tracking_uri={server.uri}", "logger.flush_timeout_s=1"],
        cwd=tmp_path,
    )
    assert "cannot be reached" in result.stdout + result.stderr
    sweep = json.loads((tmp_path / "runs" / "multirun" / "smoke" / "sweep.json").read_text())
    run_dirs = [tmp_path / job["run_dir"] for job in sweep["jobs"]]
    assert [status(d)["state"] for d in run_dirs] == ["finished", "finished"]
    server.start()
    try:
        synced = codec_sweep(tmp_path, "sync", "smoke")
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert [marker_steps(server.uri, d) for d in run_dirs] == [[10, 20], [10, 20]]
        again = codec_sweep(tmp_path, "sync", "smoke")
        assert again.returncode == 0 and again.stdout == ""  # nothing left to send
    finally:
        server.stop()
