"""Folders generated once into a cache, safely under concurrent first use."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

COMPLETE_MARKER = ".complete"


def build_folder_once(folder: Path, write: Callable[[Path], None]) -> Path:
    """Return ``folder``, first filling it with ``write(staging)`` if it is not complete.

    ``write`` fills a private staging folder that is renamed into place when done, so readers
    never see a half-written folder and concurrent builders do not clash (the first rename wins).
    """
    folder = Path(folder)
    if (folder / COMPLETE_MARKER).exists():
        return folder
    staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (staging / COMPLETE_MARKER).touch()
    try:
        os.replace(staging, folder)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return folder
