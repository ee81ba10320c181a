"""``evaluate.py checkpoint=... bitrates=all``: one checkpoint scored at every number of residual
layers per group it can decode, one row per bitrate in the JSON report and a CSV beside it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HANG_GUARD_S, REPO_ROOT
from tests.integration.sweep.test_local_sweeps import run


def evaluate(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "evaluate.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )


@pytest.mark.slow
def test_one_quantizer_dropout_checkpoint_gives_a_row_per_bitrate(tmp_path: Path) -> None:
    run(
        ["experiment=smoke", "quantizer.layers=3", "quantizer.dropout_prob=0.5", "trainer.max_steps=6",
         "trainer.eval_at_start=false", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
    )  # fmt: skip
    checkpoint = tmp_path / "run" / "checkpoints" / "latest.pt"
    result = evaluate([f"checkpoint={checkpoint}", "bitrates=all", "eval.metrics=[mel_distance]"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(checkpoint.with_suffix(".test_metrics.json").read_text())
    rows = report["rate_distortion"]
    assert [row["layers_per_group"] for row in rows] == [1, 2, 3]
    assert [row["bitrate_kbps"] for row in rows] == pytest.approx([1.0, 2.0, 3.0])  # 2 groups x 10 bits x 50 Hz
    assert rows[-1]["mel_distance"] == pytest.approx(report["metrics"]["mel_distance"])
    with open(checkpoint.with_suffix(".test_metrics.rate_distortion.csv")) as handle:
        table = list(csv.DictReader(handle))
    assert [float(row["bitrate_kbps"]) for row in table] == pytest.approx([1.0, 2.0, 3.0])

    refused = evaluate([f"checkpoint={checkpoint}", "bitrates=4", "eval.metrics=[mel_distance]"], tmp_path)
    assert refused.returncode == 2 and "bitrates=4: [4] outside 1..3" in refused.stderr
