"""Shared fixtures: config composition, and tiny overrides that keep CPU tests fast."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
# How long a test lets a training or sweep subprocess run before calling it hung: a guard against
# hangs, not a speed check. Under two full test suites at once on 2 cores the README demo ran 10x
# slower than alone (35 min instead of 4.5), so the guard is far above anything a loaded machine takes.
HANG_GUARD_S = float(os.environ.get("TEST_HANG_GUARD_S", 3 * 3600))

# Tiny model settings used wherever a test only needs *a* working codec.
TINY_MODEL = [
    "encoder.channels=4",
    "encoder.dimension=16",
    "encoder.lstm_layers=0",
    "quantizer.codebook_size=32",
    "discriminator.msstft.filters=4",
    "discriminator.msstft.windows=[256,128]",
    "loss.mel_windows=[64,128,256]",
    "loss.mel_bins=[10,20,40]",
]


def require_tool(name: str) -> str:
    """Path of a system tool; skip locally when missing, but fail under CI where it must exist."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (installed by .ci/run) but is not on PATH")
        pytest.skip(f"{name} is not installed (see README: system packages for tests)")
    return path


def require_slurm_cluster() -> None:
    """Skip locally, fail under CI, when no SLURM cluster answers (slurm/start_local_cluster.sh)."""
    import subprocess

    require_tool("sinfo")
    probe = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if probe.returncode != 0 or not probe.stdout.strip():
        message = "no SLURM cluster answers; start one with: sudo bash slurm/start_local_cluster.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


TIERS = ("unit", "integration", "e2e")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker is pinned to its own share of the cores, and so is every
    process its tests start (affinity is inherited; runs size their thread pools from it). Without
    this, torch and BLAS in each worker size their pools to every core and the workers fight."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    cores = sorted(os.sched_getaffinity(0))
    if workers > 1 and worker.startswith("gw") and len(cores) >= workers:
        share = len(cores) // workers
        index = int(worker[2:]) % workers
        os.sched_setaffinity(0, cores[index * share : (index + 1) * share])
        torch.set_num_threads(share)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test carries the marker of its tier folder, so ``-m unit`` and friends select tiers."""
    for item in items:
        parts = item.path.relative_to(REPO_ROOT / "tests").parts
        tier = parts[0] if parts and parts[0] in TIERS else None
        if tier is None:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/unit, tests/integration or tests/e2e")
        item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
