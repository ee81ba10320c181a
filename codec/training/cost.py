"""What a run has cost so far: wall time, device-hours, audio seen and peak memory.

A sweep's answer is only worth what it cost to get, so every run carries its own bill. Wall time
accumulates across resumes (kept in the checkpoint), so a preempted and requeued run reports its
whole training time, not only its last attempt's; time spent waiting in a queue is not counted.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Mapping

import torch


def peak_host_memory_mb() -> float:
    """Peak resident memory of this process (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class RunCost:
    """Accumulates training wall time and reports the run's cost at a step."""

    def __init__(self, device: torch.device, world_size: int, audio_seconds_per_step: float) -> None:
        self.device = device
        self.world_size = world_size
        self.audio_seconds_per_step = audio_seconds_per_step
        self.previous_seconds = 0.0  # wall time of earlier attempts of this run
        self.previous_steps = 0
        self._started = time.monotonic()
        self._start_step = 0

    def start(self, step: int) -> None:
        """Begin timing this attempt at ``step`` (after a resume, on top of the checkpoint's total)."""
        self._started = time.monotonic()
        self._start_step = step

    def wall_seconds(self) -> float:
        return self.previous_seconds + time.monotonic() - self._started

    def state_dict(self) -> dict[str, float]:
        return {"wall_seconds": self.wall_seconds()}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.previous_seconds = float(state.get("wall_seconds", 0.0))

    def seconds_per_step(self, step: int) -> float | None:
        """Measured in this attempt (so it reflects this machine), or None before the first step."""
        done = step - self._start_step
        return (time.monotonic() - self._started) / done if done > 0 else None

    def metrics(self, step: int) -> dict[str, float]:
        """``cost/*`` values for the tracker and status.json (GPU-hours on CUDA, CPU device-hours otherwise)."""
        wall = self.wall_seconds()
        values = {
            "cost/wall_seconds": wall,
            "cost/device_hours": wall * self.world_size / 3600.0,
            "cost/audio_seconds": step * self.audio_seconds_per_step,
            "cost/peak_host_memory_mb": peak_host_memory_mb(),
        }
        if self.device.type == "cuda":
            values["cost/peak_device_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        per_step = self.seconds_per_step(step)
        if per_step is not None:
            values["cost/seconds_per_step"] = per_step
        return values
