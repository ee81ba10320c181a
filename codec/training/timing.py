"""Per-phase wall time of a training step, for the benchmark.

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
