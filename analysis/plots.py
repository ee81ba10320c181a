"""PNG plots of a sweep: quality vs bitrate with its Pareto front, codebook usage, curves."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from analysis.tables import pareto_front, run_labels  # noqa: E402


def _index(pattern: re.Pattern[str], column: str) -> int:
    """The codebook index captured by ``pattern`` in a column it matched."""
    match = pattern.match(column)
    assert match is not None
    return int(match.group(1))


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_pareto(
    frame: pd.DataFrame,
    path: Path,
    cost: str = "model/bitrate_kbps",
    quality: str = "best/pesq_wb",
    higher_is_better: bool = True,
) -> Path:
    """Every run as a point, the non-dominated ones joined into the front."""
    labels = run_labels(frame)
    fig, axis = plt.subplots(figsize=(7, 4.5))
    axis.scatter(frame[cost], frame[quality], color="tab:blue", zorder=2)
    for x, y, label in zip(frame[cost], frame[quality], labels):
        axis.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    front = pareto_front(frame, cost, quality, higher_is_better)
    axis.plot(front[cost], front[quality], color="tab:red", marker="o", label="Pareto front", zorder=3)
    axis.set_xlabel(cost)
    axis.set_ylabel(quality)
    axis.grid(alpha=0.3)
    axis.legend()
    return _save(fig, path)


def plot_codebook_usage(frame: pd.DataFrame, path: Path, split: str = "test", stat: str = "usage") -> Path:
    """Per-codebook usage (or perplexity, dead codes) of each run, as grouped bars."""
    pattern = re.compile(rf"^{split}/codebook_(\d+)_{stat}$")
    columns = sorted((c for c in frame.columns if pattern.match(c)), key=lambda c: _index(pattern, c))
    if not columns:
        raise KeyError(f"no {split}/codebook_NN_{stat} metrics in the sweep")
    labels = run_labels(frame)
    fig, axis = plt.subplots(figsize=(max(6, 0.6 * len(columns) * len(frame) / 3), 4))
    width = 0.8 / len(frame)
    for i, (label, (_, row)) in enumerate(zip(labels, frame.iterrows())):
        values = [row[c] for c in columns]
        axis.bar([k + i * width for k in range(len(columns))], values, width=width, label=label)
    axis.set_xticks([k + 0.4 - width / 2 for k in range(len(columns))])
    axis.set_xticklabels([str(_index(pattern, c)) for c in columns])
    axis.set_xlabel("codebook (group-major index)")
    axis.set_ylabel(f"{split} {stat}")
    axis.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_training_curves(
    frame: pd.DataFrame,
    path: Path,
    metrics: Sequence[str] = ("train/mel", "valid/mel_distance"),
    tracking_uri: str | None = None,
) -> Path:
    """One panel per metric, one line per run, from the full MLflow history."""
    client = MlflowClient(tracking_uri=tracking_uri or frame.attrs.get("tracking_uri"))
    labels = run_labels(frame)
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        for label, run_id in zip(labels, frame["run_id"]):
            history = sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
            if history:
                axis.plot([m.step for m in history], [m.value for m in history], label=label)
        axis.set_title(metric)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def plot_rate_distortion(
    curves: Mapping[str, pd.DataFrame],
    path: Path,
    metric: str,
    retrained: pd.DataFrame | None = None,
    retrained_columns: tuple[str, str] = ("model/bitrate_kbps", ""),
    labels: Sequence[str] = (),
) -> Path:
    """Each checkpoint's curve as a line with markers; each retrained run as a labelled cross."""
    fig, axis = plt.subplots(figsize=(7, 4.5))
    for label, curve in curves.items():
        axis.plot(curve["bitrate_kbps"], curve[metric], marker="o", label=f"{label} (one checkpoint)")
    x_column, y_column = retrained_columns
    if retrained is not None and len(retrained) and y_column in retrained.columns:
        axis.scatter(retrained[x_column], retrained[y_column], marker="x", color="black", label="retrained runs")
        for x, y, label in zip(retrained[x_column], retrained[y_column], labels):
            axis.annotate(str(label), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axis.set_xlabel("bitrate (kbps)")
    axis.set_ylabel(metric)
    axis.grid(alpha=0.3)
    axis.legend()
    return _save(fig, path)
