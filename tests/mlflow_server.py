"""A real ``mlflow server`` on a free localhost port, that tests can stop and start again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MlflowServer:
    """``mlflow server`` over a SQLite store in ``folder``; the same port and store across restarts."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def listening(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def start(self, timeout: float = 300) -> MlflowServer:
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}", "--workers", "1"]
        command += ["--default-artifact-root", str(self.folder / "artifacts")]
        self.process = subprocess.Popen(
            command, cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while not self.listening():  # an event: the port answers
            if self.process.poll() is not None:
                raise AssertionError(f"mlflow server exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                raise AssertionError("mlflow server did not start listening")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        """Stop the server and every worker it started (its process group), and wait for them."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=60)
        deadline = time.monotonic() + 60
        while self.listening() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.process = None
