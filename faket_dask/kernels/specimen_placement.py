"""Particle tables and their global placement: uniform positions and orientations, no overlap.

Pure numpy/scipy (no dask, no I/O). Placement is global and cheap (one bounding sphere per
object, rejection sampling), so the table is decided once, before any chunk is rendered.

Conventions
-----------
* Voxel coordinates: voxel ``(k, j, i)`` of a ``(z, y, x)`` volume has its *centre* at the
  voxel coordinate ``(z, y, x) = (k, j, i)``; in Å that is ``(i + 0.5) * pixel_size_A`` (as in
  :func:`faket_dask.datamodel.pixel_coords`). Particle positions ``x, y, z`` in the table are
  voxel coordinates (floats).
* Rotations: Euler angles ``rot, tilt, psi`` (degrees), intrinsic ZYZ: the particle is the
  template rotated *actively* by ``M = Rz(rot) @ Ry(tilt) @ Rz(psi)`` acting on ``(x, y, z)``
  column vectors (right-handed). ``M`` is the transpose of RELION's
  ``Euler_angles2matrix(rot, tilt, psi)`` (which maps particle to reference), i.e. the RELION
  convention for ``rlnAngleRot/Tilt/Psi``. Orientations are uniform on SO(3).
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial.transform import Rotation

from .specimen_templates import VESICLE_RADIUS_A, ClassTemplate

#: Table columns (all 1-D arrays of the same length) of a particle table.
COLUMNS = ("class_name", "class_id", "x", "y", "z", "rot", "tilt", "psi", "radius_A", "shell_radius_A")

def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotations uniform on SO(3) as ZYZ Euler angles ``(rot, tilt, psi)`` in degrees."""
    if n == 0:
        return np.zeros((0, 3))
    return Rotation.random(n, random_state=rng).as_euler("ZYZ", degrees=True)


def rotation_matrices(euler_deg: np.ndarray) -> np.ndarray:
    """Active rotations ``Rz(rot) Ry(tilt) Rz(psi)`` on ``(x, y, z)``; shape (N, 3, 3)."""
    return Rotation.from_euler("ZYZ", np.reshape(euler_deg, (-1, 3)), degrees=True).as_matrix()


def empty_table() -> dict[str, np.ndarray]:
    """A particle table with no rows."""
    t = {c: np.zeros(0) for c in COLUMNS}
    t["class_name"] = np.zeros(0, dtype="<U32")
    t["class_id"] = np.zeros(0, dtype=np.int32)
    return t


def place_particles(
    shape_zyx: tuple[int, int, int],
    pixel_size_A: float,
    classes: list[ClassTemplate],
    counts: list[int],
    seed: int,
    *,
    max_tries: int = 200,
) -> dict[str, np.ndarray]:
    """Place particles globally: uniform positions and orientations, no overlaps.

    Objects are placed class group by class group in the order given (callers put the large
    vesicles first), each by rejection sampling: a candidate whose bounding sphere leaves the
    volume or intersects an already placed one is redrawn, at most ``max_tries`` times.

    Parameters
    ----------
    shape_zyx : (int, int, int)
        Volume shape (voxels).
    pixel_size_A : float
        Voxel size (Å).
    classes : list of ClassTemplate
        Class ``k`` gets class id ``k + 1``.
    counts : list of int
        Objects per class, same length as ``classes`` (:func:`place_groups` draws the class of
        each object at random within a group instead).
    seed : int
        Seed of the placement generator.
    max_tries : int
        Candidates per object before it is given up (with a warning).

    Returns
    -------
    dict of str to ndarray
        The particle table (:data:`COLUMNS`), one row per placed object, in placement order.
    """
    groups = [([k], n) for k, n in enumerate(counts)]
    return place_groups(shape_zyx, pixel_size_A, classes, groups, seed, max_tries=max_tries)


def place_groups(
    shape_zyx: tuple[int, int, int],
    pixel_size_A: float,
    classes: list[ClassTemplate],
    groups: list[tuple[list[int], int]],
    seed: int,
    *,
    max_tries: int = 200,
) -> dict[str, np.ndarray]:
    """Like :func:`place_particles`, but each group ``(class_indices, n)`` places ``n`` objects
    whose class is drawn uniformly from ``class_indices`` (0-based indices into ``classes``)."""
    rng = np.random.default_rng(seed)
    shape = np.asarray(shape_zyx, dtype=np.float64)
    rows: list[tuple] = []
    centres = np.zeros((0, 3))                               # (z, y, x) voxels of placed objects
    radii = np.zeros(0)                                      # bounding radii (voxels)
    missing = 0
    for class_idx, n in groups:
        for _ in range(n):
            k = int(class_idx[rng.integers(len(class_idx))])
            cls = classes[k]
            placed = False
            for _try in range(max_tries):
                shell = 0.0
                if cls.kind == "shell":
                    # the radius range shrinks to what the volume can hold (thin slabs)
                    margin = cls.bounding_radius_A(pixel_size_A, 0.0)
                    fit = (shape.min() - 1) * pixel_size_A / 2 - margin
                    shell = float(rng.uniform(VESICLE_RADIUS_A[0], max(VESICLE_RADIUS_A[0], min(VESICLE_RADIUS_A[1], fit))))
                r_A = cls.bounding_radius_A(pixel_size_A, shell)
                r = r_A / pixel_size_A
                lo, hi = np.full(3, r - 0.5), shape - 0.5 - r      # sphere inside the volume
                if np.any(hi < lo):                             # cannot fit at all
                    break
                c = rng.uniform(lo, hi)
                if len(radii) and np.any(np.sqrt(((centres - c) ** 2).sum(1)) < radii + r):
                    continue
                euler = random_rotations(1, rng)[0]
                rows.append((cls.name, k + 1, c[2], c[1], c[0], *euler, r_A, shell))
                centres = np.vstack([centres, c])
                radii = np.append(radii, r)
                placed = True
                break
            missing += not placed
    if missing:
        warnings.warn(f"placed {len(rows)} of {len(rows) + missing} objects: no room for the "
                      f"others after {max_tries} tries each (volume too small or too crowded)",
                      stacklevel=2)
    table = empty_table()
    if rows:
        cols = list(zip(*rows))
        for name, col in zip(COLUMNS, cols):
            table[name] = np.asarray(col, dtype=table[name].dtype if name in ("class_name", "class_id") else np.float64)
    return table
