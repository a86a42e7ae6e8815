"""The Zarr (v3) run store: opening, saving, stage records (group paths: :mod:`.layout`).

Imported through :mod:`faket_dask.store` (``st.open``, ``st.save``, ...), which loads this
module on first use.

The group layout is documented and spelled in :mod:`faket_dask.store.layout` (the only place
that builds group paths); OME-NGFF images in :mod:`faket_dask.store.ngff`. A variable is
addressed as ``"GROUP/VAR"``, e.g. ``"tomo_000/tiltseries/measured"``.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import re
import shutil
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

if TYPE_CHECKING:
    import xarray as xr

from ..errors import InputError, OutputExistsError
from .codecs import compressors

MARKER = "faket_dask"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# guards attrs["stages"] and the consolidated snapshot against this process's other threads
_STAGES_LOCK = threading.RLock()

# What zarr says of the store's deliberate choices, filtered once for the whole process:
# fixed-width unicode (particle tables' class names) and consolidated metadata are not in the
# Zarr v3 specification yet (xarray and zarr read both back). Process-wide, not in
# ``warnings.catch_warnings`` blocks alone: stages run in threads (pipeline/run.py) and
# catch_warnings is not thread-safe (one thread's exit restores the filters another relies on).
warnings.filterwarnings("ignore", message=r"The data type \(FixedLengthUTF32",
                        category=zarr.errors.UnstableSpecificationWarning)
warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part",
                        category=zarr.errors.ZarrUserWarning)
# zarr's LocalStore writes a zarr.json through a temporary sibling, "zarr.<uuid4 hex>.partial",
# renamed into place; a thread listing that group's members meanwhile (stages run side by side)
# meets the temporary file, skips it and warns. Transient and harmless: the listing is complete.
warnings.filterwarnings("ignore", message=r"Object at \S*\.[0-9a-f]{32}\.partial is not recognized",
                        category=zarr.errors.ZarrUserWarning)
_PACKAGES = ("faket-dask", "numpy", "dask", "distributed", "zarr", "xarray", "torch", "torchvision")


def split_var_path(path: str) -> tuple[str, str]:
    """Split ``"GROUP/VAR"`` into ``(group, var)``; :class:`InputError` if malformed."""
    parts = path.strip("/").split("/")
    if len(parts) < 2 or not all(_NAME.match(p) for p in parts):
        raise InputError(f"'{path}' is not GROUP/VAR (e.g. tomo_000/tiltseries/measured)")
    return "/".join(parts[:-1]), parts[-1]


def is_store(path: str | Path) -> bool:
    """Whether ``path`` is a Zarr v3 group directory."""
    p = Path(path)
    return p.is_dir() and (p / "zarr.json").is_file()


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape results, recorded in the store."""
    out = {}
    for name in _PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def open_root(store: str | Path, *, create: bool = False) -> zarr.Group:
    """Open a run store's root group.

    Parameters
    ----------
    store : path
        The ``.zarr`` directory.
    create : bool
        Create it (with the faket-dask marker) if it does not exist.

    Raises
    ------
    InputError
        If the path does not exist (and ``create`` is false) or is not a Zarr store.
    """
    p = Path(store)
    if is_store(p):
        return zarr.open_group(str(p), mode="r+" if create else "r")
    if p.exists():
        raise InputError(f"{p}: not a Zarr store (no zarr.json)")
    if not create:
        raise InputError(f"{p}: no such store")
    root = zarr.open_group(str(p), mode="w", zarr_format=3)
    root.attrs[MARKER] = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "packages": package_versions(),
    }
    root.attrs["stages"] = {}
    return root


def has_var(store: str | Path, path: str) -> bool:
    """Whether ``GROUP/VAR`` exists in ``store``."""
    if not is_store(store):
        return False
    group, var = split_var_path(path)
    # not the consolidated metadata: it lags behind groups written since it was made
    root = zarr.open_group(str(store), mode="r", use_consolidated=False)
    try:
        g = root[group]
    except KeyError:
        return False
    return isinstance(g, zarr.Group) and (var in g.array_keys() or var in g.group_keys())


