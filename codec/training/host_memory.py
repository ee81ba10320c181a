"""Keep freed host memory in the process instead of handing it back to the kernel after every op.

glibc serves large blocks (feature maps of tens of MB) with fresh ``mmap`` pages and unmaps them
on free, so every training step page-faults its activations in again: on the 2-core CPU machine
a fifth of a step's time was spent in the kernel doing that. Raising the trim threshold and
turning ``mmap`` off for large blocks (``mallopt``) makes freed blocks reusable by the next step.
Same arithmetic, same results; the process keeps its peak host memory instead of shrinking
between steps. A no-op off glibc (other C libraries, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4
# Freed memory below this stays in the heap; above it glibc trims it back to the kernel.
TRIM_THRESHOLD_BYTES = 1 << 30
# Extra heap asked of the kernel each time the heap grows, so growth is rare.
TOP_PAD_BYTES = 256 << 20


def retain_freed_host_memory() -> bool:
    """Tell glibc's allocator to reuse freed blocks rather than unmap them. True when applied."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        log.info(
            "retain_host_memory: not glibc (%s); allocator left as it is", platform.libc_ver()[0] or platform.system()
        )
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    applied = all(
        libc.mallopt(option, value) == 1
        for option, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES), (M_TOP_PAD, TOP_PAD_BYTES))
    )
    if not applied:
        log.warning("retain_host_memory: glibc refused a mallopt setting; allocator left partly as it was")
    return applied
