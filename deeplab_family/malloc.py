"""Caps glibc's malloc arenas, which keeps a long inference loop's memory flat.

TensorFlow's CPU kernels allocate from many threads. glibc gives each thread an arena of its
own (up to 8 per core), and freed blocks stay in the arena that allocated them, so resident
memory creeps up image after image although nothing leaks. `benchmarks/eval_memory.py`
measured the tiny model under 6 scales + flip: +8.6 MiB per image over 80 images with glibc's
default, +0.34 MiB per image with two arenas, at the same speed. This is what the environment
variable `MALLOC_ARENA_MAX=2` does, applied from inside the process.

    >>> from deeplab_family.malloc import limit_arenas
    >>> limit_arenas(2)   # before TensorFlow starts its threads
    True
"""

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # from glibc's <malloc.h>


def limit_arenas(max_arenas=2):
    """Caps the number of malloc arenas; True if it was applied.

    A no-op (False) where the C library has no `mallopt` (not glibc: macOS, musl), and when
    the user already set `MALLOC_ARENA_MAX`, which wins. Call it early: arenas created before
    the call stay.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_ARENA_MAX, int(max_arenas)) == 1