def open(store: str | Path, group: str, *, level: int = 0, tilts_per_chunk: int | None = None,  # noqa: A001 - public API name (DESIGN.md)
         in_memory: bool = False) -> xr.Dataset:
    """Open a group of a run store lazily as an xarray Dataset.

    Plain groups are opened with ``xr.open_zarr(store, group=group, consolidated=False)``.
    OME-NGFF images cannot be one xarray Dataset (their levels share the dim names ``z, y, x``
    with different sizes), so for a tomogram group (``tomo_000/tomogram``: one image per
    modality) the Dataset has one variable per modality, and for one image group
    (``tomo_000/tomogram/faket``) the one variable ``faket``; both at resolution ``level``, with
    coordinates in Å (pixel centres from the corner) and ``attrs["pixel_size_A"]`` of that level.

    Parameters
    ----------
    store : path
        The run store (``run.zarr``).
    group : str
        Group path, e.g. ``"tomo_000/tiltseries"``, ``"tomo_000/tomogram"``.
    level : int
        Resolution level of OME-NGFF images (0 = full, k = 2**k binned); must be 0 elsewhere.
    tilts_per_chunk : int, optional
        Read this many whole tilts per Dask chunk (``{"tilt": k, "y": -1, "x": -1}``) instead
        of the stored chunks (one tilt, or part of one): one task reads k stored chunks. For
        readers that group tilts anyway (reconstruction, figures): the demo's 128² tilts were
        read in ~3 ms tasks, ~4 ms of scheduling each. Not for arrays written back with the
        same chunks (:func:`save` makes the Dask chunks the Zarr chunks).
    in_memory : bool
        Read a small plain group (a particle table, the noise model) into memory here, with
        no Dask task. Why: ``open(...).load()`` computes on the cluster at Dask's default
        priority, behind every queued task of the stages' higher priorities; in the demo the
        noise stages waited ~20 s behind the style Grams for their noise model (session 15).

    Returns
    -------
    xarray.Dataset
        Dask-backed: nothing is read until computed (numpy-backed with ``in_memory``).

    Raises
    ------
    InputError
        No such store or group, ``level`` given for a plain group, a level the image lacks,
        or ``in_memory`` for a group of images.
    """
    import xarray as xr  # here, not at the top: `faket-dask info` must not load xarray

    from . import ngff

    open_root(store)
    # listing without consolidated metadata: always the store's current content
    root = zarr.open_group(str(store), mode="r", use_consolidated=False)
    try:
        g = root[group.strip("/")] if group.strip("/") else root
    except KeyError:
        g = None
    if not isinstance(g, zarr.Group):
        raise InputError(f"{store}: no group '{group}' (see `faket-dask info {store}`)")
    one_image = ngff.is_image(g)
    images = {} if one_image else {name: sub for name, sub in g.groups() if ngff.is_image(sub)}
    if in_memory and (one_image or images):
        raise InputError(f"{store}: '{group}' holds images; in_memory is for small plain groups")
    if one_image:
        name = group.strip("/").rsplit("/", 1)[-1]
        return xr.Dataset({name: ngff.open_image(g, name, level)})
    if not images:
        if level != 0:
            raise InputError(f"{store}: '{group}' holds no multiscale images; level={level} needs one "
                             "(e.g. tomo_000/tomogram)")
        if in_memory:
            return xr.open_zarr(str(store), group=group, consolidated=False, zarr_format=3,
                                chunks=None).load()
        grouped = {} if tilts_per_chunk is None else {"chunks": {"tilt": max(1, int(tilts_per_chunk)), "y": -1, "x": -1}}
        return xr.open_zarr(str(store), group=group, consolidated=False, zarr_format=3, **grouped)
    # A tomogram group: one OME-NGFF multiscale image per modality.
    return xr.Dataset({name: ngff.open_image(sub, name, level) for name, sub in sorted(images.items())})


