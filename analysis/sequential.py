"""Sequential paired comparisons: add seeds until each pair of designs is decided, with the error
rate controlled however many times the data are looked at.

Looking at a paired t-test after every added seed and stopping at the first p < 0.05 raises the
false-verdict rate well above 5% (``naive_verdicts``; about 17% over 8 looks). The design here is a
**group-sequential paired t-test** (Jennison & Turnbull, *Group Sequential Methods*, 2000):

- Looks at fixed paired-seed counts (``looks``, e.g. 3, 6, 10), set before the first look and kept.
- At a look with n seeds, the paired t statistic is mapped to a z score through its exact null
  distribution (``z = Phi^-1(F_t(t; n-1))``), and the pair is decided when ``|z|`` reaches the
  power-family boundary ``c * (N / n) ** (rho / 2)`` (N the last look; ``rho = 1`` is O'Brien and
  Fleming's shape; the default ``rho = 2`` spends even less early, keeping the last look close to a
  fixed-sample test).
- ``c`` is calibrated for each level by simulating the null: under Gaussian differences the
  sequence of t statistics does not depend on the unknown variance, so the simulated crossing
  probability is exact up to Monte-Carlo error (100,000 paths, seeded).
- Across the pairs of a sweep, Holm's step-down with alpha recycling (Maurer & Bretz, 2013): while
  k of m pairs are decided the others are tested at ``alpha / (m - k)``; decided pairs pass their
  level on. The family-wise error rate stays at ``alpha``.
- Intervals are repeated confidence intervals: the mean difference plus or minus the boundary's
  t quantile times its standard error, valid at every look.

A pair not decided by the last look is "undecided at N seeds", never a guess. The simulation test
(``tests/unit/analysis/test_sequential.py``) measures the false-verdict rate under Gaussian and
heavy-tailed noise and the power against a one-standard-deviation difference.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.stats import designs, finished_runs
from analysis.tables import SEED_KEY

METHOD = "group-sequential paired t-test, power-family boundary (rho={rho}), Holm alpha recycling over {m} pair(s)"


@dataclass(frozen=True)
class SequentialDesign:
    """When to look (paired seed counts) and how strict each look is."""

    looks: tuple[int, ...] = (3, 6, 10)
    alpha: float = 0.05
    rho: float = 2.0

    def __post_init__(self) -> None:
        if len(self.looks) < 1 or list(self.looks) != sorted(set(self.looks)) or self.looks[0] < 2:
            raise ValueError(f"looks={self.looks} must be increasing seed counts, the first at least 2")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha={self.alpha} must lie in (0, 1)")

    @property
    def max_seeds(self) -> int:
        return self.looks[-1]

    def boundary(self, n: int, level: float) -> float:
        """The |z| a pair with ``n`` paired seeds must reach at this look, at ``level``."""
        return _critical(self.looks, self.rho, level) * (self.max_seeds / n) ** (self.rho / 2)

    def describe(self, pairs: int) -> str:
        return METHOD.format(rho=self.rho, m=pairs) + f", looks at {', '.join(map(str, self.looks))} seeds"


def default_looks(first: int, max_seeds: int) -> tuple[int, ...]:
    """First look at the seeds the sweep has, one halfway, the last at the cap."""
    first = max(2, first)
    if max_seeds <= first:
        return (first,)
    middle = (first + max_seeds) // 2
    return tuple(sorted({first, middle, max_seeds}))


CALIBRATION_PATHS = 100_000


@functools.lru_cache(maxsize=64)
def _null_maxima(looks: tuple[int, ...], rho: float) -> np.ndarray:
    """Sorted max over looks of ``|z_n| / (N/n)^(rho/2)`` on simulated Gaussian null paths."""
    rng = np.random.default_rng(20261129)
    paths = rng.standard_normal((CALIBRATION_PATHS, looks[-1]))
    scaled = np.stack(
        [np.abs(z_scores(paths[:, :n])) * (n / looks[-1]) ** (rho / 2) for n in looks],
        axis=1,
    )
    return np.sort(scaled.max(axis=1))


@functools.lru_cache(maxsize=1024)
def _critical(looks: tuple[int, ...], rho: float, level: float) -> float:
    maxima = _null_maxima(looks, rho)
    return float(np.quantile(maxima, 1 - level))


def z_scores(differences: np.ndarray) -> np.ndarray:
    """Per row, the paired t statistic of the differences mapped to a standard normal score.

    A row whose differences are all equal has no spread: its score is +-inf when they are not
    zero (a deterministic difference, e.g. a bitrate) and 0 when they are."""
    differences = np.atleast_2d(np.asarray(differences, dtype=float))
    n = differences.shape[1]
    mean = differences.mean(axis=1)
    spread = differences.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (spread / math.sqrt(n))
    z = stats.norm.ppf(stats.t.cdf(t, n - 1))
    flat = ~(spread > 0)
    z[flat] = 0.0
    shifted = flat & (mean != 0)
    z[shifted] = np.sign(mean[shifted]) * np.inf
    return z


@dataclass
class PairVerdict:
    design_a: str
    design_b: str
    seeds: int
    mean_difference: float
    ci_low: float
    ci_high: float
    z: float
    boundary: float
    decided_at: int | None
    direction: int  # +1: A larger, -1: B larger, 0: undecided

    def verdict(self, higher_is_better: bool, max_seeds: int, out_of_budget: bool = False) -> str:
        if self.direction:
            better = (self.direction > 0) == higher_is_better
            return f"A {'better' if better else 'worse'} (decided at {self.decided_at} seeds)"
        if self.seeds >= max_seeds:
            return f"undecided at {self.seeds} seeds (the cap)"
        if out_of_budget:
            return f"undecided at {self.seeds} seeds (out of budget)"
        return f"undecided at {self.seeds} seeds"


def sequential_verdicts(
    differences: Mapping[tuple[str, str], Sequence[float]], design: SequentialDesign
) -> list[PairVerdict]:
    """Each pair's verdict from its paired differences in seed order (the first n are what the look
    at n saw). Looks are replayed in order, so the answer depends on the data only: running again
    decides nothing new."""
    pairs = list(differences)
    data = {pair: np.asarray(values, dtype=float) for pair, values in differences.items()}
    decided: dict[tuple[str, str], tuple[int, int]] = {}
    for look in design.looks:
        while len(decided) < len(pairs):
            level = design.alpha / (len(pairs) - len(decided))
            newly = [
                pair
                for pair in pairs
                if pair not in decided
                and len(data[pair]) >= look
                and abs(z_scores(data[pair][:look])[0]) >= design.boundary(look, level)
            ]
            if not newly:
                break
            for pair in newly:
                decided[pair] = (look, int(np.sign(data[pair][:look].mean())))
    level = design.alpha / max(1, len(pairs) - len(decided))
    return [_summary(pair, data[pair], design, level, decided.get(pair)) for pair in pairs]


def _summary(
    pair: tuple[str, str], values: np.ndarray, design: SequentialDesign, level: float, decided: tuple[int, int] | None
) -> PairVerdict:
    """The pair at its last look reached (or where it was decided), with its repeated CI."""
    reached = [look for look in design.looks if look <= len(values)]
    n = decided[0] if decided else (reached[-1] if reached else len(values))
    shown = values[:n]
    mean = float(shown.mean()) if n else math.nan
    low = high = z = bound = math.nan
    if n >= 2:
        bound = design.boundary(n, level) if n in design.looks else math.nan
        z = float(z_scores(shown)[0])
        if math.isfinite(bound):
            t_quantile = stats.t.ppf(stats.norm.cdf(bound), n - 1)
            half = float(t_quantile * shown.std(ddof=1) / math.sqrt(n))
            low, high = mean - half, mean + half
    return PairVerdict(
        pair[0], pair[1], n, mean, low, high, z, bound, decided[0] if decided else None, decided[1] if decided else 0
    )


def naive_verdicts(differences: np.ndarray, first: int, alpha: float = 0.05) -> np.ndarray:
    """The self-deceiving loop, for contrast: a paired t-test after every seed from ``first`` on,
    stopping at the first p < alpha. Returns the direction per row (0: never significant)."""
    direction = np.zeros(len(differences), dtype=int)
    for n in range(first, differences.shape[1] + 1):
        z = z_scores(differences[:, :n])
        hit = (direction == 0) & (2 * stats.norm.sf(np.abs(z)) < alpha)
        direction[hit] = np.sign(z[hit]).astype(int)
    return direction


def seeds_needed(spread: float, effect: float, design: SequentialDesign, level: float) -> int | None:
    """Paired seeds for 80% power against ``effect`` at the last look's boundary (normal
    approximation); None when the effect is zero or the spread unknown."""
    if not (effect and math.isfinite(spread) and spread > 0):
        return None
    needed = ((design.boundary(design.max_seeds, level) + stats.norm.ppf(0.8)) * spread / abs(effect)) ** 2
    return int(math.ceil(needed))


def labelled_runs(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The finished runs that logged ``metric``, with a ``design`` column: everything that varies
    among them but the seed. The one labelling that verdicts and launches both use."""
    if metric not in frame.columns:
        raise KeyError(f"{metric!r} is not a metric of the sweep")
    if SEED_KEY not in frame.columns:
        raise KeyError(f"{SEED_KEY} is not a column: deciding needs seeds as a sweep axis (trainer.seed=1,2,3)")
    runs = finished_runs(frame)
    runs = runs[runs[metric].notna()].copy()
    runs["design"] = designs(runs).astype(str).to_numpy() if len(runs) else []
    return runs


