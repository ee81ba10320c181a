"""``codec-sweep decide`` end to end on the smoke codec, through the CLI.

Four designs x 3 seeds, compared on their bitrate: it differs by a fixed amount between designs
with different codebook counts (decided at the first look) and not at all between 1x2 and 2x1
(never decided). So decide must add seeds to those two designs only, stop at the cap, and add
nothing when run again.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import HANG_GUARD_S
from tests.integration.sweep.test_local_sweeps import codec_sweep, run

UNDECIDED = ("groups=1 layers=2", "groups=2 layers=1")


def decide(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return codec_sweep(cwd, "decide", "smoke", "--metric", "model/bitrate_kbps", *args)


def test_decide_adds_seeds_to_the_undecided_pair_only_and_stops(tmp_path: Path) -> None:
    run(["-m", "experiment=smoke", "quantizer.groups=1,2", "quantizer.layers=1,2", "trainer.seed=1,2,3"], tmp_path)
    sweep_dir = tmp_path / "runs" / "multirun" / "smoke"

    plan = decide(tmp_path, "--max-seeds", "4", "--dry-run")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "dry run: nothing launched" in plan.stdout and "next round: 2 run(s)" in plan.stdout
    assert not (sweep_dir / "decide").exists()

    broke = decide(tmp_path, "--max-seeds", "4", "--budget", "1e-9")
    assert broke.returncode == 0 and "stopped by the budget:" in broke.stdout, broke.stderr[-3000:]
    assert f"{UNDECIDED[0]}  vs  {UNDECIDED[1]}: undecided at 3 seeds (out of budget)" in broke.stdout
    assert "would pass --budget 1e-09" in broke.stdout and not (sweep_dir / "decide").exists()

    first = decide(tmp_path, "--max-seeds", "4")
    assert first.returncode == 0, first.stderr[-3000:]
    launched = [line for line in first.stdout.splitlines() if line.startswith("round 1:")]
    assert sorted(launched) == [f"round 1: {name}: seeds 4" for name in UNDECIDED], first.stdout
    assert "groups=1 layers=1  vs  groups=2 layers=2: A worse (decided at 3 seeds)" in first.stdout
    assert f"{UNDECIDED[0]}  vs  {UNDECIDED[1]}: undecided at 4 seeds (the cap)" in first.stdout
    assert "nothing to add" in first.stdout

    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    client = MlflowClient(tracking_uri=sweep["tracking_uri"])
    added = client.search_runs([sweep["experiment_id"]], "tags.decide_round = '1'")
    assert sorted(r.data.params["trainer.seed"] for r in added) == ["4", "4"]
    assert {r.data.tags["mlflow.parentRunId"] for r in added} == {sweep["parent_run_id"]}
    assert {r.data.tags["sweep_id"] for r in added} == {sweep["sweep_id"]} and {r.info.status for r in added} == {
        "FINISHED"
    }
    assert client.get_run(sweep["parent_run_id"]).info.status == "FINISHED"  # the round did not close it again

    again = decide(tmp_path, "--max-seeds", "4")
    assert again.returncode == 0 and "round " not in again.stdout.replace("after round", "")
    assert len(client.search_runs([sweep["experiment_id"]], "tags.decide_round = '1'")) == 2

    moved = decide(tmp_path, "--max-seeds", "6")
    assert moved.returncode == 2 and "fixed --metric model/bitrate_kbps --max-seeds 4" in moved.stderr

    report = subprocess.run(
        [sys.executable, "-m", "analysis.report", "smoke", "--out", str(tmp_path / "report")],
        cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Sequential verdicts on model/bitrate_kbps (codec-sweep decide)" in page
    assert "undecided at 4 seeds (the cap)" in page and "round 1: 2 runs" in page
