"""Atomic checkpoints: ``step_N.pt`` history (keep-last-K), ``latest.pt`` and ``best.pt``.

Every file is written to a temporary name, flushed and renamed, so a kill at any moment leaves
the previous checkpoint intact. ``latest`` and ``best`` are independent copies, not hard links:
one truncated file never corrupts another. Loading verifies each candidate, newest first
(``latest``, then ``step_*`` by step), and falls back to the newest one that loads, naming every
file it skipped and why. Files are read with ``weights_only=True``: a checkpoint is data, and a
crafted pickle cannot run code.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codec.messages import error_summary

log = logging.getLogger(__name__)
STEP_FILE = re.compile(r"step_(\d+)\.pt$")


def step_of(path: Path) -> int:
    """The step in a ``step_<N>.pt`` file name (callers keep only names that match)."""
    match = STEP_FILE.search(path.name)
    if match is None:
        raise ValueError(f"{path.name} is not a step checkpoint name")
    return int(match.group(1))


class CheckpointError(RuntimeError):
    """No checkpoint of a run directory could be loaded; names every file and its fault."""


def atomic_torch_save(obj: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with _written_whole_or_removed(tmp, path), open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def atomic_copy(source: Path, target: Path) -> None:
    """An independent copy of ``source`` at ``target``, replaced atomically."""
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    with _written_whole_or_removed(tmp, target), open(source, "rb") as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, length=16 << 20)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, target)


# Below this much free space a failed write is reported as a full disk, whatever the writer said
# (torch.save reports one as "unexpected pos ...").
FULL_DISK_BYTES = 1 << 20


@contextlib.contextmanager
def _written_whole_or_removed(tmp: Path, target: Path):
    """A failed write leaves no partial temporary file behind, and a full disk is named as such."""
    try:
        yield
    except BaseException as error:
        full = isinstance(error, Exception) and shutil.disk_usage(tmp.parent).free < FULL_DISK_BYTES
        tmp.unlink(missing_ok=True)
        if full and not (isinstance(error, OSError) and error.errno == errno.ENOSPC):
            raise OSError(
                errno.ENOSPC, f"No space left on device writing {target} ({error_summary(error, 200)})"
            ) from error
        raise


def safe_load(path: Path | str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` of data only: tensors, numbers, strings and containers; never code."""
    return torch.load(path, map_location=map_location, weights_only=True)


@dataclass
class LoadedCheckpoint:
    state: dict[str, Any]
    path: Path
    skipped: dict[str, str] = field(default_factory=dict)  # file -> why it was not used


class CheckpointManager:
    def __init__(self, directory: Path, keep_last: int = 3) -> None:
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(".*.tmp*"):  # left by a killed writer
            stale.unlink(missing_ok=True)

    @property
    def latest(self) -> Path:
        return self.directory / "latest.pt"

    @property
    def best(self) -> Path:
        return self.directory / "best.pt"

    def history(self) -> list[Path]:
        """Step files, oldest first (by step number, not by name)."""
        return sorted(
            (p for p in self.directory.glob("step_*.pt") if STEP_FILE.search(p.name)),
            key=step_of,
        )

    def save(self, state: dict[str, Any], step: int) -> Path:
        path = atomic_torch_save(state, self.directory / f"step_{step:09d}.pt")
        atomic_copy(path, self.latest)
        for old in self.history()[: -self.keep_last]:
            if old != path:
                old.unlink(missing_ok=True)
        return path

    def mark_best(self, step_file: Path) -> None:
        atomic_copy(step_file, self.best)

    def candidates(self) -> list[Path]:
        """Where a resume may come from, newest first: ``latest``, then step files by step."""
        files = [self.latest] if self.latest.exists() else []
        return files + list(reversed(self.history()))

    def load(self, map_location: str | torch.device = "cpu") -> LoadedCheckpoint | None:
        """The newest checkpoint that loads (None when the directory has none at all).

        A file that is truncated, corrupt or not a training state is skipped with its reason;
        if every file fails, :class:`CheckpointError` names them all rather than restarting
        from step 0 over them.
        """
        skipped: dict[str, str] = {}
        newest_step = max((step_of(p) for p in self.history()), default=-1)
        for path in self.candidates():
            try:
                state = safe_load(path, map_location)
                if not isinstance(state, dict) or "step" not in state:
                    raise ValueError("not a training checkpoint (no 'step')")
            except Exception as error:  # torch raises several types for truncated or foreign files
                skipped[str(path)] = f"{error_summary(error)}"
                log.warning("skipping checkpoint %s: %s", path, skipped[str(path)])
                continue
            if path == self.latest and int(state["step"]) < newest_step:
                skipped[str(path)] = f"older (step {state['step']}) than step file {newest_step}"
                continue
            return LoadedCheckpoint(state, path, skipped)
        if skipped:
            reasons = "\n  ".join(f"{p}: {r}" for p, r in skipped.items())
            raise CheckpointError(
                f"no checkpoint in {self.directory} can be loaded; move them away to start afresh:\n  {reasons}"
            )
        return None


def rng_state() -> dict[str, Any]:
    """Every random generator's state as tensors and plain values (loadable with weights_only)."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }


def set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    numpy_state = rng["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    )
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))
