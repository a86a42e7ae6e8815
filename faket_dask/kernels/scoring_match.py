"""Matching picks to true particles by position: the geometric rules of SHREC'21 and CZII.

* :func:`czii_counts` — the CZII Kaggle metric's ``compute_metrics``: TP/FP/FN of one class in
  one tomogram, a reference found by a candidate within its matching radius.
* :func:`nearest_within` — SHREC'21's radius rule (no occupancy volume): each pick's nearest true
  centre within that particle's radius.
* :func:`pick_voxels`, :func:`cross_neighbours` — SHREC'21's occupancy lookup: a pick's voxel
  (clipped into the volume) and the face-connected cross its one-voxel dilation looks at.

Positions are in Å in one common frame (the caller converts); pure numpy/scipy, no I/O. The
scoring that combines these is :func:`faket_dask.kernels.scoring.score_picks`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError

#: Hit codes of :func:`~faket_dask.kernels.scoring.score_picks`'s ``hits``: no particle there /
#: decide by radius.
HIT_BACKGROUND = -1
HIT_BY_RADIUS = -2
#: The face-connected cross (the voxel and its 6 neighbours): skimage's default footprint of
#: ``morphology.dilation``, with which SHREC'21 dilates its occupancy mask.
CROSS_ZYX = np.array([[0, 0, 0], [-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]])


def as_points(xyz, what: str) -> np.ndarray:
    """``xyz`` as a float64 ``(N, 3)`` array (``(0, 3)`` when empty); InputError naming ``what``
    for another shape or non-finite values."""
    a = np.asarray(xyz, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 3))
    if a.ndim != 2 or a.shape[1] != 3:
        raise InputError(f"{what}: positions must have shape (N, 3), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{what}: positions must be finite numbers")
    return a


def czii_counts(ref_xyz, ref_radius, cand_xyz) -> tuple[int, int, int]:
    """TP, FP, FN of one class in one tomogram by the CZII rule.

    The Kaggle metric's ``compute_metrics(reference_points, reference_radius,
    candidate_points)``: ``candidate_tree.query_ball_tree(ref_tree, r=reference_radius)``,
    then ``tp`` = the number of *distinct* references within the radius of at least one
    candidate ("Prevent submitting multiple matches per particle"), ``fp = n_candidates - tp``,
    ``fn = n_references - tp``; no references: ``(0, n_candidates, 0)``; no candidates:
    ``(0, 0, n_references)``. So several picks on one particle give one TP and the rest FP.
    A distance equal to the radius counts (scipy's ball queries include it).

    The one generalisation: ``ref_radius`` may differ per reference (a reference is found by a
    candidate within *its own* radius); with one radius per class, as in the challenge, this is
    the Kaggle code exactly. The radius passed is already the *matching* radius (the challenge
    passes ``0.5 ×`` the particle radius).

    Parameters
    ----------
    ref_xyz : array (N, 3)
        True positions (Å).
    ref_radius : float or array (N,)
        Matching radius of each reference (Å).
    cand_xyz : array (M, 3)
        Picked positions (Å).

    Returns
    -------
    (int, int, int)
        ``tp, fp, fn``. As in the Kaggle code, ``fp`` can only go below 0 if one pick lies within
        the radius of two references, which needs particles closer than their matching radii.
    """
    from scipy.spatial import cKDTree

    ref = as_points(ref_xyz, "truth")
    cand = as_points(cand_xyz, "picks")
    if len(ref) == 0:
        return 0, len(cand), 0
    if len(cand) == 0:
        return 0, 0, len(ref)
    r = np.broadcast_to(np.asarray(ref_radius, dtype=np.float64), (len(ref),))
    found = cKDTree(cand).query_ball_point(ref, r=r, return_length=True) > 0
    tp = int(found.sum())
    return tp, len(cand) - tp, len(ref) - tp


def nearest_within(pick_xyz, truth_xyz, truth_radius) -> np.ndarray:
    """For each pick, the row of the nearest true particle whose radius contains it, else -1.

    The radius rule standing in for SHREC'21's occupancy lookup when there is no occupancy
    volume: a pick is inside particle ``j`` when its distance to ``j``'s centre is at most
    ``truth_radius[j]`` (equality counts); among several such particles the nearest centre wins
    (ties: the lower row), as an occupancy volume gives each voxel to one particle.

    Parameters
    ----------
    pick_xyz : array (M, 3)
    truth_xyz : array (N, 3)
    truth_radius : float or array (N,)
        Å, same frame as the positions.

    Returns
    -------
    ndarray of int64, shape (M,)
        Truth row per pick, ``-1`` where none contains it.
    """
    from scipy.spatial import cKDTree

    picks = as_points(pick_xyz, "picks")
    truth = as_points(truth_xyz, "truth")
    out = np.full(len(picks), HIT_BACKGROUND, dtype=np.int64)
    if len(picks) == 0 or len(truth) == 0:
        return out
    r = np.broadcast_to(np.asarray(truth_radius, dtype=np.float64), (len(truth),))
    pairs = cKDTree(picks).sparse_distance_matrix(cKDTree(truth), float(np.max(r)), output_type="ndarray")
    i, j, d = pairs["i"], pairs["j"], pairs["v"]
    keep = d <= r[j]
    i, j, d = i[keep], j[keep], d[keep]
    order = np.lexsort((j, d, i))                    # by pick, then distance, then truth row
    i, j = i[order], j[order]
    first = np.ones(len(i), dtype=bool)
    first[1:] = i[1:] != i[:-1]
    out[i[first]] = j[first]
    return out


def cross_neighbours(voxels_zyx, shape_zyx: Sequence[int]) -> np.ndarray:
    """The voxels SHREC'21's one-voxel dilation looks at for each pick voxel.

    SHREC'21 dilates the occupancy mask (``skimage.morphology.dilation`` with its default
    face-connected cross footprint: the grey value at a voxel becomes the maximum over the voxel
    and its 6 face neighbours) and reads the dilated mask at the pick's voxel. This returns those
    7 voxels per pick, clipped to the volume (a clipped neighbour repeats an inside voxel, which
    does not change the maximum); take ``max`` of the occupancy values over axis 1.

    Parameters
    ----------
    voxels_zyx : int array (M, 3)
        Pick voxels (already clipped into the volume, as SHREC clips out-of-bounds picks).
    shape_zyx : (int, int, int)

    Returns
    -------
    ndarray of int64, shape (M, 7, 3)
    """
    v = np.asarray(voxels_zyx, dtype=np.int64).reshape(-1, 1, 3)
    hi = np.asarray(shape_zyx, dtype=np.int64) - 1
    return np.clip(v + CROSS_ZYX[None], 0, hi)


def pick_voxels(xyz_A, pixel_size_A: float, shape_zyx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Voxel ``(z, y, x)`` of each pick (Å from the volume's corner), clipped into the volume.

    Voxel ``i`` spans ``[i, i + 1) · pixel`` (centre ``(i + 0.5) · pixel``), so the voxel is
    ``floor(Å / pixel)``; this is SHREC'21's ``int(round(x))`` of a voxel coordinate (centre at
    ``i``) except at exact halves. Out-of-bounds picks are clipped to the nearest border voxel,
    as SHREC'21 does (``np.clip(coordinates, 0, 511)``).

    Returns
    -------
    (ndarray (M, 3) int64, ndarray (M,) bool)
        The clipped voxels and which picks were outside.
    """
    xyz = as_points(xyz_A, "picks")
    zyx = np.floor(xyz[:, ::-1] / float(pixel_size_A)).astype(np.int64)
    hi = np.asarray(shape_zyx, dtype=np.int64) - 1
    clipped = np.clip(zyx, 0, hi)
    return clipped, np.any(clipped != zyx, axis=1)
