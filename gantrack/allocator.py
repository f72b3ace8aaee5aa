"""The memory allocator of processes gantrack owns (no torch import: the CLI calls it first)."""

from __future__ import annotations


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed memory instead of returning it to the kernel; True if applied.

    A training step allocates and frees activations of tens of MB. glibc serves blocks that large with
    fresh ``mmap`` pages and unmaps them on free, so every step pays for zero-filled page faults on
    every large tensor: 15-20 % of a book-size CPU step (benchmarks/bench_step.py). Serving them from
    the heap and never trimming it (``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD`` 2 GiB; the environment
    variables ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`` do the same) keeps the process's
    peak memory resident instead. It changes the whole process, so gantrack applies it only in processes
    it owns — the ``gantrack`` command and its sweep workers — never inside ``gantrack.train()`` called
    from a user's program. No effect (False) off glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, (1 << 31) - 1))
