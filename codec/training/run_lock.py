"""One writer per run directory: the training process holds an exclusive ``flock`` on
``<run_dir>/.lock`` for its whole life. The kernel drops the lock when the process dies, so a
killed run never leaves a stale lock; the file records who holds it, for the message."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path


class RunDirectoryBusy(RuntimeError):
    """Another live process is training this run directory."""


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._handle = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "{}"
            handle.close()
            try:
                who = json.loads(holder)
            except json.JSONDecodeError:
                who = {}
            raise RunDirectoryBusy(
                f"{self.path.parent} is being trained by another process (pid {who.get('pid', '?')} on {who.get('host', '?')}, "
                f"started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(who.get('since', 0)))}); "
                "wait for it to finish or stop it, then run this command again to resume"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
