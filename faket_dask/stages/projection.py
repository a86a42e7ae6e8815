"""Projection stage: a volume ``(z, y, x)`` → its noiseless tilt-series ``(tilt, y, x)``.

One task per y-slab: it reads the volume slab ``(Z, cy, X)`` and computes ``(T, cy, X)`` with
:func:`faket_dask.kernels.projection.project_slab`; the result is then split (not moved) into
the tilt-series' ``(1, cy, X)`` chunks, or, when one slab covers the detector, into batches of
whole tilts (:func:`faket_dask.chunking.small_tilts_per_task`: several small tilts to a chunk,
one tilt of 1 MiB or more). A run store holds either one tilt per Zarr chunk
(:func:`faket_dask.store.save`).
"""
from __future__ import annotations

from collections.abc import Sequence

import dask.array as da
import numpy as np
import xarray as xr

from .. import chunking, datamodel
from ..errors import InputError
from ._common import gpu_annotation, resolve_device, y_slabs


def _project_block(block: np.ndarray, angles: np.ndarray, device: str) -> np.ndarray:
    """One y-slab ``(Z, cy, X)`` -> its projections ``(T, cy, X)`` float32."""
    from ..cluster import set_torch_threads
    from ..kernels.projection import project_slab

    set_torch_threads()
    return project_slab(block, angles, device=device)


def project(
    volume: xr.DataArray,
    angles_deg: Sequence[float] | np.ndarray,
    *,
    cy: int | None = None,
    device: str | None = "cpu",
    task_bytes: int = chunking.DEFAULT_TASK_BYTES,
) -> xr.DataArray:
    """Noiseless tilt-series of a volume (``docs/method.md §1``), lazily.

    Parameters
    ----------
    volume : xarray.DataArray, dims (z, y, x)
        Specimen density; numpy- or dask-backed. Tilt axis = y.
    angles_deg : sequence of float, shape (T,)
        Tilt angles (degrees), any order.
    cy : int, optional
        Rows per slab task (default from the task memory budget, :func:`chunking.choose_cy`).
    device : str, optional
        ``"cpu"`` (default), ``"cuda"``, or ``None``/``"auto"`` for a GPU when present. CUDA
        tasks carry the worker resource ``GPU=1``.
    task_bytes : int
        Memory budget of one slab task (bytes; default
        :data:`faket_dask.params.TASK_MEMORY_MiB` MiB).

    Returns
    -------
    xarray.DataArray, dims (tilt, y, x), float32
        ``-radon`` of every (z, x) plane, detector cropped to X; chunks ``(1, cy, X)``, or
        ``(k, Y, X)`` when ``cy`` covers Y (``k`` = :func:`chunking.small_tilts_per_task`); same
        ``y``/``x`` coordinates and pixel size as the volume. Identical for any ``cy``.

    Raises
    ------
    InputError
        Not a (z, y, x) volume, or no finite angle.
    """
    if datamodel.kind_of(volume) != "volume":
        raise InputError(f"project: expected a volume with dims (z, y, x), got {volume.dims}")
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    if angles.size == 0 or not np.isfinite(angles).all():
        raise InputError("project: need at least one finite tilt angle")
    nz, ny, nx = volume.shape
    device = resolve_device(device)
    if cy is None:
        from ..kernels.projection_blocks import column_block_width  # torch-free

        # The kernel multiplies y-columns in fixed blocks; a thinner slab pays for a full block.
        block = column_block_width(nz, nx, device)
        cy = chunking.choose_cy(ny, nx, max(nz, angles.size), task_bytes=task_bytes, multiple=block)
    data = volume.data if isinstance(volume.data, da.Array) else da.from_array(np.asarray(volume.data))
    slabs = y_slabs(data.astype(np.float32).rechunk({1: cy}))
    with gpu_annotation(device):
        proj = slabs.map_blocks(
            _project_block,
            angles,
            device,
            chunks=((angles.size,), slabs.chunks[1], (nx,)),
            dtype=np.float32,
            meta=np.empty((0, 0, 0), np.float32),
        )
    # Split into what the per-tilt stages after it take: small whole tilts several to a chunk
    # (the demo's 61 × 128² in 4 chunks, not 61: each split, read and write is a task).
    per = chunking.small_tilts_per_task((angles.size, ny, nx)) if len(slabs.chunks[1]) == 1 else 1
    proj = proj.rechunk({0: per})
    return datamodel.tiltseries(proj, angles, datamodel.pixel_size_of(volume), name="noiseless")
