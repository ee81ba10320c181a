"""One writer per run directory: the training process holds an exclusive POSIX record lock
(``lockf``) on ``<run_dir>/.lock`` for its whole life. The kernel drops it when the process
dies, so a killed run never leaves a stale lock. Unlike ``flock``, a record lock is not inherited
by forked children, so data loader workers that outlive a killed trainer by a few seconds do not
keep its run locked. The file records who holds the lock, for the message."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import IO


class RunDirectoryBusy(RuntimeError):
    """Another live process is training this run directory."""


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                handle.close()
                raise
            handle.seek(0)
            holder = handle.read().strip() or "{}"
            handle.close()
            try:
                who = json.loads(holder)
            except json.JSONDecodeError:
                who = {}
            raise RunDirectoryBusy(
                f"{self.path.parent} is being trained by another process (pid {who.get('pid', '?')} on "
                f"{who.get('host', '?')}, "
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
            fcntl.lockf(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
