"""``python -m analysis.report SWEEP --out DIR``: a self-contained HTML report and a CSV.

The report holds the summary table, seed aggregates, a two-axis pivot, the Pareto plot of
quality vs bitrate, training curves, codebook usage and audio players for one utterance.
"""

from __future__ import annotations

import argparse
import base64
import html
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.audio import audio_comparison_html
from analysis.loading import load_sweep
from analysis.plots import plot_codebook_usage, plot_pareto, plot_rate_distortion, plot_training_curves
from analysis.rate_distortion import curve_table, load_curves
from analysis.stats import BOOTSTRAP_MIN_SEEDS, designs, paired_table, stopped_runs, winners_by_bitrate
from analysis.tables import SEED_KEY, aggregate_seeds, pivot, run_labels, varying_params

# Quality metrics in order of preference, with whether higher is better.
QUALITY_METRICS = (
    ("best/pesq_wb", True),
    ("best/stoi", True),
    ("test/pesq_wb", True),
    ("best/mel_distance", False),
    ("test/mel_distance", False),
)
SUMMARY_COLUMNS = (
    "status",
    "guard",
    "model/bitrate_kbps",
    "model/tokens_per_second",
    "model/params_generator",
    "best/pesq_wb",
    "best/stoi",
    "best/mel_distance",
    "test/pesq_wb",
    "test/stoi",
    "test/mel_distance",
    "wall_time_s",
    "cost/device_hours",
    "cost/audio_seconds",
    "cost/peak_host_memory_mb",
)


LOWER_IS_BETTER = ("mel_distance", "wer", "cer", "waveform_l1", "_loss", "mcd", "f0_rmse", "voicing_error")


def quality_metric(frame: pd.DataFrame, chosen: str | None = None) -> tuple[str, bool]:
    """The metric the report ranks by: ``chosen``, or the first of QUALITY_METRICS the sweep has."""
    if chosen:
        if chosen not in frame.columns or not frame[chosen].notna().any():
            raise KeyError(f"--metric {chosen} is not a metric of this sweep")
        return chosen, not any(marker in chosen for marker in LOWER_IS_BETTER)
    for metric, higher in QUALITY_METRICS:
        if metric in frame.columns and frame[metric].notna().any():
            return metric, higher
    raise KeyError("the sweep has no quality metric (best/pesq_wb, best/stoi or best/mel_distance)")


def decide_sections(frame: pd.DataFrame) -> list[str]:
    """The sequential verdicts of ``codec-sweep decide``, if it ran on this sweep: each pair's seeds,
    repeated CI and whether it ended decided, undecided at the cap, or out of budget."""
    from analysis.sequential import design_values, verdict_table
    from codec.sweep.decide import DecidePlan

    sweep_dir = frame.attrs.get("sweep_dir")
    plan = DecidePlan.load(Path(sweep_dir)) if sweep_dir else None
    if plan is None:
        return []
    values = design_values(frame, plan.metric)
    table = verdict_table(values, plan.design, plan.higher_is_better, plan.stopped_by_budget)
    rounds = ", ".join(f"round {r['round']}: {sum(len(s) for s in r['seeds'].values())} runs" for r in plan.rounds)
    return [
        f"<h2>Sequential verdicts on {html.escape(plan.metric)} (codec-sweep decide)</h2>",
        f"<p>{html.escape(plan.design.describe(len(table)))}; alpha {plan.alpha}; "
        f"{html.escape(rounds or 'no rounds')}.</p>",
        _table(table.drop(columns=["decided"])),
    ]


def split_by_outcome(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs to compare, the rest). Finished runs and runs a guardrail stopped (their best-so-far
    metrics are real) are compared; failed, stopped and still running ones are listed apart, so a
    failed run's missing params never make every key look like an axis."""
    guarded = frame["guard"].fillna("").astype(str) != "" if "guard" in frame else False
    complete = (frame["status"] == "FINISHED") | guarded
    return frame[complete].reset_index(drop=True), frame[~complete].reset_index(drop=True)


OUTCOME_NAMES = {"FAILED": "failed", "KILLED": "stopped", "RUNNING": "running", "SCHEDULED": "scheduled"}


def outcome_counts(unfinished: pd.DataFrame, never_started: list[str]) -> str:
    counts = unfinished["status"].map(lambda s: OUTCOME_NAMES.get(s, s)).value_counts().to_dict()
    if never_started:
        counts["never started"] = len(never_started)
    return ", ".join(f"{name}: {count}" for name, count in counts.items()) or "no runs"


def unfinished_table(unfinished: pd.DataFrame, never_started: list[str]) -> pd.DataFrame:
    """The runs that were not compared, with why: each one's overrides, outcome and reason."""
    rows = [
        {
            "run": run.get("run_name", ""),
            "outcome": OUTCOME_NAMES.get(run["status"], run["status"]),
            "reason": run.get("error") or run.get("stop_reason") or "",
        }
        for _, run in unfinished.iterrows()
    ]
    rows += [{"run": overrides, "outcome": "never started", "reason": ""} for overrides in never_started]
    return pd.DataFrame(rows, columns=["run", "outcome", "reason"])


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in SUMMARY_COLUMNS if c in frame.columns]
    table = frame[columns].copy()
    table.insert(0, "run", run_labels(frame).to_numpy())
    return table


