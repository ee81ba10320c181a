"""Run and design labels of the sweep report."""

from __future__ import annotations

import pandas as pd

from analysis.tables import run_labels


def test_a_sweep_over_whole_options_is_labelled_by_its_overrides() -> None:
    """Found on the equal-bitrate sweep: quantizer=bsq,fsq_10bit,... vary every key the options do
    not share, and labels listed them all (``_target_=... bits=nan groups=1 ...``)."""
    frame = pd.DataFrame(
        {
            "overrides": ["quantizer=bsq,trainer.seed=1", "quantizer=fsq_10bit,trainer.seed=1"],
            "run_name": ["a", "b"],
            "quantizer._target_": ["BinarySphericalQuantizer", "FiniteScalarQuantizer"],
            "quantizer.bits": [10, None],
            "quantizer.levels": [None, "[4, 4, 4, 4, 4]"],
            "trainer.seed": [1, 1],
        }
    )
    assert list(run_labels(frame, exclude=("trainer.seed",))) == ["quantizer=bsq", "quantizer=fsq_10bit"]
