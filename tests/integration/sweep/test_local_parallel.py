"""A submitit_local sweep runs at most floor(cores / cpus_per_task) jobs at once, each pinned to
cores no running neighbour has, and each run sizes its threads to the cores it was given."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.integration.sweep.test_local_sweeps import TINY_RUN, run


def test_submitit_local_runs_one_job_per_core_slot_pinned_to_its_own_cores(tmp_path: Path) -> None:
    cores = sorted(os.sched_getaffinity(0))
    run(
        ["-m", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1", *TINY_RUN]
        + ["quantizer.groups=1,2", "quantizer.layers=1,2", "trainer.max_steps=6"],
        cwd=tmp_path,
    )
    sweep = json.loads((tmp_path / "runs" / "multirun" / "smoke" / "sweep.json").read_text())
    statuses = [json.loads((tmp_path / job["run_dir"] / "status.json").read_text()) for job in sweep["jobs"]]
    assert [s["state"] for s in statuses] == ["finished"] * 4
    spans = []
    for status in statuses:
        budget = status["cpu_budget"]
        assert budget["cores"] == 1 and len(budget["affinity"]) == 1 and budget["affinity"][0] in cores, budget
        spans.append((budget["since"], status["updated"], budget["affinity"][0]))
    # At every start, the runs already going number fewer than the slots, and none shares its core.
    for start, _, core in spans:
        others = [(s, e, c) for s, e, c in spans if s < start < e]
        assert len(others) < len(cores), spans
        assert core not in {c for _, _, c in others}, spans
