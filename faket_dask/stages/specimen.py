"""Specimen generator stage: global placement, then chunk-by-chunk rendering with Dask.

The particle table is decided first, in one process (it is small: one row per object); the
volume is then a lazy ``dask.array.map_blocks`` graph over ``(cz, cy, X)`` chunks in which
every chunk renders only the particles that touch it (:func:`faket_dask.kernels.specimen.
render_block`). No task ever holds more than one chunk, so volumes larger than memory can be
generated straight into a Zarr store.

Store layout (:mod:`faket_dask.store.layout`)::

    tomo_NNN/specimen    density float32 (V), absorption float32 (V),
                         class_mask uint8, occupancy uint32                    (z, y, x)
    tomo_NNN/particles   class_name, class_id, x, y, z, rot, tilt, psi, ...    (particle)
                         filament_id, filament_x, ...                         (filament_point)

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
from ..kernels.specimen_filaments import actin_class, microtubule_class
from ..kernels.specimen_membranes import vesicle_class
from ..kernels.specimen_placement import counts_for_fraction, place_specimen
from ..kernels.specimen_templates import (
    ClassTemplate,
    builtin_classes,
    fiducial_class,
)
from ..store.layout import particles_group, specimen_group
from .particles import particles_dataset


#: Classes every generated specimen has after its proteins, in class-id order.
EXTRA_CLASSES: tuple[str, ...] = ("vesicle", "fiducial", "actin", "microtubule")
#: SHREC-like crowding: ~300 particles of the 12 classes (mean molecular volume ≈ 695 nm³) in
#: a 512 × 512 × 200 nm model, 300 · 695 / (512 · 512 · 200) ≈ 0.004 (SHREC 2021, Gubins et al.).
DEFAULT_VOLUME_FRACTION = 0.004
#: Largest volume fraction accepted (random sequential addition jams near 0.38 for spheres).
MAX_VOLUME_FRACTION = 0.5


def build_classes(pixel_size_A: float, templates_dir: str | Path | None = None, *,
                  template_units: str = "V", max_extent_A: float | None = None) -> list[ClassTemplate]:
    """Protein classes (built-in or from ``templates_dir``) followed by vesicle, fiducial,
    actin and microtubule (:data:`EXTRA_CLASSES`).

    Class id ``k`` (1-based) is ``classes[k - 1]``; 0 is background.
    """
    from .templates import load_template_dir

    proteins = (builtin_classes() if templates_dir is None else
                load_template_dir(templates_dir, pixel_size_A, units=template_units,
                                  max_extent_A=max_extent_A))
    return proteins + [vesicle_class(), fiducial_class(), actin_class(), microtubule_class()]


def _render_chunk(table, classes, pixel_size_A, block_info=None) -> np.ndarray:
    """map_blocks body: the four blocks stacked as float64, shape (4, cz, cy, X).

    One task renders all four so the objects are evaluated once per chunk; float64 holds
    the uint32 occupancy ids exactly.
    """
    loc = block_info[None]["array-location"][1:]
    origin = tuple(int(a) for a, _ in loc)
    shape = tuple(int(b - a) for a, b in loc)
    return np.stack([x.astype(np.float64) for x in render_block(table, classes, origin, shape, pixel_size_A)])


def _label_rule(cls: ClassTemplate) -> str:
    if cls.kind == "shell":
        return "bilayer slab"
    return "centre in the envelope" if cls.label_envelope else "potential >= threshold"


def _check_counts(**counts) -> None:
    for opt, v in counts.items():
        if v is None:
            continue
        if isinstance(v, bool) or not float(v).is_integer() or v < 0:
            raise InputError(f"--{opt.replace('_', '-')} must be a whole number >= 0, got {v}")


def protein_volume_fraction(table: dict, classes: list[ClassTemplate], shape_zyx, pixel_size_A: float) -> float:
    """Molecular volume of the table's protein objects over the volume (classes with a
    molecular volume, :meth:`ClassTemplate.molecular_volume_A3`)."""
    vols = np.array([c.molecular_volume_A3(pixel_size_A) for c in classes])
    ids = np.asarray(table["class_id"], dtype=np.int64)
    total = float(np.prod(shape_zyx)) * pixel_size_A ** 3
    return float(vols[ids - 1].sum() / total) if len(ids) else 0.0


def generate_specimen(
    shape_zyx: tuple[int, int, int],
    pixel_size_A: float,
    seed: int,
    *,
    n_particles: int | None = None,
    volume_fraction: float | None = None,
    n_vesicles: int = 2,
    n_fiducials: int = 5,
    n_actin: int = 0,
    n_microtubules: int = 0,
    templates_dir: str | Path | None = None,
    template_units: str = "V",
    cy: int | None = None,
    cz: int | None = None,
    max_tries: int = 200,
) -> tuple[xr.Dataset, xr.Dataset]:
    """Place objects globally and build the lazy specimen volume (potential in volts).

    Parameters
    ----------
    shape_zyx : (int, int, int)
        Volume shape (voxels).
    pixel_size_A : float
        Voxel size (Å).
    seed : int
        Seed of the placement (positions, classes, orientations, sizes, paths); the same seed
        gives the identical table and volume.
    n_particles : int, optional
        Protein particles, classes drawn uniformly at random. Exclusive with
        ``volume_fraction``; when neither is given, ``volume_fraction`` is
        :data:`DEFAULT_VOLUME_FRACTION`.
    volume_fraction : float, optional
        Target fraction of the volume filled by the proteins' molecular volumes, in
        ``(0, MAX_VOLUME_FRACTION]``: ``round(f V / mean class volume)`` particles, the same
        number of each class (:func:`~faket_dask.kernels.specimen_placement.counts_for_fraction`).
        If they do not all fit, :class:`InputError` names the fraction reached.
    n_vesicles, n_fiducials, n_actin, n_microtubules : int
        Vesicles (spherical or ellipsoidal), gold beads (5-10 nm), actin filaments and
        microtubules. Objects of these kinds (and explicit ``n_particles``) that find no room
        are dropped with a warning.
    templates_dir : path, optional
        Directory of atomic models (``*.pdb``, ``*.cif``, ``*.mmcif``, ``*.ent``) and ``*.mrc``
        maps replacing the 12 built-in protein classes (:func:`faket_dask.stages.templates.load_template_dir`).
    template_units : {"V", "normalised"}
        What the ``*.mrc`` templates hold (atomic models are always computed in volts).
    cy, cz : int, optional
        Chunk rows / slices (default :func:`~faket_dask.chunking.choose_cy` and
        :func:`~faket_dask.chunking.volume_chunks`). The output does not depend on them.
    max_tries : int
        Placement candidates per object (filaments: start points).

    Returns
    -------
    specimen : xarray.Dataset
        ``density`` float32 (real potential, V relative to ice), ``absorption`` float32
        (imaginary potential, V), ``class_mask`` uint8 (class id, 0 background),
        ``occupancy`` uint32 (object id = table row + 1, 0 background); dims ``(z, y, x)``,
        dask-backed, chunks ``(cz, cy, X)``. ``class_mask.attrs["class_names"][k - 1]`` names
        class ``k``.
    particles : xarray.Dataset
        The particle table on dim ``particle`` and the filament paths on dim
        ``filament_point`` (see :func:`particles_dataset`); attrs ``volume_fraction`` (reached)
        and ``volume_fraction_target``.

    Raises
    ------
    InputError
        Bad shape, pixel size, counts or fraction, both ``n_particles`` and
        ``volume_fraction``, or a fraction that does not fit.
    """
    shape = tuple(int(s) for s in shape_zyx)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"--shape must be three positive sizes Z Y X, got {' '.join(map(str, shape_zyx))}")
    if not np.isfinite(pixel_size_A) or pixel_size_A <= 0:
        raise InputError(f"--pixel-size-A must be a positive number of Å, got {pixel_size_A}")
    _check_counts(particles=n_particles, vesicles=n_vesicles, fiducials=n_fiducials, actin=n_actin,
                  microtubules=n_microtubules)
    if n_particles is not None and volume_fraction is not None:
        raise InputError("give --particles or --volume-fraction, not both")
    if volume_fraction is not None and not (np.isfinite(volume_fraction) and 0 < volume_fraction <= MAX_VOLUME_FRACTION):
        raise InputError(f"--volume-fraction must be in (0, {MAX_VOLUME_FRACTION}], got {volume_fraction}")
    if int(max_tries) < 1:
        raise InputError(f"max_tries must be >= 1, got {max_tries}")
    fraction = DEFAULT_VOLUME_FRACTION if n_particles is None and volume_fraction is None else volume_fraction
    classes = build_classes(pixel_size_A, templates_dir, template_units=template_units,
                            max_extent_A=min(shape) * float(pixel_size_A))
    kp = len(classes) - len(EXTRA_CLASSES)
    rng = np.random.default_rng([int(seed), 1])               # class counts; placement: ``seed``
    total_A3 = float(np.prod(shape)) * pixel_size_A ** 3
    if fraction is None:
        counts = np.bincount(rng.integers(kp, size=int(n_particles)), minlength=kp).tolist()
    else:
        counts = counts_for_fraction([c.molecular_volume_A3(pixel_size_A) for c in classes[:kp]],
                                     total_A3, fraction, rng)
    requests = [(kp, int(n_vesicles)), (kp + 2, int(n_actin)), (kp + 3, int(n_microtubules)),
                (kp + 1, int(n_fiducials))] + [(k, n) for k, n in enumerate(counts)]
    table, placed = place_specimen(shape, pixel_size_A, classes, requests, seed, max_tries=max_tries)
    reached = protein_volume_fraction(table, classes, shape, pixel_size_A)
    missing = {}
    for k, got, want in placed:
        key = classes[k].name if k >= kp else "particles"
        g, w = missing.get(key, (0, 0))
        missing[key] = (g + got, w + want)
    missing = {key: gw for key, gw in missing.items() if gw[0] < gw[1]}
    if fraction is not None and "particles" in missing:
        g, w = missing.pop("particles")
        raise InputError(f"--volume-fraction {fraction:g} does not fit {shape[0]}x{shape[1]}x{shape[2]} voxels "
                         f"of {pixel_size_A:g} Å: reached {reached:.4f} ({g} of {w} particles "
                         f"placed); lower it or enlarge the volume")
    if missing:
        what = ", ".join(f"{g} of {w} {name}" for name, (g, w) in missing.items())
        warnings.warn(f"placed {what}: no room for the others after {max_tries} tries each "
                      f"(volume too small or too crowded)", stacklevel=2)

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
        chunks=((4,),) + norm, dtype=np.float64, meta=np.empty((0, 0, 0, 0)),
        name=f"render-specimen-{da.core.tokenize(shape, pixel_size_A, seed, table, templates_dir, template_units)}",
    )
    names = [c.name for c in classes]
    # the PDB id of each class built from an atomic model ("" for procedural ones)
    common = {"seed": int(seed), "class_names": names, "class_pdb_ids": [c.pdb_id for c in classes]}
    density = volume(stacked[0].astype(np.float32), pixel_size_A, name="density",
                     attrs={**common, "units": "V", "long_name": "electrostatic potential relative to vitreous ice",
                            "reference": "0 = vitreous ice; protein interiors +3.36 V, gold +25.3 V"})
    absorption = volume(stacked[1].astype(np.float32), pixel_size_A, name="absorption",
                        attrs={**common, "units": "V", "long_name": "absorption (imaginary) potential",
                               "absorption_ratios": [float(c.absorption_ratio) for c in classes],
                               "description": "absorption_ratios[k-1] x density of the voxel's object (class k)"})
    cmask = volume(stacked[2].astype(np.uint8), pixel_size_A, name="class_mask", dtype=None,
                   attrs={**common, "thresholds": [float(c.threshold) for c in classes],
                          "label_rules": [_label_rule(c) for c in classes],
                          "description": "class id k = class_names[k-1]; a voxel is labelled by the object "
                                         "that owns it, by label_rules[k-1]: 'potential >= thresholds[k-1]' "
                                         "(V), 'centre in the envelope' or 'bilayer slab'; 0 background"})
    occ = volume(stacked[3].astype(np.uint32), pixel_size_A, name="occupancy", dtype=None,
                 attrs={**common, "description": "particle id = row of tomo_NNN/particles + 1; 0 background"})
    specimen = xr.Dataset({"density": density, "absorption": absorption, "class_mask": cmask, "occupancy": occ})
    specimen.attrs.update(pixel_size_A=float(pixel_size_A), seed=int(seed), units="V")
    particles = particles_dataset(table, pixel_size_A, {
        "seed": int(seed), "class_names": names, "class_pdb_ids": [c.pdb_id for c in classes],
        "requested": [int(n_vesicles), int(n_fiducials), int(sum(counts)), int(n_actin), int(n_microtubules)],
        "requested_order": "vesicles, fiducials, particles, actin, microtubules",
        "volume_fraction": reached, "volume_fraction_target": -1.0 if fraction is None else float(fraction)})
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

    The volumes are written by one ``to_zarr`` so each chunk is rendered once (one
    :func:`faket_dask.store.save` call per variable would render every chunk once per variable).

    Returns
    -------
    (str, str)
        The two group paths written.
    """
    import zarr

    from ..progress import compute
    from ..store import check_writable, clear_encoding, mark_stage, open_root, rollback_on_error

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
        ds = clear_encoding(specimen.copy())
        delayed = ds.to_zarr(str(store), group=sgroup, mode="a", zarr_format=3, consolidated=False,
                             compute=False)
        compute(delayed, label=progress or f"writing {sgroup}")
        p = clear_encoding(particles.copy())
        # fixed-width unicode is not yet in the Zarr v3 spec (xarray/zarr read it back fine): its
        # warning is filtered process-wide by store.run_store, not by catch_warnings, which is
        # not thread-safe and specimens of several tomograms are written side by side
        p.to_zarr(str(store), group=pgroup, mode="a", zarr_format=3, consolidated=False)
        for v in specimen.data_vars:
            mark_stage(store, f"{sgroup}/{v}", status="complete", **info)
    return sgroup, pgroup
