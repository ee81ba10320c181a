"""Which process owns a stop: the main training process, never its helpers.

SLURM (preemption, ``scancel``, time limits), ``timeout`` and a terminal's Ctrl-C signal every
process of a job's process group. Data loader and evaluation workers therefore ignore the stop
signals; the main process finishes its step, checkpoints, and shuts its workers down itself.
A worker that ignores stop signals must not outlive a main process that dies without shutting
it down (SIGKILL, or a kill while the pool starts): on Linux it asks the kernel to kill it when
its parent dies.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


def ignore_stop_signals(*_args: object) -> None:
    """Worker initializer (DataLoader ``worker_init_fn``, process-pool ``initializer``)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    die_with_parent()


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux ``prctl``); elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)  # the parent died before the request took effect
