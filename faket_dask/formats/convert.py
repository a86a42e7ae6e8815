"""MRC <-> run-store conversion (``faket-dask import-mrc`` / ``export-mrc``).

Both directions stream: import builds a Dask graph over :class:`~.mrc.MrcArray` chunks that
the cluster writes into Zarr chunk by chunk; export reads one Zarr chunk at a time and writes
it at its place in the MRC file. All checks run before anything is written.
"""
from __future__ import annotations

from collections.abc import Iterator
from itertools import product
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr

from .. import chunking, datamodel, store
from ..errors import InputError
from .mrc import MrcArray, check_finite, check_output, read_info, read_tlt, write_mrc, write_tlt


def angles_from_range(start: float, stop: float, step: float) -> np.ndarray:
    """Tilt angles ``start, start+step, ..., stop`` (``stop`` included), in degrees.

    ``angles_from_range(-60, 60, 2)`` gives the 61 SHREC tilts.
    """
    if step == 0 or not np.isfinite([start, stop, step]).all():
        raise InputError(f"--angles {start} {stop} {step}: step must be a non-zero number")
    n = int(np.floor((stop - start) / step + 1e-9)) + 1
    if n < 1:
        raise InputError(f"--angles {start} {stop} {step}: empty range (check the sign of STEP)")
    return start + step * np.arange(n, dtype=np.float64)


def load_mrc(
    src: str | Path,
    *,
    kind: datamodel.Kind,
    angles_deg: np.ndarray | None = None,
    pixel_size_A: float | None = None,
    cy: int | None = None,
    check_values: bool = True,
) -> xr.DataArray:
    """Open an MRC file as a lazy, chunked tilt-series or volume after checking it.

    Parameters
    ----------
    src : path
        MRC file; ``(nz, ny, nx)`` = ``(tilt, y, x)`` or ``(z, y, x)``.
    kind : {"tiltseries", "volume"}
        What the file holds.
    angles_deg : array, optional
        Tilt angles (degrees), one per tilt; required for a tilt-series.
    pixel_size_A : float, optional
        Overrides the header's voxel size (Å).
    cy : int, optional
        Rows per chunk (default from :func:`faket_dask.chunking.choose_cy`).
    check_values : bool
        Scan the data for NaN/inf first (streaming).

    Returns
    -------
    xarray.DataArray
        Dask-backed float32, chunks ``(1, cy, X)`` (tilt-series) or ``(cz, cy, X)`` (volume).
    """
    info = read_info(src)
    p = info.path
    if len(info.shape) != 3:
        what = "2D (a single image)" if len(info.shape) == 2 else f"{len(info.shape)}D"
        need = "(tilt, y, x)" if kind == "tiltseries" else "(z, y, x)"
        raise InputError(f"{p}: data are {what}, shape {info.shape}; a {kind} needs 3 dimensions {need}")
    if pixel_size_A is None:
        pixel_size_A = info.voxel_size_A[0]
        if not pixel_size_A > 0:
            raise InputError(f"{p}: header has no pixel size (0 Å); pass --pixel-size-A")
    if kind == "tiltseries":
        if angles_deg is None:
            raise InputError(f"{p}: no tilt angles; pass --angles-file F.tlt or --angles START STOP STEP")
        angles_deg = np.asarray(angles_deg, dtype=np.float64)
        if angles_deg.size != info.shape[0]:
            raise InputError(f"{p}: {info.shape[0]} tilts but {angles_deg.size} tilt angles given")
    arr = MrcArray(p, info)
    if check_values:
        check_finite(arr)
    nz, ny, nx = info.shape
    cy = cy or chunking.choose_cy(ny, nx, nz)
    if kind == "tiltseries":
        chunks = chunking.tiltseries_chunks(info.shape, cy)
    else:
        chunks = chunking.volume_chunks(info.shape, cy)
    data = da.from_array(arr, chunks=chunks, asarray=True, lock=False, name=f"mrc-{da.core.tokenize(arr)}")
    attrs = {"source": str(p.resolve())}
    if kind == "tiltseries":
        return datamodel.tiltseries(data, angles_deg, pixel_size_A, attrs=attrs)
    return datamodel.volume(data, pixel_size_A, attrs=attrs)


def import_mrc(
    src: str | Path,
    store_path: str | Path,
    var_path: str,
    *,
    kind: datamodel.Kind,
    angles_deg: np.ndarray | None = None,
    angles_file: str | Path | None = None,
    pixel_size_A: float | None = None,
    overwrite: bool = False,
    cy: int | None = None,
) -> str:
    """Import an MRC file into ``STORE/GROUP/VAR`` (checked first, written chunk by chunk).

    Returns the ``GROUP/VAR`` written. On failure nothing is left half-written.
    """
    group, name = store.split_var_path(var_path)
    if angles_file is not None and angles_deg is not None:
        raise InputError("give either --angles-file or --angles, not both")
    if angles_file is not None:
        angles_deg = read_tlt(angles_file)
    store.check_writable(store_path, var_path, overwrite=overwrite)
    arr = load_mrc(src, kind=kind, angles_deg=angles_deg, pixel_size_A=pixel_size_A, cy=cy)
    store.check_disk(store_path, arr.size * 4)
    return store.save(
        arr,
        store_path,
        group,
        name=name,
        overwrite=overwrite,
        stage_info={"stage": "import-mrc", "source": str(Path(src).resolve()), "kind": kind},
        progress=f"importing {src}",
    )


def _blocks(arr: xr.DataArray) -> Iterator[tuple[tuple[slice, ...], np.ndarray]]:
    data = arr.data if isinstance(arr.data, da.Array) else da.from_array(arr.data)
    starts = [np.cumsum((0,) + c) for c in data.chunks]
    for idx in product(*(range(len(c)) for c in data.chunks)):
        index = tuple(slice(int(s[i]), int(s[i + 1])) for s, i in zip(starts, idx))
        yield index, np.asarray(data.blocks[idx].compute(scheduler="synchronous"))


def export_mrc(
    arr: xr.DataArray, dest: str | Path, *, overwrite: bool = False, tlt: bool | None = None
) -> list[Path]:
    """Write a labelled tilt-series or volume to MRC2014 (float32), chunk by chunk.

    For a tilt-series an IMOD ``.tlt`` with the angles is written beside it
    (``DEST.mrc`` -> ``DEST.tlt``). Returns the files written.
    """
    kind = datamodel.kind_of(arr)
    dest = Path(dest)
    tlt = kind == "tiltseries" if tlt is None else tlt
    tlt_path = dest.with_suffix(".tlt")
    check_output(dest, overwrite=overwrite)
    if tlt:
        check_output(tlt_path, overwrite=overwrite)
    pixel = datamodel.pixel_size_of(arr)
    written = [
        write_mrc(
            dest,
            _blocks(arr),
            tuple(arr.shape),
            voxel_size_A=pixel,
            image_stack=kind == "tiltseries",
            overwrite=overwrite,
        )
    ]
    if tlt:
        write_tlt(tlt_path, arr["tilt"].values)
        written.append(tlt_path)
    return written
