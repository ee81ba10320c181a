"""Comparison tables: what varies, seed aggregates, two-axis pivots and the Pareto front."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.loading import META_COLUMNS

SEED_KEY = "trainer.seed"


def param_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if "." in c and "/" not in c and c not in META_COLUMNS]


def varying_params(frame: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Param columns that take more than one value across the runs (the sweep's axes).

    Keys that do not change what is trained (run names, paths, step budget; see
    ``codec.training.identity.UNTRAINED_KEYS``) are never axes.
    """
    from codec.training.identity import is_untrained_key

    varying = []
    for column in param_columns(frame):
        if column in exclude or is_untrained_key(column):
            continue
        if frame[column].astype(str).nunique(dropna=False) > 1:
            varying.append(column)
    return varying


def run_labels(frame: pd.DataFrame, exclude: Sequence[str] = ()) -> pd.Series:
    """A short label per run from the values of the varying params, or from the run's command-line
    overrides when those tell the same runs apart in fewer words (a sweep over whole options,
    ``quantizer=bsq,fsq``, varies every key the options do not share)."""
    axes = varying_params(frame, exclude)
    if not axes:
        return frame["run_name"].astype(str)
    by_params = (
        frame[axes].astype(str).apply(lambda row: " ".join(f"{k.split('.')[-1]}={v}" for k, v in row.items()), axis=1)
    )
    by_overrides = override_labels(frame, exclude)
    if (
        by_overrides is not None
        and by_overrides.nunique() == by_params.nunique()
        and by_overrides.str.len().mean() < by_params.str.len().mean()
    ):
        return by_overrides
    return by_params


def override_labels(frame: pd.DataFrame, exclude: Sequence[str] = ()) -> pd.Series | None:
    """Each run's command-line overrides (``overrides``, "a=1,b=2") without ``exclude`` keys."""
    if "overrides" not in frame.columns or frame["overrides"].isna().any():
        return None

    def label(overrides: str) -> str:
        kept = [o for o in str(overrides).split(",") if o and o.split("=", 1)[0].lstrip("+~") not in exclude]
        return " ".join(kept)

    return frame["overrides"].map(label)


def aggregate_seeds(frame: pd.DataFrame, metrics: Sequence[str], seed_key: str = SEED_KEY) -> pd.DataFrame:
    """Mean, std and count of ``metrics`` over seed replicates of each configuration.

    Configurations are the distinct values of the varying params other than the seed. Adds a
    ``<metric>`` column formatted as ``mean ± std``.
    """
    axes = varying_params(frame, exclude=(seed_key,))
    missing = [m for m in metrics if m not in frame.columns]
    if missing:
        raise KeyError(f"metrics {missing} are not in the sweep's columns")
    keys = frame[axes].astype(str) if axes else pd.DataFrame({"configuration": ["all"] * len(frame)})
    grouped = frame[list(metrics)].astype(float).groupby([keys[c] for c in keys.columns], sort=True)
    result = grouped.agg(["mean", "std", "count"])
    result.columns = [f"{metric}_{stat}" for metric, stat in result.columns]
    for metric in metrics:
        std = result[f"{metric}_std"].fillna(0.0)
        result[metric] = [f"{m:.4g} ± {s:.2g}" for m, s in zip(result[f"{metric}_mean"], std)]
    return result.reset_index()


def pivot(frame: pd.DataFrame, rows: str, columns: str, value: str, aggfunc: str = "mean") -> pd.DataFrame:
    """A two-axis table, e.g. quantizer.groups x quantizer.layers -> best/pesq_wb."""
    for key in (rows, columns, value):
        if key not in frame.columns:
            raise KeyError(
                f"{key!r} is not a column of the sweep (params use dotted config keys, metrics their MLflow keys)"
            )
    return frame.pivot_table(index=rows, columns=columns, values=value, aggfunc=aggfunc)


def pareto_front(
    frame: pd.DataFrame, cost: str = "model/bitrate_kbps", quality: str = "best/pesq_wb", higher_is_better: bool = True
) -> pd.DataFrame:
    """Runs not dominated by another run of lower-or-equal cost and better-or-equal quality."""
    data = frame[[cost, quality]].astype(float).to_numpy()
    sign = 1.0 if higher_is_better else -1.0
    keep = []
    for c, q in data:
        if np.isnan(c) or np.isnan(q):
            keep.append(False)
            continue
        dominated = np.any(
            (data[:, 0] <= c) & (sign * data[:, 1] >= sign * q) & ((data[:, 0] < c) | (sign * data[:, 1] > sign * q))
        )
        keep.append(not dominated)
    return frame[keep].sort_values(cost)
