"""The C allocator setting every sid4llm command runs with on Linux: freed memory is kept for the next request.

PyTorch on CPU has no caching allocator; its tensors come from ``malloc``. glibc serves every block over 32 MB
with a fresh ``mmap`` and gives it back to the system on ``free``, so a gradient of the same size allocated again
at the next step (a token-embedding gradient of a 49k-word vocabulary is 114 MB) is page-faulted in again,
zero-filled page by page. On the quickstart's one-layer SmolLM2 that was a quarter of each training step
(``aten::fill_``; ``scripts/bench_finetune.py --profile_steps``): with large blocks taken from the heap and kept
there, a step went from 0.50 to 0.37 s, at 15 % more peak memory. Results are unchanged; only where the bytes
come from is.

Off with ``SID4LLM_KEEP_FREED_MEMORY=0``; untouched where the process already tunes glibc's malloc through its
own environment variables, or where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

logger = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_ENVIRONMENT = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_")
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Serve large blocks from the heap and keep what is freed there (glibc's ``mallopt``): no ``mmap`` per
    block, no trimming of the heap's top. Idempotent; returns whether the setting is in force."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("SID4LLM_KEEP_FREED_MEMORY", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux") or any(name in os.environ for name in _ENVIRONMENT):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 256 * 2**20))
    _applied = all(mallopt(parameter, value) == 1 for parameter, value in settings)
    if not _applied:
        logger.debug("glibc refused a mallopt setting; the allocator keeps its defaults for what it refused")
    return _applied
