"""Reconstruction stage: tilt-series ``(tilt, y, x)`` → tomogram ``(z, y, x)`` (``docs/method.md §5``).

Two phases, each with bounded memory:

1. per tilt (binning is a cubic spline over the whole tilt, the filter a 2D FFT): one task per
   tilt reads its ``Y/cy`` chunks, bins and filters, and writes ``(1, cy', X')`` chunks to a
   scratch Zarr array (when the whole filtered stack fits one task's memory, ``task_bytes``,
   and no ``scratch_dir`` is given, Dask's in-memory rechunk replaces the scratch array: the
   same arithmetic, without the Zarr round trip);
2. per slab: one task per ``cy'`` rows reads ``(T, cy', X')`` from the scratch array and
   back-projects it into ``(Z', cy', X')``.

The scratch array is the out-of-core transposition from tilts to slabs: going through dask's
in-memory rechunk instead would hold the whole binned stack across the workers. Phase 2 tasks
depend on all of phase 1 (a barrier), so they only start once the scratch array is complete.
Filter names and defaults: :mod:`faket_dask.params.reconstruction`.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr

from .. import chunking, datamodel
from ..errors import InputError
from ..store.codecs import compressors
from ..params import FILTER_NAMES, RECONSTRUCTION_BINNING, RECONSTRUCTION_FILTER
from ._common import gpu_annotation, resolve_device


#: Input bytes of one bin-and-filter task (several small tilts go to one task).
_TASK_INPUT_BYTES = 8 * 2**20


def _bin_filter_block(
    block: np.ndarray, binning: int, filter_name: str, crowther: float | None
) -> np.ndarray:
    """Whole tilts ``(k, Y, X)`` -> binned and Fourier-filtered ``(k, Y', X')`` float32."""
    from ..cluster import set_torch_threads
    from ..kernels.filters import apply_fourier_filter, bin_tilts, make_filter

    set_torch_threads()
    binned = bin_tilts(np.asarray(block, np.float32), binning)
    filt = make_filter(filter_name, binned.shape[1], binned.shape[2], crowther=crowther)
    return apply_fourier_filter(binned, filt)


def filter_tilts(
    ts: xr.DataArray,
    *,
    binning: int = RECONSTRUCTION_BINNING,
    filter: str = RECONSTRUCTION_FILTER,
    crowther: float | None = None,
) -> xr.DataArray:
    """Bin (cubic spline, as scipy.ndimage.zoom) and Fourier-filter every tilt, lazily.

    Parameters
    ----------
    ts : xarray.DataArray, dims (tilt, y, x)
        Tilt-series (any real dtype; filtered as float32).
    binning : int
        Binning factor b >= 1 in y and x.
    filter : {"approx_shrec", "ramp", "none"}
        One of :data:`faket_dask.params.FILTER_NAMES`.
    crowther : float, optional
        approxShrec's Crowther frequency, a fraction of Nyquist in (0, 1] (default
        :data:`faket_dask.params.CROWTHER`).

    Returns
    -------
    xarray.DataArray, dims (tilt, y, x), float32
        Whole-tilt chunks ``(k, Y', X')`` (k tilts of ≤ 8 MiB of input per task, at least 4
        tasks), pixel size ``b ×`` the input's.

    Raises
    ------
    InputError
        Unknown filter, binning < 1, or a Crowther fraction outside (0, 1].
    """
    from ..kernels.reconstruction_shapes import binned_shape  # torch-free

    if filter not in FILTER_NAMES:
        raise InputError(f"unknown filter '{filter}' (choose {', '.join(FILTER_NAMES)})")
    if binning < 1:
        raise InputError(f"binning must be ≥ 1, got {binning}")
    if crowther is not None and not 0 < crowther <= 1:
        raise InputError(f"crowther must be a fraction of Nyquist in (0, 1], got {crowther}")
    T, Y, X = ts.shape
    ny, nx = binned_shape(Y, X, binning)
    data = ts.data if isinstance(ts.data, da.Array) else da.from_array(np.asarray(ts.data))
    per_task = tilts_per_task((T, Y, X))
    whole = data.astype(np.float32).rechunk({0: per_task, 1: -1, 2: -1})
    # meta given: without it Dask calls the kernel on an empty block here, on the client,
    # which imports torch beside running stages (torch_import.py says why that must not be)
    out = whole.map_blocks(
        _bin_filter_block, binning, filter, crowther, chunks=(whole.chunks[0], (ny,), (nx,)),
        dtype=np.float32, meta=np.empty((0, 0, 0), np.float32),
    )
    pixel = datamodel.pixel_size_of(ts) * binning
    return datamodel.tiltseries(out, ts["tilt"].values, pixel, name=ts.name)


def tilts_per_task(shape: tuple[int, int, int]) -> int:
    """Tilts per bin-and-filter task of a (tilt, y, x) stack: ≤ 8 MiB of float32 input, at
    least 4 tasks (never 0).

    Several small tilts to a task: the kernels are batched, and per-call costs (the filter,
    its half spectrum, scheduling) are paid once per task. A caller reading from a store can
    open the stack with this many tilts per chunk (``store.open(tilts_per_chunk=...)``), so
    that each task also reads its tilts itself (no separate read and merge tasks).
    """
    return chunking.tilts_per_task(shape, _TASK_INPUT_BYTES, min_tasks=4)


def _all_written(_results: list) -> bool:
    """The barrier task: runs once every phase-1 store task has (their results are None)."""
    return True


def _backproject_block(
    template: np.ndarray, _barrier: object, scratch: str, angles: np.ndarray, nz: int,
    device: str, block_info: dict | None = None,
) -> np.ndarray:
    """Phase 2 of one slab: read ``(T, cy', X')`` from the scratch array, back-project it."""
    (y0, y1) = block_info[0]["array-location"][1]
    return _backproject_in_memory(zarr.open_array(scratch, mode="r")[:, y0:y1, :], angles, nz, device)


def _backproject_in_memory(slab: np.ndarray, angles: np.ndarray, nz: int, device: str) -> np.ndarray:
    """Phase 2 of one slab: back-project its ``(T, cy', X')`` filtered rows."""
    from ..cluster import set_torch_threads
    from ..kernels.backprojection import backproject_slab

    set_torch_threads()
    return backproject_slab(np.asarray(slab), angles, nz=nz, device=device)


def reconstruct(
    ts: xr.DataArray,
    *,
    binning: int = RECONSTRUCTION_BINNING,
    filter: str = RECONSTRUCTION_FILTER,
    crowther: float | None = None,
    z_valid: tuple[float, float] | None = None,
    thickness: int | None = None,
    cy: int | None = None,
    device: str | None = "cpu",
    scratch_dir: str | Path | None = None,
    task_bytes: int = chunking.DEFAULT_TASK_BYTES,
) -> xr.DataArray:
    """Reconstruct a tomogram from a tilt-series, lazily (``docs/method.md §5``).

    Parameters
    ----------
    ts : xarray.DataArray, dims (tilt, y, x)
        Projections (any modality); angles from its ``tilt`` coordinate (degrees).
    binning : int
        Binning factor b in y and x (cubic spline; the paper's is
        :data:`faket_dask.params.RECONSTRUCTION_BINNING`, 2).
    filter : {"approx_shrec", "ramp", "none"}
        2D Fourier filter before back-projection (:data:`faket_dask.params.FILTER_NAMES`).
    crowther : float, optional
        approxShrec's Crowther frequency as a fraction of Nyquist (default
        :data:`faket_dask.params.CROWTHER`, SHREC's 0.61).
    z_valid : (float, float), optional
        Keep this relative z-range (SHREC's: :data:`faket_dask.params.SHREC_Z_VALID`).
    thickness : int, optional
        Slices Z' before ``z_valid`` (default X' = binned width, as the original).
    cy : int, optional
        Binned rows per slab task (default from the task memory budget).
    device : str, optional
        ``"cpu"``, ``"cuda"``, or ``None``/``"auto"``.
    scratch_dir : path, optional
        Where the filtered tilts are staged between the two phases (default: a temporary
        directory; on a multi-node cluster it must be on a shared file system).
    task_bytes : int
        Memory budget of one slab task (bytes; default
        :data:`faket_dask.params.TASK_MEMORY_MiB` MiB).

    Returns
    -------
    xarray.DataArray, dims (z, y, x), float32
        Chunks ``(cz, cy', X')``, pixel size ``b ×`` the input's.

    Raises
    ------
    InputError
        Not a tilt-series, a bad ``z_valid``, or anything :func:`filter_tilts` refuses.
    """
    if datamodel.kind_of(ts) != "tiltseries":
        raise InputError(f"reconstruct: expected a tilt-series (tilt, y, x), got {ts.dims}")
    if z_valid is not None and not (0 <= z_valid[0] < z_valid[1] <= 1):
        raise InputError(f"z_valid must satisfy 0 ≤ lo < hi ≤ 1, got {z_valid}")
    device = resolve_device(device)
    angles = np.asarray(ts["tilt"].values, np.float64)
    filtered = filter_tilts(ts, binning=binning, filter=filter, crowther=crowther)
    T, ny, nx = filtered.shape
    nz = int(thickness or nx)
    cy = cy or chunking.choose_cy(ny, nx, max(T, nz), task_bytes=task_bytes)

    if T * ny * nx * 4 <= task_bytes and scratch_dir is None:
        # The whole filtered stack fits one task's memory: Dask's in-memory rechunk from tilts
        # to slabs costs less than the scratch Zarr round trip (61 × 512², bin 2: 16 MB).
        slabs = filtered.data.rechunk({0: -1, 1: cy, 2: -1})
        with gpu_annotation(device):
            vol = slabs.map_blocks(_backproject_in_memory, angles, nz, device, dtype=np.float32,
                                   chunks=((nz,), slabs.chunks[1], (nx,)),
                                   meta=np.empty((0, 0, 0), np.float32))
        return _as_tomogram(vol, nz, ny, nx, cy, filtered, ts, binning, filter, z_valid)
    token = dask.base.tokenize(filtered.data, cy)
    root = Path(scratch_dir or tempfile.gettempdir()) / "faket-dask-scratch"
    path = str(root / f"filtered-{token}.zarr")
    target = zarr.create_array(
        path, shape=(T, ny, nx), chunks=(1, cy, nx), dtype="float32", overwrite=True, zarr_format=3,
        compressors=compressors(),
    )
    with gpu_annotation(device):
        stored = da.store(filtered.data.rechunk({1: cy}), target, lock=False, compute=False)
        # One tiny task that waits for every store task (their results are None).
        barrier = dask.delayed(_all_written, pure=True)(list(stored.to_delayed().ravel()))
        template = da.empty((nz, ny, nx), chunks=(nz, cy, nx), dtype=np.float32)
        vol = template.map_blocks(
            _backproject_block, barrier, path, angles, nz, device, dtype=np.float32,
            meta=np.empty((0, 0, 0), np.float32),
        )
    return _as_tomogram(vol, nz, ny, nx, cy, filtered, ts, binning, filter, z_valid)


def _as_tomogram(vol: da.Array, nz: int, ny: int, nx: int, cy: int, filtered: xr.DataArray,
                 ts: xr.DataArray, binning: int, filter: str,
                 z_valid: tuple[float, float] | None) -> xr.DataArray:
    """The back-projected slabs as the labelled tomogram (volume chunks, ``z_valid`` cut)."""
    vol = vol.rechunk(chunking.volume_chunks((nz, ny, nx), cy))
    out = datamodel.volume(vol, datamodel.pixel_size_of(filtered), name=ts.name,
                           attrs={"binning": binning, "filter": filter})
    if z_valid is not None:
        from ..kernels.reconstruction_shapes import z_valid_slice

        out = out.isel(z=z_valid_slice(nz, z_valid))
        out.attrs["z_valid"] = list(z_valid)
    return out
