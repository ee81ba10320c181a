"""Per-phase wall time of a training step, for the benchmark.

Training uses :data:`NO_TIMING`, which adds nothing to the step. A synchronizing timer waits for
the device at each phase edge, so GPU work is charged to the phase that queued it.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import torch


class PhaseTimer:
    def __init__(self, device: torch.device, synchronize: bool = True) -> None:
        self.device = device
        self.synchronize = synchronize and device.type == "cuda"
        self.totals: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.synchronize:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        yield
        if self.synchronize:
            torch.cuda.synchronize(self.device)
        self.totals[name] += time.perf_counter() - start


class _NoTiming:
    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        yield


NO_TIMING = _NoTiming()


def format_duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s: for ETAs in log lines."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
