"""Procedural cryo-ET specimens: chunk-local rendering of a placed particle table.

Pure numpy/scipy (no dask, no I/O). The stage :mod:`faket_dask.stages.specimen` wraps
:func:`render_block` in ``dask.array.map_blocks``. The specimen kernels live in three modules:
:mod:`~faket_dask.kernels.specimen_templates` (what a class looks like),
:mod:`~faket_dask.kernels.specimen_placement` (the particle table: where objects go and how
they are turned) and this one (rendering); their public names are importable from here too,
the one namespace of the specimen kernels.

Conventions
-----------
* Coordinates and rotations: as in :mod:`~faket_dask.kernels.specimen_placement` (voxel ``i``
  centred at coordinate ``i``; ZYZ Euler angles, RELION's convention).
* Labels: a voxel belongs to particle ``r`` (table row ``r``, occupancy id ``r + 1``) iff it
  lies inside the particle's bounding sphere and the particle's density there is
  ``>= threshold`` of its class (:attr:`ClassTemplate.threshold`). Each particle's density is
  truncated to its bounding sphere and spheres never overlap, so every voxel receives density
  from at most one particle: ``class_mask > 0`` exactly where the density is at or above the
  threshold of the particle owning the voxel.
* Chunk invariance: every value is a function of absolute voxel coordinates only (each atom's
  support box, each Gaussian factor, the sphere clip), accumulated in float64 in a fixed order
  (table order, then atom order) and cast to float32 once, so any chunking gives bit-identical
  output.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates
from scipy.special import erfc

from .specimen_placement import (  # noqa: F401 - re-exported: the specimen kernels' one namespace
    COLUMNS,
    empty_table,
    place_groups,
    place_particles,
    random_rotations,
    rotation_matrices,
)
from .specimen_templates import (  # noqa: F401 - re-exported: the specimen kernels' one namespace
    CUTOFF_SIGMAS,
    GOLD_DENSITY,
    GOLD_EDGE_A,
    GOLD_RADIUS_A,
    LEAFLET_OFFSET_A,
    LEAFLET_SIGMA_A,
    LIPID_DENSITY,
    MASK_FRACTION,
    PROTEIN_DENSITY,
    PROTEIN_THRESHOLD,
    SHREC_CLASSES,
    VESICLE_RADIUS_A,
    ClassTemplate,
    builtin_classes,
    fiducial_class,
    map_class,
    procedural_class,
    vesicle_class,
)


def _axis(lo: int, n: int) -> np.ndarray:
    return np.arange(lo, lo + n, dtype=np.float64)


def render_block(
    table: dict[str, np.ndarray],
    classes: list[ClassTemplate],
    block_origin_zyx: tuple[int, int, int],
    block_shape: tuple[int, int, int],
    pixel_size_A: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the part of the specimen inside one block.

    Only particles whose bounding sphere intersects the block are touched; the result is a
    pure function of the block's location (see the module docstring), so rendering block by
    block equals rendering in one piece, bit for bit.

    Parameters
    ----------
    table : dict of str to ndarray
        Particle table (:data:`COLUMNS`); row ``r`` gets occupancy id ``r + 1``.
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
    class_mask : ndarray, uint8, shape ``block_shape``
        Class id (1..K), 0 = background.
    occupancy : ndarray, uint32, shape ``block_shape``
        Particle id = table row + 1, 0 = background.
    """
    o = np.asarray(block_origin_zyx, dtype=np.int64)
    s = np.asarray(block_shape, dtype=np.int64)
    density = np.zeros(tuple(s), dtype=np.float64)
    cmask = np.zeros(tuple(s), dtype=np.uint8)
    occ = np.zeros(tuple(s), dtype=np.uint32)
    n = len(table["x"])
    if n == 0:
        return density.astype(np.float32), cmask, occ
    cen = np.stack([table["z"], table["y"], table["x"]], 1)          # voxels
    rad = np.asarray(table["radius_A"], dtype=np.float64) / pixel_size_A
    # bounding box (absolute voxel indices, inclusive) of each sphere
    box_lo = np.ceil(cen - rad[:, None]).astype(np.int64)
    box_hi = np.floor(cen + rad[:, None]).astype(np.int64)
    lo = np.maximum(box_lo, o)
    hi = np.minimum(box_hi, o + s - 1)
    touching = np.flatnonzero(np.all(lo <= hi, axis=1))
    for r in touching:                                               # fixed order: table order
        cls = classes[int(table["class_id"][r]) - 1]
        a, b = lo[r], hi[r] + 1                                      # absolute [a, b)
        zz, yy, xx = (_axis(a[i], b[i] - a[i]) for i in range(3))
        dz2 = ((zz - cen[r, 0]) ** 2)[:, None, None]
        dy2 = ((yy - cen[r, 1]) ** 2)[None, :, None]
        dx2 = ((xx - cen[r, 2]) ** 2)[None, None, :]
        d2 = dz2 + dy2 + dx2                                         # squared distance (voxels²)
        inside = d2 <= rad[r] ** 2
        if cls.kind == "atoms":
            part = _render_atoms(cls, table, r, cen[r], a, b, pixel_size_A)
        elif cls.kind == "shell":
            dist_A = np.sqrt(d2) * pixel_size_A
            R = float(table["shell_radius_A"][r])
            g = 1.0 / (2 * LEAFLET_SIGMA_A ** 2)
            part = cls.amplitude * (np.exp(-((dist_A - R - LEAFLET_OFFSET_A) ** 2) * g)
                                    + np.exp(-((dist_A - R + LEAFLET_OFFSET_A) ** 2) * g))
        elif cls.kind == "ball":
            dist_A = np.sqrt(d2) * pixel_size_A
            part = cls.amplitude * 0.5 * erfc((dist_A - GOLD_RADIUS_A) / (np.sqrt(2) * GOLD_EDGE_A))
        else:
            part = _render_map(cls, table, r, cen[r], zz, yy, xx)
        part = np.where(inside, part, 0.0)                           # truncate to the sphere
        sl = tuple(slice(a[i] - o[i], b[i] - o[i]) for i in range(3))
        density[sl] += part
        label = part >= cls.threshold
        cmask[sl][label] = int(table["class_id"][r])
        occ[sl][label] = r + 1
    return density.astype(np.float32), cmask, occ


