"""Sweeps on a real SLURM cluster on localhost (started by slurm/start_local_cluster.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import HANG_GUARD_S, REPO_ROOT, require_slurm_cluster
from tests.integration.sweep.test_local_sweeps import TINY_RUN
from tests.integration.sweep.test_local_sweeps import status as sweep_table

pytestmark = pytest.mark.slurm
SLURM = ["hydra/launcher=submitit_slurm", "+cluster=localhost"]


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster() -> None:
    require_slurm_cluster()


def sweep(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), "-m", *SLURM, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"sweep failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def job_state(job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    return next((part.split("=", 1)[1] for part in out.split() if part.startswith("JobState=")), "")


def final_job_state(job_id: str, timeout: float = 120) -> str:
    """SLURM's state once the job has ended (submitit returns when the result is written,
    a moment before SLURM marks the job done)."""
    deadline = time.time() + timeout
    state = job_state(job_id)
    while state in ("RUNNING", "COMPLETING", "PENDING", "CONFIGURING") and time.time() < deadline:
        time.sleep(0.5)
        state = job_state(job_id)
    return state


def submitit_job_ids(sweep_dir: Path) -> list[str]:
    """Job ids of a sweep: array tasks (``<array>_<task>``), or the single job of a 1-job sweep."""
    names = [p.name for p in (sweep_dir / ".submitit").iterdir() if p.is_dir() and p.name.replace("_", "").isdigit()]
    tasks = sorted(n for n in names if "_" in n)
    return tasks or sorted(names)


def test_six_run_sweep_is_one_array_with_one_mlflow_parent(tmp_path: Path) -> None:
    sweep(["quantizer.groups=1,2,4", "quantizer.layers=1,2", *TINY_RUN], cwd=tmp_path)
    sweep_dir = tmp_path / "runs" / "multirun" / "smoke"
    jobs = submitit_job_ids(sweep_dir)
    assert len(jobs) == 6 and len({j.split("_")[0] for j in jobs}) == 1  # one array of 6 tasks
    record = json.loads((sweep_dir / "sweep.json").read_text())
    names = sorted(Path(j["run_dir"]).name for j in record["jobs"])
    assert names == sorted(
        f"experiment=smoke,quantizer.groups={g},quantizer.layers={n}" for g in (1, 2, 4) for n in (1, 2)
    )
    assert all((sweep_dir / n / "checkpoints" / "latest.pt").exists() for n in names)
    # Each job sized its threads to the cores SLURM gave it (the profile's cpus_per_task=1).
    budgets = [json.loads((sweep_dir / n / "status.json").read_text())["cpu_budget"] for n in names]
    assert all(b["cores"] == 1 and b["source"] == "SLURM_CPUS_PER_TASK" for b in budgets), budgets
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{record['parent_run_id']}'")
    assert len(children) == 6
    assert all(r.info.status == "FINISHED" and "train/loss_generator" in r.data.metrics for r in children)
    assert {r.data.params["quantizer.groups"] for r in children} == {"1", "2", "4"}

    # The same sweep again: nothing is submitted and the status table shows every run finished.
    again = sweep(["quantizer.groups=1,2,4", "quantizer.layers=1,2", *TINY_RUN], cwd=tmp_path)
    assert "6 already finished, 0 to launch" in again.stdout + again.stderr
    assert submitit_job_ids(sweep_dir) == jobs
    table = sweep_table(tmp_path, "smoke")
    assert "finished: 6" in table and "failed" not in table


def test_failing_point_is_failed_in_slurm_and_mlflow_while_others_finish(tmp_path: Path) -> None:
    result = sweep(["quantizer.groups=1,3", *TINY_RUN], cwd=tmp_path, check=False)
    assert result.returncode != 0
    sweep_dir = tmp_path / "runs" / "multirun" / "smoke"
    record = json.loads((sweep_dir / "sweep.json").read_text())
    by_groups = {next(o for o in j["overrides"] if o.startswith("quantizer.groups")): j for j in record["jobs"]}
    ok = json.loads((tmp_path / by_groups["quantizer.groups=1"]["run_dir"] / "status.json").read_text())
    bad = json.loads((tmp_path / by_groups["quantizer.groups=3"]["run_dir"] / "status.json").read_text())
    assert ok["state"] == "finished" and bad["state"] == "failed"
    states = sorted(final_job_state(j) for j in submitit_job_ids(sweep_dir))
    assert states == ["COMPLETED", "FAILED"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    failed = client.get_run(bad["run_id"])
    assert failed.info.status == "FAILED" and "quantizer.groups=3" in failed.data.tags["error"]
    assert client.get_run(ok["run_id"]).info.status == "FINISHED"


def _wait_for_step(status_file: Path, step: int, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if status_file.exists():
            status = json.loads(status_file.read_text())
            if status.get("state") == "running" and status.get("step", 0) >= step:
                return status
        time.sleep(0.5)
    raise AssertionError(f"{status_file} never reached step {step}")


def _release(job_id: str) -> None:
    """A requeued SLURM job waits ~2 minutes (BeginTime); start it sooner instead.

    Not at once: until the old instance is torn down, slurmd holds its revoked credential and
    kills a restart of the same job id that it receives within the same second ("Job credential
    revoked"). So wait for the job to be pending and the node idle, then two more seconds.
    """
    deadline = time.time() + 60
    while time.time() < deadline and "PENDING" not in job_state(job_id):
        time.sleep(0.5)
    while (
        time.time() < deadline
        and subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.strip() != "idle"
    ):
        time.sleep(0.5)
    time.sleep(2.0)
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True)


def test_requeue_by_scontrol_and_by_time_limit_signal_resumes(tmp_path: Path) -> None:
    """SLURM signals every process of the job, loader workers included (num_workers=2): the run
    stops once at a step boundary with a checkpoint, and resumes in the same MLflow run."""
    args = [
        *TINY_RUN,
        "trainer.num_workers=2",
        "trainer.max_steps=160",
        "trainer.checkpoint_every=10",
        "trainer.log_every=10",
    ]
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "train.py"), "-m", *SLURM, *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sweep_dir = tmp_path / "runs" / "multirun" / "smoke"
    deadline = time.time() + 120
    while time.time() < deadline and not list(sweep_dir.glob("*/status.json")):
        time.sleep(0.5)
    status_file = next(sweep_dir.glob("*/status.json"))
    job_id = submitit_job_ids(sweep_dir)[0]

    first = _wait_for_step(status_file, 30)
    subprocess.run(["scontrol", "requeue", job_id], check=True)  # what an admin or preemption does
    _release(job_id)
    second = _wait_for_step(status_file, 80)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # the time-limit warning
    _release(job_id)
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-5000:]

    final = json.loads(status_file.read_text())
    assert final["state"] == "finished" and final["step"] == 160
    assert final["run_id"] == first["run_id"] == second["run_id"]
    log = (status_file.parent / "train.log").read_text()
    assert log.count("resumed from") == 2
    assert "received SIGTERM" in log and "received SIGUSR2" in log and "requeued SLURM job" in log
    assert "killed by signal" not in log and log.count("stopped at step") == 2
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [
        r
        for r in client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
        if r.data.tags.get("role") != "sweep"
    ]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss_generator")]
    assert sorted(steps) == list(range(10, 161, 10))  # no step logged twice


def test_an_array_slurm_can_never_start_fails_at_once_with_the_reason(tmp_path: Path) -> None:
    """More CPUs per task than the node has: SLURM leaves the array PENDING (PartitionConfig)
    forever; the launcher says so, cancels it and ends the sweep as failed."""
    too_many = (os.cpu_count() or 2) + 2
    result = sweep(
        ["quantizer.groups=1,2", *TINY_RUN, f"hydra.launcher.cpus_per_task={too_many}"], cwd=tmp_path, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert (
        "SLURM will never start this array" in output
        and "PartitionConfig" in output
        and f"cpus_per_task={too_many}" in output
    )
    sweep_dir = tmp_path / "runs" / "multirun" / "smoke"
    array = submitit_job_ids(sweep_dir)[0].split("_")[0]
    assert subprocess.run(["squeue", "-h", "-j", array], capture_output=True, text=True).stdout.strip() == ""
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert record["history"][-1]["failed"] == 2


def test_a_cancelled_array_is_reported_not_waited_on(tmp_path: Path) -> None:
    """Held, then cancelled before it ever ran (so no job writes a result): the launcher reads
    the queue, names scancel as the cause and ends the sweep as failed."""
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "train.py"),
            "-m",
            *SLURM,
            "quantizer.groups=1,2",
            *TINY_RUN,
            "+hydra.launcher.additional_parameters.hold=true",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sweep_dir = tmp_path / "runs" / "multirun" / "smoke"
    deadline = time.time() + 300
    while not ((sweep_dir / ".submitit").exists() and submitit_job_ids(sweep_dir)):
        assert process.poll() is None and time.time() < deadline, (
            process.stdout.read()[-3000:] if process.poll() is not None else "no submission"
        )
        time.sleep(0.5)
    array = submitit_job_ids(sweep_dir)[0].split("_")[0]
    subprocess.run(["scancel", array], check=True)
    output = process.communicate(timeout=600)[0]
    assert process.returncode != 0
    assert output.count("cancelled (scancel) without a result") >= 2, output[-3000:]


def test_a_two_task_job_trains_like_one_process_at_the_same_effective_batch(tmp_path: Path) -> None:
    """The profile's nodes and tasks reach SLURM: 2 tasks x batch 1 (gloo) end with the weights
    of one process at batch 2, and both runs have the same identity (the effective batch); the
    test split is scored half on each rank and gathered, to the one process's scores.
    SGD, so a float-level gradient difference stays float-level (Adam's first steps amplify
    the sign of near-zero gradients); no discriminator, whose normalised feature loss reads
    the batch it is given."""
    common = [
        "experiment=smoke", "quantizer=fsq", "trainer.max_steps=4", "trainer.discriminator_start_step=100",
        "trainer.deterministic=true", "trainer.checkpoint_every=2", "eval.metrics=[mel_distance]", "logger=none",
        "trainer.generator_optimizer._target_=torch.optim.SGD", "~trainer.generator_optimizer.betas",
        "trainer.generator_optimizer.lr=1e-3",
    ]  # fmt: skip
    sweep([*common, "hydra.launcher.nodes=1", "hydra.launcher.tasks_per_node=2", "trainer.batch_size=1",
           f"hydra.sweep.dir={tmp_path / 'two'}"], cwd=tmp_path)  # fmt: skip
    (run_dir,) = [p for p in (tmp_path / "two").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert sorted(p.name for p in (run_dir / "ranks").iterdir()) == ["rank0_quantizer.pt", "rank1_quantizer.pt"]
    single = [*common, "trainer.batch_size=2", f"hydra.run.dir={tmp_path / 'one'}"]
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), *single],
        cwd=tmp_path, check=True, capture_output=True, timeout=HANG_GUARD_S,
    )  # fmt: skip
    two = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    one = torch.load(tmp_path / "one" / "checkpoints" / "latest.pt", weights_only=True)
    assert two["config"]["effective_batch_size"] == one["config"]["effective_batch_size"] == 2
    assert two["identity"] == one["identity"]
    for key, value in one["codec"].items():
        assert torch.allclose(two["codec"][key], value, atol=1e-5), f"codec.{key} differs between 2 ranks and 1"
    # evaluation is split across the ranks and gathered: the same scores as one process's
    log = (run_dir / "train.log").read_text()
    for rank in (0, 1):
        assert f"evaluation: rank {rank} of 2 scores" in log
    two_test = json.loads((run_dir / "status.json").read_text())["test"]
    one_test = json.loads((tmp_path / "one" / "status.json").read_text())["test"]
    assert two_test["mel_distance"] == pytest.approx(one_test["mel_distance"], rel=1e-4)
