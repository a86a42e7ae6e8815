"""Particle tables and their global placement: uniform positions and orientations, no overlap.

Pure numpy/scipy (no dask, no I/O). Placement is global and cheap (a few spheres per object),
so the table is decided once, before any chunk is rendered.

Conventions
-----------
* Voxel coordinates: voxel ``(k, j, i)`` of a ``(z, y, x)`` volume has its *centre* at the
  voxel coordinate ``(z, y, x) = (k, j, i)``; in Å that is ``(i + 0.5) * pixel_size_A`` (as in
  :func:`faket_dask.datamodel.pixel_coords`). Particle positions ``x, y, z`` in the table are
  voxel coordinates (floats).
* Rotations: Euler angles ``rot, tilt, psi`` (degrees), intrinsic ZYZ: the particle is the
  template rotated *actively* by ``M = Rz(rot) @ Ry(tilt) @ Rz(psi)`` acting on ``(x, y, z)``
  column vectors (right-handed). These are *not* RELION's ``rlnAngleRot/Tilt/Psi``: RELION's
  ``Euler_angles2matrix(rot, tilt, psi) = (Rz Ry Rz)ᵀ`` is applied reference → particle, so the
  STAR export writes the angles of ``M⁻¹`` (:func:`faket_dask.stages.particle_export.relion_angles`;
  every export's convention and its source: docs/formats.md). Orientations are uniform on SO(3).

The table
---------
One row per object (:data:`COLUMNS` + :data:`EXTRA_COLUMNS`): class, centre, orientation,
``radius_A`` (bounding sphere of the object's potential; a filament's tube radius) and the
per-object sizes. Filament paths are a side table (:data:`FILAMENT_COLUMNS`, one row per path
point): ``filament_id`` (= the filament's table row + 1, its occupancy id), the point in voxel
coordinates and the unit normal of the frame carried along the path (it fixes the helix phase).

Placement
---------
Every object is a union of *exclusion spheres*: a protein's envelope lobes, a bead's or a
vesicle's outer sphere, a filament's chain of spheres along its path (each covering the tube
between neighbouring points), all widened by :data:`EXCLUSION_MARGIN_VOXELS`. No two objects'
spheres intersect, so envelopes (and labels) never overlap; soft edges (Gaussian tails) may,
and the renderer gives such a voxel to one object only. Order: vesicles, filaments (grown as
worm-like paths that stop where they would touch something), fiducials, then proteins class by
class, largest envelope first, each class by batched random sequential addition: candidates are
drawn in batches (uniform centres keeping the spheres inside the volume, uniform orientations),
tested against all placed spheres (k-d trees) and against each other (earlier candidate wins),
batch sizes following the acceptance rate, at most ``max_tries`` candidates per object.
Deterministic in the seed.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from . import specimen_filaments as fil
from . import specimen_membranes as mem
from .specimen_templates import (
    CUTOFF_SIGMAS,
    GOLD_EDGE_A,
    GOLD_RADIUS_A,
    MIN_SIGMA_VOXELS,
    ClassTemplate,
)

#: Table columns (all 1-D arrays of the same length) of a particle table.
COLUMNS = ("class_name", "class_id", "x", "y", "z", "rot", "tilt", "psi", "radius_A", "shell_radius_A")
#: Per-object sizes added to the table (0 where they do not apply; read as 0 from older tables):
#: vesicle semi-axes along the template y and z (``shell_radius_A`` is along x), gold bead
#: radius, filament contour length (Å).
EXTRA_COLUMNS = ("shell_b_A", "shell_c_A", "bead_radius_A", "length_A")
#: Filament paths, one row per point, on their own dim.
FILAMENT_COLUMNS = ("filament_id", "filament_x", "filament_y", "filament_z",
                    "filament_nx", "filament_ny", "filament_nz")
#: Exclusion spheres are widened by this many voxels (so envelopes are >= 1 voxel apart).
EXCLUSION_MARGIN_VOXELS = 0.5


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotations uniform on SO(3) as ZYZ Euler angles ``(rot, tilt, psi)`` in degrees."""
    if n == 0:
        return np.zeros((0, 3))
    return Rotation.random(n, random_state=rng).as_euler("ZYZ", degrees=True)


