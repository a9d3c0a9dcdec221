"""This process's resident memory, read after handing freed heap pages back to the system.

Loading a model parses its file into temporaries (an ONNX tree ensemble's protobuf is several times
the final session); glibc keeps those freed pages in its arenas, so the process would look (and,
under a container limit, be) that much larger for as long as it runs. ``malloc_trim`` returns them.
Reading the size after a trim also makes the model cache's per-model figure the model's real cost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

import psutil


def _trimmer() -> Callable[[], None]:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    trim = getattr(libc, "malloc_trim", None)  # glibc only; musl and macOS have no such call
    if trim is None:
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]

    def release() -> None:
        trim(0)

    return release


release_free_heap: Callable[[], None] = _trimmer()
_process = psutil.Process()


def resident_bytes() -> int:
    """Resident set size once freed heap memory has gone back to the system."""
    release_free_heap()
    return int(_process.memory_info().rss)
