"""Chunk-size rules shared by every stage (see docs/architecture.md, "Chunking").

Tilt-series are chunked ``(1, cy, X)`` and volumes ``(cz, cy, X)`` with the *same* ``cy`` so
that per-tilt tasks (noise, NST, 2D filters) and per-slab tasks (projection, back-projection)
both read whole chunks: nothing is ever rechunked through memory.
"""
from __future__ import annotations

import math
from typing import Final

from .params import CHUNK_MiB, MIB, TASK_MEMORY_MiB

#: Default budget for one Zarr chunk (bytes): :data:`faket_dask.params.CHUNK_MiB` MiB.
DEFAULT_CHUNK_BYTES: Final = CHUNK_MiB * MIB
#: Default working-memory budget of one slab task (bytes):
#: :data:`faket_dask.params.TASK_MEMORY_MiB` MiB. A slab task holds its input slab, its output
#: slab and kernel temporaries, hence :data:`SLAB_OVERHEAD`.
DEFAULT_TASK_BYTES: Final = TASK_MEMORY_MiB * MIB
#: Bytes a slab task needs per byte of its input slab (input, output, kernel temporaries;
#: docs/architecture.md, "Chunking").
SLAB_OVERHEAD: Final = 4


def choose_cy(
    ny: int,
    nx: int,
    depth: int,
    *,
    task_bytes: int = DEFAULT_TASK_BYTES,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    multiple: int = 8,
    itemsize: int = 4,
) -> int:
    """Rows per y-chunk for data of ``ny`` x ``nx`` pixels processed in slabs of ``depth``.

    Parameters
    ----------
    ny, nx : int
        Detector (or volume) rows and columns.
    depth : int
        Largest leading extent a slab task touches: the number of tilts or the volume depth Z.
    task_bytes : int
        Working-memory budget of one slab task (bytes).
    chunk_bytes : int
        Upper bound for a single ``(1, cy, nx)`` chunk (bytes).
    multiple : int
        ``cy`` is rounded down to a multiple of this (binning factors must divide it), unless
        the whole of ``ny`` fits.
    itemsize : int
        Bytes per value (4 for float32).

    Returns
    -------
    int
        ``cy`` with ``1 <= cy <= ny``.
    """
    if min(ny, nx, depth) < 1:
        raise ValueError(f"choose_cy: sizes must be positive, got ny={ny} nx={nx} depth={depth}")
    row_task = depth * nx * itemsize * SLAB_OVERHEAD
    cy = min(task_bytes // row_task, chunk_bytes // (nx * itemsize))
    cy = max(int(cy), 1)
    if cy >= ny:
        return ny
    if cy >= multiple:
        cy -= cy % multiple
    return max(cy, 1)


def tiltseries_chunks(shape: tuple[int, int, int], cy: int) -> tuple[int, int, int]:
    """Chunk shape ``(1, cy, X)`` of a ``(tilt, y, x)`` tilt-series."""
    return (1, min(cy, shape[1]), shape[2])


def volume_chunks(
    shape: tuple[int, int, int], cy: int, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES, itemsize: int = 4
) -> tuple[int, int, int]:
    """Chunk shape ``(cz, cy, X)`` of a ``(z, y, x)`` volume; ``cz`` keeps a chunk under budget."""
    nz, ny, nx = shape
    cy = min(cy, ny)
    cz = max(1, min(nz, chunk_bytes // (cy * nx * itemsize)))
    return (int(cz), int(cy), nx)


def n_chunks(n: int, c: int) -> int:
    """Number of chunks of size ``c`` covering ``n``."""
    return math.ceil(n / c)


#: Input bytes of one whole-tilt task of a per-tilt stage when tilts are small
#: (:func:`small_tilts_per_task`): 1 MiB, a 512² float32 tilt. Measured in the demo (61 × 128²):
#: a 128² tilt's noise takes ~3 ms and its microscope image ~5 ms, less than a task's own
#: scheduling and its Zarr write; one tilt per task made ~550 noise and ~360 projection and
#: microscope tasks per run.
SMALL_TILTS_TASK_BYTES: Final = 1 * MIB


def tilts_per_task(shape: tuple[int, int, int], task_bytes: int, *, itemsize: int = 4,
                   min_tasks: int = 1) -> int:
    """Whole tilts per task of a ``(tilt, y, x)`` stack: at most ``task_bytes`` of input
    (``itemsize`` bytes per pixel), at least ``min_tasks`` tasks, never 0.

    The one rule of the stages that batch small tilts (noise, reconstruction, power spectra):
    per-task costs (scheduling, a kernel's set-up, a Zarr write per chunk) are then paid once
    per batch. A caller reading from a store opens the stack with this many tilts per chunk
    (``store.open(tilts_per_chunk=...)``), so each task reads its own tilts.
    """
    n_t, ny, nx = (int(n) for n in shape)
    return max(1, min(-(-n_t // max(1, min_tasks)), int(task_bytes) // max(1, ny * nx * itemsize)))


def small_tilts_per_task(shape: tuple[int, int, int], *, itemsize: int = 4) -> int:
    """Whole tilts per task of a per-tilt stage (projection output, microscope, noise):
    :func:`tilts_per_task` with :data:`SMALL_TILTS_TASK_BYTES` and at least 4 tasks; 1 for
    tilts of 1 MiB or more (a 1024² tilt always has a task of its own)."""
    return tilts_per_task(shape, SMALL_TILTS_TASK_BYTES, itemsize=itemsize, min_tasks=4)
