"""The cores a run may use, and every thread pool sized to them.

torch's intra-op pool, its inter-op pool and the BLAS/OpenMP pools each size themselves to every
visible core, and loader and evaluation workers come on top. Two runs side by side on the same
cores then fight over them (two demo trainings on 2 cores ran at 0.37x the throughput of one).
A run therefore takes its cores from what it was given and sizes every pool from that number.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

# Variables that OpenMP, MKL and OpenBLAS read at start: processes this run starts inherit them.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class CpuBudget:
    """``cores`` usable cores and where that number came from."""

    cores: int
    source: str

    def workers(self, configured: int) -> int:
        """A worker pool's size: as configured, but never more processes than cores."""
        return max(0, min(int(configured), self.cores))

    def describe(self) -> str:
        return f"{self.cores} core(s) from {self.source}"

    def record(self) -> dict[str, Any]:
        """For ``status.json``: the budget and the cores this process may run on."""
        return {
            "cores": self.cores,
            "source": self.source,
            "affinity": sorted(os.sched_getaffinity(0)),
            "since": time.time(),
        }


def cpu_budget(environ: Mapping[str, str] | None = None) -> CpuBudget:
    """The cores given to this process: its CPU affinity (the local sweep launcher pins each job to
    its ``cpus_per_task`` cores), lowered by ``SLURM_CPUS_PER_TASK`` under SLURM and by an explicit
    ``OMP_NUM_THREADS``; never more than the affinity allows."""
    environ = os.environ if environ is None else environ
    allowed = len(os.sched_getaffinity(0))
    budget = CpuBudget(allowed, "the CPU affinity")
    slurm = environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and 0 < int(slurm) < budget.cores:
        budget = CpuBudget(int(slurm), "SLURM_CPUS_PER_TASK")
    chosen = environ.get("OMP_NUM_THREADS", "")  # a user's (or a parent run's) explicit cap
    if chosen.isdigit() and 0 < int(chosen) < budget.cores:
        budget = CpuBudget(int(chosen), "OMP_NUM_THREADS")
    return budget


def apply_cpu_budget(budget: CpuBudget) -> Any:
    """Size torch's pools, the BLAS/OpenMP pools of this process and of the processes it starts.
    Returns threadpoolctl's limiter (``restore_original_limits()`` undoes the BLAS part)."""
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(budget.cores)
    torch.set_num_threads(budget.cores)
    try:
        torch.set_num_interop_threads(budget.cores)
    except RuntimeError:  # only settable before the first parallel work; a second run in one process keeps it
        pass
    from threadpoolctl import threadpool_limits

    return threadpool_limits(budget.cores)
