"""Particle tables: the Dataset schema, tables derived from label masks, tables read back.

* :func:`particles_dataset`: a particle table (columns
  :data:`~faket_dask.kernels.specimen_placement.COLUMNS`) as an xarray Dataset on dim
  ``particle``, the form ``tomo_NNN/particles`` stores.
* :func:`particles_from_masks`: an imported grandmodel has no table; one is derived from its
  class mask (connected components) or occupancy volume, one z-slab at a time.
* :func:`open_particles` / :func:`add_physical_coordinates`: the stored table with its
  coordinates in Å (from the volume's corner and from the specimen centre), on the specimen or
  the tomogram grid, as the exports (:mod:`faket_dask.stages.particle_export`) need it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import InputError
from ..kernels.mask_components import MaskComponents, OccupancyComponents
from ..kernels.specimen_placement import COLUMNS, EXTRA_COLUMNS, FILAMENT_COLUMNS
from ..store.layout import (
    labels_group,
    labels_particles_group,
    particles_group,
    specimen_group,
    tomogram_group,
)

#: Attribute text describing the conventions (copied into the stores and exports' docs).
EULER_CONVENTION = ("ZYZ intrinsic, degrees (RELION's rlnAngleRot/Tilt/Psi are the angles of the "
                    "inverse, see the STAR export): particle = template rotated "
                    "actively by Rz(rot) Ry(tilt) Rz(psi) on (x, y, z)")
COORD_CONVENTION = "voxel coordinates; voxel index i has its centre at i, i.e. (i + 0.5) * pixel_size_A in Å"


def particles_dataset(table: dict[str, np.ndarray], pixel_size_A: float, attrs: dict | None = None) -> xr.Dataset:
    """The particle table as an xarray Dataset on dim ``particle`` (coord = occupancy id).

    Parameters
    ----------
    table : dict of 1-D arrays
        The columns :data:`~faket_dask.kernels.specimen_placement.COLUMNS`, all of one length N
        (0 allowed); optionally :data:`~faket_dask.kernels.specimen_placement.EXTRA_COLUMNS`
        (missing ones are 0) and the filament paths
        :data:`~faket_dask.kernels.specimen_placement.FILAMENT_COLUMNS` (one row per point).
    pixel_size_A : float
        Voxel size (Å) of the volume the voxel coordinates ``x, y, z`` refer to.
    attrs : dict, optional
        Extra attributes.

    Returns
    -------
    xarray.Dataset
        dim ``particle`` (coord 1..N, uint32); ``class_id`` int32, ``class_name`` unicode, the
        rest float64 (whatever dtypes ``table`` had, so empty tables keep the schema). When the
        table has filament points, dim ``filament_point``: ``filament_id`` uint32 (the
        filament's particle id), ``filament_x/y/z`` (voxel coordinates of the specimen grid,
        the path's points in order) and ``filament_nx/ny/nz`` (unit normal of the frame carried
        along the path).
    """
    n = len(table["x"])
    data = {c: ("particle", np.asarray(table[c], dtype=np.float64)) for c in COLUMNS
            if c not in ("class_name", "class_id")}
    for c in EXTRA_COLUMNS:
        data[c] = ("particle", np.asarray(table.get(c, np.zeros(n)), dtype=np.float64))
    data["class_id"] = ("particle", np.asarray(table["class_id"]).astype(np.int32))
    names = np.asarray(table["class_name"]).astype(str)
    data["class_name"] = ("particle", names if names.size else np.zeros(0, "<U32"))
    ds = xr.Dataset({c: data[c] for c in COLUMNS + EXTRA_COLUMNS},
                    coords={"particle": np.arange(1, n + 1, dtype=np.uint32)})
    units = {"x": "voxel", "y": "voxel", "z": "voxel", "rot": "degree", "tilt": "degree",
             "psi": "degree", "radius_A": "angstrom", "shell_radius_A": "angstrom"}
    units.update({c: "angstrom" for c in EXTRA_COLUMNS})
    for k, u in units.items():
        ds[k].attrs["units"] = u
    long = {"radius_A": "bounding-sphere radius of the potential (filaments: tube radius)",
            "bead_radius_A": "gold bead radius", "length_A": "filament contour length",
            **{c: f"vesicle semi-axis along the template {a}" for c, a in zip(("shell_radius_A", "shell_b_A", "shell_c_A"), "xyz")}}
    for k, what in long.items():
        ds[k].attrs["long_name"] = what + ("" if k == "radius_A" else " (0 for other classes)")
    fid = np.asarray(table.get("filament_id", np.zeros(0)))
    if fid.size:
        ds["filament_id"] = ("filament_point", fid.astype(np.uint32),
                             {"long_name": "particle id (table row + 1) of the filament the point belongs to"})
        for c in FILAMENT_COLUMNS[1:]:
            ds[c] = ("filament_point", np.asarray(table[c], dtype=np.float64))
        for a in "xyz":
            ds[f"filament_{a}"].attrs.update(units="voxel", long_name=f"path point {a} (specimen grid)")
            ds[f"filament_n{a}"].attrs.update(units="1", long_name=f"path frame normal, {a} component")
    ds.attrs.update(attrs or {})
    ds.attrs.update(pixel_size_A=float(pixel_size_A), euler_convention=EULER_CONVENTION,
                    coordinates=COORD_CONVENTION)
    return ds


def filament_paths(particles: xr.Dataset) -> dict[int, np.ndarray]:
    """``{particle id: (n, 3) path points (x, y, z) in voxels}`` of the table's filaments
    (empty when it has none)."""
    if "filament_id" not in particles:
        return {}
    fid = np.asarray(particles["filament_id"].values)
    pts = np.stack([np.asarray(particles[f"filament_{a}"].values) for a in "xyz"], 1)
    return {int(i): pts[fid == i] for i in np.unique(fid)}


# -- particle tables from masks -----------------------------------------------------------------
#: Voxels read per slab by :func:`particles_from_masks` (~20 bytes a voxel for a uint8 mask with
#: the labels, so ~160 MiB, plus 32 bytes per labelled voxel).
SLAB_VOXELS = 2**23

ORIENTATION_UNKNOWN = ("unknown: derived from label masks, rot = tilt = psi = 0 are placeholders, "
                       "not estimates")


def _dask_or_numpy(a: xr.DataArray | da.Array | np.ndarray) -> da.Array | np.ndarray:
    return a.data if isinstance(a, xr.DataArray) else a


def _z_slabs(arr: da.Array | np.ndarray, slab_voxels: int) -> list[tuple[int, int]]:
    """Z ranges covering ``arr``: whole dask chunks grouped up to ``slab_voxels`` voxels."""
    nz = int(arr.shape[0])
    plane = max(1, int(np.prod(arr.shape[1:])))
    if isinstance(arr, da.Array):
        edges = np.cumsum((0,) + arr.chunks[0]).tolist()
    else:
        edges = list(range(0, nz, max(1, slab_voxels // plane))) + [nz]
    out, start = [], 0
    for a, b in zip(edges[:-1], edges[1:]):
        if a > start and (b - start) * plane > slab_voxels:     # [start, b) too big: cut at a
            out.append((start, a))
            start = a
    if start < nz:
        out.append((start, nz))
    return out


def _read(arr: da.Array | np.ndarray, z0: int, z1: int) -> np.ndarray:
    part = arr[z0:z1]
    return np.asarray(part.compute() if isinstance(part, da.Array) else part)


def particles_from_masks(
    class_mask: xr.DataArray | da.Array | np.ndarray,
    occupancy: xr.DataArray | da.Array | np.ndarray | None = None,
    *,
    pixel_size_A: float | None = None,
    class_names: list[str] | None = None,
    slab_voxels: int = SLAB_VOXELS,
) -> xr.Dataset:
    """Derive a particle table from label volumes (imported grandmodels have no table).

    One row per object: without ``occupancy``, every connected component of every class of
    ``class_mask`` (face connectivity, as ``scipy.ndimage.label(class_mask == k)`` for each
    class ``k``; rows ordered by class, then by the raster position of the component's first
    voxel); with ``occupancy``, every non-zero occupancy id (rows ordered by id; the class is the
    most frequent class of the id's voxels). The volumes are read one z-slab at a time (whole
    dask chunks, about ``slab_voxels`` voxels), so any volume size works; memory is about
    ``20 * slab_voxels`` bytes (uint8 mask) plus 32 bytes per labelled voxel of a slab
    (:class:`~faket_dask.kernels.mask_components.MaskComponents`); one core labels ~30 M voxels/s.

    Parameters
    ----------
    class_mask : xarray.DataArray, dask or numpy array, shape (Z, Y, X)
        Class ids (0 background), any integer dtype or integral floats (an MRC imported as
        float32). A DataArray's ``attrs["class_names"]`` and ``attrs["pixel_size_A"]`` are used
        when the arguments are not given.
    occupancy : same kind, shape (Z, Y, X), optional
        Object ids (0 background).
    pixel_size_A : float, optional
        Voxel size (Å); default ``class_mask.attrs["pixel_size_A"]``.
    class_names : list of str, optional
        ``class_names[k - 1]`` names class ``k``; classes without a name are ``class_<k>``.
    slab_voxels : int
        Voxels read per step.

    Returns
    -------
    xarray.Dataset
        The table of :func:`particles_dataset`: ``x, y, z`` are the centroids of the objects'
        voxels in voxel coordinates (voxel ``i`` has its centre at ``i``) — the centre of the
        labelled shape, which is not exactly the template centre of an asymmetric particle;
        ``rot = tilt = psi = 0`` with ``attrs["orientations"]`` saying they are unknown;
        ``radius_A`` is the radius of the sphere with the object's volume (not a bounding
        sphere); ``shell_radius_A = 0``. ``attrs["derived_from"]`` names the method.

    Raises
    ------
    InputError
        Not 3D, shapes differ, no pixel size, or negative / non-integer ids.
    """
    cm = _dask_or_numpy(class_mask)
    attrs = class_mask.attrs if isinstance(class_mask, xr.DataArray) else {}
    if pixel_size_A is None:
        pixel_size_A = attrs.get("pixel_size_A")
    if pixel_size_A is None or not np.isfinite(float(pixel_size_A)) or float(pixel_size_A) <= 0:
        raise InputError(f"class mask: no valid pixel size (got {pixel_size_A}); pass pixel_size_A=")
    if class_names is None and attrs.get("class_names") is not None:
        class_names = [str(n) for n in attrs["class_names"]]
    if cm.ndim != 3:
        raise InputError(f"class mask must be 3D (z, y, x), got shape {tuple(cm.shape)}")
    occ = None if occupancy is None else _dask_or_numpy(occupancy)
    if occ is not None and tuple(occ.shape) != tuple(cm.shape):
        raise InputError(f"occupancy shape {tuple(occ.shape)} differs from class mask shape {tuple(cm.shape)}")
    acc = MaskComponents() if occ is None else OccupancyComponents()
    try:
        for z0, z1 in _z_slabs(cm, int(slab_voxels)):
            if occ is None:
                acc.add(_read(cm, z0, z1))
            else:
                acc.add(_read(occ, z0, z1), _read(cm, z0, z1))
    except ValueError as e:
        raise InputError(str(e)) from None
    stats = acc.result()
    names = list(class_names or [])
    cls = stats.class_id.astype(np.int32)
    n = len(cls)
    table = {
        "class_name": np.array([names[k - 1] if 0 < k <= len(names) else f"class_{k}" for k in cls],
                               dtype="<U32") if n else np.zeros(0, "<U32"),
        "class_id": cls,
        "x": stats.centroid_zyx[:, 2], "y": stats.centroid_zyx[:, 1], "z": stats.centroid_zyx[:, 0],
        "rot": np.zeros(n), "tilt": np.zeros(n), "psi": np.zeros(n),
        "radius_A": np.cbrt(3.0 * stats.count / (4.0 * np.pi)) * float(pixel_size_A),
        "shell_radius_A": np.zeros(n),
    }
    how = ("occupancy ids (one object per id, centroid of its voxels)" if occ is not None else
           "connected components of each class of the class mask (face connectivity, centroid of "
           "the component's voxels)")
    ds = particles_dataset(table, float(pixel_size_A), {
        "source": "derived from label masks", "derived_from": how, "orientations": ORIENTATION_UNKNOWN,
        "radius": "radius_A = radius of the sphere with the object's volume",
        **({"class_names": names} if names else {})})
    ds["radius_A"].attrs["long_name"] = "equivalent-volume sphere radius"
    ds["n_voxels"] = ("particle", stats.count.astype(np.int64))
    return ds


# -- reading the table back with its geometry ---------------------------------------------------
Grid = Literal["specimen", "tomogram"]
AXES = ("x", "y", "z")
#: Columns added by :func:`add_physical_coordinates` (Å).
CORNER_COLUMNS = ("x_A", "y_A", "z_A")
CENTRED_COLUMNS = ("x_centred_A", "y_centred_A", "z_centred_A")
CORNER_CONVENTION = ("x_A, y_A, z_A: Å from the corner of the grid's volume, voxel i at (i + 0.5) * "
                     "pixel_size_A, the store's own coordinate values (faket_dask.datamodel.pixel_coords)")
CENTRED_CONVENTION = ("x_centred_A, y_centred_A, z_centred_A: Å from the centre of the specimen volume "
                      "(the tilt axis / rotation centre of projection and back-projection), "
                      "(c - (N - 1) / 2) * pixel_size_A on the specimen grid; = RELION 5's "
                      "rlnCenteredCoordinate{X,Y,Z}Angst")


def add_physical_coordinates(
    particles: xr.Dataset,
    shape_zyx: tuple[int, int, int],
    *,
    pixel_size_A: float | None = None,
    centred_from: xr.Dataset | None = None,
    specimen_shape_zyx: tuple[int, int, int] | None = None,
) -> xr.Dataset:
    """Add the table's coordinates in Å: from the volume's corner and from its centre.

    * ``x_A, y_A, z_A`` = ``(c + 0.5) * pixel_size_A``: Å from the corner of the volume the
      voxel coordinates ``c`` refer to (voxel ``i`` spans ``[i, i + 1)`` pixels, its centre at
      ``i``), the same values as the store's coordinate arrays (``datamodel.pixel_coords``), so
      ``volume.sel(x=row.x_A, method="nearest")`` is the particle's voxel.
    * ``x_centred_A, ...`` = ``(c - (N - 1) / 2) * pixel_size_A`` with ``N`` the specimen's size
      along the axis: Å from the geometric centre of the specimen volume, which is the rotation
      centre of the projector and of the back-projection (``kernels/backprojection.py``: pixel
      centres at ``-N/2 + 0.5 ... N/2 - 0.5``). A particle at the exact volume centre gives 0, one
      at voxel 0 gives ``-(N - 1) / 2 * pixel_size_A``. These are physical, so they do not
      depend on the grid (specimen or binned tomogram).

    Parameters
    ----------
    particles : xarray.Dataset
        Table on dim ``particle`` with voxel coordinates ``x, y, z`` (float) and
        ``attrs["pixel_size_A"]`` (unless ``pixel_size_A`` is given).
    shape_zyx : (int, int, int)
        Shape of the volume the voxel coordinates refer to.
    pixel_size_A : float, optional
        Voxel size of that volume (Å).
    centred_from : xarray.Dataset, optional
        The specimen-grid table of the same particles (same rows) when ``particles`` is on
        another grid (the binned tomogram): the centred coordinates are taken from it, so they
        are identical on both grids.
    specimen_shape_zyx : (int, int, int), optional
        Specimen shape, needed with ``centred_from``.

    Returns
    -------
    xarray.Dataset
        A copy with the six float64 columns (units ``angstrom``) and ``attrs["volume_shape_zyx"]``.

    Raises
    ------
    InputError
        No pixel size, a bad shape, or ``centred_from`` with other rows.
    """
    px = float(pixel_size_A if pixel_size_A is not None else particles.attrs.get("pixel_size_A", np.nan))
    if not np.isfinite(px) or px <= 0:
        raise InputError(f"particle table: no valid pixel_size_A (got {px})")
    shape = tuple(int(s) for s in shape_zyx)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"particle table: bad volume shape {shape_zyx}")
    out = particles.copy()
    size = dict(zip(("z", "y", "x"), shape))
    for a, col in zip(AXES, CORNER_COLUMNS):
        out[col] = ("particle", (np.asarray(particles[a].values, np.float64) + 0.5) * px, {"units": "angstrom"})
    if centred_from is None:
        src, sshape, spx = particles, size, px
    else:
        if specimen_shape_zyx is None:
            raise InputError("particle table: centred_from needs specimen_shape_zyx")
        if centred_from.sizes.get("particle", 0) != particles.sizes.get("particle", 0):
            raise InputError(f"particle table: {particles.sizes.get('particle', 0)} rows on this grid, "
                             f"{centred_from.sizes.get('particle', 0)} on the specimen grid")
        src, sshape = centred_from, dict(zip(("z", "y", "x"), (int(s) for s in specimen_shape_zyx)))
        spx = float(centred_from.attrs["pixel_size_A"])
    for a, col in zip(AXES, CENTRED_COLUMNS):
        c = np.asarray(src[a].values, np.float64)
        out[col] = ("particle", (c - (sshape[a] - 1) / 2.0) * spx, {"units": "angstrom"})
    out.attrs.update(volume_shape_zyx=list(shape), pixel_size_A=px, corner_coordinates=CORNER_CONVENTION,
                     centred_coordinates=CENTRED_CONVENTION)
    return out


def _specimen_geometry(store: str | Path, tomo: int) -> tuple[xr.Dataset | None, tuple[int, int, int] | None, float | None]:
    """``tomo_NNN/specimen`` (lazy), its (Z, Y, X) and pixel size; Nones if it is missing."""
    from ..store import has_var
    from ..store import open as open_group

    group = specimen_group(tomo)
    if not any(has_var(store, f"{group}/{v}") for v in ("density", "class_mask")):
        return None, None, None
    spec = open_group(store, group)
    shape = tuple(int(spec.sizes[d]) for d in ("z", "y", "x"))
    px = spec.attrs.get("pixel_size_A")
    for v in ("density", "class_mask"):
        if px is None and v in spec:
            px = spec[v].attrs.get("pixel_size_A")
    return spec, shape, (None if px is None else float(px))


def _read_table(store: str | Path, group: str) -> xr.Dataset:
    from ..store import open as open_group

    ds = open_group(store, group, in_memory=True)
    missing = [c for c in COLUMNS if c not in ds]
    if missing:
        raise InputError(f"{store}: {group} lacks {', '.join(missing)}")
    for c in EXTRA_COLUMNS:                          # tables written before these columns
        if c not in ds:
            ds[c] = ("particle", np.zeros(ds.sizes.get("particle", 0)), {"units": "angstrom"})
    return ds


def open_particles(
    store: str | Path,
    tomo: int = 0,
    *,
    grid: Grid = "specimen",
    derive: bool = True,
) -> xr.Dataset:
    """Read the particle table of tomogram ``tomo`` with everything an export needs (in memory).

    Parameters
    ----------
    store : path
        Run store.
    tomo : int
        Tomogram index.
    grid : {"specimen", "tomogram"}
        ``"specimen"``: ``tomo_NNN/particles`` (voxels of the specimen volume).
        ``"tomogram"``: ``tomo_NNN/labels_particles`` (voxels of the binned tomogram, written by
        ``faket-dask simulate``; see ``Pipeline.labels``); its centred Å are taken from the
        specimen table (same rows), so they are identical on both grids.
    derive : bool
        If the stored table is empty (an imported grandmodel) and the specimen has a
        ``class_mask``, derive the table from it with :func:`particles_from_masks` (with the
        ``occupancy`` volume if there is one). Nothing is written to the store.

    Returns
    -------
    xarray.Dataset
        Columns :data:`~faket_dask.kernels.specimen_placement.COLUMNS` plus those of
        :func:`add_physical_coordinates` when the specimen volume is in the store; attrs
        ``pixel_size_A`` (of the grid), ``grid``, ``tomo`` and, when derived, ``derived_from``.
        May have 0 rows.

    Raises
    ------
    InputError
        Missing store, group or columns.
    """
    from ..store import has_var
    from ..store import open as open_group

    if grid not in ("specimen", "tomogram"):
        raise InputError(f"--grid must be specimen or tomogram, got {grid!r}")
    spec, sshape, spx = _specimen_geometry(store, tomo)
    parts = _read_table(store, particles_group(tomo))
    keep = COLUMNS + EXTRA_COLUMNS + FILAMENT_COLUMNS + ("n_voxels",)
    parts = parts[[c for c in parts.data_vars if c in keep]]
    if spx is None:
        spx = parts.attrs.get("pixel_size_A")
    if parts.sizes.get("particle", 0) == 0 and derive and spec is not None and "class_mask" in spec:
        cm = spec["class_mask"]
        names = parts.attrs.get("class_names") or cm.attrs.get("class_names")
        parts = particles_from_masks(cm, spec["occupancy"] if "occupancy" in spec else None,
                                     pixel_size_A=spx, class_names=list(names) if names else None)
    if spx is not None:
        parts.attrs["pixel_size_A"] = float(spx)
    parts.attrs.update(grid="specimen", tomo=int(tomo))
    if sshape is not None and parts.sizes.get("particle", 0):
        parts = add_physical_coordinates(parts, sshape)
    elif sshape is not None:
        parts.attrs["volume_shape_zyx"] = list(sshape)
    if grid == "specimen":
        return parts

    lgroup = labels_particles_group(tomo)
    if not has_var(store, f"{lgroup}/x"):
        raise InputError(f"{store}: no {lgroup} (`faket-dask simulate` writes it with the labels when the "
                         f"specimen has a particle table); use --grid specimen")
    lab = _read_table(store, lgroup)
    lab = lab[[c for c in lab.data_vars if c in COLUMNS]]
    b = float(lab.attrs.get("binning", 1))
    if sshape is None or lab.sizes["particle"] != parts.sizes["particle"] or not (
            np.allclose((lab["x"].values + 0.5) * b - 0.5, parts["x"].values, atol=1e-6 * b)
            and np.allclose((lab["y"].values + 0.5) * b - 0.5, parts["y"].values, atol=1e-6 * b)):
        raise InputError(f"{store}: {lgroup} does not match {particles_group(tomo)} row for row")
    tshape = None
    for g, v in ((labels_group(tomo), "class_mask"), (tomogram_group(tomo), None)):
        try:
            ds = open_group(store, g)
        except InputError:
            continue
        names = [v] if v in ds else list(ds.data_vars)
        if names:
            tshape = tuple(int(ds[names[0]].sizes[d]) for d in ("z", "y", "x"))
            break
    if tshape is None:
        raise InputError(f"{store}: no tomogram grid for {lgroup} (no {labels_group(tomo)} or "
                         f"{tomogram_group(tomo)})")
    # per-object sizes are Å, the same on either grid: the specimen table's (row for row, checked)
    for c in EXTRA_COLUMNS:
        if c in parts:
            lab[c] = ("particle", np.asarray(parts[c].values), dict(parts[c].attrs))
    out = add_physical_coordinates(lab, tshape, pixel_size_A=float(lab.attrs["pixel_size_A"]),
                                   centred_from=parts, specimen_shape_zyx=sshape)
    out.attrs.update(grid="tomogram", tomo=int(tomo), specimen_pixel_size_A=float(spx))
    return out
