"""A run's data split, fixed at its first start: ``<run>/splits.json`` and, for valid and test,
inside each checkpoint.

A split drawn afresh at every start moves when files are added: test files drift into training
and scores stop being comparable. So the split is recorded once, and every later start (a
resume, a requeue, ``codec-eval checkpoint=...``) keeps it. Files are named relative to the data
root, so the record still fits when the corpus is copied elsewhere.

Policy for a rerun over changed data: the recorded split is kept and a warning names what
changed. Added files are not used by the run (start a new run to use them). A recorded file that
is gone stops the run, naming it: the recorded split can no longer be reproduced.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

SPLIT_FILE = "splits.json"


def relative_name(name: str, root: Path) -> str:
    return os.path.relpath(name, root)


def digest(names: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]


def make_record(root: Path, rule: str, splits: dict[str, list[str]]) -> dict[str, Any]:
    """``splits`` maps each split to its files' names relative to ``root``."""
    return {
        "root": str(Path(root).resolve()),
        "rule": rule,
        "counts": {name: len(files) for name, files in splits.items()},
        "sha256": {name: digest(files) for name, files in splits.items()},
        "splits": {name: sorted(files) for name, files in splits.items()},
    }


def checkpoint_record(record: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint carries: the held-out lists in full, training by count and digest only."""
    splits = {name: files for name, files in record["splits"].items() if name != "train"}
    return {**record, "splits": splits}


def read_record(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / SPLIT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_record(run_dir: Path, record: dict[str, Any]) -> Path:
    path = Path(run_dir) / SPLIT_FILE
    tmp = path.with_name(f".{SPLIT_FILE}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return path
