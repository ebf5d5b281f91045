"""Keep memory flat on long videos: limit glibc's per-thread malloc arenas.

Every stage thread (gRPC, the restore fan-out, the encoder feed) allocates and frees
megabyte frames. glibc gives busy threads arenas of their own and rarely returns their
free space, so the resident size crept up with the video's length (+19 % from 30 s to
120 s of audio). Two arenas keep it flat at no measured speed cost (BENCHMARKS.md). The
same as MALLOC_ARENA_MAX=2, but set from inside the process, before the threads start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # mallopt parameter number in glibc's malloc.h


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Apply the limit unless MALLOC_ARENA_MAX is already set; False where not glibc."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return False
