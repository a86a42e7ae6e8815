"""MRC <-> run-store conversion (``faket-dask import-mrc`` / ``export-mrc``).

Both directions stream: import builds a Dask graph over :class:`~.mrc.MrcArray` chunks that
the cluster writes into Zarr chunk by chunk; export reads one Zarr chunk at a time and writes
it at its place in the MRC file. All checks run before anything is written.

Import rules (``docs/formats.md``): values as IMOD shows them (mode 0 by the IMOD stamp,
else MRC2014 with a ``dmin``/``dmax`` cross-check), one isotropic pixel size, the header
origin kept as attr ``origin_A``, and tilt-series stored sorted by angle with the file's
order kept as the coordinate ``acquisition_index``. A SerialEM ``.mdoc`` (:mod:`.mdoc`) gives
the angles, per-tilt doses and the acquisition order instead of a ``.tlt``; excluded tilts are
dropped before anything else.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import product
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr

from .. import chunking, datamodel, store
from ..errors import InputError
from .mdoc import MdocTilts, check_sections, kept_views, mdoc_coords, mdoc_pixel_size, read_mdoc
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
    mdoc: str | Path | MdocTilts | None = None,
    exclude_tilts: Sequence[int] = (),
    exclude_option: str = "--exclude-tilts",
) -> xr.DataArray:
    """Open an MRC file as a lazy, chunked tilt-series or volume after checking it.

    Parameters
    ----------
    src : path
        MRC file; ``(nz, ny, nx)`` = ``(tilt, y, x)`` or ``(z, y, x)``.
    kind : {"tiltseries", "volume"}
        What the file holds.
    angles_deg : array (T,), optional
        Tilt angles (degrees) in file order, one per tilt; a tilt-series needs these or ``mdoc``.
    pixel_size_A : float, optional
        Overrides the header's voxel size (Å), including a missing or anisotropic one.
    cy : int, optional
        Rows per chunk (default from :func:`faket_dask.chunking.choose_cy`).
    check_values : bool
        Scan the (kept) data for NaN/inf first (streaming).
    pixel_size_hint : str
        What fixes a missing/anisotropic header pixel size, for the message (the config
        setting when called from ``simulate``).
    mdoc : path or MdocTilts, optional
        SerialEM ``.mdoc`` of the stack (:func:`~.mdoc.read_mdoc`), instead of ``angles_deg``:
        angles, doses and acquisition order per image; its ``PixelSpacing`` is used when the
        header has no pixel size (:func:`~.mdoc.mdoc_pixel_size`).
    exclude_tilts : sequence of int
        Tilts dropped before anything else: 0-based positions in the file (the ``.mdoc``'s
        ZValues). A tilt-series only.
    exclude_option : str
        How the caller spells ``exclude_tilts``, for the message.

    Returns
    -------
    xarray.DataArray
        Dask-backed float32 (values exact for every integer mode), chunks ``(1, cy, X)``
        (tilt-series) or ``(cz, cy, X)`` (volume). A tilt-series is sorted by angle ascending
        (a lazy permutation of whole tilts; equal angles keep file order). Without ``mdoc``,
        when that (or an exclusion) changed the order it carries the int64 coordinate
        ``acquisition_index`` on ``tilt``: each tilt's 0-based position in the file (absent =
        the identity). With ``mdoc`` it always carries the coordinates of
        :func:`~.mdoc.mdoc_coords` (``acquisition_index`` in acquisition order,
        ``section_index``, ``dose_e_per_A2``, ``prior_dose_e_per_A2``) and attrs ``mdoc``,
        ``acquisition_order`` (``"DateTime"`` or ``"ZValue"``). attrs: ``pixel_size_A``,
        ``source``, ``origin_A`` (x, y, z in Å), ``excluded_tilts`` (when any) and, for mode
        0, ``mrc_mode0`` (how the bytes were read).

    Raises
    ------
    InputError
        Bad file or header (:func:`~.mrc_header.read_info`), not 3D, no / anisotropic pixel size,
        missing angles, angles given twice (``mdoc`` and ``angles_deg``), angle count ≠ tilt
        count, a bad ``.mdoc`` or one whose section count ≠ tilt count
        (:func:`~.mdoc.read_mdoc`), an excluded index out of range, unusable angles among the
        kept tilts (:func:`~.tlt.check_angles`), ``mdoc``/``exclude_tilts`` for a volume,
        NaN/inf values in a kept tilt. All before anything is read into a store.
    """
    info = check_mrc_shape(src, kind)
    p = info.path
    tilts = None
    if kind != "tiltseries" and (mdoc is not None or len(exclude_tilts)):
        raise InputError(f"{p}: an .mdoc and excluded tilts apply to tilt-series, not to a {kind}")
    if mdoc is not None:
        if angles_deg is not None:
            raise InputError(f"{getattr(mdoc, 'path', mdoc)}: give the tilt angles once: an .mdoc "
                             "or an angle list (--angles-file / --angles), not both")
        tilts = mdoc if isinstance(mdoc, MdocTilts) else read_mdoc(mdoc)
        check_sections(tilts, info)
        angles_deg = tilts.angles_deg
        pixel_size_A, _ = mdoc_pixel_size(info, tilts, pixel_size_A, hint=pixel_size_hint)
    if pixel_size_A is None:
        pixel_size_A = header_pixel_size(info, kind=kind, hint=pixel_size_hint)
    order = None
    keep = None
    if kind == "tiltseries":
        if angles_deg is None:
            raise InputError(f"{p}: no tilt angles; pass --angles-file F.tlt, --mdoc F.mdoc or --angles START STOP STEP")
        angles_deg = np.asarray(angles_deg, dtype=np.float64).ravel()
        if angles_deg.size != info.shape[0]:
            raise InputError(f"{p}: {info.shape[0]} tilts but {angles_deg.size} tilt angles given")
        keep = kept_views(exclude_tilts, info.shape[0], p, option=exclude_option)
        check_angles(angles_deg[keep], f"{p}: tilt angles" + (" (kept tilts)" if keep.size < angles_deg.size else ""))
        # stored tilt k is file tilt order[k]: the kept tilts, sorted by angle
        order = keep[angle_order(angles_deg[keep])]
    arr = MrcArray(p, info)
    if check_values:
        _check_finite_kept(arr, keep)
    nz, ny, nx = info.shape
    cy = cy or chunking.choose_cy(ny, nx, nz)
    if kind == "tiltseries":
        chunks = chunking.tiltseries_chunks(info.shape, cy)
    else:
        chunks = chunking.volume_chunks(info.shape, cy)
    data = da.from_array(arr, chunks=chunks, asarray=True, lock=False, name=f"mrc-{da.core.tokenize(arr)}")
    attrs = _mrc_attrs(info)
    if kind == "tiltseries":
        assert order is not None and angles_deg is not None and keep is not None
        if keep.size < nz:
            attrs["excluded_tilts"] = np.setdiff1d(np.arange(nz), keep).tolist()
        if tilts is not None:
            attrs.update(mdoc=str(tilts.path.resolve()), acquisition_order=tilts.order_from)
        if tilts is None and order.size == nz and np.array_equal(order, np.arange(nz)):
            # already in angle order: stored exactly as before (no coordinate, same graph), so
            # the store of an ordinary file does not change; a missing acquisition_index means
            # the identity
            return datamodel.tiltseries(data, angles_deg, pixel_size_A, attrs=attrs)
        # dask's take keeps one-tilt chunks: stored tilt k is file tilt order[k]
        ts = datamodel.tiltseries(data[order], angles_deg[order], pixel_size_A, attrs=attrs)
        if tilts is not None:
            return ts.assign_coords(mdoc_coords(tilts, order))
        if np.array_equal(order, np.arange(order.size)):
            return ts  # only trailing tilts excluded: file positions are the identity
        index = xr.Variable("tilt", order, {"long_name": "position of the tilt in the source file (0-based)"})
        return ts.assign_coords({ACQUISITION_INDEX: index})
    return datamodel.volume(data, pixel_size_A, attrs=attrs)


def _check_finite_kept(arr: MrcArray, keep: np.ndarray | None) -> None:
    """:func:`~.mrc.check_finite` over the kept tilts only (an excluded view may be the bad one)."""
    if keep is None or keep.size == arr.shape[0]:
        check_finite(arr)
        return
    if arr.info.file_dtype.kind in "iu":
        return
    for i in keep:
        if not np.isfinite(arr[int(i): int(i) + 1]).all():
            raise InputError(f"{arr.path}: contains NaN or inf values (first in tilt {int(i) + 1} "
                             f"of {arr.shape[0]}, counting from 1)")


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
    units: str | None = None,
    mdoc: str | Path | MdocTilts | None = None,
    exclude_tilts: Sequence[int] = (),
) -> str:
    """Import an MRC file into ``STORE/GROUP/VAR`` (checked first, written chunk by chunk).

    A tilt-series is stored sorted by angle with coordinate ``acquisition_index`` (see
    :func:`load_mrc`); its angles come from one of ``angles_deg``, ``angles_file`` (IMOD
    ``.tlt``) and ``mdoc`` (SerialEM ``.mdoc``: also doses and acquisition order, stored as
    tilt coordinates), and ``exclude_tilts`` (0-based file positions) are dropped first. A
    volume with ``units`` (``"V"`` or ``"normalised"``) is stored as the potential in volts
    relative to ice (:func:`faket_dask.formats.units.to_volts`). Returns the ``GROUP/VAR``
    written. On failure nothing is left half-written; every :class:`InputError` of
    :func:`load_mrc` is raised before the store is touched.
    """
    group, name = store.split_var_path(var_path)
    if angles_file is not None and angles_deg is not None:
        raise InputError("give either --angles-file or --angles, not both")
    if mdoc is not None and (angles_file is not None or angles_deg is not None):
        raise InputError(f"{getattr(mdoc, 'path', mdoc)}: give the tilt angles once: an .mdoc "
                         "or an angle list (--angles-file / --angles), not both")
    if angles_file is not None:
        angles_deg = read_tlt(angles_file)
    store.check_writable(store_path, var_path, overwrite=overwrite)
    if units is not None:
        from .units import check_units, to_volts

        check_units(units, str(src))
        if kind != "volume":
            raise InputError(f"{src}: units apply to volumes (--kind volume), not to a {kind}")
    arr = load_mrc(src, kind=kind, angles_deg=angles_deg, pixel_size_A=pixel_size_A, cy=cy,
                   mdoc=mdoc, exclude_tilts=exclude_tilts)
    if units is not None:
        arr = to_volts(arr, units, str(src))
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
