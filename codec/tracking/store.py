"""A local SQLite MLflow store that is either whole or absent, and artifacts kept beside it.

MLflow creates and migrates a fresh SQLite file in place, in dozens of steps. A process killed
in between (SIGKILL, a second Ctrl-C) leaves a file that every later run fails to open ("table
... already exists", "duplicate column name"). Here a new store is built in a temporary file and
linked into place once complete, under a lock per store, so no reader ever sees it half-made.
A half-made file left by an older version (or by MLflow alone) is recognised: if it holds no
runs it is moved aside and rebuilt, saying so; if it holds runs it is never touched, and the
error names the file and what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SQLITE_PREFIX = "sqlite:///"
ARTIFACT_FOLDER = "mlartifacts"


class TrackingStoreError(RuntimeError):
    """The tracking store cannot be opened; names the URI and the cause."""


def sqlite_path(tracking_uri: str) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI, None for any other store."""
    return Path(tracking_uri[len(SQLITE_PREFIX) :]) if tracking_uri.startswith(SQLITE_PREFIX) else None


def artifact_location(tracking_uri: str, experiment_name: str) -> str | None:
    """Where an experiment of a local SQLite store keeps its artifacts: beside the store (never
    in ``./mlruns`` of whichever directory a command was started from). None for servers, which
    place artifacts themselves."""
    path = sqlite_path(tracking_uri)
    if path is None:
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment_name).strip("._") or "experiment"
    return (path.resolve().parent / ARTIFACT_FOLDER / folder).as_uri()


@dataclass(frozen=True)
class StoreState:
    """What a SQLite file holds, read without MLflow (which would try to migrate it)."""

    schema_version: str | None
    latest_version: str
    runs: int
    has_tables: bool

    @property
    def complete(self) -> bool:
        return self.has_tables and self.schema_version == self.latest_version


def latest_schema_version() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return str(_get_latest_schema_revision())


def inspect_store(path: Path) -> StoreState:
    """Schema version, run count and whether MLflow's core tables exist, by plain SQLite reads.

    Opened read-write (never created): a writer killed mid-commit leaves a hot journal, which
    SQLite rolls back at the first read, and cannot on a read-only connection ("attempt to
    write a readonly database", on every later start)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=rw", uri=True)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = None
        if "alembic_version" in tables:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
            version = row[0] if row else None
        runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if "runs" in tables else 0
    return StoreState(version, latest_schema_version(), int(runs), {"experiments", "runs"} <= tables)


def prepare_sqlite_store(path: Path) -> None:
    """Make ``path`` a complete MLflow store: built whole if absent, rebuilt if left half-made
    with no runs; a store with runs is only ever read. Holds the store's lock throughout."""
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(path.name + ".lock")):
        for stale in path.parent.glob(f".{path.name}.building-*"):
            stale.unlink(missing_ok=True)  # a build that was killed; it never became the store
        if path.exists() and path.stat().st_size > 0:
            state = inspect_store(path)
            if state.complete:
                return
            if state.runs:
                raise TrackingStoreError(
                    f"{path}: the MLflow store holds {state.runs} runs but its schema is at version "
                    f"{state.schema_version}, not {state.latest_version}. It was left as it is. Back it up, "
                    f"then run `mlflow db upgrade {SQLITE_PREFIX}{path}`, or point logger.tracking_uri at a new file"
                )
            aside = path.with_name(f"{path.name}.half-made-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(path, aside)
            log.warning(
                "%s was left half-made by an interrupted first start (schema %s of %s, no runs); moved it to %s "
                "and created a new store",
                path,
                state.schema_version,
                state.latest_version,
                aside,
            )
        _build(path)


def _build(path: Path) -> None:
    """Create and migrate the schema in a temporary file, then link it into place."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    building = path.with_name(f".{path.name}.building-{os.getpid()}")
    building.unlink(missing_ok=True)
    store = SqlAlchemyStore(f"{SQLITE_PREFIX}{building}", (path.parent / ARTIFACT_FOLDER).as_uri())
    store.engine.dispose()
    if not inspect_store(building).complete:
        raise TrackingStoreError(f"{path}: MLflow did not finish creating its schema in {building}")
    try:  # a hard link, not a rename: a store another tool (mlflow ui) made meanwhile is kept, not replaced
        os.link(building, path)
    except FileExistsError:
        log.info("%s appeared while a new store was being built; using it", path)
    finally:
        building.unlink()


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive ``flock`` held for the block; released by the kernel if the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
