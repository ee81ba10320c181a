"""Time in training: per-phase wall time of a step (for the benchmark), the log window's pace and
ETA, and durations as log lines print them.

Training uses :data:`NO_TIMING`, which adds nothing to the step. A synchronizing timer waits for
the device at each phase edge, so GPU work is charged to the phase that queued it.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from enum import StrEnum

import torch


class StepPhase(StrEnum):
    """The parts of one training step that are timed: the one list the step (``gan_step.py``), the
    benchmark's breakdown (``codec/bench.py``) and its test all use."""

    GENERATOR_FORWARD = "generator_forward"
    DISCRIMINATOR_FORWARD_BACKWARD = "discriminator_forward_backward"
    GENERATOR_BACKWARD = "generator_backward"
    OPTIMIZER = "optimizer"


class PhaseTimer:
    def __init__(self, device: torch.device, synchronize: bool = True) -> None:
        self.device = device
        self.synchronize = synchronize and device.type == "cuda"
        self.totals: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def phase(self, name: StepPhase) -> Iterator[None]:
        name = StepPhase(name)  # an unknown name fails here, not as a missing column later
        if self.synchronize:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.synchronize:
            torch.cuda.synchronize(self.device)
        self.totals[name] += time.perf_counter() - start


class _NoTiming:
    @contextlib.contextmanager
    def phase(self, name: StepPhase) -> Iterator[None]:
        yield


NO_TIMING = _NoTiming()


def format_duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s: for ETAs in log lines."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class LogWindow:
    """The steps since the last log line: their count and time, and the running maxima of the
    ``*_max`` metrics (maxima over every step of the window, not the last step's)."""

    def __init__(self, first_step: int) -> None:
        self.loop_start = self.start = time.perf_counter()
        self.first_step = first_step
        self.steps = 0
        self.maxima: dict[str, torch.Tensor] = {}
        self.last: dict[str, torch.Tensor] = {}

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        self.steps += 1
        self.last = metrics
        for key in [k for k in metrics if k.endswith("_max")]:
            self.maxima[key] = metrics[key] if key not in self.maxima else torch.maximum(self.maxima[key], metrics[key])

    def close(self, audio_seconds_per_step: float) -> dict[str, float]:
        """The last step's metrics with the window's maxima and throughput; starts the next window."""
        now = time.perf_counter()
        values = {k: float(v) for k, v in {**self.last, **self.maxima}.items()}
        values["train/throughput_audio_seconds_per_second"] = (
            self.steps * audio_seconds_per_step / max(now - self.start, 1e-9)
        )
        self.start, self.steps, self.maxima = now, 0, {}
        return values

    def eta(self, step: int, max_steps: int) -> float:
        """Seconds to ``max_steps`` at the pace since the loop started."""
        return (self.start - self.loop_start) / max(step - self.first_step, 1) * (max_steps - step)
