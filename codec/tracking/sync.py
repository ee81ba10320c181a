"""Send what runs' journals still hold: ``codec-sweep sync [SWEEP | RUN_DIR ...]``.

A run normally sends its own journal, and the next start of a run sends what the last attempt
left. This is for runs that ended while the tracking server was away and will not start again.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from omegaconf import OmegaConf

from codec.config import plain_dict
from codec.tracking.background import fail_fast_client, replay
from codec.tracking.journal import JOURNAL_DIR, Journal
from codec.tracking.loggers import MLflowLogger
from codec.training.run_lock import RunDirectoryBusy, RunLock


def pending_records(run_dir: Path) -> int:
    if not (Path(run_dir) / JOURNAL_DIR / "journal.jsonl").exists():
        return 0
    journal = Journal(run_dir)
    return len(journal) - journal.sent


def sync_run(run_dir: Path) -> int:
    """Replay ``run_dir``'s unsent records to the tracker its config names; returns how many were
    sent. A run that is training now is left to its own sender (:class:`RunDirectoryBusy`)."""
    if not pending_records(run_dir):
        return 0
    fail_fast_client()
    config = OmegaConf.load(Path(run_dir) / "resolved_config.yaml")
    wanted = set(inspect.signature(MLflowLogger).parameters)
    arguments = {k: v for k, v in plain_dict(config.logger).items() if k in wanted}
    lock = RunLock(Path(run_dir)).acquire()
    try:
        return replay(Journal(run_dir), MLflowLogger(**arguments))
    finally:
        lock.release()


__all__ = ["RunDirectoryBusy", "pending_records", "sync_run"]
