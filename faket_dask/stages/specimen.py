"""Specimen generator stage: global placement, then chunk-by-chunk rendering with Dask.

The particle table is decided first, in one process (it is small: one row per object); the
volume is then a lazy ``dask.array.map_blocks`` graph over ``(cz, cy, X)`` chunks in which
every chunk renders only the particles that touch it (:func:`faket_dask.kernels.specimen.
render_block`). No task ever holds more than one chunk, so volumes larger than memory can be
generated straight into a Zarr store.

Store layout (:mod:`faket_dask.store.layout`)::

    tomo_NNN/specimen    density float32, class_mask uint8, occupancy uint32   (z, y, x)
    tomo_NNN/particles   class_name, class_id, x, y, z, rot, tilt, psi, ...    (particle)

The particle table itself (its schema, tables derived from label masks, reading it back with
its geometry) is :mod:`faket_dask.stages.particles`; exports (SHREC ``.txt``, RELION 5
``.star``, ``.csv``) are :mod:`faket_dask.stages.particle_export`.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ..chunking import choose_cy, volume_chunks
from ..datamodel import volume
from ..errors import InputError
from ..kernels.specimen import render_block
from ..kernels.specimen_placement import place_groups
from ..kernels.specimen_templates import (
    ClassTemplate,
    builtin_classes,
    fiducial_class,
    map_class,
    vesicle_class,
)
from ..store.layout import particles_group, specimen_group

from .particles import particles_dataset


def load_template_dir(templates_dir: str | Path, pixel_size_A: float) -> list[ClassTemplate]:
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
            out.append(map_class(f.stem, data, vs, pixel_size_A))
        except ValueError as e:
            raise InputError(f"{f}: {e}") from None
    return out


def build_classes(pixel_size_A: float, templates_dir: str | Path | None = None) -> list[ClassTemplate]:
    """Protein classes (built-in or from ``templates_dir``) followed by vesicle and fiducial.

    Class id ``k`` (1-based) is ``classes[k - 1]``; 0 is background.
    """
    proteins = builtin_classes() if templates_dir is None else load_template_dir(templates_dir, pixel_size_A)
    return proteins + [vesicle_class(), fiducial_class()]


def _render_chunk(table, classes, pixel_size_A, block_info=None) -> np.ndarray:
    """map_blocks body: the three label/density blocks stacked as float64, shape (3, cz, cy, X).

    One task renders all three so the particles are evaluated once per chunk; float64 holds
    the uint32 occupancy ids exactly.
    """
    loc = block_info[None]["array-location"][1:]
    origin = tuple(int(a) for a, _ in loc)
    shape = tuple(int(b - a) for a, b in loc)
    d, m, o = render_block(table, classes, origin, shape, pixel_size_A)
    return np.stack([d.astype(np.float64), m.astype(np.float64), o.astype(np.float64)])


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
    table = place_groups(shape, pixel_size_A, classes, groups, seed, max_tries=max_tries)

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
    from ..store import check_writable, mark_stage, open_root, rollback_on_error

    sgroup, pgroup = specimen_group(tomo), particles_group(tomo)
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
