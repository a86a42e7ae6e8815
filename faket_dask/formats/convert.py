"""MRC <-> run-store conversion (``faket-dask import-mrc`` / ``export-mrc``).

Both directions stream: import builds a Dask graph over :class:`~.mrc.MrcArray` chunks that
the cluster writes into Zarr chunk by chunk; export reads one Zarr chunk at a time and writes
it at its place in the MRC file. All checks run before anything is written.

Import rules (``docs/formats.md``): values as IMOD shows them (mode 0 by the IMOD stamp,
else MRC2014 with a ``dmin``/``dmax`` cross-check), one isotropic pixel size, the header
origin kept as attr ``origin_A``, and tilt-series stored sorted by angle with the file's
order kept as the coordinate ``acquisition_index``.
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
from .mrc import MrcArray, check_finite, check_labels, check_output, write_mrc
from .mrc_header import MrcInfo, header_pixel_size, read_info
from .tlt import ANGLE_ATOL, check_angles, read_tlt, write_tlt

#: Name of the tilt-dim coordinate holding each stored tilt's 0-based position in the file.
ACQUISITION_INDEX = "acquisition_index"


def angles_from_range(start: float, stop: float, step: float, *, what: str | None = None) -> np.ndarray:
    """Tilt angles ``start, start+step, ..., stop`` (``stop`` included), in degrees.

    ``angles_from_range(-60, 60, 2)`` gives the 61 SHREC tilts.

    Parameters
    ----------
    start, stop, step : float
        Degrees; ``step`` signed.
    what : str, optional
        The option or setting named in errors (default ``"--angles START STOP STEP"``).

    Returns
    -------
    ndarray (T,), float64

    Raises
    ------
    InputError
        Zero or non-finite step, an empty range, angles outside (-90°, 90°), or fewer than two
        distinct angles (``start == stop``), see :func:`~.tlt.check_angles`.
    """
    what = what or f"--angles {start:g} {stop:g} {step:g}"
    if step == 0 or not np.isfinite([start, stop, step]).all():
        raise InputError(f"{what}: step must be a non-zero number")
    n = int(np.floor((stop - start) / step + 1e-9)) + 1
    if n < 1:
        raise InputError(f"{what}: empty range (check the sign of STEP)")
    return check_angles(start + step * np.arange(n, dtype=np.float64), what)


def angle_order(angles_deg: np.ndarray) -> np.ndarray:
    """The permutation that sorts tilt angles ascending, keeping file order among equal ones.

    Parameters
    ----------
    angles_deg : array (T,), float, degrees
        Angles in file (acquisition) order.

    Returns
    -------
    ndarray (T,), int64
        ``order`` such that ``angles_deg[order]`` ascends; angles within 1e-6° of each other
        count as equal and keep their file order (a bidirectional series may hold 0° twice).
    """
    a = np.asarray(angles_deg, np.float64)
    order = np.argsort(a, kind="stable")
    s = a[order]
    # runs of (nearly) equal angles: re-sort each run by file position
    run = np.concatenate([[0], np.cumsum(np.diff(s) > ANGLE_ATOL)])
    return order[np.lexsort((order, run))].astype(np.int64)


def check_mrc_shape(src: str | Path, kind: datamodel.Kind) -> MrcInfo:
    """Read the header of ``src`` and refuse data that are not 3D.

    Returns
    -------
    MrcInfo

    Raises
    ------
    InputError
        Everything :func:`~.mrc_header.read_info` refuses, and 2D / 4D data.
    """
    info = read_info(src)
    if len(info.shape) != 3:
        what = "2D (a single image)" if len(info.shape) == 2 else f"{len(info.shape)}D"
        need = "(tilt, y, x)" if kind == "tiltseries" else "(z, y, x)"
        raise InputError(f"{info.path}: data are {what}, shape {info.shape}; a {kind} needs 3 dimensions {need}")
    return info


def _mrc_attrs(info: MrcInfo) -> dict:
    attrs: dict = {"source": str(info.path.resolve()), "origin_A": list(info.origin_A)}
    if info.mode0 is not None:
        attrs["mrc_mode0"] = info.mode0
    return attrs


def load_mrc(
    src: str | Path,
    *,
    kind: datamodel.Kind,
    angles_deg: np.ndarray | None = None,
    pixel_size_A: float | None = None,
    cy: int | None = None,
    check_values: bool = True,
    pixel_size_hint: str = "pass --pixel-size-A",
) -> xr.DataArray:
    """Open an MRC file as a lazy, chunked tilt-series or volume after checking it.

    Parameters
    ----------
    src : path
        MRC file; ``(nz, ny, nx)`` = ``(tilt, y, x)`` or ``(z, y, x)``.
    kind : {"tiltseries", "volume"}
        What the file holds.
    angles_deg : array (T,), optional
        Tilt angles (degrees) in file order, one per tilt; required for a tilt-series.
    pixel_size_A : float, optional
        Overrides the header's voxel size (Å), including a missing or anisotropic one.
    cy : int, optional
        Rows per chunk (default from :func:`faket_dask.chunking.choose_cy`).
    check_values : bool
        Scan the data for NaN/inf first (streaming).
    pixel_size_hint : str
        What fixes a missing/anisotropic header pixel size, for the message (the config
        setting when called from ``simulate``).

    Returns
    -------
    xarray.DataArray
        Dask-backed float32 (values exact for every integer mode), chunks ``(1, cy, X)``
        (tilt-series) or ``(cz, cy, X)`` (volume). A tilt-series is sorted by angle ascending
        (a lazy permutation of whole tilts; equal angles keep file order); when that changed
        the order it carries the int64 coordinate ``acquisition_index`` on ``tilt``: each
        tilt's 0-based position in the file (absent = the identity). attrs: ``pixel_size_A``, ``source``, ``origin_A`` (x, y, z in Å) and, for
        mode 0, ``mrc_mode0`` (how the bytes were read).

    Raises
    ------
    InputError
        Bad file or header (:func:`~.mrc_header.read_info`), not 3D, no / anisotropic pixel size,
        missing angles, angle count ≠ tilt count, unusable angles
        (:func:`~.tlt.check_angles`), NaN/inf values. All before anything is read into a store.
    """
    info = check_mrc_shape(src, kind)
    p = info.path
    if pixel_size_A is None:
        pixel_size_A = header_pixel_size(info, kind=kind, hint=pixel_size_hint)
    order = None
    if kind == "tiltseries":
        if angles_deg is None:
            raise InputError(f"{p}: no tilt angles; pass --angles-file F.tlt or --angles START STOP STEP")
        angles_deg = np.asarray(angles_deg, dtype=np.float64).ravel()
        if angles_deg.size != info.shape[0]:
            raise InputError(f"{p}: {info.shape[0]} tilts but {angles_deg.size} tilt angles given")
        check_angles(angles_deg, f"{p}: tilt angles")
        order = angle_order(angles_deg)
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
    attrs = _mrc_attrs(info)
    if kind == "tiltseries":
        assert order is not None and angles_deg is not None
        if np.array_equal(order, np.arange(order.size)):
            # already in angle order: stored exactly as before (no coordinate, same graph), so
            # the store of an ordinary file does not change; a missing acquisition_index means
            # the identity
            return datamodel.tiltseries(data, angles_deg, pixel_size_A, attrs=attrs)
        # dask's take keeps one-tilt chunks: stored tilt k is file tilt order[k]
        ts = datamodel.tiltseries(data[order], angles_deg[order], pixel_size_A, attrs=attrs)
        index = xr.Variable("tilt", order, {"long_name": "position of the tilt in the source file (0-based)"})
        return ts.assign_coords({ACQUISITION_INDEX: index})
    return datamodel.volume(data, pixel_size_A, attrs=attrs)


def load_labels(
    src: str | Path,
    *,
    pixel_size_A: float | None = None,
    cy: int | None = None,
    check_values: bool = True,
    pixel_size_hint: str = "pass --pixel-size-A",
) -> xr.DataArray:
    """Open an MRC class mask as a lazy uint8 label volume (labels exact, checked first).

    Parameters
    ----------
    src : path
        MRC class mask ``(z, y, x)``, any mode; mode 0 is read by the IMOD / MRC2014 rules of
        :func:`~.mrc_header.read_info` (IMOD signed bytes -128/-127 are labels 0/1).
    pixel_size_A : float, optional
        Voxel size (Å); default the header's (pass the density's when the mask has none).
    cy : int, optional
        Rows per chunk.
    check_values : bool
        Stream over the values first and refuse any that is not a label (see Raises).
    pixel_size_hint : str
        What fixes a missing/anisotropic header pixel size, for the message.

    Returns
    -------
    xarray.DataArray
        dims ``(z, y, x)``, uint8, dask-backed, chunks ``(cz, cy, X)``; attrs as
        :func:`load_mrc` (``pixel_size_A``, ``source``, ``origin_A``, ``mrc_mode0``).

    Raises
    ------
    InputError
        Everything :func:`load_mrc` refuses, and (``check_values``) NaN/inf, a non-integer
        value, a negative label or one above 255, naming the file, the value and its position.
    """
    vol = load_mrc(src, kind="volume", pixel_size_A=pixel_size_A, cy=cy, check_values=False,
                   pixel_size_hint=pixel_size_hint)
    if check_values:
        check_labels(MrcArray(src))
    # exact: every value was checked to be an integer in 0..255 (float32 holds them exactly)
    return datamodel.volume(vol.data.astype(np.uint8), float(vol.attrs["pixel_size_A"]),
                            name=vol.name, attrs=dict(vol.attrs), dtype=None)


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

    A tilt-series is stored sorted by angle with coordinate ``acquisition_index`` (see
    :func:`load_mrc`). Returns the ``GROUP/VAR`` written. On failure nothing is left
    half-written.
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


def _origin_of(arr: xr.DataArray) -> tuple[float, float, float] | None:
    o = arr.attrs.get("origin_A")
    if o is None:
        return None
    o = np.asarray(o, np.float64).ravel()
    if o.shape != (3,) or not np.isfinite(o).all():
        raise InputError(f"{arr.name or 'array'}: attr origin_A must be three finite numbers (x, y, z Å), got {o.tolist()}")
    return (float(o[0]), float(o[1]), float(o[2]))


def export_mrc(
    arr: xr.DataArray, dest: str | Path, *, overwrite: bool = False, tlt: bool | None = None
) -> list[Path]:
    """Write a labelled tilt-series or volume to MRC2014 (float32), chunk by chunk.

    The header gets the pixel size in x, y and z (a tomogram's is its binned voxel size; a
    tilt-series is an image stack with ``mz = 1``, so z is one pixel too) and the origin from
    attr ``origin_A`` (x, y, z Å; 0 if absent). Tilts are written in stored (angle) order;
    for a tilt-series an IMOD ``.tlt`` with the angles is written beside it
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
            origin_A=_origin_of(arr),
            overwrite=overwrite,
        )
    ]
    if tlt:
        write_tlt(tlt_path, arr["tilt"].values)
        written.append(tlt_path)
    return written