def rotation_matrices(euler_deg: np.ndarray) -> np.ndarray:
    """Active rotations ``Rz(rot) Ry(tilt) Rz(psi)`` on ``(x, y, z)``; shape (N, 3, 3)."""
    return Rotation.from_euler("ZYZ", np.reshape(euler_deg, (-1, 3)), degrees=True).as_matrix()


def empty_table() -> dict[str, np.ndarray]:
    """A particle table with no rows (and no filament points)."""
    t = {c: np.zeros(0) for c in COLUMNS + EXTRA_COLUMNS + FILAMENT_COLUMNS}
    t["class_name"] = np.zeros(0, dtype="<U32")
    t["class_id"] = np.zeros(0, dtype=np.int32)
    t["filament_id"] = np.zeros(0, dtype=np.uint32)
    return t


def _tree_hits(tree: cKDTree, tr: np.ndarray, rmax: float, c: np.ndarray, r: np.ndarray, k: int = 8) -> np.ndarray:
    """Whether spheres ``(c, r)`` intersect the tree's spheres (radii ``tr``, largest ``rmax``).

    The ``k`` nearest centres within ``r + rmax`` are tested; where all ``k`` are that near,
    farther ones could still intersect, and those queries are repeated with ``4 k``."""
    k = min(k, tree.n)
    d, j = tree.query(c, k=k, distance_upper_bound=float(r.max() + rmax), workers=-1)
    d, j = d.reshape(len(c), k), j.reshape(len(c), k)
    found = j < tree.n
    rj = np.where(found, tr[np.minimum(j, tree.n - 1)], 0.0)
    hit = np.any(found & (d < r[:, None] + rj), axis=1)
    again = np.flatnonzero(~hit & found[:, -1] & (d[:, -1] < r + rmax))
    if len(again) and k < tree.n:
        hit[again] = _tree_hits(tree, tr, rmax, c[again], r[again], 4 * k)
    return hit


