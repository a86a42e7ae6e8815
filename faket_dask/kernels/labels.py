"""Where specimen voxels land on the tomogram grid (pure numpy; the wiring is stages/labels.py).

A tomogram reconstructed with binning ``b`` and ``nz`` slices (before ``z_valid``) is centred
on the specimen: the back-projection rotates about the volume centre. Voxel ``j`` of a binned
axis covers specimen voxels ``j·b … j·b + b − 1``; the label of its centre voxel
``j·b + b//2`` is taken (nearest neighbour, labels stay labels). Slice ``r`` of the
full-thickness tomogram holds specimen slice ``floor((r + 0.5 − nz/2)·b + Z/2)`` (nothing
outside the specimen). A particle at voxel-centre coordinates ``c`` (integers at centres) is at
``(c + 0.5)/b − 0.5`` in y and x and ``(z + 0.5 − Z/2)/b + nz/2 − 0.5 − z0`` in z.
"""
from __future__ import annotations

import numpy as np


def source_slices(specimen_z: int, nz_full: int, z0: int, nz_keep: int, binning: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Specimen slice of every kept tomogram slice, and whether it lies inside the specimen.

    Parameters
    ----------
    specimen_z : int
        Specimen slices Z.
    nz_full : int
        Tomogram slices before ``z_valid``.
    z0, nz_keep : int
        First kept slice and number of kept slices (``z_valid``).
    binning : int
        Binning b.

    Returns
    -------
    src : ndarray (nz_keep,), int64
        Specimen slice of each kept slice (clipped into ``0..Z-1``; see ``valid``).
    valid : ndarray (nz_keep,), bool
        False where the tomogram slice lies outside the specimen (its labels are 0).
    """
    rows = np.arange(z0, z0 + nz_keep)
    src = np.floor((rows + 0.5 - nz_full / 2) * binning + specimen_z / 2).astype(np.int64)
    valid = (src >= 0) & (src < specimen_z)
    return np.clip(src, 0, specimen_z - 1), valid


def centre_voxels(n: int, binning: int) -> slice:
    """The specimen voxels sampled along a binned axis of ``n`` voxels: ``b//2, b//2 + b, …``."""
    return slice(binning // 2, binning // 2 + (n // binning) * binning, binning)


def to_tomogram_grid(x: np.ndarray, y: np.ndarray, z: np.ndarray, *, specimen_z: int,
                     nz_full: int, z0: int, binning: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Particle coordinates (specimen voxels) on the tomogram grid (tomogram voxels).

    Returns ``(x, y, z)`` float64 arrays of the same shapes (see the module docstring).
    """
    b = float(binning)
    xt = (np.asarray(x, np.float64) + 0.5) / b - 0.5
    yt = (np.asarray(y, np.float64) + 0.5) / b - 0.5
    zt = (np.asarray(z, np.float64) + 0.5 - specimen_z / 2) / b + nz_full / 2 - 0.5 - z0
    return xt, yt, zt
