"""glibc allocator settings of the worker processes of clusters this package starts.

Why (issue 15, measured 2026-12-01 on the 2-core VM, interleaved A/B): distributed starts every
worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.pre-spawn-environ``, so that
freed memory goes back to the OS). Dask runs tasks in a thread, which allocates from a glibc
arena of its own; with that threshold the arena's heap is shrunk (``madvise``) whenever 64 kB at
its top are free, and every temporary of the next call page-faults afresh. A VGG-19 Grams call
on 4 × 128² tilts took ~116,000 page faults and 190–330 ms of system time in a worker, against
~8,000 and 5–30 ms in the client, 1.3–1.6× the wall time; with the settings below, 80 faults
and 0 ms. (Environment variables cannot fix it here: glibc reads them once at process start,
and a nanny's ``env=`` is applied after the worker has started.)

:data:`TRIM_THRESHOLD_BYTES` keeps a thread arena's heap (64 MiB at most) mapped;
:data:`MMAP_THRESHOLD_BYTES` (glibc's largest) still gives blocks above it their own mapping,
returned to the OS when freed, so a worker keeps at most ~128 MiB more than it uses.
"""
from __future__ import annotations

import ctypes
import platform
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "AllocatorPlugin", "tune_glibc_malloc"]

#: ``M_TRIM_THRESHOLD``: free memory kept at the top of a heap before it is handed back.
TRIM_THRESHOLD_BYTES = 128 * 2**20
#: ``M_MMAP_THRESHOLD``: blocks at least this large get a mapping of their own (glibc's maximum
#: on 64-bit: ``HEAP_MAX_SIZE / 2``).
MMAP_THRESHOLD_BYTES = 32 * 2**20

# parameter numbers of mallopt(3), from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_glibc_malloc(trim_bytes: int = TRIM_THRESHOLD_BYTES, mmap_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Set this process's glibc ``M_TRIM_THRESHOLD`` and ``M_MMAP_THRESHOLD`` (``mallopt(3)``).

    Parameters
    ----------
    trim_bytes, mmap_bytes : int
        The thresholds, bytes.

    Returns
    -------
    bool
        True when both were set; False on a C library other than glibc (nothing changed).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, int(trim_bytes))
    ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_bytes))
    return bool(ok_trim) and bool(ok_mmap)


class AllocatorPlugin(WorkerPlugin):
    """Dask worker plugin: :func:`tune_glibc_malloc` in each worker process, at its start.

    Register with ``client.register_plugin(AllocatorPlugin())``; workers that start later
    (restarts, scaling, SLURM jobs) get it as well. Only for workers in processes of their own:
    an in-process worker shares the client's process.
    """

    name = "faket-dask-allocator"

    def setup(self, worker: Any) -> None:
        """Set the thresholds in the worker's process."""
        tune_glibc_malloc()
