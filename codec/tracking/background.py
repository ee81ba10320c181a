"""Tracking that never waits: the run writes to its journal, a background thread ships it to MLflow.

The trainer's calls return as soon as the record is in ``<run>/tracking/journal.jsonl``. A sender
thread replays the journal in order through a plain :class:`~codec.tracking.loggers.MLflowLogger`.
While the server cannot be reached it retries with backoff, without bound, and says once that
tracking is behind and once that it caught up. A tracking failure never decides the run's state.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from codec.messages import error_summary
from codec.tracking.journal import Journal
from codec.tracking.loggers import STEP_MARKER_METRIC, MLflowLogger, RunLogger

log = logging.getLogger(__name__)

# MLflow's client retries a failed HTTP call for minutes inside the call. The sender has its own
# unbounded backoff, so each call is made to fail fast instead.
CLIENT_ENVIRONMENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def fail_fast_client() -> None:
    """Make this process's MLflow client calls fail fast (callers retry on their own terms)."""
    for key, value in CLIENT_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def ship(remote: MLflowLogger, record: Mapping[str, Any], run_id: str | None) -> str | None:
    """Send one journal record through ``remote``; returns the tracker's run id."""
    op = record["op"]
    if op == "start":
        return remote.start(record["run_name"], record["params"], record["tags"], run_id=run_id or record.get("run_id"))
    if remote.run_id is None and run_id is not None:
        remote.run_id = run_id
    if op == "metrics":
        remote.log_metrics(record["metrics"], int(record["step"]), timestamp_ms=int(record["time_ms"]))
    elif op == "tags":
        remote.set_tags(record["tags"])
    elif op == "artifact":
        if Path(record["path"]).exists():  # a sample folder a later run removed is not worth a stall
            remote.log_artifact(Path(record["path"]), record.get("artifact_path"))
    elif op == "finish":
        remote.finish(record["status"])
    else:
        raise ValueError(f"unknown journal record {op!r}")
    return remote.run_id


def replay(journal: Journal, remote: MLflowLogger) -> int:
    """Send every record not yet acknowledged, in order, acknowledging each; returns how many."""
    count = 0
    for record in journal.unsent():
        run_id = ship(remote, record, journal.run_id)
        journal.acknowledge(journal.sent + 1, run_id)
        count += 1
    return count


