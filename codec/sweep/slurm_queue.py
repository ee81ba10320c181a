"""What SLURM's queue says about a submitted array, for the launcher that waits on it.

submitit learns that a job ended from its result file, or from ``sacct``; a cluster without
accounting (like the local one) gives it neither for a job that never starts or is cancelled,
and the launcher would wait forever. So the launcher also reads ``squeue``: a task that SLURM
says can never run, or that left the queue without a result, is reported at once.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

# Pending reasons that no amount of waiting resolves: the request exceeds what the partition,
# its nodes or the account can ever give.
NEVER_RUN_REASONS = (
    "PartitionConfig",
    "ReqNodeNotAvail",
    "BadConstraints",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "InvalidQOS",
    "InvalidAccount",
    "QOSMaxCpuPerJobLimit",
    "QOSMaxMemoryPerJob",
    "QOSMaxGRESPerJob",
    "AssocMaxCpuPerJobLimit",
    "AssocMaxMemPerJobLimit",
)
ENDED_STATES = (
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
)


@dataclass(frozen=True)
class TaskState:
    state: str
    reason: str

    @property
    def never_runs(self) -> bool:
        return self.state == "PENDING" and any(self.reason.startswith(r) for r in NEVER_RUN_REASONS)


def array_states(array_id: str) -> dict[str, TaskState] | None:
    """Task id (``<array>_<task>``) -> state and reason, including recently ended tasks; None if
    ``squeue`` cannot be asked (the caller then just keeps waiting)."""
    try:
        result = subprocess.run(
            ["squeue", "-h", "-r", "-t", "all", "-j", array_id, "-o", "%i|%T|%r"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        # An id the controller has forgotten is an error too: every task has left the queue.
        return {} if "Invalid job id" in result.stderr else None
    states = {}
    for line in result.stdout.splitlines():
        task, _, rest = line.partition("|")
        state, _, reason = rest.partition("|")
        states[task.strip()] = TaskState(state.strip(), reason.strip())
    return states


def cancel(job_id: str) -> None:
    subprocess.run(["scancel", job_id], capture_output=True, timeout=60)
