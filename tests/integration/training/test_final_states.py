"""States that tell the truth (issue 30, finding 5): every way a run or a sweep ends leaves its
final state in status.json and in MLflow, each written on its own; a killed run reads as lost, and
points that never started count as pending."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from codec.tracking import NullLogger
from codec.training.recorder import RESERVE_FILE, RunRecorder
from codec.training.status import write_status
from tests.conftest import HANG_GUARD_S, REPO_ROOT
from tests.integration.sweep.test_local_sweeps import status as sweep_table
from tests.integration.training.test_reliability import wait_for

LONG_SMOKE = ["experiment=smoke", "trainer.max_steps=100000", "trainer.log_every=1", "trainer.checkpoint_every=5"]


def launch(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """train.py in its own process group, its output in a file (a pipe could fill and block it)."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "train.py"), *args],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def runs(uri: str) -> list:
    """The store's runs; none before train.py has made the store (opening it earlier would make it)."""
    if not Path(uri.removeprefix("sqlite:///")).exists():
        return []
    client = MlflowClient(tracking_uri=uri)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def sweep_status(cwd: Path) -> str:
    return sweep_table(cwd, "smoke")


def test_a_run_whose_directory_is_deleted_mid_run_ends_failed_in_mlflow(tmp_path: Path) -> None:
    """Found: status.json was written first, outside the try, so the MLflow run stayed RUNNING."""
    run_dir, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = launch(
        [*LONG_SMOKE, f"hydra.run.dir={run_dir}", f"logger.tracking_uri={uri}"], tmp_path, tmp_path / "log"
    )
    try:
        wait_for(lambda: status(run_dir).get("step", 0) >= 2, "training steps", process)
        wait_for(lambda: any(r.info.status == "RUNNING" for r in runs(uri)), "the MLflow run", process)
        run_dir.rename(tmp_path / "deleted")  # gone at once (rmtree would race the run's own writes)
        shutil.rmtree(tmp_path / "deleted", ignore_errors=True)
        assert process.wait(timeout=HANG_GUARD_S) != 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    (run,) = runs(uri)
    assert run.info.status == "FAILED", (tmp_path / "log").read_text()[-3000:]
    assert "No such file or directory" in run.data.tags["error"]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 32 MiB file system (tmpfs), to fill up; needs root or password-less sudo."""
    mount = tmp_path / "disk"
    mount.mkdir()
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and shutil.which("sudo") is None:
        pytest.skip("mounting a small tmpfs needs root or password-less sudo")
    result = subprocess.run(
        [*sudo, "mount", "-t", "tmpfs", "-o", "size=32m,mode=1777", "tmpfs", str(mount)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root or password-less sudo")
    yield mount
    subprocess.run([*sudo, "umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Write until the disk refuses; unbuffered, so closing the file has nothing left to write."""
    with open(disk / "filler", "wb", buffering=0) as filler:
        with contextlib.suppress(OSError):
            while True:
                filler.write(bytes(64 * 1024))
        with contextlib.suppress(OSError):
            while True:
                filler.write(bytes(512))  # the last pages a 64 KiB write could not take


def test_a_full_disk_fails_the_run_and_both_records_say_so(small_disk: Path, tmp_path: Path) -> None:
    """Found: the run failed cleanly, but status.json stayed "running" (its write failed too)."""
    run_dir, uri = small_disk / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = launch(
        [*LONG_SMOKE, f"hydra.run.dir={run_dir}", f"logger.tracking_uri={uri}"], tmp_path, tmp_path / "log"
    )
    try:
        wait_for(lambda: (run_dir / "checkpoints" / "latest.pt").exists(), "the first checkpoint", process)
        wait_for(lambda: any(r.info.status == "RUNNING" for r in runs(uri)), "the MLflow run", process)
        fill(small_disk)
        assert process.wait(timeout=HANG_GUARD_S) != 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    final = status(run_dir)
    assert final["state"] == "failed" and "No space left on device" in final["error"], final
    assert not (run_dir / RESERVE_FILE).exists(), "the reserve outlived the run"
    (run,) = runs(uri)
    assert run.info.status == "FAILED" and "No space left on device" in run.data.tags["error"]
    (small_disk / "filler").unlink()
    resumed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), "experiment=smoke", "trainer.max_steps=12", "logger=none",
         f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout + resumed.stderr, resumed.stderr[-3000:]


