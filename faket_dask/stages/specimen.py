"""Specimen generator stage: global placement, then chunk-by-chunk rendering with Dask.

The particle table is decided first, in one process (it is small: one row per object); the
volume is then a lazy ``dask.array.map_blocks`` graph over ``(cz, cy, X)`` chunks in which
every chunk renders only the particles that touch it (:func:`faket_dask.kernels.specimen.
render_block`). No task ever holds more than one chunk, so volumes larger than memory can be
generated straight into a Zarr store.

Store layout (DESIGN.md)::

    tomo_NNN/specimen    density float32, class_mask uint8, occupancy uint32   (z, y, x)
    tomo_NNN/particles   class_name, class_id, x, y, z, rot, tilt, psi, ...    (particle)

Particle tables are exported (``faket-dask export-particles``) as SHREC ``.txt``, RELION 5
``.star`` or ``.csv`` (:func:`export_particles`); an imported grandmodel without a table gets
one from its label masks (:func:`particles_from_masks`).
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ..chunking import choose_cy, volume_chunks
from ..datamodel import volume
from ..errors import InputError
from ..kernels import specimen as K

if TYPE_CHECKING:
    import pandas as pd

#: Attribute text describing the conventions (copied into the stores and exports' docs).
EULER_CONVENTION = ("ZYZ intrinsic, degrees (RELION rot/tilt/psi): particle = template rotated "
                    "actively by Rz(rot) Ry(tilt) Rz(psi) on (x, y, z)")
COORD_CONVENTION = "voxel coordinates; voxel index i has its centre at i, i.e. (i + 0.5) * pixel_size_A in Å"


def load_template_dir(templates_dir: str | Path, pixel_size_A: float) -> list[K.ClassTemplate]:
    """One class per ``*.mrc`` in ``templates_dir`` (sorted by name), resampled to the pixel size.

    Raises
    ------
    InputError
        If the directory is missing, holds no ``.mrc``, or a map is unreadable / not 3D / empty.
    """
    import mrcfile

    d = Path(templates_dir)
    if not d.is_dir():
        raise InputError(f"--templates {d}: not a directory")
    files = sorted(d.glob("*.mrc"))
    if not files:
        raise InputError(f"--templates {d}: no *.mrc files")
    if len(files) > 250:
        raise InputError(f"--templates {d}: {len(files)} maps; at most 250 classes fit uint8 class ids")
    out = []
    for f in files:
        try:
            with mrcfile.open(f, permissive=True) as m:
                data = np.asarray(m.data, dtype=np.float32)
                vs = float(m.voxel_size.x)
        except Exception as e:  # noqa: BLE001 - any reader failure is a user error
            raise InputError(f"{f}: not a readable MRC file ({e})") from None
        if data is None or data.ndim != 3:
            raise InputError(f"{f}: template must be a 3D density map")
        if not np.all(np.isfinite(data)):
            raise InputError(f"{f}: contains NaN or inf")
        if vs <= 0:
            raise InputError(f"{f}: no voxel size in the header")
        try:
            out.append(K.map_class(f.stem, data, vs, pixel_size_A))
        except ValueError as e:
            raise InputError(f"{f}: {e}") from None
    return out


def build_classes(pixel_size_A: float, templates_dir: str | Path | None = None) -> list[K.ClassTemplate]:
    """Protein classes (built-in or from ``templates_dir``) followed by vesicle and fiducial.

    Class id ``k`` (1-based) is ``classes[k - 1]``; 0 is background.
    """
    proteins = K.builtin_classes() if templates_dir is None else load_template_dir(templates_dir, pixel_size_A)
    return proteins + [K.vesicle_class(), K.fiducial_class()]


def _render_chunk(table, classes, pixel_size_A, block_info=None) -> np.ndarray:
    """map_blocks body: the three label/density blocks stacked as float64, shape (3, cz, cy, X).

    One task renders all three so the particles are evaluated once per chunk; float64 holds
    the uint32 occupancy ids exactly.
    """
    loc = block_info[None]["array-location"][1:]
    origin = tuple(int(a) for a, _ in loc)
    shape = tuple(int(b - a) for a, b in loc)
    d, m, o = K.render_block(table, classes, origin, shape, pixel_size_A)
    return np.stack([d.astype(np.float64), m.astype(np.float64), o.astype(np.float64)])


def particles_dataset(table: dict[str, np.ndarray], pixel_size_A: float, attrs: dict | None = None) -> xr.Dataset:
    """The particle table as an xarray Dataset on dim ``particle`` (coord = occupancy id).

    Parameters
    ----------
    table : dict of 1-D arrays
        The columns :data:`~faket_dask.kernels.specimen.COLUMNS`, all of one length N (0 allowed).
    pixel_size_A : float
        Voxel size (Å) of the volume the voxel coordinates ``x, y, z`` refer to.
    attrs : dict, optional
        Extra attributes.

    Returns
    -------
    xarray.Dataset
        dim ``particle`` (coord 1..N, uint32); ``class_id`` int32, ``class_name`` unicode, the
        rest float64 (whatever dtypes ``table`` had, so empty tables keep the schema).
    """
    n = len(table["x"])
    data = {c: ("particle", np.asarray(table[c], dtype=np.float64)) for c in K.COLUMNS
            if c not in ("class_name", "class_id")}
    data["class_id"] = ("particle", np.asarray(table["class_id"]).astype(np.int32))
    names = np.asarray(table["class_name"]).astype(str)
    data["class_name"] = ("particle", names if names.size else np.zeros(0, "<U32"))
    ds = xr.Dataset({c: data[c] for c in K.COLUMNS}, coords={"particle": np.arange(1, n + 1, dtype=np.uint32)})
    units = {"x": "voxel", "y": "voxel", "z": "voxel", "rot": "degree", "tilt": "degree",
             "psi": "degree", "radius_A": "angstrom", "shell_radius_A": "angstrom"}
    for k, u in units.items():
        ds[k].attrs["units"] = u
    ds["radius_A"].attrs["long_name"] = "bounding-sphere radius"
    ds["shell_radius_A"].attrs["long_name"] = "vesicle radius (0 for other classes)"
    ds.attrs.update(attrs or {})
    ds.attrs.update(pixel_size_A=float(pixel_size_A), euler_convention=EULER_CONVENTION,
                    coordinates=COORD_CONVENTION)
    return ds


def generate_specimen(
    shape_zyx: tuple[int, int, int],
    pixel_size_A: float,
    seed: int,
    *,
    n_particles: int = 100,
    n_vesicles: int = 2,
    n_fiducials: int = 5,
    templates_dir: str | Path | None = None,
    cy: int | None = None,
    cz: int | None = None,
    max_tries: int = 200,
) -> tuple[xr.Dataset, xr.Dataset]:
    """Place objects globally and build the lazy specimen volume.

    Parameters
    ----------
    shape_zyx : (int, int, int)
        Volume shape (voxels).
    pixel_size_A : float
        Voxel size (Å).
    seed : int
        Seed of the placement (positions, classes, orientations, vesicle radii); the same seed
        gives the identical table and volume.
    n_particles, n_vesicles, n_fiducials : int
        Requested objects; vesicles are placed first, then fiducials, then proteins (class
        uniform at random). Objects that find no room are dropped with a warning.
    templates_dir : path, optional
        Directory of ``*.mrc`` maps replacing the 12 built-in protein classes.
    cy, cz : int, optional
        Chunk rows / slices (default :func:`~faket_dask.chunking.choose_cy` and
        :func:`~faket_dask.chunking.volume_chunks`). The output does not depend on them.
    max_tries : int
        Rejection-sampling candidates per object.

    Returns
    -------
    specimen : xarray.Dataset
        ``density`` float32, ``class_mask`` uint8 (class id, 0 background), ``occupancy``
        uint32 (particle id = table row + 1, 0 background); dims ``(z, y, x)``, dask-backed,
        chunks ``(cz, cy, X)``. ``class_mask.attrs["class_names"][k - 1]`` names class ``k``.
    particles : xarray.Dataset
        The particle table on dim ``particle`` (see :func:`particles_dataset`).
    """
    shape = tuple(int(s) for s in shape_zyx)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"--shape must be three positive sizes Z Y X, got {' '.join(map(str, shape_zyx))}")
    if not np.isfinite(pixel_size_A) or pixel_size_A <= 0:
        raise InputError(f"--pixel-size-A must be a positive number of Å, got {pixel_size_A}")
    for opt, v in (("--particles", n_particles), ("--vesicles", n_vesicles), ("--fiducials", n_fiducials)):
        if v < 0:
            raise InputError(f"{opt} must be >= 0, got {v}")
    classes = build_classes(pixel_size_A, templates_dir)
    kp = len(classes) - 2
    groups = [([kp], n_vesicles), ([kp + 1], n_fiducials), (list(range(kp)), n_particles)]
    table = K.place_groups(shape, pixel_size_A, classes, groups, seed, max_tries=max_tries)

    nz, ny, nx = shape
    cy = choose_cy(ny, nx, nz) if cy is None else min(int(cy), ny)
    chunks = volume_chunks(shape, cy)
    if cz is not None:
        chunks = (min(int(cz), nz), chunks[1], nx)
    norm = da.core.normalize_chunks(chunks, shape)
    # the table and templates enter the graph once (as delayed keys), not once per chunk task
    table_d = dask.delayed(table, pure=True)
    classes_d = dask.delayed(classes, pure=True)
    stacked = da.map_blocks(
        _render_chunk, table_d, classes_d, float(pixel_size_A),
        chunks=((3,),) + norm, dtype=np.float64, meta=np.empty((0, 0, 0, 0)),
        name=f"render-specimen-{da.core.tokenize(shape, pixel_size_A, seed, table, templates_dir)}",
    )
    names = [c.name for c in classes]
    common = {"seed": int(seed), "class_names": names}
    density = volume(stacked[0].astype(np.float32), pixel_size_A, name="density",
                     attrs={**common, "units": "arbitrary (protein interior ~1, gold 10)"})
    cmask = volume(stacked[1].astype(np.uint8), pixel_size_A, name="class_mask", dtype=None,
                   attrs={**common, "thresholds": [float(c.threshold) for c in classes],
                          "description": "class id k = class_names[k-1]; voxel labelled where its "
                                         "particle's density >= thresholds[k-1]; 0 background"})
    occ = volume(stacked[2].astype(np.uint32), pixel_size_A, name="occupancy", dtype=None,
                 attrs={**common, "description": "particle id = row of tomo_NNN/particles + 1; 0 background"})
    specimen = xr.Dataset({"density": density, "class_mask": cmask, "occupancy": occ})
    specimen.attrs.update(pixel_size_A=float(pixel_size_A), seed=int(seed))
    particles = particles_dataset(table, pixel_size_A, {"seed": int(seed), "class_names": names,
                                                        "requested": [n_vesicles, n_fiducials, n_particles]})
    return specimen, particles


def write_specimen(
    specimen: xr.Dataset,
    particles: xr.Dataset,
    store: str | Path,
    tomo: int = 0,
    *,
    overwrite: bool = False,
    progress: str | None = "rendering specimen",
) -> tuple[str, str]:
    """Write ``specimen`` to ``tomo_NNN/specimen`` and ``particles`` to ``tomo_NNN/particles``.

    The three volumes are written by one ``to_zarr`` so each chunk is rendered once (three
    :func:`faket_dask.store.save` calls would render every chunk three times).

    Returns
    -------
    (str, str)
        The two group paths written.
    """
    import zarr

    from ..progress import compute
    from ..store import check_writable, mark_stage, open_root, rollback_on_error, tomo_group

    sgroup, pgroup = tomo_group(tomo, "specimen"), tomo_group(tomo, "particles")
    for v in specimen.data_vars:
        check_writable(store, f"{sgroup}/{v}", overwrite=overwrite)
    check_writable(store, f"{pgroup}/x", overwrite=overwrite)
    with rollback_on_error(store, f"{sgroup}/density"):
        open_root(store, create=True)
        root = zarr.open_group(str(store), mode="r+")
        for g in (sgroup, pgroup):
            if overwrite and g in root:
                del root[g]
        key = f"{sgroup}/density"
        info = {"stage": "specimen", "seed": specimen.attrs.get("seed")}
        mark_stage(store, key, status="running", **info)
        ds = specimen.copy()
        for v in ds.variables.values():
            v.encoding.clear()
        delayed = ds.to_zarr(str(store), group=sgroup, mode="a", zarr_format=3, consolidated=False,
                             compute=False)
        compute(delayed, label=progress or f"writing {sgroup}")
        p = particles.copy()
        for v in p.variables.values():
            v.encoding.clear()
        with warnings.catch_warnings():
            # fixed-width unicode is not yet in the Zarr v3 spec; xarray/zarr read it back fine
            warnings.simplefilter("ignore")
            p.to_zarr(str(store), group=pgroup, mode="a", zarr_format=3, consolidated=False)
        for v in specimen.data_vars:
            mark_stage(store, f"{sgroup}/{v}", status="complete", **info)
    return sgroup, pgroup


# -- particle tables from masks -----------------------------------------------------------------
#: Voxels read per slab by :func:`particles_from_masks` (~20 bytes a voxel for a uint8 mask with
#: the labels, so ~170 MB, plus 32 bytes per labelled voxel).
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
    (:class:`~faket_dask.kernels.specimen.MaskComponents`); one core labels ~30 M voxels/s.

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
    acc = K.MaskComponents() if occ is None else K.OccupancyComponents()
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
    from ..store import has_var, tomo_group
    from ..store import open as open_group

    group = tomo_group(tomo, "specimen")
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

    ds = open_group(store, group).load()
    missing = [c for c in K.COLUMNS if c not in ds]
    if missing:
        raise InputError(f"{store}: {group} lacks {', '.join(missing)}")
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
        Columns :data:`~faket_dask.kernels.specimen.COLUMNS` plus those of
        :func:`add_physical_coordinates` when the specimen volume is in the store; attrs
        ``pixel_size_A`` (of the grid), ``grid``, ``tomo`` and, when derived, ``derived_from``.
        May have 0 rows.

    Raises
    ------
    InputError
        Missing store, group or columns.
    """
    from ..store import has_var, tomo_group
    from ..store import open as open_group

    if grid not in ("specimen", "tomogram"):
        raise InputError(f"--grid must be specimen or tomogram, got {grid!r}")
    spec, sshape, spx = _specimen_geometry(store, tomo)
    parts = _read_table(store, tomo_group(tomo, "particles"))
    parts = parts[[c for c in parts.data_vars if c in K.COLUMNS or c == "n_voxels"]]
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

    lgroup = tomo_group(tomo, "labels_particles")
    if not has_var(store, f"{lgroup}/x"):
        raise InputError(f"{store}: no {lgroup} (`faket-dask simulate` writes it with the labels when the "
                         f"specimen has a particle table); use --grid specimen")
    lab = _read_table(store, lgroup)
    lab = lab[[c for c in lab.data_vars if c in K.COLUMNS]]
    b = float(lab.attrs.get("binning", 1))
    if sshape is None or lab.sizes["particle"] != parts.sizes["particle"] or not (
            np.allclose((lab["x"].values + 0.5) * b - 0.5, parts["x"].values, atol=1e-6 * b)
            and np.allclose((lab["y"].values + 0.5) * b - 0.5, parts["y"].values, atol=1e-6 * b)):
        raise InputError(f"{store}: {lgroup} does not match {tomo_group(tomo, 'particles')} row for row")
    tshape = None
    for g, v in ((tomo_group(tomo, "labels"), "class_mask"), (tomo_group(tomo, "tomogram"), None)):
        try:
            ds = open_group(store, g)
        except InputError:
            continue
        names = [v] if v in ds else list(ds.data_vars)
        if names:
            tshape = tuple(int(ds[names[0]].sizes[d]) for d in ("z", "y", "x"))
            break
    if tshape is None:
        raise InputError(f"{store}: no tomogram grid for {lgroup} (no {tomo_group(tomo, 'labels')} or "
                         f"{tomo_group(tomo, 'tomogram')})")
    out = add_physical_coordinates(lab, tshape, pixel_size_A=float(lab.attrs["pixel_size_A"]),
                                   centred_from=parts, specimen_shape_zyx=sshape)
    out.attrs.update(grid="tomogram", tomo=int(tomo), specimen_pixel_size_A=float(spx))
    return out


