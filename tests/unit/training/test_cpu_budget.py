"""A run's cores come from what it was given, and every pool is sized to them."""

from __future__ import annotations

import os

import torch

from codec.training.cpu_budget import THREAD_VARIABLES, CpuBudget, apply_cpu_budget, cpu_budget


def test_the_budget_is_the_affinity_lowered_by_slurm_and_an_explicit_omp_cap() -> None:
    allowed = len(os.sched_getaffinity(0))
    assert cpu_budget({}) == CpuBudget(allowed, "the CPU affinity")
    assert cpu_budget({"SLURM_CPUS_PER_TASK": str(allowed + 8)}).cores == allowed  # never above the affinity
    if allowed > 1:
        assert cpu_budget({"SLURM_CPUS_PER_TASK": "1"}) == CpuBudget(1, "SLURM_CPUS_PER_TASK")
        assert cpu_budget({"OMP_NUM_THREADS": "1"}) == CpuBudget(1, "OMP_NUM_THREADS")
    assert cpu_budget({"SLURM_CPUS_PER_TASK": "", "OMP_NUM_THREADS": "0"}).cores == allowed


def test_worker_pools_never_exceed_the_cores() -> None:
    budget = CpuBudget(2, "test")
    assert (budget.workers(8), budget.workers(1), budget.workers(0)) == (2, 1, 0)


def test_applying_a_budget_sizes_torch_blas_and_child_processes(monkeypatch) -> None:
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    for variable in THREAD_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    limiter = None
    try:
        limiter = apply_cpu_budget(CpuBudget(1, "test"))
        assert torch.get_num_threads() == 1
        assert all(os.environ[variable] == "1" for variable in THREAD_VARIABLES)
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    finally:
        torch.set_num_threads(before)
        if limiter is not None:
            limiter.restore_original_limits()
