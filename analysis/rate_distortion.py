"""Rate-distortion from one checkpoint beside retrained points.

``evaluate.py checkpoint=... bitrates=all`` writes one row per bitrate a quantizer-dropout model
can decode (``rate_distortion`` in its JSON). This module reads those files, says whether each
curve is monotone (every added layer improves the metric), and plots the curves with a sweep's
retrained runs, one point per run, on the same axes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

BITRATE = "bitrate_kbps"


class RateDistortionError(ValueError):
    """A file that is not ``evaluate.py bitrates=...`` output, or lacks the metric asked for."""


def load_curve(path: Path, metric: str) -> pd.DataFrame:
    """The rows of one ``evaluate.py bitrates=...`` report, lowest bitrate first: bitrate and ``metric``."""
    report = json.loads(Path(path).read_text())
    rows = report.get("rate_distortion") if isinstance(report, dict) else None
    if not rows:
        raise RateDistortionError(f"{path} has no rate_distortion rows: write it with evaluate.py ... bitrates=all")
    frame = pd.DataFrame(rows)
    if metric not in frame.columns:
        raise RateDistortionError(f"{path} has no metric {metric!r}; it has {sorted(set(frame.columns) - {BITRATE})}")
    return frame[["layers_per_group", BITRATE, metric]].sort_values(BITRATE).reset_index(drop=True)


def is_monotone(values: Sequence[float], higher_is_better: bool) -> bool:
    """Whether each step up in bitrate improves (or keeps) the metric."""
    steps = [b - a for a, b in zip(values, values[1:])]
    return all(s >= 0 for s in steps) if higher_is_better else all(s <= 0 for s in steps)


def curve_table(curves: Mapping[str, pd.DataFrame], metric: str, higher_is_better: bool) -> pd.DataFrame:
    """One row per curve: its points and whether it is monotone."""
    return pd.DataFrame(
        [
            {
                "checkpoint": label,
                "points": ", ".join(f"{b:.3g} kbps: {v:.4g}" for b, v in zip(curve[BITRATE], curve[metric])),
                "monotone": is_monotone(list(curve[metric]), higher_is_better),
            }
            for label, curve in curves.items()
        ]
    )


def load_curves(paths: Sequence[Path], metric: str) -> dict[str, pd.DataFrame]:
    """Curves keyed by a label made of the file's name (its checkpoint's run when recorded)."""
    curves: dict[str, pd.DataFrame] = {}
    for path in paths:
        curves[Path(path).stem] = load_curve(Path(path), metric)
    return curves