def test_the_reserve_writes_the_final_record_on_a_disk_that_is_still_full(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The run above may free space as it fails (its partial checkpoint is removed), so whether
    the reserve was needed there depends on which write failed; here the disk stays full."""
    run_dir = small_disk / "run"
    run_dir.mkdir()
    recorder = RunRecorder(run_dir, NullLogger())
    write_status(run_dir, state="running", step=3)
    recorder.keep_reserve()
    fill(small_disk)
    with pytest.raises(OSError, match="No space left"):
        write_status(run_dir, state="failed")
    with caplog.at_level(logging.WARNING, logger="codec.training.recorder"):
        recorder.end("failed", "FAILED", error="OSError: [Errno 28] No space left on device")
    assert "space kept for the final record was used" in caplog.text
    assert status(run_dir)["state"] == "failed" and status(run_dir)["step"] == 3
    assert not list(run_dir.glob(".status.json.tmp*")), "a failed write left its temporary file"


def test_a_killed_sweep_shows_its_run_lost_and_counts_the_point_that_never_started(tmp_path: Path) -> None:
    """Found: a SIGKILLed run read "running" with an ETA forever; unstarted points were not counted."""
    log = tmp_path / "log"
    process = launch(["-m", "quantizer.groups=1,2", *LONG_SMOKE, "logger=none"], tmp_path, log)
    sweep = tmp_path / "runs" / "multirun" / "smoke"
    try:
        wait_for(lambda: list(sweep.glob("*/status.json")), "a run", process)
        first = next(sweep.glob("*/status.json")).parent
        wait_for(lambda: status(first).get("step", 0) >= 2, "training steps", process)
        running = sweep_status(tmp_path)
        assert "running" in running and "lost" not in running
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    recorded = status(first)
    assert recorded["state"] == "running" and recorded["host"] == socket.gethostname()
    assert recorded["pid"] == process.pid and recorded["heartbeat"] > 0
    table = sweep_status(tmp_path)
    assert f"its process {process.pid} on {socket.gethostname()} is gone" in table
    assert "lost: 1" in table and "pending: 1" in table
    assert "/200000 steps" in table, table  # the point that never started counts its steps


def test_ctrl_c_on_a_sweep_closes_its_parent_run(tmp_path: Path) -> None:
    """Found: Ctrl-C on a sweep left the MLflow parent RUNNING."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    process = launch(
        ["-m", "quantizer.groups=1,2", *LONG_SMOKE, f"logger.tracking_uri={uri}"], tmp_path, tmp_path / "log"
    )
    try:
        sweep = tmp_path / "runs" / "multirun" / "smoke"
        wait_for(
            lambda: any(status(p.parent).get("step", 0) >= 2 for p in sweep.glob("*/status.json")), "steps", process
        )
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=HANG_GUARD_S)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    by_role = {r.data.tags.get("role", "child"): r for r in runs(uri)}
    assert by_role["sweep"].info.status == "KILLED", (tmp_path / "log").read_text()[-3000:]
    assert by_role["sweep"].data.tags["interrupted"]
    assert by_role["child"].info.status == "KILLED"
    assert json.loads((sweep / "sweep.json").read_text())["history"][-1]["interrupted"]
    # The report says why there is nothing to compare (it used to say "the sweep has no quality metric").
    report = subprocess.run(
        [sys.executable, "-m", "analysis.report", "smoke", "--out", str(tmp_path / "report")],
        cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert report.returncode == 2
    assert "the sweep has no finished run yet (stopped: 1, never started: 1)" in report.stderr, report.stderr