def design_values(frame: pd.DataFrame, metric: str) -> dict[str, dict[int, float]]:
    """Finished runs' ``metric`` by design and seed."""
    values: dict[str, dict[int, float]] = {}
    for _, run in labelled_runs(frame, metric).iterrows():
        values.setdefault(run["design"], {})[int(run[SEED_KEY])] = float(run[metric])
    return values


def paired_differences(values: Mapping[str, Mapping[int, float]]) -> dict[tuple[str, str], list[float]]:
    """Every pair of designs: A - B on their shared seeds, in seed order."""
    pairs = {}
    for a, b in itertools.combinations(sorted(values), 2):
        seeds = sorted(set(values[a]) & set(values[b]))
        pairs[(a, b)] = [values[a][s] - values[b][s] for s in seeds]
    return pairs


def verdict_table(
    values: Mapping[str, Mapping[int, float]],
    design: SequentialDesign,
    higher_is_better: bool,
    out_of_budget: bool = False,
) -> pd.DataFrame:
    """One row per pair: seeds, mean difference A - B with its repeated CI, z against its boundary,
    and the verdict (decided, undecided at the cap, out of budget)."""
    rows = []
    for v in sequential_verdicts(paired_differences(values), design):
        rows.append(
            {
                "design_a": v.design_a,
                "design_b": v.design_b,
                "seeds": v.seeds,
                "mean_difference": v.mean_difference,
                "ci_low": v.ci_low,
                "ci_high": v.ci_high,
                "z": v.z,
                "boundary": v.boundary,
                "verdict": v.verdict(higher_is_better, design.max_seeds, out_of_budget),
                "decided": bool(v.direction),
            }
        )
    return pd.DataFrame(rows)
