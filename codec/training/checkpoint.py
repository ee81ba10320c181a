"""Atomic checkpoints: ``step_N.pt`` history (keep-last-K), ``latest.pt`` and ``best.pt``.

Every file is written to a temporary name and renamed, so a kill at any moment leaves the
previous checkpoint intact. ``latest`` and ``best`` are hard links, costing no extra space.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch


def atomic_torch_save(obj: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def _atomic_link(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:  # filesystems without hard links
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


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
        return sorted(self.directory.glob("step_*.pt"))

    def save(self, state: dict[str, Any], step: int) -> Path:
        path = atomic_torch_save(state, self.directory / f"step_{step:09d}.pt")
        _atomic_link(path, self.latest)
        for old in self.history()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def mark_best(self, step_file: Path) -> None:
        _atomic_link(step_file, self.best)

    def load(self, path: Path | None = None, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        path = self.latest if path is None else path
        if not path.exists():
            return None
        return torch.load(path, map_location=map_location, weights_only=False)
