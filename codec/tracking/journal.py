"""The run's tracking journal: every metric, param, tag and artifact a run reports, written to its
run directory before anything is sent anywhere.

``tracking/journal.jsonl`` holds one record a line, numbered in order; ``tracking/sent.json``
holds how far the sender got and the tracker's run id. Training only ever appends here, so a
tracking server that is slow or gone can neither stop nor fail it; what was not sent yet is sent
later, by the same run's sender, by the next start of the run, or by ``codec-sweep sync``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

JOURNAL_DIR = "tracking"


class Journal:
    """Append-only records with a persisted send cursor; safe for one writer and one sender thread."""

    def __init__(self, run_dir: Path) -> None:
        self.directory = Path(run_dir) / JOURNAL_DIR
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "journal.jsonl"
        self.cursor_path = self.directory / "sent.json"
        self._lock = threading.Lock()
        self._records = self._read_records()
        self._cursor = self._read_cursor()
        text = self.path.read_text() if self.path.exists() else ""
        if text and (not text.endswith("\n") or len(text.splitlines()) != len(self._records)):
            self._repair()  # a partial last line left by a kill: drop it so appends start cleanly

    # -- reading ---------------------------------------------------------------------------------
    def _read_records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill mid-write: it was never acknowledged
                break
        return records

    def _read_cursor(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.cursor_path.read_text()))
        except (OSError, json.JSONDecodeError):
            return {"sent": 0, "run_id": None}

    @property
    def run_id(self) -> str | None:
        return self._cursor.get("run_id")

    @property
    def sent(self) -> int:
        """How many records the tracker has acknowledged."""
        return int(self._cursor.get("sent", 0))

    def __len__(self) -> int:
        return len(self._records)

    def unsent(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            pending = self._records[self.sent :]
        yield from pending

    def records(self, op: str) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self._records if r["op"] == op]

    # -- writing ---------------------------------------------------------------------------------
    def append(self, op: str, **payload: Any) -> None:
        record = {"op": op, **payload}
        line = json.dumps(record, default=str)
        with self._lock:
            with open(self.path, "a") as handle:
                handle.write(line + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self._records.append(record)

    def _repair(self) -> None:
        text = "".join(json.dumps(r, default=str) + "\n" for r in self._records)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)

    def acknowledge(self, count: int, run_id: str | None) -> None:
        """The tracker holds the first ``count`` records (and the run is ``run_id``)."""
        self._cursor = {"sent": count, "run_id": run_id}
        tmp = self.cursor_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self._cursor))
        os.replace(tmp, self.cursor_path)