def choose_axes(frame: pd.DataFrame) -> tuple[str, str] | None:
    """The two parameters with the most values; one parameter against the seed when only one varies."""
    axes = sorted(varying_params(frame, exclude=(SEED_KEY,)), key=lambda c: -frame[c].astype(str).nunique())
    if len(axes) == 1 and SEED_KEY in varying_params(frame):
        return axes[0], SEED_KEY
    return (axes[0], axes[1]) if len(axes) >= 2 else None


def humanize(value: float) -> str:
    """Numbers for people: 99.37 k / 16.12 M for counts, 4 significant digits otherwise."""
    if value != value:  # NaN
        return ""
    if abs(value) >= 1e4 and float(value).is_integer():
        return f"{value / 1e6:.2f} M" if abs(value) >= 1e6 else f"{value / 1e3:.2f} k"
    return f"{value:.4g}"


def _table(frame: pd.DataFrame, index: bool = False) -> str:
    """An HTML table that scrolls sideways instead of overflowing the page."""
    return f"<div class='scroll'>{frame.to_html(index=index, float_format=humanize)}</div>"


def _image(path: Path) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def build_report(
    sweep: str,
    out: Path,
    tracking_uri: str | None = None,
    runs_dir: str | Path = "runs",
    rows: str | None = None,
    columns: str | None = None,
    value: str | None = None,
    metric: str | None = None,
    rate_distortion: Sequence[Path] = (),
) -> Path:
    """Write ``report.html``, ``sweep.csv`` and the PNG plots into ``out``; returns the HTML path.
    ``rate_distortion``: ``evaluate.py bitrates=...`` reports whose curves join the sweep's points."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    everything = load_sweep(sweep, tracking_uri, runs_dir)
    everything.to_csv(out / "sweep.csv", index=False)
    frame, unfinished = split_by_outcome(everything)
    never = everything.attrs.get("never_started", [])
    if frame.empty:
        raise LookupError(f"the sweep has no finished run yet ({outcome_counts(unfinished, never)})")
    quality, higher = quality_metric(frame, metric)
    title = f"Sweep {Path(str(sweep)).name}"
    sections = [
        f"<h1>{html.escape(title)}</h1><p class='id'>sweep id {html.escape(str(everything.attrs['sweep_id']))}</p>",
        f"<p>{len(frame)} finished runs; varying: {html.escape(', '.join(varying_params(frame)) or 'nothing')}; "
        f"quality metric: {quality}.</p>",
        "<h2>Runs</h2>",
        _table(summary_table(frame)),
    ]
    sections += decide_sections(everything)
    if len(unfinished) or never:
        sections += [f"<h2>Not finished ({html.escape(outcome_counts(unfinished, never))})</h2>"]
        sections += ["<p>Left out of every table and plot below.</p>", _table(unfinished_table(unfinished, never))]
    if SEED_KEY in varying_params(frame):
        metrics = [m for m in (quality, "model/bitrate_kbps", "cost/device_hours") if m in frame.columns]
        sections += ["<h2>Seed replicates (mean ± std)</h2>", _table(aggregate_seeds(frame, metrics))]
        sections += comparison_sections(frame, quality, higher, out)
    sections += probe_sections(frame)
    stopped = stopped_runs(frame)
    if len(stopped):
        sections += [
            "<h2>Stopped early by guardrails</h2><p>Their metrics are the best before the stop; they are left out "
            "of the paired statistics.</p>",
            _table(stopped),
        ]
    axes = (rows, columns) if rows and columns else choose_axes(frame)
    if axes:
        for shown in dict.fromkeys([value or quality, "model/bitrate_kbps"]):
            if shown in frame.columns:
                table = pivot(frame, axes[0], axes[1], shown)
                sections += [f"<h2>{html.escape(shown)}: {axes[0]} x {axes[1]}</h2>", _table(table, index=True)]
    plots = {"pareto.png": lambda p: plot_pareto(frame, p, "model/bitrate_kbps", quality, higher)}
    curve_metrics = [m for m in ("train/mel", "valid/mel_distance") if m]
    plots["curves.png"] = lambda p: plot_training_curves(frame, p, curve_metrics)
    if any(c.startswith("test/codebook_") and c.endswith("_usage") for c in frame.columns):
        plots["codebook_usage.png"] = lambda p: plot_codebook_usage(frame, p)
    titles = {
        "pareto.png": f"{quality} vs bitrate",
        "curves.png": "Training curves",
        "codebook_usage.png": "Codebook usage (test set)",
    }
    for name, plot in plots.items():
        sections += [f"<h2>{titles[name]}</h2>", _image(plot(out / name))]
    sections += rate_distortion_sections(frame, rate_distortion, quality, higher, out)
    sections += ["<h2>Listen: the first test utterance</h2>", audio_comparison_html(frame)]
    style = (
        "<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right} img{max-width:100%} .scroll{overflow-x:auto}"
        ".id{color:#777}</style>"
    )
    page = out / "report.html"
    page.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{style}</head><body>"
        + "\n".join(sections)
        + "</body></html>"
    )
    return page


def rate_distortion_sections(
    frame: pd.DataFrame, reports: Sequence[Path], quality: str, higher: bool, out: Path
) -> list[str]:
    """Curves scored from one checkpoint at every bitrate, beside the sweep's retrained runs."""
    if not reports:
        return []
    metric = quality.split("/", 1)[-1]
    curves = load_curves(reports, metric)
    table = curve_table(curves, metric, higher)
    table.to_csv(out / "rate_distortion.csv", index=False)
    retrained = f"test/{metric}" if f"test/{metric}" in frame.columns else quality
    plot = plot_rate_distortion(
        curves, out / "rate_distortion.png", metric, frame, ("model/bitrate_kbps", retrained), run_labels(frame)
    )
    return [
        f"<h2>Rate-distortion from one checkpoint: {html.escape(metric)}</h2>",
        f"<p>Lines: one checkpoint scored at every bitrate it decodes (evaluate.py bitrates=all); crosses: the "
        f"sweep's retrained runs ({html.escape(retrained)}). Monotone: each added layer improves the metric.</p>",
        _table(table),
        _image(plot),
    ]


