"""Which process owns a stop: the main training process, never its helpers.

SLURM (preemption, ``scancel``, time limits), ``timeout`` and a terminal's Ctrl-C signal every
process of a job's process group. Data loader and evaluation workers therefore ignore the stop
signals; the main process finishes its step, checkpoints, and shuts its workers down itself.
"""
from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


def ignore_stop_signals(*_args: object) -> None:
    """Worker initializer (DataLoader ``worker_init_fn``, process-pool ``initializer``)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
