"""The background sender in process, on a real SQLite store that is unreachable, then reachable."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from codec.tracking.background import BackgroundMLflowLogger


def test_close_returns_after_the_sender_has_delivered_and_said_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by CI: close() returned once the last record was acknowledged, before the sender
    thread logged that tracking caught up; the process could end without the message."""
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's folder should be")
    uri = f"sqlite:///{blocker / 'mlflow.db'}"
    logger = BackgroundMLflowLogger(uri, "sender-test", flush_timeout_s=120)
    logger.attach(tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="codec.tracking.background"):
        logger.start("run", {"a": "1"}, {})
        logger.log_metrics({"loss": 1.0}, step=1)
        logger.finish()
        assert logger._thread is not None
        while "tracking is behind" not in caplog.text:  # the sender's first try failed
            assert logger._thread.is_alive()
            logger._wake.wait(0.05)
        blocker.unlink()  # the store becomes reachable
        logger.close()
        messages = caplog.text
    assert "tracking caught up" in messages
    assert not logger._thread.is_alive()
    assert logger.journal is not None and logger.journal.sent == len(logger.journal) == 3
    run = MlflowClient(uri).get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"loss": 1.0}
