"""From a sweep in MLflow to ablation tables, plots, audio comparisons and reports."""

from analysis.audio import audio_comparison_html
from analysis.loading import find_sweep, load_sweep
from analysis.plots import plot_codebook_usage, plot_pareto, plot_training_curves
from analysis.stats import paired_difference, paired_table, stopped_runs, winners_by_bitrate
from analysis.tables import aggregate_seeds, pareto_front, pivot, run_labels, varying_params

__all__ = [
    "aggregate_seeds",
    "audio_comparison_html",
    "find_sweep",
    "load_sweep",
    "paired_difference",
    "paired_table",
    "pareto_front",
    "pivot",
    "plot_codebook_usage",
    "plot_pareto",
    "plot_training_curves",
    "run_labels",
    "stopped_runs",
    "varying_params",
    "winners_by_bitrate",
]
