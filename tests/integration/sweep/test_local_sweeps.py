"""Sweeps: local multirun bookkeeping, sweep definitions, the status command and 2-process DDP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from codec.config import available_options
from codec.training.identity import is_untrained_key
from tests.conftest import HANG_GUARD_S, REPO_ROOT

TINY_RUN = ["experiment=smoke"]


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"train.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def codec_sweep(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m codec.sweep ARGS`` in ``cwd``, its output captured (the caller checks the exit code)."""
    return subprocess.run(
        [sys.executable, "-m", "codec.sweep", *args], cwd=cwd, capture_output=True, text=True, timeout=HANG_GUARD_S
    )


def status(cwd: Path, sweep: str) -> str:
    result = codec_sweep(cwd, "status", sweep)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("sweep", available_options("sweep"))
def test_sweep_definitions_compose(sweep: str) -> None:
    from hydra import compose, initialize_config_dir

    from codec.config import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"+sweep={sweep}"], return_hydra_config=True)
    assert cfg.sweep_name == sweep
    assert len(cfg.hydra.sweeper.params) >= 1


def test_local_sweep_runs_skips_finished_and_tolerates_failure(tmp_path: Path) -> None:
    """A local multirun: one parent MLflow run, a failing point that does not stop the others,
    a re-run that launches only what did not finish."""
    result = run(["-m", "quantizer.groups=1,2,3", *TINY_RUN, "trainer.eval_at_start=true"], cwd=tmp_path, check=False)
    assert result.returncode != 0  # the sweep reports its failed point
    sweep_dir = tmp_path / "runs" / "multirun" / "smoke"
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    states = {
        j["overrides"][0]: json.loads((Path(tmp_path / j["run_dir"]) / "status.json").read_text())["state"]
        for j in sweep["jobs"]
    }
    assert states == {
        "quantizer.groups=1": "finished",
        "quantizer.groups=2": "finished",
        "quantizer.groups=3": "failed",
    }

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if r.data.tags.get("role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep["parent_run_id"]]
    assert len(parent) == 1 and parent[0].info.status == "FAILED"
    assert sorted(r.info.status for r in children) == ["FAILED", "FINISHED", "FINISHED"]
    failed = [r for r in children if r.info.status == "FAILED"][0]
    assert "quantizer.groups=3" in failed.data.tags["error"]
    assert all(r.data.tags.get("sweep_id") == sweep["sweep_id"] for r in children)
    # Named for the UI: children by the overrides that vary, the parent by the sweep; the
    # experiment opens in MLflow's model-training view, not its GenAI overview.
    assert sorted(r.info.run_name for r in children) == ["groups=1", "groups=2", "groups=3"]
    assert parent[0].info.run_name == "sweep smoke"
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    # MLflow 3.17's Compare page plots the first three differing params (sorted) and colours them by
    # the first metric the runs share (its UI bundle: diffParamKeys.sort().slice(0,3) and
    # sharedMetricKeys.slice(0,1)). Found: model/params_generator against logger.run_name. Keys that
    # do not change what is trained are tags now, and the run's best metric is its first.
    finished = [client.get_run(r.info.run_id) for r in children if r.info.status == "FINISHED"]
    differing = sorted(k for k in finished[0].data.params if len({r.data.params.get(k) for r in finished}) > 1)
    assert differing[:3] == ["quantizer.groups"]
    assert [next(iter(r.data.metrics)) for r in finished] == ["valid/mel_distance"] * 2
    assert not [k for r in finished for k in r.data.params if is_untrained_key(k)]
    assert {r.data.tags["config.logger.run_name"] for r in finished} == {"groups=1", "groups=2"}

    table = status(tmp_path, "smoke")
    assert "quantizer.groups=3" in table and "failed: 1" in table and "finished: 2" in table
    missing = codec_sweep(tmp_path, "status", "nope")
    assert (
        missing.returncode == 2 and "no sweep named 'nope' (known sweeps under runs/multirun: smoke)" in missing.stderr
    )

    again = run(["-m", "quantizer.groups=1,2", *TINY_RUN, "trainer.eval_at_start=true"], cwd=tmp_path)
    assert "2 already finished, 0 to launch" in again.stdout + again.stderr


def test_status_command_reports_unknown_sweep(tmp_path: Path) -> None:
    result = codec_sweep(tmp_path, "status", "nope")
    assert result.returncode == 2 and "no sweep" in result.stderr


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_keeps_codebooks_identical(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29533",
        str(REPO_ROOT / "train.py"),
        *TINY_RUN,
        "trainer.max_steps=12",
        "trainer.device=cpu",
        "quantizer.rule=ema",
        "quantizer.dead_code_threshold=0.5",
        "trainer.checkpoint_every=4",
        f"hydra.run.dir={tmp_path / 'run'}",
        "logger=none",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    ranks = [torch.load(tmp_path / "run" / "ranks" / f"rank{r}_quantizer.pt") for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    assert any("embed" in k for k in ranks[0])
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    final = json.loads((tmp_path / "run" / "status.json").read_text())
    assert final["state"] == "finished" and final["step"] == 12


def test_sigterm_stops_a_local_sweep_after_checkpointing(tmp_path: Path) -> None:
    import os
    import signal
    import time

    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "train.py"),
            "-m",
            "quantizer.groups=1,2",
            *TINY_RUN,
            "trainer.max_steps=100000",
            "trainer.log_every=1",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sweep_dir = tmp_path / "runs" / "multirun" / "smoke"
    deadline = time.time() + 180
    status_files: list[Path] = []
    while time.time() < deadline:
        status_files = list(sweep_dir.glob("*/status.json"))
        if status_files and json.loads(status_files[0].read_text()).get("step", 0) >= 3:
            break
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=120) == 143
    assert len(status_files) == 1  # the second point never started
    status = json.loads(status_files[0].read_text())
    assert status["state"] == "preempted" and status["checkpoint_step"] == status["step"] >= 3
    assert (status_files[0].parent / "checkpoints" / "latest.pt").exists()


def test_discriminator_mix_sweeps_from_the_command_line(tmp_path: Path) -> None:
    run(["-m", "discriminator=[msstft],[msstft,mpd,msd]", *TINY_RUN], cwd=tmp_path)
    sweep = json.loads((tmp_path / "runs" / "multirun" / "smoke" / "sweep.json").read_text())
    assert [j["overrides"][0] for j in sweep["jobs"]] == ["discriminator=[msstft]", "discriminator=[msstft,mpd,msd]"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [
        r
        for r in client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
        if r.data.tags.get("role") != "sweep"
    ]
    mixes = sorted(sorted({k.split(".")[1] for k in r.data.params if k.startswith("discriminator.")}) for r in runs)
    assert mixes == [["mpd", "msd", "msstft"], ["msstft"]]
    assert all(r.info.status == "FINISHED" for r in runs)


# Shrinks every preset alike; ++ adds settings for discriminators a preset does not select (ignored).
TINY_EVERY_PRESET = [
    "encoder.channels=4",
    "encoder.dimension=16",
    "encoder.lstm_layers=0",
    "++discriminator.msstft.filters=4",
    "++discriminator.mpd.channels=[4,8]",
    "++discriminator.msd.channels=[4,4,8,8,8,8,8]",
    "++discriminator.mrd.channels=4",
    "trainer.max_steps=2",
    "trainer.batch_size=1",
    "trainer.segment_seconds=0.25",
    "trainer.log_every=1",
    "trainer.eval_at_start=false",
    "trainer.num_workers=0",
    "trainer.checkpoint_every=2",
    "eval.metrics=[mel_distance]",
    "eval.workers=0",
    "eval.max_utterances=1",
    "data.utterances.train=6",
    "data.utterances.valid=1",
    "data.utterances.test=1",
    "logger=none",
]


def test_every_preset_trains_through_the_cli(tmp_path: Path) -> None:
    """``train.py -m experiment=<every preset>`` with tiny overrides: each trains 2 steps and
    builds its own composition (its sample rate, quantizer class and codebook count)."""
    presets = [p for p in available_options("experiment")]
    run(["-m", f"experiment={','.join(presets)}", *TINY_EVERY_PRESET, "sweep_name=presets"], cwd=tmp_path)
    sweep = json.loads((tmp_path / "runs" / "multirun" / "presets" / "sweep.json").read_text())
    assert len(sweep["jobs"]) == len(presets)
    for job in sweep["jobs"]:
        run_dir = Path(job["run_dir"])
        status_file = json.loads((run_dir / "status.json").read_text())
        assert status_file["state"] == "finished" and status_file["step"] == 2, job["overrides"]
        config = json.loads(json.dumps(__import__("yaml").safe_load((run_dir / "resolved_config.yaml").read_text())))
        preset = next(o.split("=", 1)[1] for o in job["overrides"] if o.startswith("experiment="))
        assert config["name"] == preset
        state = torch.load(run_dir / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
        quantizer_keys = [k for k in state["codec"] if k.startswith("quantizer.")]
        if config["quantizer"]["_target_"].endswith("GroupResidualVQ"):
            codebooks = {k.split(".")[2] for k in quantizer_keys if k.startswith("quantizer.codebooks.")}
            assert len(codebooks) == config["quantizer"]["groups"] * config["quantizer"]["layers"], preset


def test_child_run_names_show_only_what_varies() -> None:
    from codec.sweep.registry import PlannedJob, Sweep

    jobs = [
        PlannedJob(i, overrides, f"/runs/{i}", "id")
        for i, overrides in enumerate(
            [
                ["experiment=smoke", "quantizer.groups=1", "quantizer.layers=2", "encoder.dimension=16"],
                ["experiment=smoke", "quantizer.groups=2", "quantizer.layers=1", "encoder.dimension=32"],
            ]
        )
    ]
    names = Sweep("s", "/runs/multirun/s", jobs).child_run_names()
    assert names == {0: "dimension=16 groups=1 layers=2", 1: "dimension=32 groups=2 layers=1"}
    clash = [
        PlannedJob(i, [f"discriminator.mpd.channels={c}", f"discriminator.msd.channels={c}"], f"/r/{i}", "id")
        for i, c in enumerate(["[4]", "[8]"])
    ]
    assert (
        Sweep("s", "/r", clash).child_run_names()[0] == "discriminator.mpd.channels=[4] discriminator.msd.channels=[4]"
    )


def test_quantizer_sweep_trains_four_different_models(tmp_path: Path) -> None:
    """``-m quantizer=grvq,rvq,single_vq,fsq``: four quantizers, each as its option file says
    (the first round trained the demo's 2x2 GRVQ four times under four names)."""
    run(["-m", *TINY_RUN, "logger=none", "quantizer=grvq,rvq,single_vq,fsq"], cwd=tmp_path)
    built = {}
    for option in ("grvq", "rvq", "single_vq", "fsq"):
        run_dir = tmp_path / "runs" / "multirun" / "smoke" / f"experiment=smoke,quantizer={option}"
        state = torch.load(run_dir / "checkpoints" / "latest.pt", map_location="cpu", weights_only=True)
        assert state["step"] == 4
        quantizer = {
            k: tuple(v.shape)
            for k, v in state["codec"].items()
            if k.startswith("quantizer.") and k.endswith(("embed", "in_proj.weight"))
        }
        built[option] = quantizer
    assert len(built["grvq"]) == 4 and all(
        shape == (1024, 8) for shape in built["grvq"].values()
    )  # 2 groups x 2 layers, 16/2 dims
    assert len(built["rvq"]) == 8 and all(shape == (1024, 16) for shape in built["rvq"].values())
    assert list(built["single_vq"].values()) == [(4096, 16)]
    assert list(built["fsq"].values()) == [(4, 16, 1)]  # one group projected to the 4 FSQ levels
