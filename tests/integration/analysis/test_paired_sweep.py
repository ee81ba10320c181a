"""Paired statistics over seeds: a matched-budget sweep on the demo corpus, its report's paired and
winner tables checked against a direct scipy computation on the values the runs logged to MLflow."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from analysis.report import build_report
from tests.integration.sweep.test_local_sweeps import run

METRIC = "best/mel_distance"


@pytest.fixture(scope="module")
def matched_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ready equal_codebooks_4 sweep (1x4, 2x2, 4x1 x seeds 1-3), shrunk to the smoke codec."""
    root = tmp_path_factory.mktemp("matched")
    run(
        [
            "-m",
            "+sweep=equal_codebooks_4",
            "experiment=smoke",
            "trainer.max_steps=6",
            "trainer.eval_every=3",
            "eval.metrics=[mel_distance]",
        ],
        cwd=root,
    )
    return root


def logged_values(root: Path) -> dict[tuple[int, int], dict[int, float]]:
    """(groups, layers) -> {seed: best/mel_distance}, read straight from MLflow."""
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    values: dict[tuple[int, int], dict[int, float]] = {}
    for r in client.search_runs([experiment.experiment_id]):
        if r.data.tags.get("role") == "sweep":
            continue
        params = r.data.params
        design = (int(params["quantizer.groups"]), int(params["quantizer.layers"]))
        values.setdefault(design, {})[int(params["trainer.seed"])] = r.data.metrics[METRIC]
    return values


def test_matched_budget_sweep_report_matches_scipy_on_logged_values(matched_sweep: Path) -> None:
    values = logged_values(matched_sweep)
    assert sorted(values) == [(1, 4), (2, 2), (4, 1)] and all(sorted(v) == [1, 2, 3] for v in values.values())
    page = build_report("equal_codebooks_4", matched_sweep / "report", runs_dir=matched_sweep / "runs", metric=METRIC)
    html = page.read_text()
    assert "Paired comparisons over seeds" in html and "Winner at each bitrate" in html
    paired = pd.read_csv(page.parent / "paired.csv")
    assert len(paired) == 3  # every pair of the three layouts
    label = {(1, 4): "groups=1 layers=4", (2, 2): "groups=2 layers=2", (4, 1): "groups=4 layers=1"}
    for (design_a, design_b), row in zip(
        itertools.combinations(sorted(values, key=lambda d: label[d]), 2), paired.itertuples()
    ):
        assert (row.design_a, row.design_b) == (label[design_a], label[design_b])
        a = np.array([values[design_a][seed] for seed in (1, 2, 3)])
        b = np.array([values[design_b][seed] for seed in (1, 2, 3)])
        direct = stats.ttest_rel(a, b)
        interval = direct.confidence_interval(0.95)
        assert row.n_seeds == 3 and row.method == "paired t"
        assert row.mean_difference == pytest.approx((a - b).mean(), rel=1e-9)
        assert (row.ci_low, row.ci_high) == (
            pytest.approx(interval.low, rel=1e-9),
            pytest.approx(interval.high, rel=1e-9),
        )
        assert row.p_value == pytest.approx(direct.pvalue, rel=1e-9)
        lower_is_better_verdict = (
            "not distinguishable at 3 seeds"
            if interval.low <= 0 <= interval.high
            else "A better"
            if interval.high < 0
            else "A worse"
        )
        assert row.verdict == lower_is_better_verdict
        assert row.bitrate_kbps_a == row.bitrate_kbps_b == 2.0  # the budget is matched
        assert row.cost_device_hours > 0
    winners = pd.read_csv(page.parent / "winners.csv")
    assert len(winners) == 1 and winners.bitrate_kbps[0] == 2.0
    means = {label[d]: np.mean(list(v.values())) for d, v in values.items()}
    assert winners.winner[0] == min(means, key=means.get)
    assert winners["mean"][0] == pytest.approx(min(means.values()))
