"""Procedural cryo-ET specimens: chunk-local rendering of a placed particle table, in volts.

Pure numpy/scipy (no dask, no I/O). The stage :mod:`faket_dask.stages.specimen` wraps
:func:`render_block` in ``dask.array.map_blocks``. The specimen kernels live in five modules:
:mod:`~faket_dask.kernels.specimen_templates` (proteins, gold, maps),
:mod:`~faket_dask.kernels.specimen_membranes` (vesicles),
:mod:`~faket_dask.kernels.specimen_filaments` (actin, microtubules),
:mod:`~faket_dask.kernels.specimen_placement` (the particle table: where objects go and how
they are turned) and this one (rendering); their public names are importable from here too,
the one namespace of the specimen kernels.

Conventions
-----------
* Units: the real potential in volts relative to vitreous ice (0 = ice only); the absorption
  (imaginary) potential is each object's ``absorption_ratio`` times its real potential.
* Coordinates and rotations: as in :mod:`~faket_dask.kernels.specimen_placement` (voxel ``i``
  centred at coordinate ``i``; intrinsic ZYZ Euler angles of the active rotation template →
  particle, which RELION writes as the angles of the inverse).
* One object per voxel: every object has a potential field of bounded support; envelopes never
  overlap (placement), but soft edges may. A voxel takes the potential of ONE object, its
  owner: the first in table order among the objects that label it, or, if none labels it,
  among those of the largest ``|potential|`` there (ties: the first). So no voxel receives
  potential from two objects, and the potential is continuous where edges meet.
* Labels: object ``r`` (table row ``r``, occupancy id ``r + 1``) labels a voxel where its
  potential is ``>= threshold`` of its class (:attr:`ClassTemplate.threshold`; gold, filaments,
  maps), where the voxel's centre lies in its envelope (procedural proteins,
  :attr:`ClassTemplate.label_envelope`) or in the bilayer slab (vesicles,
  :data:`~.specimen_membranes.LABEL_HALF_A`); ``class_mask``/``occupancy`` hold the owner's
  class/id where the owner labels the voxel, else 0.
* Chunk invariance: every value is a function of absolute voxel coordinates only (each atom's
  and subunit's support box, each Gaussian factor), atom sums are exact
  (:func:`~.specimen_templates.gaussian_sum`), objects are visited in table order and ties
  resolved in that order, so any chunking gives bit-identical output.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates
from scipy.special import erfc

from .specimen_filaments import (  # noqa: F401 - re-exported: the specimen kernels' one namespace
    ACTIN,
    MICROTUBULE,
    HelixGeometry,
    actin_class,
    microtubule_class,
    render_filament,
    subunit_support_A,
    subunits,
)
from .specimen_membranes import (  # noqa: F401
    bilayer_profile_V,
    render_vesicle,
    support_half_A,
    vesicle_class,
)
from .specimen_placement import (  # noqa: F401 - re-exported: the specimen kernels' one namespace
    COLUMNS,
    EXTRA_COLUMNS,
    FILAMENT_COLUMNS,
    counts_for_fraction,
    empty_table,
    place_particles,
    place_specimen,
    random_rotations,
    rotation_matrices,
)
from .specimen_templates import (  # noqa: F401 - re-exported: the specimen kernels' one namespace
    CUTOFF_SIGMAS,
    GOLD_CONTRAST_V,
    GOLD_EDGE_A,
    GOLD_RADIUS_A,
    MASK_FRACTION,
    MIN_SIGMA_VOXELS,
    PROTEIN_CONTRAST_V,
    SHREC_CLASSES,
    ClassTemplate,
    builtin_classes,
    fiducial_class,
    gaussian_sum,
    map_class,
    procedural_class,
)


def _axis(lo: int, n: int) -> np.ndarray:
    return np.arange(lo, lo + n, dtype=np.float64)


def _col(table, name: str, r: int) -> float:
    """Column ``name`` of row ``r``, 0 if the table predates the column."""
    v = table.get(name)
    return float(v[r]) if v is not None and len(v) > r else 0.0


def render_block(
    table: dict[str, np.ndarray],
    classes: list[ClassTemplate],
    block_origin_zyx: tuple[int, int, int],
    block_shape: tuple[int, int, int],
    pixel_size_A: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render the part of the specimen inside one block.

    Only objects whose support touches the block are evaluated; the result is a pure function
    of the block's location (see the module docstring), so rendering block by block equals
    rendering in one piece, bit for bit.

    Parameters
    ----------
    table : dict of str to ndarray
        Particle table (:data:`COLUMNS`, optionally :data:`EXTRA_COLUMNS` and the filament
        paths :data:`FILAMENT_COLUMNS`); row ``r`` gets occupancy id ``r + 1``.
    classes : list of ClassTemplate
        Class id ``k`` is ``classes[k - 1]``.
    block_origin_zyx : (int, int, int)
        Voxel index of the block's first voxel.
    block_shape : (int, int, int)
        Block shape (voxels).
    pixel_size_A : float
        Voxel size (Å).

    Returns
    -------
    density : ndarray, float32, shape ``block_shape``
        Real potential (V, relative to ice).
    absorption : ndarray, float32, shape ``block_shape``
        Absorption potential (V): the owner's ``absorption_ratio`` times ``density``.
    class_mask : ndarray, uint8, shape ``block_shape``
        Class id (1..K), 0 = background.
    occupancy : ndarray, uint32, shape ``block_shape``
        Object id = table row + 1, 0 = background.
    """
    o = np.asarray(block_origin_zyx, dtype=np.int64)
    s = np.asarray(block_shape, dtype=np.int64)
    shape = tuple(int(v) for v in s)
    val = np.zeros(shape, dtype=np.float64)
    strength = np.zeros(shape, dtype=np.float64)
    labelled = np.zeros(shape, dtype=bool)
    ratio = np.zeros(shape, dtype=np.float64)
    cmask = np.zeros(shape, dtype=np.uint8)
    occ = np.zeros(shape, dtype=np.uint32)

    def claim(r: int, cls: ClassTemplate, a, b, part, lab) -> None:
        sl = tuple(slice(a[i] - o[i], b[i] - o[i]) for i in range(3))
        mag, cur_l, cur_a = np.abs(part), labelled[sl], strength[sl]
        win = (lab & ~cur_l) | ((lab == cur_l) & (mag > cur_a))
        val[sl][win] = part[win]
        strength[sl][win] = mag[win]
        labelled[sl][win] = lab[win]
        ratio[sl][win] = cls.absorption_ratio
        cmask[sl][win] = np.where(lab[win], int(table["class_id"][r]), 0)
        occ[sl][win] = np.where(lab[win], r + 1, 0)

    n = len(table["x"])
    if n:
        kinds = np.array([c.kind for c in classes])[np.asarray(table["class_id"], dtype=np.int64) - 1]
        compact = np.flatnonzero(kinds != "filament")
        cen = np.stack([table["z"], table["y"], table["x"]], 1).astype(np.float64)   # voxels
        rad = np.asarray(table["radius_A"], dtype=np.float64) / pixel_size_A
        lo = np.maximum(np.ceil(cen - rad[:, None]).astype(np.int64), o)
        hi = np.minimum(np.floor(cen + rad[:, None]).astype(np.int64), o + s - 1)
        touching = set(compact[np.all(lo[compact] <= hi[compact], axis=1)].tolist())
        sub_c, sub_r, sub_row = subunits(table, classes, pixel_size_A) if np.any(kinds == "filament") \
            else (np.zeros((0, 3)), np.zeros(0), np.zeros(0, np.int64))
        if len(sub_r):
            sup = np.array([subunit_support_A(x, pixel_size_A) for x in sub_r]) / pixel_size_A
            slo = np.maximum(np.ceil(sub_c - sup[:, None]).astype(np.int64), o)
            shi = np.minimum(np.floor(sub_c + sup[:, None]).astype(np.int64), o + s - 1)
            st = np.all(slo <= shi, axis=1)
            touching |= set(np.unique(sub_row[st]).tolist())
        for r in sorted(touching):                                    # fixed order: table order
            cls = classes[int(table["class_id"][r]) - 1]
            if cls.kind == "filament":
                sel = np.flatnonzero(st & (sub_row == r))
                a, b = slo[sel].min(0), shi[sel].max(0) + 1
                part = render_filament(cls, sub_c[sel], sub_r[sel], a, b, pixel_size_A)
                claim(r, cls, a, b, part, part >= cls.threshold)
                continue
            a, b = lo[r], hi[r] + 1                                   # absolute [a, b)
            zz, yy, xx = (_axis(a[i], b[i] - a[i]) for i in range(3))
            rot = rotation_matrices(np.array([table["rot"][r], table["tilt"][r], table["psi"][r]]))[0]
            if cls.kind == "atoms":
                part = _render_atoms(cls, rot, cen[r], a, b, pixel_size_A)
                lab = (_in_envelope(cls, rot, cen[r], zz, yy, xx, pixel_size_A) if cls.label_envelope
                       else part >= cls.threshold)
            elif cls.kind == "shell":
                R = float(table["shell_radius_A"][r])
                axes = (R, _col(table, "shell_b_A", r) or R, _col(table, "shell_c_A", r) or R)
                part, lab = render_vesicle(rot, cen[r], axes, zz, yy, xx, pixel_size_A)
            elif cls.kind == "ball":
                R = _col(table, "bead_radius_A", r) or 50.0
                edge = max(GOLD_EDGE_A, MIN_SIGMA_VOXELS * pixel_size_A)
                d2 = (((zz - cen[r, 0]) ** 2)[:, None, None] + ((yy - cen[r, 1]) ** 2)[None, :, None]
                      + ((xx - cen[r, 2]) ** 2)[None, None, :])
                dist_A = np.sqrt(d2) * pixel_size_A
                part = np.where(dist_A <= R + CUTOFF_SIGMAS * edge,
                                cls.amplitude * 0.5 * erfc((dist_A - R) / (np.sqrt(2) * edge)), 0.0)
                lab = part >= cls.threshold
            else:
                part = _render_map(cls, rot, cen[r], zz, yy, xx)
                lab = part >= cls.threshold
            claim(r, cls, a, b, part, lab)
    return val.astype(np.float32), (ratio * val).astype(np.float32), cmask, occ