def probe_sections(frame: pd.DataFrame) -> list[str]:
    """The token probes' metrics per design (mean ± std over seeds when seeds vary), if the sweep ran them."""
    columns = sorted(
        c
        for c in frame.columns
        if c.startswith("probe/") and not c.startswith("probe/utterances") and frame[c].notna().any()
    )
    if not columns:
        return []
    table = (
        aggregate_seeds(frame, columns)
        if SEED_KEY in varying_params(frame)
        else summary_table(frame)[["run"]].join(frame[columns])
    )
    return [
        "<h2>Token probes (frozen codes)</h2><p>Speaker accuracy (higher is better; against "
        "<code>speaker_chance</code>) and "
        "content character error rate (lower is better; against <code>content_cer_shuffled</code>, the same probe on "
        "time-shuffled codes); <code>_without_X</code>: the same probe with that group or layer masked.</p>",
        _table(table),
    ]


def comparison_sections(frame: pd.DataFrame, quality: str, higher: bool, out: Path) -> list[str]:
    """Paired comparisons over seeds and the winner at each bitrate (also written as CSV)."""
    if designs(frame).nunique() < 2:
        return []
    paired = paired_table(frame, quality, higher)
    paired.to_csv(out / "paired.csv", index=False)
    sections = [
        f"<h2>Paired comparisons over seeds: {html.escape(quality)}</h2>",
        f"<p>Difference A - B per shared seed, mean and 95% interval: paired t interval below {BOOTSTRAP_MIN_SEEDS} "
        "seeds (assumes roughly normal differences), BCa bootstrap from there on; the method is in each row. "
        "A verdict needs an interval that excludes 0. Cost: device-hours of both designs' runs.</p>",
        _table(paired),
    ]
    if "model/bitrate_kbps" in frame.columns:
        winners = winners_by_bitrate(frame, quality, higher)
        winners.to_csv(out / "winners.csv", index=False)
        sections += ["<h2>Winner at each bitrate</h2>", _table(winners)]
    return sections


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__)
    parser.add_argument(
        "sweep", help="sweep directory, sweep name under <runs>/multirun, or sweep id (with --tracking-uri)"
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the one the sweep used)")
    parser.add_argument("--runs", default="runs", help="the runs directory (paths.runs)")
    parser.add_argument("--rows", default=None, help="pivot rows, e.g. quantizer.groups")
    parser.add_argument("--cols", default=None, help="pivot columns, e.g. quantizer.layers")
    parser.add_argument("--value", default=None, help="pivot value, e.g. best/pesq_wb")
    parser.add_argument(
        "--metric",
        default=None,
        help="the quality metric to rank, aggregate and plot (default: best/pesq_wb, "
        "else best/stoi, ...), e.g. best/mel_distance",
    )
    parser.add_argument(
        "--rate-distortion",
        nargs="+",
        default=[],
        type=Path,
        metavar="REPORT",
        help="evaluate.py bitrates=all reports (JSON) whose curves are plotted beside the sweep's runs",
    )
    args = parser.parse_args(argv)
    try:
        page = build_report(
            args.sweep, Path(args.out), args.tracking_uri, args.runs, args.rows, args.cols, args.value, args.metric,
            args.rate_distortion,
        )  # fmt: skip
    except (FileNotFoundError, LookupError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {page} and {page.parent / 'sweep.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