class _Bin:
    """Spheres of one radius range: a k-d tree rebuilt as they double, plus one of the spheres
    added since."""

    def __init__(self) -> None:
        self.c, self.r = np.zeros((0, 3)), np.zeros(0)
        self.n_main = 0
        self.trees: list[tuple[cKDTree, int, float]] = []          # (tree, first sphere, max radius)

    def add(self, c: np.ndarray, r: np.ndarray) -> None:
        self.c, self.r = np.vstack([self.c, c]), np.concatenate([self.r, r])
        if len(self.r) - self.n_main > max(1024, self.n_main // 2):
            self.n_main = len(self.r)
            self.trees = [(cKDTree(self.c), 0, float(self.r.max()))]
        else:
            self.trees = self.trees[:1] if self.n_main else []
            rest = self.r[self.n_main:]
            self.trees.append((cKDTree(self.c[self.n_main:]), self.n_main, float(rest.max())))


class SphereIndex:
    """Exclusion spheres (voxel units) of the placed objects, with overlap queries.

    Spheres are binned by radius (factors of 4), so a query looks for neighbours in each bin
    only as far as that bin's largest sphere reaches."""

    def __init__(self) -> None:
        self._bins: dict[int, _Bin] = {}

    def add(self, c: np.ndarray, r: np.ndarray) -> None:
        c, r = np.reshape(c, (-1, 3)), np.reshape(r, -1)
        key = np.floor(np.log2(np.maximum(r, 1.0)) / 2).astype(int)
        for b in np.unique(key):
            self._bins.setdefault(int(b), _Bin()).add(c[key == b], r[key == b])

    def hits(self, c: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Whether each query sphere ``(c, r)`` intersects a stored one (bool per query)."""
        c, r = np.reshape(c, (-1, 3)).astype(np.float64), np.reshape(r, -1).astype(np.float64)
        out = np.zeros(len(c), dtype=bool)
        for b in sorted(self._bins, reverse=True):                 # few large spheres first
            for tree, off, rmax in self._bins[b].trees:
                todo = np.flatnonzero(~out)
                if not len(todo):
                    return out
                out[todo] = _tree_hits(tree, self._bins[b].r[off:off + tree.n], rmax, c[todo], r[todo])
        return out


def _greedy(c: np.ndarray, r: np.ndarray, owner: np.ndarray, n_cand: int) -> np.ndarray:
    """Candidates (0..n_cand-1) kept when those whose spheres ``(c, r)`` (candidate ``owner``)
    intersect an earlier kept one are dropped."""
    keep = np.zeros(n_cand, dtype=bool)
    keep[np.unique(owner)] = True
    if len(c) < 2:
        return keep
    pairs = cKDTree(c).query_pairs(2 * float(r.max()), output_type="ndarray")
    if not len(pairs):
        return keep
    d = np.sqrt(((c[pairs[:, 0]] - c[pairs[:, 1]]) ** 2).sum(1))
    a, b = owner[pairs[:, 0]], owner[pairs[:, 1]]
    bad = (d < r[pairs[:, 0]] + r[pairs[:, 1]]) & (a != b)
    lo, hi = np.minimum(a, b)[bad], np.maximum(a, b)[bad]
    order = np.lexsort((lo, hi))
    for x, y in zip(lo[order], hi[order]):
        if keep[x]:
            keep[y] = False
    return keep


def _row(cls: ClassTemplate, k: int, c_zyx, euler, radius_A: float, **sizes) -> dict:
    row = {"class_name": cls.name, "class_id": k + 1, "x": float(c_zyx[2]), "y": float(c_zyx[1]),
           "z": float(c_zyx[0]), "rot": float(euler[0]), "tilt": float(euler[1]), "psi": float(euler[2]),
           "radius_A": float(radius_A), "shell_radius_A": 0.0}
    row.update({c: 0.0 for c in EXTRA_COLUMNS})
    row.update({key: float(v) for key, v in sizes.items()})
    return row


def _candidates(cls: ClassTemplate, B: int, rng, shape: np.ndarray, px: float):
    """``B`` candidates: sphere offsets (B, L, 3) and radii (B, L) in voxels, containment
    bound (B,), Euler angles (B, 3), and per-candidate row sizes."""
    m = EXCLUSION_MARGIN_VOXELS
    euler = random_rotations(B, rng)
    if cls.kind == "ball":
        R = rng.uniform(*GOLD_RADIUS_A, B)
        rad = (R / px + m)[:, None]
        sizes = [{"bead_radius_A": x} for x in R]
        support = R + CUTOFF_SIGMAS * max(GOLD_EDGE_A, MIN_SIGMA_VOXELS * px)
        return np.zeros((B, 1, 3)), rad, rad[:, 0], euler, sizes, support
    if cls.kind == "shell":
        # at most half the radius the volume holds, so a small volume keeps room for the rest
        fit = (shape.min() - 1) * px / 2 - mem.ENVELOPE_HALF_A - m * px
        top = max(mem.VESICLE_RADIUS_A[0], min(mem.VESICLE_RADIUS_A[1], fit / 2))
        R = rng.uniform(mem.VESICLE_RADIUS_A[0], top, B)
        axes = [mem.draw_axes(rng, x) for x in R]
        rad = ((R + mem.ENVELOPE_HALF_A) / px + m)[:, None]
        sizes = [{"shell_radius_A": a, "shell_b_A": b, "shell_c_A": c} for a, b, c in axes]
        return np.zeros((B, 1, 3)), rad, rad[:, 0], euler, sizes, R + mem.support_half_A(px)
    env = cls.envelope_spheres_A(px)
    ec, er = env[:, :3] / px, env[:, 3] / px + m
    off = np.einsum("bij,lj->bli", rotation_matrices(euler), ec)[..., ::-1]
    bound = float(np.max(np.sqrt((ec ** 2).sum(1)) + er))
    support = np.full(B, cls.bounding_radius_A(px))
    return off, np.broadcast_to(er, (B, len(er))), np.full(B, bound), euler, [{}] * B, support


def _place_compact(index: SphereIndex, rng, shape: np.ndarray, px: float, cls: ClassTemplate, k: int,
                   n: int, max_tries: int, rows: list) -> int:
    """Batched random sequential addition of ``n`` objects of class ``k``; returns how many."""
    need, tried, acc = n, 0, 1.0
    budget = max_tries * n
    while need > 0 and tried < budget:
        # candidates for what is missing at the last round's rate of passing the placed objects
        B = int(min(max(np.ceil(need / acc * 1.1), 8), 1 << 15, budget - tried))
        tried += B
        off, rad, bound, euler, sizes, support = _candidates(cls, B, rng, shape, px)
        lo = bound[:, None] - 0.5
        hi = shape[None, :] - 0.5 - bound[:, None]
        c = lo + (hi - lo) * rng.random((B, 3))
        valid = np.all(hi >= lo, axis=1)
        sph = c[:, None, :] + off
        L = sph.shape[1]
        ok = np.flatnonzero(valid)
        for lobe in np.argsort(-rad[0], kind="stable"):            # largest first: most rejections
            ok = ok[~index.hits(sph[ok, lobe], rad[ok, lobe])]
        acc = max(len(ok) / B, 0.5 / B)
        owner = np.repeat(np.arange(len(ok)), L)
        keep = np.flatnonzero(_greedy(sph[ok].reshape(-1, 3), rad[ok].reshape(-1), owner, len(ok)))
        chosen = ok[keep][:need]
        index.add(sph[chosen].reshape(-1, 3), rad[chosen].reshape(-1))
        for i in chosen:
            rows.append(_row(cls, k, c[i], euler[i], support[i], **sizes[i]))
        need -= len(chosen)
        if len(ok) == 0 and B >= 4096:                    # jammed: nothing fits any more
            break
    return n - need


def _place_filaments(index: SphereIndex, rng, shape: np.ndarray, px: float, cls: ClassTemplate, k: int,
                     n: int, max_tries: int, rows: list, paths: list) -> int:
    """Grow ``n`` filaments of class ``k`` (see :mod:`.specimen_filaments`); returns how many."""
    geom = cls.filament
    step = fil.PATH_STEP_A / px
    rchain = np.sqrt((geom.tube_radius_A / px) ** 2 + (step / 2) ** 2) + EXCLUSION_MARGIN_VOXELS
    placed = 0
    for _ in range(n):
        for _try in range(max_tries):
            start = rng.random(3) * (shape - 1)
            if index.hits(start, np.array([rchain]))[0]:
                continue
            d = fil._unit(rng.normal(size=3))
            path = fil.grow_path(start, d, geom, px, shape, rng,
                                 lambda q: bool(index.hits(q, np.array([rchain]))[0]))
            length = (len(path) - 1) * fil.PATH_STEP_A
            if length < geom.min_length_A:
                continue
            normals = fil.transport_normals(path, rng)
            index.add(path, np.full(len(path), rchain))
            e = fil._unit(path[-1] - path[0])                     # (z, y, x)
            euler = (np.degrees(np.arctan2(e[1], e[2])), np.degrees(np.arccos(np.clip(e[0], -1, 1))), 0.0)
            mid = len(path) // 2
            centre = path[mid] if len(path) % 2 else (path[mid - 1] + path[mid]) / 2
            rows.append(_row(cls, k, centre, euler, geom.tube_radius_A, length_A=length))
            paths.append((len(rows), path, normals))
            placed += 1
            break
    return placed


def _envelope_volume(cls: ClassTemplate, px: float) -> float:
    env = cls.envelope_spheres_A(px)
    return float(np.max(np.sqrt((env[:, :3] ** 2).sum(1)) + env[:, 3]))


def place_specimen(
    shape_zyx: tuple[int, int, int],
    pixel_size_A: float,
    classes: list[ClassTemplate],
    requests: list[tuple[int, int]],
    seed: int,
    *,
    max_tries: int = 200,
) -> tuple[dict[str, np.ndarray], list[tuple[int, int, int]]]:
    """Place the requested objects (see the module docstring for the order and the method).

    Parameters
    ----------
    shape_zyx : (int, int, int)
        Volume shape (voxels).
    pixel_size_A : float
        Voxel size (Å).
    classes : list of ClassTemplate
        Class ``k`` (0-based) gets class id ``k + 1``.
    requests : list of (int, int)
        ``(class index, count)``; a class's kind decides how it is placed.
    seed : int
        Seed of the placement generator.
    max_tries : int
        Candidates per object (filaments: start points) before it is given up.

    Returns
    -------
    table : dict of str to ndarray
        :data:`COLUMNS` + :data:`EXTRA_COLUMNS` (one row per object, in placement order) and
        :data:`FILAMENT_COLUMNS` (one row per filament path point).
    placed : list of (int, int, int)
        ``(class index, placed, requested)`` per request, in placement order.
    """
    rng = np.random.default_rng(seed)
    shape = np.asarray(shape_zyx, dtype=np.float64)
    px = float(pixel_size_A)
    rank = {"shell": 0, "filament": 1, "ball": 2}
    order = sorted(((k, n) for k, n in requests if n > 0),
                   key=lambda kn: (rank.get(classes[kn[0]].kind, 3),
                                   -_envelope_volume(classes[kn[0]], px) if classes[kn[0]].kind in ("atoms", "map") else 0))
    index = SphereIndex()
    rows: list[dict] = []
    paths: list = []
    placed = []
    for k, n in order:
        cls = classes[k]
        if cls.kind == "filament":
            got = _place_filaments(index, rng, shape, px, cls, k, n, max_tries, rows, paths)
        else:
            got = _place_compact(index, rng, shape, px, cls, k, n, max_tries, rows)
        placed.append((k, got, n))
    table = empty_table()
    if rows:
        for c in COLUMNS + EXTRA_COLUMNS:
            dt = table[c].dtype if c in ("class_name", "class_id") else np.float64
            table[c] = np.asarray([r[c] for r in rows], dtype=dt)
    if paths:
        table["filament_id"] = np.concatenate([np.full(len(p), rid, np.uint32) for rid, p, _ in paths])
        for j, a in enumerate("zyx"):
            table[f"filament_{a}"] = np.concatenate([p[:, j] for _, p, _ in paths])
            table[f"filament_n{a}"] = np.concatenate([nv[:, j] for _, _, nv in paths])
    return table, placed


def counts_for_fraction(volumes_A3: list[float], total_A3: float, fraction: float,
                        rng: np.random.Generator) -> list[int]:
    """Per-class counts whose molecular volumes fill ``fraction`` of ``total_A3``: the same
    count for every class (the mixture of SHREC's tomograms), the remainder to classes drawn
    at random; ``round(fraction * total / mean volume)`` objects in all."""
    K = len(volumes_A3)
    n = int(round(fraction * total_A3 / float(np.mean(volumes_A3))))
    counts = np.full(K, n // K)
    counts[rng.permutation(K)[: n % K]] += 1
    return [int(x) for x in counts]


def place_particles(
    shape_zyx: tuple[int, int, int],
    pixel_size_A: float,
    classes: list[ClassTemplate],
    counts: list[int],
    seed: int,
    *,
    max_tries: int = 200,
) -> dict[str, np.ndarray]:
    """:func:`place_specimen` with ``counts[k]`` objects of class ``k``; warns about objects
    that found no room."""
    table, placed = place_specimen(shape_zyx, pixel_size_A, classes, list(enumerate(counts)), seed,
                                   max_tries=max_tries)
    got, want = sum(p for _, p, _ in placed), sum(n for _, _, n in placed)
    if got < want:
        warnings.warn(f"placed {got} of {want} objects: no room for the others after {max_tries} "
                      f"tries each (volume too small or too crowded)", stacklevel=2)
    return table