def _render_atoms(cls: ClassTemplate, rot: np.ndarray, c_zyx, a, b, pixel_size_A: float) -> np.ndarray:
    """Sum of the particle's Gaussian atoms over the absolute box ``[a, b)`` (float64, V)."""
    xyz = cls.atoms_A @ rot.T / pixel_size_A                         # rotated, voxels
    pos = xyz[:, ::-1] + c_zyx                                       # (z, y, x) absolute voxels
    sig_A = cls.atom_sigma_A(pixel_size_A)
    # a widened atom keeps its integral, so coarse pixels blur rather than inflate
    amp = cls.amplitude * (cls.sigma_A / sig_A) ** 3
    return amp * gaussian_sum(pos, sig_A / pixel_size_A, a, tuple(b - a))


def _in_envelope(cls: ClassTemplate, rot: np.ndarray, c_zyx, zz, yy, xx, pixel_size_A: float) -> np.ndarray:
    """Whether the voxels ``zz x yy x xx`` lie in the particle's rotated envelope spheres."""
    env = cls.envelope_spheres_A(pixel_size_A)
    cen = (env[:, :3] @ rot.T / pixel_size_A)[:, ::-1] + c_zyx          # (z, y, x) voxels
    out = np.zeros((len(zz), len(yy), len(xx)), dtype=bool)
    for (cz, cy, cx), r in zip(cen, env[:, 3] / pixel_size_A):
        out |= (((zz - cz) ** 2)[:, None, None] + ((yy - cy) ** 2)[None, :, None]
                + ((xx - cx) ** 2)[None, None, :]) <= r * r
    return out


def _render_map(cls: ClassTemplate, rot: np.ndarray, c_zyx, zz, yy, xx) -> np.ndarray:
    """Trilinear sample of the rotated map at the absolute voxels ``zz x yy x xx`` (float64)."""
    Z, Y, X = np.meshgrid(zz - c_zyx[0], yy - c_zyx[1], xx - c_zyx[2], indexing="ij")
    # template-frame coordinates q = rot^T v, element by element (no BLAS: same bits anywhere)
    q = [rot[0, i] * X + rot[1, i] * Y + rot[2, i] * Z for i in range(3)]
    coords = np.stack([q[2].ravel(), q[1].ravel(), q[0].ravel()]) + np.asarray(cls.map_centre)[:, None]
    vals = map_coordinates(np.asarray(cls.map_zyx, np.float64), coords, order=1, mode="constant", cval=0.0)
    return cls.amplitude * vals.reshape(Z.shape)