def _render_atoms(cls, table, r, c_zyx, a, b, pixel_size_A) -> np.ndarray:
    """Sum of the particle's Gaussian atoms over the absolute box ``[a, b)`` (float64)."""
    rot = rotation_matrices(np.array([table["rot"][r], table["tilt"][r], table["psi"][r]]))[0]
    xyz = cls.atoms_A @ rot.T / pixel_size_A                         # rotated, voxels
    pos = xyz[:, ::-1] + c_zyx                                       # (z, y, x) absolute voxels
    sig_A = cls.atom_sigma_A(pixel_size_A)
    sig = sig_A / pixel_size_A
    g = 1.0 / (2 * sig * sig)
    # a widened atom keeps its mass (integral), so coarse pixels blur rather than inflate
    amp = cls.amplitude * (cls.sigma_A / sig_A) ** 3
    cut = CUTOFF_SIGMAS * sig
    out = np.zeros(tuple(b - a), dtype=np.float64)
    # each atom's support is its own absolute box |v - p| <= cut (per axis), so whether an atom
    # touches a voxel does not depend on the block
    alo = np.maximum(np.ceil(pos - cut).astype(np.int64), a)
    ahi = np.minimum(np.floor(pos + cut).astype(np.int64) + 1, b)
    for p, l, h in zip(pos, alo, ahi):                               # fixed order: atom order
        if np.any(h <= l):
            continue
        gz = amp * np.exp(-((np.arange(l[0], h[0]) - p[0]) ** 2) * g)
        gy = np.exp(-((np.arange(l[1], h[1]) - p[1]) ** 2) * g)
        gx = np.exp(-((np.arange(l[2], h[2]) - p[2]) ** 2) * g)
        out[l[0] - a[0]:h[0] - a[0], l[1] - a[1]:h[1] - a[1], l[2] - a[2]:h[2] - a[2]] += (
            gz[:, None, None] * gy[None, :, None] * gx[None, None, :])
    return out


def _render_map(cls, table, r, c_zyx, zz, yy, xx) -> np.ndarray:
    """Trilinear sample of the rotated map at the absolute voxels ``zz x yy x xx`` (float64)."""
    rot = rotation_matrices(np.array([table["rot"][r], table["tilt"][r], table["psi"][r]]))[0]
    Z, Y, X = np.meshgrid(zz - c_zyx[0], yy - c_zyx[1], xx - c_zyx[2], indexing="ij")
    v = np.stack([X.ravel(), Y.ravel(), Z.ravel()])                  # (x, y, z) offsets, voxels
    q = rot.T @ v                                                    # back to the template frame
    coords = q[::-1] + cls.map_centre[:, None]                       # (z, y, x) map indices
    vals = map_coordinates(cls.map_zyx, coords, order=1, mode="constant", cval=0.0)
    return vals.reshape(Z.shape)
