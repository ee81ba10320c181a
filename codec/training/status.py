"""``status.json`` in each run directory: state, step and best metrics, written atomically.

The sweep status command reads these files; they are the run's own account of itself.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

# preempted: stopped by the cluster (SIGTERM/SIGUSR2) and expected back; stopped: by the user (Ctrl-C);
# stopped_early: by a guardrail (codec.training.guards), with the guard and reason beside it.
STATES = ("pending", "running", "finished", "failed", "preempted", "stopped", "stopped_early")


def read_status(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "status.json"
    if not path.exists():
        return {"state": "pending", "step": 0}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {"state": "pending", "step": 0}


def write_status(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the run's status file atomically and return the new status."""
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    status.update(fields)
    status["updated"] = time.time()
    if status.get("state") not in STATES:
        raise ValueError(f"state={status.get('state')!r} must be one of {STATES}")
    tmp = run_dir / f".status.json.tmp{os.getpid()}"
    try:
        tmp.write_text(json.dumps(status, indent=2, default=str))
        os.replace(tmp, run_dir / "status.json")
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk must not keep a half-written copy
        raise
    return status