class BackgroundMLflowLogger(RunLogger):
    """The MLflow logger a run uses: config keys as :class:`MLflowLogger`, plus ``flush_timeout_s``
    (how long the end of a run waits for the sender before leaving the rest to the next start or
    ``codec-sweep sync``)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        experiment_id: str | None = None,
        parent_run_id: str | None = None,
        sweep_id: str | None = None,
        run_name: str | None = None,
        flush_timeout_s: float = 60.0,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        fail_fast_client()
        self.remote = MLflowLogger(
            tracking_uri, experiment_name, experiment_id, parent_run_id, sweep_id, run_name, tags
        )
        self.tracking_uri = tracking_uri
        self.flush_timeout_s = float(flush_timeout_s)
        self.journal: Journal | None = None
        self._last_logged_step = -1
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._behind_since: float | None = None

    # -- the trainer's side: append and return ----------------------------------------------------
    def attach(self, run_dir: Path) -> None:
        self.journal = Journal(run_dir)
        marked = [r["step"] for r in self.journal.records("metrics") if STEP_MARKER_METRIC in r["metrics"]]
        self._last_logged_step = max(marked, default=-1)
        if self.journal.sent < len(self.journal):  # what an earlier attempt left: send it now
            self._start_sender()

    @property
    def run_id(self) -> str | None:  # type: ignore[override]
        return None if self.journal is None else self.journal.run_id

    @property
    def started(self) -> bool:
        return self.journal is not None and bool(self.journal.records("start"))

    def _append(self, op: str, **payload: Any) -> None:
        if self.journal is None:
            raise RuntimeError("BackgroundMLflowLogger.attach(run_dir) must come before logging")
        self.journal.append(op, **payload)
        self._start_sender()
        self._wake.set()

    def start(
        self, run_name: str, params: Mapping[str, str], tags: Mapping[str, str], run_id: str | None = None
    ) -> str | None:
        if self.journal is None:
            raise RuntimeError("BackgroundMLflowLogger.attach(run_dir) must come before start")
        # The first start creates the run; a later start of the same run (a resume) reopens it. The
        # key lets a create whose acknowledgement was lost find its run instead of making a second.
        first = self.journal.records("start")
        key = first[0]["tags"]["run_key"] if first else uuid.uuid4().hex
        self._append("start", run_name=run_name, params=dict(params), tags={**tags, "run_key": key}, run_id=run_id)
        return self.run_id or run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if step <= self._last_logged_step:
            return  # a resumed run re-trains steps it already logged: log no step twice
        finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        self._append("metrics", metrics=finite, step=int(step), time_ms=int(time.time() * 1000))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._append("artifact", path=str(Path(path).resolve()), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._append_or_send("tags", tags={k: str(v) for k, v in tags.items()})

    def finish(self, status: str = "FINISHED") -> None:
        self._append_or_send("finish", status=status)

    def _append_or_send(self, op: str, **payload: Any) -> None:
        """A run's closing records reach the tracker even when its journal cannot be written (its
        directory deleted, a full disk): they are then sent directly, once."""
        try:
            self._append(op, **payload)
        except OSError as error:
            if self.run_id is None:
                raise
            log.warning(
                "tracking: the journal cannot be written (%s); sending '%s' to %s directly",
                error,
                op,
                self.tracking_uri,
            )
            ship(self.remote, {"op": op, **payload}, self.run_id)

    def close(self) -> None:
        """Give the sender up to ``flush_timeout_s`` to catch up, then leave the rest in the journal."""
        if self._thread is None or self.journal is None:
            return
        deadline = time.monotonic() + self.flush_timeout_s
        while self.journal.sent < len(self.journal) and time.monotonic() < deadline and self._thread.is_alive():
            self._wake.set()
            time.sleep(0.2)
        self._stop.set()
        self._wake.set()
        # The sender finishes its current call (and says it caught up) before the process ends.
        self._thread.join(timeout=max(1.0, deadline - time.monotonic()))
        left = len(self.journal) - self.journal.sent
        if left:
            log.warning(
                "tracking: %d record(s) not sent to %s yet; they stay in %s and are sent at the next start of "
                "this run or by `codec-sweep sync`",
                left,
                self.tracking_uri,
                self.journal.path,
            )

    def describe(self) -> str:
        return f"MLflow {self.tracking_uri} run {self.run_id or '(being created)'}"

    def where_to_look(self) -> list[str]:
        experiment = self.remote.experiment_id or ""
        if not self.run_id:
            return [f"mlflow ui --backend-store-uri {self.tracking_uri}"]
        return [
            f"mlflow ui --backend-store-uri {self.tracking_uri}   then  "
            f"http://127.0.0.1:5000/#/experiments/{experiment}/runs/{self.run_id}"
        ]

    # -- the sender's side ------------------------------------------------------------------------
    def _start_sender(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._send_forever, name="tracking-sender", daemon=True)
            self._thread.start()

    def _send_forever(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            assert self.journal is not None
            try:
                replay(self.journal, self.remote)
            except Exception as error:  # the server is gone, slow or refusing: back off and retry
                if self._behind_since is None:
                    self._behind_since = time.monotonic()
                    log.warning(
                        "tracking is behind: %s cannot be reached (%s); training goes on and every record waits in %s",
                        self.tracking_uri,
                        error_summary(error, 200),
                        self.journal.path,
                    )
                self._wake.wait(BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)])
                self._wake.clear()
                attempt += 1
                continue
            if self._behind_since is not None:
                log.warning(
                    "tracking caught up with %s after %.0f s", self.tracking_uri, time.monotonic() - self._behind_since
                )
                self._behind_since = None
            attempt = 0
            self._wake.wait(5.0)
            self._wake.clear()
