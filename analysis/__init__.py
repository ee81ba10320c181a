"""From a sweep in MLflow to ablation tables, plots, audio comparisons and reports."""
from analysis.audio import audio_comparison_html
from analysis.loading import find_sweep, load_sweep
from analysis.plots import plot_codebook_usage, plot_pareto, plot_training_curves
from analysis.tables import aggregate_seeds, pareto_front, pivot, run_labels, varying_params

__all__ = [
    "aggregate_seeds",
    "audio_comparison_html",
    "find_sweep",
    "load_sweep",
    "pareto_front",
    "pivot",
    "plot_codebook_usage",
    "plot_pareto",
    "plot_training_curves",
    "run_labels",
    "varying_params",
]