def consolidate(store: str | Path) -> bool:
    """Write Zarr consolidated metadata at the root, so plain ``xr.open_zarr`` is quiet.

    ``xr.open_zarr(store, group=...)`` first tries the root's consolidated metadata and warns
    (``RuntimeWarning``) on every open when there is none. Consolidated metadata is a snapshot
    of the hierarchy: a variable added after it is invisible to readers that use it (xarray,
    and ``zarr.open_group`` by default), so it is written only when no stage is ``running``
    (``attrs["stages"]``) and must be dropped when a stage starts writing (opening the root
    with ``use_consolidated=False`` before writing its attributes drops it, as ``mark_stage``
    does). Not part of the Zarr v3 specification (zarr-python's extension; other readers
    ignore it), hence zarr's ``ZarrUserWarning``, which is silenced here.

    Parameters
    ----------
    store : path
        A run store.

    Returns
    -------
    bool
        Whether consolidated metadata was written (False: no store, or a stage is running).
    """

    p = Path(store)
    if not is_store(p):
        return False
    with _STAGES_LOCK:
        root = zarr.open_group(str(p), mode="r", use_consolidated=False)
        stages = root.attrs.get("stages", {}) or {}
        if any(isinstance(v, dict) and v.get("status") == "running" for v in stages.values()):
            return False
        with warnings.catch_warnings():
            # the extension itself, and fixed-width unicode arrays (particle tables) met while reading
            warnings.simplefilter("ignore", zarr.errors.ZarrUserWarning)
            warnings.simplefilter("ignore", zarr.errors.UnstableSpecificationWarning)
            zarr.consolidate_metadata(str(p))
    return True


def open_var(store: str | Path, path: str, *, tilts_per_chunk: int | None = None) -> xr.DataArray:
    """Open ``GROUP/VAR`` of a run store lazily as a DataArray (attrs kept; ``tilts_per_chunk``
    as in :func:`open`)."""
    group, var = split_var_path(path)
    ds = open(store, group, tilts_per_chunk=tilts_per_chunk)
    if var not in ds.data_vars:
        have = ", ".join(sorted(map(str, ds.data_vars))) or "none"
        raise InputError(f"{store}: no variable '{var}' in group '{group}' (has: {have})")
    return ds[var]


def clear_encoding(ds: xr.Dataset) -> xr.Dataset:
    """Drop the encodings a dataset inherited from its source (chunks, codecs, fill values),
    so the dask chunks become the Zarr chunks, and set the project's compression; in place."""
    codecs = compressors()
    for v in ds.variables.values():
        v.encoding.clear()
        v.encoding["compressors"] = codecs
    return ds


