"""Signals to the whole process group of a run with loader workers on, as SLURM, ``timeout``
and a terminal send them: the run stops once, at a step boundary, with a checkpoint of the step
reached, and the same command resumes to the weights of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import HANG_GUARD_S, REPO_ROOT

TRAIN = str(REPO_ROOT / "train.py")
STEPS = 24
ARGS = [
    "experiment=smoke",
    "trainer.num_workers=2",
    "trainer.deterministic=true",
    f"trainer.max_steps={STEPS}",
    "trainer.log_every=1",
    "trainer.checkpoint_every=100",
    "logger=none",
]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)["codec"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    root = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(
        [sys.executable, TRAIN, *ARGS, f"hydra.run.dir={root / 'run'}"],
        cwd=root,
        check=True,
        capture_output=True,
        timeout=HANG_GUARD_S,
    )
    return final_weights(root / "run")


@pytest.mark.parametrize(
    "signum,state,code",
    [(signal.SIGTERM, "preempted", 143), (signal.SIGINT, "stopped", 130), (signal.SIGUSR2, "preempted", 143)],
    ids=["SIGTERM", "SIGINT", "SIGUSR2"],
)
def test_signal_to_the_process_group_stops_once_with_a_checkpoint(
    signum: int, state: str, code: int, tmp_path: Path, uninterrupted: dict[str, torch.Tensor]
) -> None:
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, TRAIN, *ARGS, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    status_file = run_dir / "status.json"
    deadline = time.monotonic() + 600
    while not (
        status_file.exists() and json.loads(status_file.read_text()).get("step", 0) >= 8
    ):  # an event: step 8 logged
        assert process.poll() is None, process.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the run never reached step 8"
        time.sleep(0.05)
    os.killpg(process.pid, signum)  # every process of the job: main and loader workers
    output = process.communicate(timeout=600)[0]
    assert process.returncode == code, output[-3000:]
    assert "killed by signal" not in output and "Traceback" not in output
    assert output.count("stopped at step") == 1
    status = json.loads(status_file.read_text())
    assert status["state"] == state
    saved = torch.load(run_dir / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)["step"]
    assert saved == status["step"] == status["checkpoint_step"] and 8 <= saved < STEPS

    resumed = subprocess.run(
        [sys.executable, TRAIN, *ARGS, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert resumed.returncode == 0 and f"at step {saved}" in resumed.stdout + resumed.stderr
    assert json.loads(status_file.read_text())["state"] == "finished"
    weights = final_weights(run_dir)
    assert all(torch.equal(uninterrupted[k], weights[k]) for k in uninterrupted)


PARENT_SCRIPT = """
import concurrent.futures, multiprocessing, os, sys
from codec.signals import ignore_stop_signals
if __name__ == "__main__":
    spawn = multiprocessing.get_context("spawn")
    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn, initializer=ignore_stop_signals)
    print(pool.submit(os.getpid).result(), flush=True)
    sys.stdin.read()  # hold the pool open until killed
"""


def test_a_worker_that_ignores_stop_signals_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """Workers ignore SIGTERM (the main process owns the stop); a main process killed outright
    must not leave them running forever (found: evaluation workers orphaned by a kill at pool start)."""
    import select

    script = tmp_path / "parent.py"
    script.write_text(PARENT_SCRIPT)
    parent = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    worker = int(parent.stdout.readline())
    watch = os.pidfd_open(worker)
    try:
        os.kill(worker, signal.SIGTERM)  # ignored: still alive
        assert select.select([watch], [], [], 0)[0] == []
        parent.kill()
        parent.wait()
        ready, _, _ = select.select([watch], [], [], 120)  # readable when the worker exits
        assert ready == [watch], "the worker outlived its killed parent"
    finally:
        os.close(watch)