# -- writing -----------------------------------------------------------------------------------
_TOMO_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


def check_export_path(path: str | Path, *, overwrite: bool) -> Path:
    """Validate an export destination before anything is read or written.

    Raises
    ------
    InputError
        Unknown suffix (not ``.txt``, ``.star``, ``.csv``) or missing directory.
    OutputExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    from ..errors import OutputExistsError

    path = Path(path)
    if path.suffix.lower() not in (".txt", ".star", ".csv"):
        raise InputError(f"{path}: unknown particle-list format (use .txt, .star or .csv)")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise InputError(f"{path}: directory {path.parent} does not exist")
    return path


def check_tomo_name(name: str) -> str:
    """``name`` if it is a usable ``rlnTomoName`` (letters, digits, ``_ . + -``), else InputError."""
    if not _TOMO_NAME.match(name):
        raise InputError(f"--tomo-name {name!r}: use letters, digits and _ . + - (a RELION rlnTomoName)")
    return name


def relion_star_tables(particles: xr.Dataset, tomo_name: str, tilt_series_pixel_size_A: float) -> dict[str, pd.DataFrame]:
    """The ``optics`` and ``particles`` blocks of a RELION 5 tomography particle set.

    Conventions (checked against RELION 5's source, ``src/jaz/tomography/particle_set.cpp``,
    ``ParticleSet::read`` and ``getParticleCoordDecenteredPixel``):

    * RELION 5 positions a particle by ``rlnCenteredCoordinate{X,Y,Z}Angst``: Å from the centre
      of the tomogram; internally ``pixel = Å / rlnTomoTiltSeriesPixelSize + size / 2`` with
      the tomogram size of ``tomograms.star`` (``rlnTomoSize{X,Y,Z}``, unbinned pixels). We
      write the physical offset from the specimen's centre (= the tilt axis of the projections,
      see :func:`add_physical_coordinates`), so set ``rlnTomoSize{X,Y,Z}`` to the specimen's
      ``X Y Z``. Note: RELION places the tilt axis at pixel ``W // 2`` of a tilt image
      (``Tomogram::setProjectionMatrix``) while FakET's projector uses the geometric centre
      ``(W - 1) / 2``; for sub-pixel work give the imported FakET tilt-series a shift of
      −0.5 pixel in x and y (``rlnTomoXShiftAngst = rlnTomoYShiftAngst = −0.5 · pixel``).
    * The optics block must carry ``rlnTomoTiltSeriesPixelSize`` (RELION refuses a particle set
      without it); ``rlnOpticsGroup``/``rlnOpticsGroupName`` = 1 / the tomogram name, as RELION
      makes them itself (one group per tomogram). ``rlnImagePixelSize`` is left out: in RELION 5
      it is the pixel size of *extracted* subtomograms (tilt-series pixel × binning), written by
      the extraction job.
    * ``rlnAngleRot/Tilt/Psi``: ZYZ Euler angles in degrees, RELION's convention (see
      :mod:`faket_dask.kernels.specimen`). ``rlnTomoParticleName`` is ``TOMO/INDEX`` as RELION
      names particles itself.
    * ``rlnCoordinate{X,Y,Z}`` (voxels of the table's grid, voxel ``i`` centred at ``i``) are kept
      for RELION 4 era tools; RELION 5 ignores them when the centred labels are present.
    * ``rlnClassName`` is not a RELION label (RELION warns and ignores it); it keeps the class name.

    Returns
    -------
    dict of pandas.DataFrame
        ``{"optics": 1 row, "particles": one row per particle}``.
    """
    import pandas as pd

    n = particles.sizes["particle"]
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": [tomo_name],
                           "rlnTomoTiltSeriesPixelSize": [float(tilt_series_pixel_size_A)]})
    ids = np.asarray(particles["particle"].values) if "particle" in particles.coords else np.arange(1, n + 1)
    star = pd.DataFrame({
        "rlnTomoName": [tomo_name] * n,
        "rlnTomoParticleName": [f"{tomo_name}/{int(i)}" for i in ids],
        "rlnCenteredCoordinateXAngst": particles["x_centred_A"].values,
        "rlnCenteredCoordinateYAngst": particles["y_centred_A"].values,
        "rlnCenteredCoordinateZAngst": particles["z_centred_A"].values,
        "rlnCoordinateX": particles["x"].values, "rlnCoordinateY": particles["y"].values,
        "rlnCoordinateZ": particles["z"].values,
        "rlnAngleRot": particles["rot"].values, "rlnAngleTilt": particles["tilt"].values,
        "rlnAnglePsi": particles["psi"].values,
        "rlnOpticsGroup": np.ones(n, dtype=int),
        "rlnClassNumber": np.asarray(particles["class_id"].values).astype(int),
        "rlnClassName": np.asarray(particles["class_name"].values).astype(str),
    })
    return {"optics": optics, "particles": star}


def export_particles(
    particles: xr.Dataset,
    path: str | Path,
    *,
    overwrite: bool = False,
    tomo_name: str | None = None,
    shape_zyx: tuple[int, int, int] | None = None,
) -> Path:
    """Write the particle table in the format chosen by the suffix of ``path``.

    * ``.txt``: SHREC 2021 ``particle_locations.txt``: one line per particle,
      ``class_name x y z rotation_Z1 rotation_X rotation_Z2``, space-separated; ``x y z`` in
      voxels (centre of voxel i is i), angles in degrees as intrinsic **ZXZ** Euler angles of
      the same active rotation (``Rz(Z1) Rx(X) Rz(Z2)``), which is SHREC's convention.
    * ``.star``: a RELION 5 tomography particle set: ``data_optics`` and ``data_particles``
      with ``rlnTomoName``, ``rlnCenteredCoordinate{X,Y,Z}Angst`` and the rest of
      :func:`relion_star_tables` (conventions and sources there).
    * ``.csv``: ``particle`` and every table column, with ``x_A, y_A, z_A`` (Å from the volume's
      corner, voxel ``i`` at ``(i + 0.5)·pixel``, as the store's coordinates) and
      ``x_centred_A, ...`` (Å from the specimen centre) — see :func:`add_physical_coordinates`.

    The file is written under a temporary name and renamed, so a failure leaves nothing.

    Parameters
    ----------
    particles : xarray.Dataset
        A table from :func:`open_particles` (or :func:`particles_dataset` plus ``shape_zyx``).
    path : path
        Output file; its suffix picks the format.
    overwrite : bool
        Replace an existing file.
    tomo_name : str, optional
        ``rlnTomoName`` (default ``tomo_NNN`` from ``attrs["tomo"]``); must match the name in
        RELION's ``tomograms.star``.
    shape_zyx : (int, int, int), optional
        Volume shape, when the table has no Å columns yet (needed for ``.star`` and ``.csv``).

    Raises
    ------
    InputError
        Unknown suffix, missing directory, empty table, bad tomogram name, unknown volume shape.
    OutputExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    import os

    import pandas as pd

    path = check_export_path(path, overwrite=overwrite)
    suffix = path.suffix.lower()
    if particles.sizes.get("particle", 0) == 0:
        raise InputError(f"{path}: the particle table is empty; nothing written")
    if suffix in (".star", ".csv") and not all(c in particles for c in CENTRED_COLUMNS):
        shape = shape_zyx if shape_zyx is not None else particles.attrs.get("volume_shape_zyx")
        if shape is None:
            raise InputError(f"{path}: the volume shape is unknown (needed for Å coordinates); "
                             "pass shape_zyx= or read the table with open_particles")
        particles = add_physical_coordinates(particles, tuple(shape))
    if tomo_name is None:
        tomo_name = f"tomo_{int(particles.attrs.get('tomo', 0)):03d}"
    check_tomo_name(tomo_name)
    df = pd.DataFrame({c: np.asarray(particles[c].values) for c in K.COLUMNS})
    df["class_name"] = df["class_name"].astype(str)
    tmp = path.with_name(f".{path.name}.part")
    try:
        if suffix == ".csv":
            df.insert(0, "particle", np.asarray(particles["particle"].values))
            for c in CORNER_COLUMNS + CENTRED_COLUMNS + (("n_voxels",) if "n_voxels" in particles else ()):
                df[c] = np.asarray(particles[c].values)
            df.to_csv(tmp, index=False)
        elif suffix == ".star":
            import starfile

            ts_px = particles.attrs.get("specimen_pixel_size_A", particles.attrs.get("pixel_size_A"))
            starfile.write(relion_star_tables(particles, tomo_name, float(ts_px)), tmp, overwrite=True)
        else:
            from scipy.spatial.transform import Rotation

            zxz = Rotation.from_euler("ZYZ", df[["rot", "tilt", "psi"]].to_numpy(), degrees=True).as_euler(
                "ZXZ", degrees=True)
            with open(tmp, "w") as f:
                for (_, row), (a, b, c) in zip(df.iterrows(), zxz):
                    f.write(f"{row['class_name']} {row['x']:.3f} {row['y']:.3f} {row['z']:.3f} "
                            f"{a:.3f} {b:.3f} {c:.3f}\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