def check_writable(store: str | Path, path: str, *, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` if ``GROUP/VAR`` exists and ``overwrite`` is false."""
    if is_store(store) and has_var(store, path) and not overwrite:
        raise OutputExistsError(f"{store}: {path} exists; pass --overwrite to replace it")
    p = Path(store)
    if p.exists() and not is_store(p):
        raise InputError(f"{p}: exists and is not a Zarr store")


def _check_compatible(store: str | Path, group: str, arr: xr.DataArray) -> None:
    """Variables of a group share dims; refuse a new one whose sizes or coords disagree."""
    import xarray as xr

    try:
        existing = xr.open_zarr(str(store), group=group, consolidated=False, zarr_format=3)
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError):
        return
    except ValueError as e:  # e.g. an OME-NGFF image group: levels share dims with other sizes
        raise InputError(f"{store}: '{group}' is not a plain variable group ({e}); write to another group") from None
    for dim in arr.dims:
        if dim in existing.sizes and existing.sizes[dim] != arr.sizes[dim]:
            raise InputError(
                f"{store}: '{group}' has {dim}={existing.sizes[dim]}, the new variable has "
                f"{dim}={arr.sizes[dim]}; write it to another group"
            )
        if dim in existing.coords and dim in arr.coords:
            if not np.allclose(existing[dim].values, arr[dim].values):
                raise InputError(f"{store}: '{group}' has different '{dim}' coordinates")
    # Other coordinates (``acquisition_index``) describe the group's one tilt axis: a variable
    # that brings another one would silently rewrite its neighbours' (replacing the only
    # variable that has it is fine).
    others = [v for v in existing.data_vars if v != arr.name]
    for name, coord in arr.coords.items():
        if name in arr.dims or name not in existing.coords or not others:
            continue
        if coord.shape != existing[name].shape or not np.array_equal(existing[name].values, coord.values):
            raise InputError(f"{store}: '{group}' has another '{name}' (its tilts were acquired in "
                             f"another order); write '{arr.name}' to another group")


@contextlib.contextmanager
def rollback_on_error(store: str | Path, path: str, **info: Any) -> Iterator[None]:
    """Undo a partly written member ``path`` (``GROUP/VAR`` or a whole group) if the block fails.

    The member being written is removed and marked ``failed`` (with ``info``); a store that did
    not exist before is removed whole, so a failed command leaves nothing half-written behind.
    """
    p = Path(store)
    existed = p.exists()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(p, ignore_errors=True)
        else:
            undo_member(p, path, **info)
        raise


def undo_member(store: str | Path, path: str, **info: Any) -> None:
    """Remove member ``path`` of a run store and mark it ``failed`` (best effort, no errors)."""
    if not is_store(store):
        return
    parent, _, name = path.strip("/").rpartition("/")
    with contextlib.suppress(Exception):
        root = zarr.open_group(str(store), mode="r+")
        holder = root[parent] if parent else root
        if name in holder:
            del holder[name]
        mark_stage(store, path, status="failed", **info)


def save(
    arr: xr.DataArray,
    store: str | Path,
    group: str,
    *,
    name: str | None = None,
    overwrite: bool = False,
    stage_info: dict[str, Any] | None = None,
    progress: str | None = None,
) -> str:
    """Write a (lazy) DataArray into ``store`` at ``group/name``, chunk by chunk.

    Parameters
    ----------
    arr : xarray.DataArray
        Tilt-series or volume; its dask chunks become the Zarr chunks, except that a
        tilt-series (dims ``tilt, y, x``) is stored one tilt per Zarr chunk whatever its tilts
        per dask chunk (the layout of ``docs/architecture.md``, "Chunking"): a task of k tilts
        writes k chunks, so callers need not split batches into single tilts first (a
        61-tilt 128² series: 16 write tasks of 4 tilts in 0.16 s against 61 in 0.38-0.58 s on
        the 2-core VM, 2026-12-02).
    store : path
        Run store; created if missing.
    group : str
        Group, e.g. ``"tomo_000/tiltseries"``.
    name : str, optional
        Variable name (default ``arr.name``).
    overwrite : bool
        Replace an existing variable; otherwise :class:`OutputExistsError`.
    stage_info : dict, optional
        Recorded with the completion status under ``attrs["stages"][GROUP/VAR]``.
    progress : str, optional
        Label for the console progress bar.

    Returns
    -------
    str
        ``"GROUP/VAR"`` written.
    """
    from ..datamodel import TILT_DIMS  # here: `faket-dask info` imports this module without xarray
    from .write_batch import compute_or_defer

    name = name or (str(arr.name) if arr.name is not None else None)
    if not name:
        raise InputError("save: the array has no name; pass name=")
    path = f"{group.strip('/')}/{name}"
    split_var_path(path)
    check_writable(store, path, overwrite=overwrite)
    if is_store(store):
        _check_compatible(store, group, arr.rename(name))
    with rollback_on_error(store, path):
        open_root(store, create=True)
        if overwrite and has_var(store, path):
            root = zarr.open_group(str(store), mode="r+")
            del root[group][name]
        mark_stage(store, path, status="running", **(stage_info or {}))
        ds = arr.to_dataset(name=name)
        clear_encoding(ds)
        data = ds[name].data
        if tuple(arr.dims) == TILT_DIMS and hasattr(data, "chunks") and data.chunks:
            ds[name].encoding["chunks"] = (1, data.chunks[1][0], data.chunks[2][0])
        delayed = ds.to_zarr(
            str(store), group=group, mode="a", zarr_format=3, consolidated=False, compute=False
        )
        compute_or_defer(store, path, delayed, label=progress or f"writing {path}", info=stage_info,
                         mark=mark_stage, undo=undo_member)
    return path


def save_image(
    vol: xr.DataArray,
    store: str | Path,
    group: str,
    name: str,
    *,
    overwrite: bool = False,
    levels: int = 3,
    stage_info: dict[str, Any] | None = None,
    progress: str | None = None,
) -> str:
    """Write a (lazy) volume as an OME-NGFF multiscale image at ``group/name``.

    Level 0 is the volume (its chunks), levels 1.. are 2× block means; napari and ome-zarr open
    the image group, and :func:`open` returns level 0 as variable ``name`` of ``group``.
    """
    from . import ngff
    from .write_batch import compute_or_defer

    path = f"{group.strip('/')}/{name}"
    split_var_path(path)
    check_writable(store, path, overwrite=overwrite)
    with rollback_on_error(store, path):
        root = open_root(store, create=True)
        if overwrite and has_var(store, path):
            del root[group][name]
        mark_stage(store, path, status="running", **(stage_info or {}))
        image = zarr.open_group(str(store), mode="r+").require_group(path)
        compute_or_defer(store, path, ngff.write_image(image, vol, levels=levels, name=name),
                         label=progress or f"writing {path}", info=stage_info,
                         mark=mark_stage, undo=undo_member)
    return path


def mark_stage(store: str | Path, key: str, *, status: str, consolidate_after: bool = True,
               **info: Any) -> None:
    """Record a stage's status (``running``/``complete``/``failed``) in the root attrs.

    Opening the root without its consolidated metadata and rewriting its attributes drops the
    snapshot, so it can never go stale while a stage writes; it is written again
    (:func:`consolidate`) once no stage is running, which keeps plain ``xr.open_zarr`` quiet.
    ``consolidate_after=False`` leaves that to the caller: the pipeline consolidates once, at
    the end of a run, not after each stage that ends with nothing beside it (each time a walk
    over the whole store, ~0.2 s for the demo's, on the run's clock).
    """
    entry = {"status": status, "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    entry.update({k: v for k, v in info.items() if v is not None})
    # stages run side by side in threads of this process (pipeline/run.py): the
    # read-modify-write of the attributes, and the check-then-consolidate, are one step each
    with _STAGES_LOCK:
        root = zarr.open_group(str(store), mode="r+", use_consolidated=False)
        stages = dict(root.attrs.get("stages", {}))
        stages[key] = entry
        root.attrs["stages"] = stages
        if status != "running" and consolidate_after:
            consolidate(store)


def stage_status(store: str | Path) -> dict[str, dict[str, Any]]:
    """All recorded stage statuses of a store, keyed by ``GROUP/VAR`` or stage name."""
    return dict(open_root(store).attrs.get("stages", {}))


@dataclass(frozen=True)
class VarInfo:
    """One array of a store, as listed by ``faket-dask info``."""

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: str
    dims: tuple[str, ...]


def describe(store: str | Path) -> list[VarInfo]:
    """List every data variable of a store (coordinate arrays omitted), sorted by path.

    Raises
    ------
    InputError
        If ``store`` is not a Zarr store.
    """
    p = Path(store)
    if not p.exists():
        raise InputError(f"{p}: no such store")
    if not is_store(p):
        raise InputError(f"{p}: not a Zarr store (no zarr.json)")
    try:
        root = zarr.open_group(str(p), mode="r")
    except Exception as exc:  # a damaged zarr.json
        raise InputError(f"{p}: unreadable Zarr store ({type(exc).__name__}: {exc})") from None
    out: list[VarInfo] = []
    for gpath, g in _walk(root):
        arrays = list(g.arrays())
        # non-dimension coordinates (acquisition_index) are named in their variables' attrs
        coords = {c for _, a in arrays for c in str(a.attrs.get("coordinates", "")).split()}
        for aname, a in arrays:
            dims = tuple(a.metadata.dimension_names or ())
            if (len(dims) == 1 and dims[0] == aname) or aname in coords:
                continue  # a coordinate
            full = f"{gpath}/{aname}" if gpath else aname
            out.append(VarInfo(full, tuple(a.shape), tuple(a.chunks), str(a.dtype), dims))
    return sorted(out, key=lambda v: v.path)


def _walk(group: zarr.Group, prefix: str = "") -> Iterator[tuple[str, zarr.Group]]:
    yield prefix, group
    for name, sub in group.groups():
        yield from _walk(sub, f"{prefix}/{name}" if prefix else name)

