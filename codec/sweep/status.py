"""The status table of a sweep: each run's varying overrides, state, step and best metrics."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from codec.sweep.registry import Sweep
from codec.training.status import read_status
from codec.training.timing import format_duration

BEST_COLUMNS = ("mel_distance", "pesq_wb", "stoi")
# A "running" run on another host whose status has not been written for this long counts as lost
# (on this host, its process is looked up instead).
SILENT_AFTER_S = 30 * 60


def lost_reason(status: dict[str, Any], now: float, silent_after_s: float = SILENT_AFTER_S) -> str | None:
    """Why a run whose status says "running" is not running any more; None when it may be."""
    if status.get("state") != "running":
        return None
    host, pid = status.get("host"), status.get("pid")
    if host == socket.gethostname() and isinstance(pid, int):
        return None if _process_alive(pid) else f"its process {pid} on {host} is gone"
    beat = status.get("heartbeat") or status.get("updated")
    if isinstance(beat, (int, float)) and now - beat > silent_after_s:
        return f"no heartbeat from {host or 'its host'} for {format_duration(now - beat)}"
    return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a reused pid: alive, but not a Python process
        return b"python" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def find_sweep_dir(sweep: str | None, runs_dir: Path) -> list[Path]:
    """A sweep given by path or by name under ``<runs>/multirun``; all sweeps when None."""
    if sweep is None:
        return sorted(p.parent for p in (runs_dir / "multirun").glob("*/sweep.json"))
    candidates = [Path(sweep), runs_dir / "multirun" / sweep]
    for candidate in candidates:
        if (candidate / "sweep.json").exists():
            return [candidate]
    known = sorted(p.parent.name for p in (runs_dir / "multirun").glob("*/sweep.json"))
    listing = (
        f"known sweeps under {runs_dir / 'multirun'}: {', '.join(known)}"
        if known
        else f"no sweeps under {runs_dir / 'multirun'} yet"
    )
    raise FileNotFoundError(f"no sweep named {sweep!r} ({listing})")


def sweep_rows(sweep_dir: Path) -> tuple[Sweep, list[dict[str, Any]]]:
    sweep = Sweep.load(sweep_dir)
    assert sweep is not None
    varying = _varying_keys([job.overrides for job in sweep.jobs])
    rows = []
    for job in sweep.jobs:
        run_dir = Path(job.run_dir)  # recorded absolute by the launcher
        status = read_status(run_dir)
        state = status.get("state", "pending")
        if state == "finished" and status.get("identity") not in (None, job.identity):
            state = "stale"  # finished, but under a different configuration
        lost = lost_reason(status, time.time())
        if lost:
            state = "lost"
        best = status.get("best", {})
        rows.append(
            {
                "run": " ".join(o for o in job.overrides if o.split("=", 1)[0] in varying) or "(base)",
                "state": state,
                "step": status.get("step", 0),
                "max_steps": status.get("max_steps", job.max_steps or "?"),
                **{f"best/{k}": best.get(k) for k in BEST_COLUMNS},
                "updated": status.get("updated"),
                "run_dir": str(run_dir),
                "error": status.get("error", ""),
                "guard": status.get("guard", ""),
                "reason": lost or status.get("reason", ""),
                "cost": status.get("cost", {}),
            }
        )
    return sweep, rows


def _varying_keys(overrides: list[list[str]]) -> set[str]:
    values: dict[str, set[str]] = {}
    for job in overrides:
        for override in job:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    varying = {k for k, v in values.items() if len(v) > 1}
    return varying or set(values)


def format_table(sweep: Sweep, rows: list[dict[str, Any]]) -> str:
    now = time.time()
    header = ["run", "state", "step", *[f"best/{k}" for k in BEST_COLUMNS], "updated"]
    table = []
    for row in rows:
        age = "-" if row["updated"] is None else f"{(now - row['updated']) / 60:.0f}m ago"
        cells = [row["run"], row["state"], f"{row['step']}/{row['max_steps']}"]
        cells += ["-" if row[f"best/{k}"] is None else f"{row[f'best/{k}']:.4g}" for k in BEST_COLUMNS]
        table.append(cells + [age])
    widths = [max(len(str(r[i])) for r in [header, *table]) for i in range(len(header))]
    lines = [f"sweep {sweep.sweep_id} in {sweep.sweep_dir} (MLflow parent run {sweep.parent_run_id or '-'})"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(cells, widths)) for cells in table]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    lines.append("  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    failures = [f"  {r['run']}: {r['error']}" for r in rows if r["state"] == "failed" and r["error"]]
    if failures:
        lines += ["failures:", *failures]
    lost = [f"  {r['run']}: {r['reason']}; the same command resumes it" for r in rows if r["state"] == "lost"]
    if lost:
        lines += ["lost (killed without a word; last checkpoint kept):", *lost]
    guarded = [
        f"  {r['run']}: {r['guard']} at step {r['step']}: {r['reason']}" for r in rows if r["state"] == "stopped_early"
    ]
    if guarded:
        lines += ["stopped early by guardrails:", *guarded]
    lines.append(progress_line(rows))
    return "\n".join(lines)


DONE_STATES = ("finished", "failed", "stopped_early", "stale", "lost")


def progress_line(rows: list[dict[str, Any]]) -> str:
    """Steps done, device-hours spent, and the time the unfinished runs still need at their measured pace.

    A run that has not reported a pace yet is assumed to go at the median pace of those that have.
    The remaining time is for one run at a time (the local launcher); N parallel jobs need about 1/N.
    """
    done_steps = sum(int(r["step"] or 0) for r in rows)
    total_steps = sum(int(r["max_steps"]) if str(r["max_steps"]).isdigit() else int(r["step"] or 0) for r in rows)
    spent = sum(float(r["cost"].get("device_hours", 0.0)) for r in rows)
    paces = sorted(float(r["cost"]["seconds_per_step"]) for r in rows if r["cost"].get("seconds_per_step"))
    percent = 100 * done_steps // max(total_steps, 1)
    line = f"progress: {done_steps}/{total_steps} steps ({percent}%), {spent:.3g} device-hours spent"
    pending = [r for r in rows if r["state"] not in DONE_STATES and str(r["max_steps"]).isdigit()]
    if not pending:
        return line + "; nothing left to run"
    if not paces:
        return line + "; ETA: unknown until a run reports its pace"
    median = paces[len(paces) // 2]
    remaining = sum(
        (int(r["max_steps"]) - int(r["step"] or 0)) * float(r["cost"].get("seconds_per_step") or median)
        for r in pending
    )
    return (
        line
        + f"; ETA {format_duration(remaining)} for {len(pending)} unfinished runs at their measured pace, one at a time"
    )
