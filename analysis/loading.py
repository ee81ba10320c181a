"""Loading a sweep's runs from MLflow into one DataFrame.

Columns: run metadata (``run_id``, ``status``, ``wall_time_s``, ``run_dir``, ``overrides``),
every param under its dotted config key (``quantizer.groups``, numbers parsed), and every
metric's last value under its MLflow key (``best/pesq_wb``, ``model/bitrate_kbps``, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

META_COLUMNS = (
    "run_id",
    "run_name",
    "status",
    "experiment_id",
    "start_time",
    "wall_time_s",
    "run_dir",
    "overrides",
    "sweep_id",
    "error",
    "guard",
    "stop_reason",
)


CONFIG_TAG = "config."


@dataclass
class SweepRef:
    sweep_id: str
    tracking_uri: str | None
    parent_run_id: str | None = None
    sweep_dir: str | None = None  # known when found by directory or name
    jobs: list[dict[str, Any]] = field(default_factory=list)  # every planned point, from its sweep.json


def find_sweep(sweep: str, runs_dir: str | Path = "runs", tracking_uri: str | None = None) -> SweepRef:
    """A sweep by directory, by name under ``<runs>/multirun``, or by its sweep id."""
    for candidate in (Path(sweep), Path(runs_dir) / "multirun" / sweep):
        record = candidate / "sweep.json"
        if record.exists():
            data = json.loads(record.read_text())
            uri = tracking_uri or data.get("tracking_uri")
            return SweepRef(data["sweep_id"], uri, data.get("parent_run_id"), str(candidate), data.get("jobs", []))
    if tracking_uri is None:
        raise FileNotFoundError(f"no sweep.json for {sweep!r} under {runs_dir}; pass a sweep id with tracking_uri")
    return SweepRef(sweep, tracking_uri)


def _parse(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except (TypeError, ValueError):
            pass
    return {"True": True, "False": False, "None": None}.get(value, value)


def load_sweep(sweep: str, tracking_uri: str | None = None, runs_dir: str | Path = "runs") -> pd.DataFrame:
    """One row per child run of the sweep, in a stable order (by run name)."""
    ref = find_sweep(sweep, runs_dir, tracking_uri)
    if ref.tracking_uri is None:
        raise ValueError(f"sweep {ref.sweep_id} was not tracked in MLflow (logger=none); nothing to load")
    client = MlflowClient(tracking_uri=ref.tracking_uri)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs: list[Any] = []
    page_token = None
    while True:
        page = client.search_runs(
            experiment_ids, f"tags.sweep_id = '{ref.sweep_id}'", max_results=1000, page_token=page_token
        )
        runs.extend(page)
        page_token = page.token
        if not page_token:
            break
    rows = []
    for run in runs:
        if run.data.tags.get("role") == "sweep":
            continue
        info = run.info
        end = info.end_time or info.start_time
        row = {
            "run_id": info.run_id,
            "run_name": info.run_name,
            "status": info.status,
            "experiment_id": info.experiment_id,
            "start_time": pd.to_datetime(info.start_time, unit="ms"),
            "wall_time_s": (end - info.start_time) / 1000.0 if info.start_time else None,
            "run_dir": run.data.tags.get("run_dir"),
            "overrides": run.data.tags.get("overrides", ""),
            "sweep_id": ref.sweep_id,
            "error": run.data.tags.get("error", ""),
            "guard": run.data.tags.get("guard", ""),
            "stop_reason": run.data.tags.get("stop_reason", ""),
        }
        row.update({key: _parse(value) for key, value in run.data.params.items()})
        # Keys that do not change what is trained are tags ``config.<key>`` (older runs: params).
        row.update({k[len(CONFIG_TAG) :]: _parse(v) for k, v in run.data.tags.items() if k.startswith(CONFIG_TAG)})
        row.update(run.data.metrics)
        rows.append(row)
    if not rows:
        raise LookupError(
            f"no runs tagged sweep_id={ref.sweep_id} in {ref.tracking_uri}: none of the sweep's points has started"
        )
    frame = pd.DataFrame(rows).sort_values("run_name", kind="stable").reset_index(drop=True)
    for column in frame.columns:  # an integer param stays an integer where a failed run has no value
        values = [row[column] for row in rows if row.get(column) is not None]
        if "." in column and values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            frame[column] = frame[column].astype("Int64")
    frame.attrs["sweep_id"] = ref.sweep_id
    frame.attrs["tracking_uri"] = ref.tracking_uri
    frame.attrs["never_started"] = never_started(ref, frame)
    frame.attrs["sweep_dir"] = ref.sweep_dir
    return frame


def never_started(ref: SweepRef, frame: pd.DataFrame) -> list[str]:
    """The overrides of the sweep's points that have no MLflow run (the sweep was stopped first)."""
    tracked = {str(Path(d).resolve()) for d in frame["run_dir"].dropna()} if "run_dir" in frame else set()
    return [" ".join(job["overrides"]) for job in ref.jobs if str(Path(job["run_dir"]).resolve()) not in tracked]
