"""Guardrails: each monitor fires on its own condition and ends the run with its reason recorded in
status.json, MLflow and the sweep status table, while a healthy point of the same sweep finishes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from codec.config import compose_config
from codec.training.guards import COLLAPSE, DIVERGENCE, OVERPOWERING, Guardrails
from tests.conftest import REPO_ROOT
from tests.integration.sweep.test_local_sweeps import run, status

# Points of one sweep, each a test-only config file (a searchpath group), so they differ in what is
# trained and get their own run directories: guard settings alone are not part of a run's identity.
CASES = {
    "healthy": "",
    # Two codes: whatever the encoder does, one code takes (nearly) every frame.
    "collapse": "quantizer:\n  codebook_size: 2\n",
    # A generator learning rate of 1.0 sends the reconstruction far above its untrained baseline.
    "diverge": "trainer:\n  generator_optimizer:\n    lr: 1.0\n",
    # A frozen generator (tiny lr) against a fast discriminator: D separates, G's adversarial loss rises.
    "overpower": "trainer:\n  generator_optimizer:\n    lr: 1.0e-9\n  discriminator_optimizer:\n    lr: 0.01\n",
}
EXPECTED = {"collapse": COLLAPSE, "diverge": DIVERGENCE, "overpower": OVERPOWERING}
# The smoke codec's codebooks sit at a perplexity near 1.5 and its D loss starts at 2.0 (hinge),
# so the guard thresholds are set for that scale; the defaults are checked on the demo elsewhere.
GUARD_ARGS = [
    "guard.collapse_min_perplexity=1.1",
    "guard.overpowering_max_discriminator_loss=1.9",
    "guard.overpowering_patience=3",
]


def sweep_args(root: Path) -> list[str]:
    """The guarded sweep: the four cases of CASES (a config group under ``root/configs``) on the smoke codec."""
    return [
        "-m",
        "experiment=smoke",
        "guard=default",
        "quantizer=grvq_ema",
        f"hydra.searchpath=[file://{root / 'configs'}]",
        f"+guard_case={','.join(CASES)}",
        "trainer.max_steps=16",
        "trainer.eval_every=4",
        "trainer.log_every=1",
        "trainer.eval_at_start=true",
        *GUARD_ARGS,
    ]


@pytest.fixture(scope="module")
def guarded_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("guarded")
    group = root / "configs" / "guard_case"
    group.mkdir(parents=True)
    for name, body in CASES.items():
        (group / f"{name}.yaml").write_text("# @package _global_\n" + body)
    result = run(sweep_args(root), cwd=root)
    assert result.returncode == 0  # guard stops are outcomes, not failures: the sweep completes
    return root


def _status(root: Path, case: str) -> dict:
    [run_dir] = (root / "runs" / "multirun" / "smoke").glob(f"+guard_case={case},*")
    return json.loads((run_dir / "status.json").read_text())


def test_each_guard_stops_its_run_early_with_its_reason_while_the_healthy_point_finishes(guarded_sweep: Path) -> None:
    healthy = _status(guarded_sweep, "healthy")
    assert healthy["state"] == "finished" and healthy["step"] == 16 and "guard" not in healthy
    for case, guard in EXPECTED.items():
        stopped = _status(guarded_sweep, case)
        assert stopped["state"] == "stopped_early", (case, stopped)
        assert stopped["guard"] == guard, (case, stopped["reason"])
        assert 0 < stopped["step"] < 16 and stopped["checkpoint_step"] == stopped["step"]
    assert "> 2 x its best" in _status(guarded_sweep, "diverge")["reason"]
    assert "perplexity 1 < 1.1" in _status(guarded_sweep, "collapse")["reason"]


def test_guard_stops_reach_mlflow_and_the_status_table(guarded_sweep: Path) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{guarded_sweep / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    children = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("role") != "sweep"]
    by_case = {r.data.tags["overrides"].split("guard_case=")[1].split(",")[0]: r for r in children}
    assert by_case["healthy"].info.status == "FINISHED" and "guard" not in by_case["healthy"].data.tags
    for case, guard in EXPECTED.items():
        tags = by_case[case].data.tags
        assert by_case[case].info.status == "KILLED" and tags["guard"] == guard
        assert tags["stop_reason"] == _status(guarded_sweep, case)["reason"]
    table = status(guarded_sweep, "smoke")
    assert "stopped_early: 3" in table and "finished: 1" in table
    for case, guard in EXPECTED.items():
        assert f"+guard_case={case}: {guard} at step" in table
    # Cost of every point: device-hours, audio seen and peak memory, per run and in the table's total.
    assert "device-hours spent; nothing left to run" in table
    cost = _status(guarded_sweep, "healthy")["cost"]
    assert cost["audio_seconds"] == pytest.approx(16 * 2 * 0.25) and cost["peak_host_memory_mb"] > 50
    assert cost["device_hours"] == pytest.approx(cost["wall_seconds"] / 3600)
    assert by_case["healthy"].data.metrics["cost/audio_seconds"] == pytest.approx(8.0)


def test_a_rerun_sweep_skips_guard_stopped_runs(guarded_sweep: Path) -> None:
    result = run(sweep_args(guarded_sweep), cwd=guarded_sweep)
    assert "4 already finished, 0 to launch" in result.stdout + result.stderr


def test_guard_off_and_bad_thresholds(tmp_path: Path) -> None:
    assert not compose_config(["guard=off"]).guard
    with pytest.raises(ValueError, match="guard.divergence_factor=0.5 must exceed 1"):
        Guardrails(divergence_factor=0.5)
    with pytest.raises(ValueError, match="guard.collapse_patience=0 must be a positive integer"):
        Guardrails(collapse_patience=0)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "train.py"),
            "experiment=smoke",
            "guard=default",
            "logger=none",
            "guard.collapse_patience=0",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "invalid config 'guard': guard.collapse_patience=0 must be a positive integer" in result.stderr
    assert not list(tmp_path.glob("runs/smoke/*/checkpoints/*.pt"))  # rejected before training
