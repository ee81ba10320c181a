"""Paired statistics over seeds: is design A better than design B, or can this many seeds not tell?

Two designs trained on the same seeds and data are compared seed by seed: the difference of a
metric per seed, its mean, and a 95% confidence interval of that mean. With few seeds (under
``BOOTSTRAP_MIN_SEEDS``) the interval is the paired t interval (``scipy.stats.ttest_rel``; it
assumes the per-seed differences are roughly normal, which a handful of seeds cannot check); with
more, a BCa bootstrap of the mean difference (``scipy.stats.bootstrap``), which assumes nothing
about their shape. The method is named in every row. The verdict says "better" or "worse" only
when the interval excludes zero.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.tables import SEED_KEY, run_labels

BOOTSTRAP_MIN_SEEDS = 10
BITRATE = "model/bitrate_kbps"
COST = "cost/device_hours"


def finished_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs that trained to their end: guard-stopped, failed or running ones do not enter statistics."""
    return frame[frame["status"] == "FINISHED"] if "status" in frame.columns else frame


def designs(frame: pd.DataFrame, seed_key: str = SEED_KEY) -> pd.Series:
    """Each run's design: the label of everything that varies except the seed."""
    return run_labels(frame, exclude=(seed_key,))


def paired_difference(
    a: np.ndarray, b: np.ndarray, confidence: float = 0.95, method: str = "auto", random_state: int = 0
) -> dict[str, float | str]:
    """Mean of ``a - b`` over paired seeds with its confidence interval and the method used."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(a)
    if method == "auto":
        method = "bootstrap" if n >= BOOTSTRAP_MIN_SEEDS else "paired t"
    difference = a - b
    result: dict[str, float | str] = {
        "n_seeds": n,
        "mean_difference": float(difference.mean()) if n else np.nan,
        "ci_low": np.nan,
        "ci_high": np.nan,
        "p_value": np.nan,
        "method": method,
    }
    if n < 2:
        result["method"] = "none (fewer than 2 paired seeds)"
        return result
    if np.allclose(difference, difference[0]):
        # Identical differences: no spread to estimate (t is undefined); the interval is the point.
        result.update(ci_low=float(difference[0]), ci_high=float(difference[0]), p_value=0.0 if difference[0] else 1.0)
        return result
    test = stats.ttest_rel(a, b)
    result["p_value"] = float(test.pvalue)
    if method == "paired t":
        interval = test.confidence_interval(confidence)
        result.update(ci_low=float(interval.low), ci_high=float(interval.high))
    elif method == "bootstrap":
        boot = stats.bootstrap(
            (difference,),
            np.mean,
            confidence_level=confidence,
            method="BCa",
            n_resamples=9999,
            random_state=random_state,
        )
        result.update(ci_low=float(boot.confidence_interval.low), ci_high=float(boot.confidence_interval.high))
    else:
        raise ValueError(f"method={method!r} must be 'auto', 'paired t' or 'bootstrap'")
    return result


def verdict(row: dict, higher_is_better: bool) -> str:
    """'better' / 'worse' for design A against B when the interval excludes 0, else not distinguishable."""
    low, high = row["ci_low"], row["ci_high"]
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 <= high:
        return f"not distinguishable at {row['n_seeds']} seeds"
    a_larger = low > 0
    return "A better" if a_larger == higher_is_better else "A worse"


def paired_table(
    frame: pd.DataFrame,
    metric: str,
    higher_is_better: bool,
    seed_key: str = SEED_KEY,
    confidence: float = 0.95,
    method: str = "auto",
    pairs: Sequence[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """One row per pair of designs: paired difference A - B of ``metric`` on their shared seeds.

    Designs are labelled by everything that varies except the seed (or by a ``design`` column).

    ``pairs`` limits the comparisons (design labels); default: every pair. Each row has the two
    designs' means, bitrates and summed cost (device-hours of all their runs: the price of the verdict).
    """
    if metric not in frame.columns:
        raise KeyError(f"{metric!r} is not a column of the sweep")
    if seed_key not in frame.columns:
        raise KeyError(f"{seed_key} is not a column: paired statistics need seeds as a sweep axis (trainer.seed=1,2,3)")
    runs = finished_runs(frame).copy()
    if "design" not in runs.columns:  # callers that grouped already pass their labels
        runs["design"] = designs(runs, seed_key).to_numpy() if len(runs) else []
    by_design = {name: group.set_index(seed_key) for name, group in runs.groupby("design", sort=True)}
    chosen = pairs if pairs is not None else list(itertools.combinations(sorted(by_design), 2))
    rows = []
    for name_a, name_b in chosen:
        a, b = by_design[name_a], by_design[name_b]
        seeds = sorted(set(a.index[a[metric].notna()]) & set(b.index[b[metric].notna()]))
        values_a = a.loc[seeds, metric].astype(float).to_numpy()
        values_b = b.loc[seeds, metric].astype(float).to_numpy()
        row = {
            "design_a": name_a,
            "design_b": name_b,
            "metric": metric,
            "mean_a": float(values_a.mean()) if seeds else np.nan,
            "mean_b": float(values_b.mean()) if seeds else np.nan,
            **paired_difference(values_a, values_b, confidence, method),
        }
        row["verdict"] = verdict(row, higher_is_better)
        for side, group in (("a", a), ("b", b)):
            if BITRATE in group.columns:
                row[f"bitrate_kbps_{side}"] = float(group[BITRATE].astype(float).mean())
        if COST in runs.columns:
            row["cost_device_hours"] = float(pd.concat([a[COST], b[COST]]).astype(float).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def winners_by_bitrate(
    frame: pd.DataFrame, metric: str, higher_is_better: bool, seed_key: str = SEED_KEY, decimals: int = 2
) -> pd.DataFrame:
    """At each bitrate (rounded to ``decimals`` kbps), the design with the best mean and its verdict
    against the runner-up (paired over seeds)."""
    runs = finished_runs(frame).copy()
    if BITRATE not in runs.columns:
        raise KeyError(f"{BITRATE} is not a column of the sweep")
    runs["design"] = designs(runs, seed_key).to_numpy() if len(runs) else []
    runs["bitrate"] = runs[BITRATE].astype(float).round(decimals)
    rows = []
    for bitrate, group in runs.groupby("bitrate", sort=True):
        means = (
            group.groupby("design")[metric]
            .agg(["mean", "std", "count"])
            .sort_values("mean", ascending=not higher_is_better)
        )
        best = means.index[0]
        row = {
            "bitrate_kbps": bitrate,
            "winner": best,
            "mean": means.loc[best, "mean"],
            "std": means.loc[best, "std"],
            "seeds": int(means.loc[best, "count"]),
            "designs": len(means),
        }
        if len(means) > 1:
            runner = means.index[1]
            comparison = paired_table(group, metric, higher_is_better, seed_key, pairs=[(best, runner)])
            row.update(
                runner_up=runner,
                runner_up_mean=means.loc[runner, "mean"],
                verdict_vs_runner_up=comparison["verdict"]
                .iloc[0]
                .replace("A better", "better")
                .replace("A worse", "worse"),
            )
        else:
            row.update(runner_up="", runner_up_mean=np.nan, verdict_vs_runner_up="only design at this bitrate")
        if COST in group.columns:
            row["cost_device_hours"] = float(group[COST].astype(float).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def stopped_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs a guardrail stopped, with the guard and its reason (from the MLflow tags)."""
    if "guard" not in frame.columns:
        return pd.DataFrame(columns=["run", "guard", "stop_reason"])
    stopped = frame[frame["guard"].fillna("").astype(str) != ""]
    return pd.DataFrame(
        {
            "run": run_labels(frame).loc[stopped.index].to_numpy(),
            "guard": stopped["guard"].to_numpy(),
            "stop_reason": stopped.get("stop_reason", pd.Series("", index=stopped.index)).to_numpy(),
        }
    )
