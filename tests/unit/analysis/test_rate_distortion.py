"""Rate-distortion curves read from evaluate.py reports: monotonicity and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.rate_distortion import RateDistortionError, curve_table, is_monotone, load_curve


def test_monotone_follows_the_metric_direction() -> None:
    assert is_monotone([2.0, 3.0, 3.5], higher_is_better=True)
    assert not is_monotone([2.0, 3.0, 2.9], higher_is_better=True)
    assert is_monotone([1.2, 0.9, 0.9], higher_is_better=False)
    assert not is_monotone([1.2, 1.3], higher_is_better=False)


def test_curves_are_read_lowest_bitrate_first_and_bad_files_are_named(tmp_path: Path) -> None:
    report = tmp_path / "model.json"
    rows = [
        {"layers_per_group": 2, "bitrate_kbps": 2.0, "mel_distance": 0.8},
        {"layers_per_group": 1, "bitrate_kbps": 1.0, "mel_distance": 1.1},
    ]
    report.write_text(json.dumps({"metrics": {}, "rate_distortion": rows}))
    curve = load_curve(report, "mel_distance")
    assert list(curve["bitrate_kbps"]) == [1.0, 2.0]
    table = curve_table({"model": curve}, "mel_distance", higher_is_better=False)
    assert bool(table["monotone"].iloc[0]) and table["points"].iloc[0] == "1 kbps: 1.1, 2 kbps: 0.8"
    with pytest.raises(RateDistortionError, match="no metric 'pesq_wb'"):
        load_curve(report, "pesq_wb")
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"metrics": {"mel_distance": 1.0}}))
    with pytest.raises(RateDistortionError, match="bitrates=all"):
        load_curve(plain, "mel_distance")
