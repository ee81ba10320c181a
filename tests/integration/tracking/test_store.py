"""A new SQLite MLflow store survives a first start killed at any point of its creation.

MLflow builds a fresh SQLite store in place, over ~67 migrations. The finding (issue 30): a
``train.py`` SIGKILLed or Ctrl-C'd twice 1-2 s after ``mlflow.db`` appeared left a file every
later run failed to open. The kill points here are exact: the child process kills itself right
after its N-th write to ``alembic_version`` (a SQLAlchemy event hook in the child only).
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking import MlflowClient
from sqlalchemy import event
from sqlalchemy.engine import Engine

from codec.tracking.loggers import MLflowLogger
from codec.tracking.store import TrackingStoreError, prepare_sqlite_store
from tests.conftest import HANG_GUARD_S, REPO_ROOT
from tests.integration.training.test_train_cli import train

MIGRATIONS_SEEN = 67  # alembic_version writes while MLflow 3.17 creates a store

KILL_AT_MIGRATION = """
import os, signal, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine

uri, kill_at, opener = sys.argv[1], int(sys.argv[2]), sys.argv[3]
written = 0

@event.listens_for(Engine, "after_cursor_execute")
def kill_after_nth_migration(conn, cursor, statement, *args):
    global written
    if "alembic_version" in statement and statement.lstrip().upper().startswith(("UPDATE", "INSERT")):
        written += 1
        if written == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

if opener == "mlflow":  # MLflow alone, as a first start did before the fix
    from mlflow.tracking import MlflowClient
    MlflowClient(tracking_uri=uri).search_experiments()
else:
    from codec.tracking.loggers import open_client
    open_client(uri)
print("completed without being killed")
"""


def _one_run(uri: str) -> None:
    """The next run, in process: opens the store, records a run, ends it."""
    logger = MLflowLogger(uri, "store-test")
    logger.start("after-the-kill", {"a": "1"}, {})
    logger.finish()


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S
    )


def _kill_first_start(uri: str, migration: int, opener: str) -> None:
    result = _python(KILL_AT_MIGRATION, uri, str(migration), opener)
    assert result.returncode == -9, f"not killed at migration {migration}: {result.stdout}{result.stderr[-2000:]}"


def _runs(uri: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    return [run for e in client.search_experiments() for run in client.search_runs([e.experiment_id])]


@pytest.mark.parametrize("migration", [1, 34, MIGRATIONS_SEEN])
def test_a_first_start_killed_at_any_migration_leaves_no_half_made_store(tmp_path: Path, migration: int) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _kill_first_start(uri, migration, "codec")
    assert not (tmp_path / "mlflow.db").exists(), "a store appeared before it was complete"

    _one_run(uri)
    assert [run.info.run_name for run in _runs(uri)] == ["after-the-kill"]
    assert not list(tmp_path.glob(".mlflow.db.building-*")), "the killed build's temporary file was left"


def test_the_migration_count_is_what_the_kill_points_assume(tmp_path: Path) -> None:
    """If an MLflow upgrade changes the number of migrations, the kill points above move with it."""
    written = []

    def count(conn, cursor, statement: str, *args) -> None:
        if "alembic_version" in statement and statement.lstrip().upper().startswith(("UPDATE", "INSERT")):
            written.append(statement)

    event.listen(Engine, "after_cursor_execute", count)
    try:
        prepare_sqlite_store(tmp_path / "m.db")
    finally:
        event.remove(Engine, "after_cursor_execute", count)
    assert len(written) == MIGRATIONS_SEEN


def test_a_store_half_made_by_mlflow_alone_is_moved_aside_and_train_py_runs(tmp_path: Path) -> None:
    """The finding reproduced with MLflow alone, then a real training run on the same path."""
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    _kill_first_start(uri, 30, "mlflow")
    assert db.exists()
    with pytest.raises(Exception, match="already exists|duplicate column|out-of-date"):
        MlflowClient(tracking_uri=uri).search_runs(["0"])  # the finding: MLflow cannot open it again
    SqlAlchemyStore._engine_map.pop(uri).dispose()  # this process's connection to the half-made file

    result = train(["experiment=smoke", "trainer.max_steps=4", f"logger.tracking_uri={uri}"], cwd=tmp_path)
    assert "was left half-made by an interrupted first start" in result.stderr + result.stdout
    assert len(list(tmp_path.glob("mlflow.db.half-made-*"))) == 1, "the half-made file was not kept aside"
    runs = _runs(uri)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    artifacts = Path(runs[0].info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(tmp_path / "mlartifacts"), f"artifacts went to {artifacts}, not beside the store"
    assert any(artifacts.rglob("*.yaml")) and not (tmp_path / "mlruns").exists()


def test_a_store_that_holds_runs_is_never_changed_and_the_error_says_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    _one_run(uri)
    with sqlite3.connect(db) as connection:  # as if written by an older MLflow
        connection.execute("UPDATE alembic_version SET version_num = 'older0revision'")
    before = hashlib.sha256(db.read_bytes()).hexdigest()

    with pytest.raises(TrackingStoreError, match="mlflow db upgrade") as refused:
        _one_run(uri)
    assert str(refused.value).startswith(f"{db}: the MLflow store holds 1 runs")
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not list(tmp_path.glob("mlflow.db.half-made-*"))


KILL_MID_COMMIT = """
import os, signal, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA cache_size=2")  # the transaction spills: the database file is half-written
db.execute("BEGIN IMMEDIATE")
db.execute("UPDATE runs SET status = 'FAILED'")
db.execute("CREATE TABLE filler(x)")
for _ in range(50):
    db.execute("INSERT INTO filler VALUES (randomblob(100000))")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_mid_commit_leaves_a_store_the_next_run_opens(tmp_path: Path) -> None:
    """Found by CI: a run SIGKILLed while MLflow committed left a hot journal; the resumed run's
    store check read it read-only and failed on every retry ("attempt to write a readonly
    database"), so the run stayed RUNNING in MLflow."""
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    _one_run(uri)
    result = _python(KILL_MID_COMMIT, str(db))
    assert result.returncode == -9, result.stderr[-2000:]
    journal = db.with_name("mlflow.db-journal")
    hot_journal_magic = bytes.fromhex("d9d505f920a163d7")  # written once a commit has begun
    assert journal.read_bytes()[:8] == hot_journal_magic, "the killed writer left no hot journal"

    _one_run(uri)  # the next run: opens the store (the journal is rolled back) and records a run
    runs = _runs(uri)
    assert sorted(run.info.status for run in runs) == ["FINISHED", "FINISHED"]  # the killed update is undone
    assert not journal.exists()
