"""The unit tier runs in process: a test that starts a Python process (the training or any other
CLI) belongs in tests/integration. Libraries' own helper processes (ctypes' library lookup,
for one) are left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

_popen_init = subprocess.Popen.__init__


@pytest.fixture(autouse=True)
def _no_python_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    def guarded(self: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> None:
        program = args if isinstance(args, str) else (args[0] if args else "")
        if Path(str(program)).name.startswith("python") or str(program) == sys.executable:
            raise AssertionError("unit tests run in process: move a test that starts Python to tests/integration")
        _popen_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
