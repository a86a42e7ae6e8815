"""Particle tables from label volumes: connected components and occupancy ids, slab by slab.

Pure numpy/scikit-image (no dask, no I/O). An imported grandmodel has a class mask (and maybe
an occupancy volume) but no particle table; the stage
:func:`faket_dask.stages.particles.particles_from_masks` feeds these accumulators one z-slab at
a time, so any volume size works.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LabelStats:
    """Per-object statistics gathered from label volumes.

    Attributes
    ----------
    class_id : numpy.ndarray, int32, shape (N,)
        Class id of each object (1-based; 0 never occurs).
    count : numpy.ndarray, int64, shape (N,)
        Voxels of each object.
    centroid_zyx : numpy.ndarray, float64, shape (N, 3)
        Centroid of each object's voxels in voxel coordinates (voxel ``i`` has its centre at ``i``).
    key : numpy.ndarray, int64, shape (N,)
        Occupancy id (:class:`OccupancyComponents`) or the internal label of the component's first
        voxel in raster (z, y, x) order (:class:`MaskComponents`); the rows are sorted by it.
    """

    class_id: np.ndarray
    count: np.ndarray
    centroid_zyx: np.ndarray
    key: np.ndarray


def _as_class_ids(slab: np.ndarray, what: str) -> np.ndarray:
    """A slab of class ids as int64; ``ValueError`` unless every value is a non-negative integer."""
    a = np.asarray(slab)
    if a.dtype.kind in "iu":
        out = a if a.dtype.itemsize < 8 else a.astype(np.int64, copy=False)   # bincount-safe, no copy
    elif a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise ValueError(f"{what} holds non-integer values (expected integer ids)")
        out = a.astype(np.int64)
    elif a.dtype.kind == "b":
        out = a.astype(np.int64)
    else:
        raise ValueError(f"{what} has dtype {a.dtype} (expected integer ids)")
    if out.size and out.min() < 0:
        raise ValueError(f"{what} holds negative values (expected ids >= 0)")
    return out


class MaskComponents:
    """Connected components of every class of a class mask, fed slab by slab along z.

    The result equals ``scipy.ndimage.label(mask == k)`` on the whole volume for every class ``k``
    (face connectivity: voxels sharing a face are connected, scipy's default structure), but
    only one slab is in memory at a time: each slab is labelled alone and components that touch
    across a slab boundary (same class, same (y, x), adjacent planes) are merged with a
    union-find. Rows are ordered by class id, then by the raster (z, y, x) position of each
    component's first voxel (scipy's label order).

    Each slab is labelled in one pass (``skimage.measure.label``: regions of equal non-zero
    value, face connectivity), which are the components of every class at once.

    Memory: the slab and its int64 labels (8 bytes per voxel, plus skimage's temporaries), and
    the coordinates of the labelled voxels (32 bytes each); the union-find holds a few ints per
    slab-local component.
    """

    def __init__(self) -> None:
        self._z = 0
        self._parent = np.zeros(1, np.int64)                      # label 0: background
        self._cls = np.zeros(1, np.int64)
        self._count = np.zeros(1, np.int64)
        self._sums = np.zeros((1, 3), np.float64)                 # exact integer sums (< 2**53)
        self._last_labels: np.ndarray | None = None               # labels of the last plane fed

    def add(self, slab: np.ndarray) -> None:
        """Feed the next ``(nz, Y, X)`` slab of class ids (any integer or integral float dtype).

        Raises
        ------
        ValueError
            If the slab is not 3D, its (Y, X) differs from earlier slabs, or it holds negative or
            non-integer values.
        """
        from skimage import measure

        cls = _as_class_ids(slab, "class mask")
        if cls.ndim != 3:
            raise ValueError(f"class mask slab must be 3D (z, y, x), got shape {cls.shape}")
        if self._last_labels is not None and cls.shape[1:] != self._last_labels.shape:
            raise ValueError(f"class mask slab of (y, x) {cls.shape[1:]} after {self._last_labels.shape}")
        if cls.shape[0] == 0:
            return
        # one pass labels regions of equal non-zero value (face connectivity), i.e. the
        # components of every class at once
        labels = measure.label(cls, background=0, connectivity=1).astype(np.int64, copy=False)
        zz, yy, xx = np.nonzero(labels)
        if zz.size:
            n = int(labels[zz, yy, xx].max())
            base = len(self._parent) - 1
            ids = labels[zz, yy, xx]
            kinds = np.zeros(n + 1, np.int64)
            kinds[ids] = cls[zz, yy, xx]
            cnt = np.bincount(ids, minlength=n + 1)[1:]
            sums = np.stack([np.bincount(ids, weights=c, minlength=n + 1)[1:]
                             for c in (zz + self._z, yy, xx)], axis=1)
            labels[zz, yy, xx] += base
            self._parent = np.concatenate([self._parent, np.arange(base + 1, base + n + 1)])
            self._cls = np.concatenate([self._cls, kinds[1:]])
            self._count = np.concatenate([self._count, cnt])
            self._sums = np.concatenate([self._sums, sums])
        if self._last_labels is not None:
            a, b = self._last_labels, labels[0]
            touch = (a > 0) & (b > 0)
            touch &= self._cls[a] == self._cls[b]
            if touch.any():
                pairs = np.unique(np.stack([a[touch], b[touch]], axis=1), axis=0)
                for p, q in pairs:
                    self._union(int(p), int(q))
        self._last_labels = labels[-1].copy()
        self._z += cls.shape[0]

    def _find(self, i: int) -> int:
        parent = self._parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:                                  # path compression
            parent[i], i = root, parent[i]
        return int(root)

    def _union(self, i: int, j: int) -> None:
        ri, rj = self._find(i), self._find(j)
        if ri != rj:                                              # the smaller label is the root
            self._parent[max(ri, rj)] = min(ri, rj)

    def result(self) -> LabelStats:
        """The components found so far (see :class:`LabelStats`)."""
        parent = self._parent.copy()
        while True:                                               # resolve every root
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
        n = len(parent)
        count = np.bincount(parent, weights=self._count, minlength=n)
        sums = np.stack([np.bincount(parent, weights=self._sums[:, d], minlength=n) for d in range(3)], axis=1)
        roots = np.flatnonzero(parent == np.arange(n))
        roots = roots[roots > 0]
        order = np.lexsort((roots, self._cls[roots]))
        roots = roots[order]
        cnt = count[roots].astype(np.int64)
        return LabelStats(class_id=self._cls[roots].astype(np.int32), count=cnt,
                          centroid_zyx=sums[roots] / np.maximum(cnt, 1)[:, None], key=roots.astype(np.int64))


class OccupancyComponents:
    """One object per occupancy id (all voxels of the id, connected or not), fed slab by slab.

    The class of an object is the most frequent non-zero class of its voxels in the class mask
    (in generated specimens all of them agree); an id whose voxels carry no class gets class 0
    only if no class mask is given. Rows are ordered by occupancy id.
    """

    def __init__(self) -> None:
        self._z = 0
        self._stats: dict[int, np.ndarray] = {}                   # id -> [count, sz, sy, sx]
        self._votes: dict[tuple[int, int], int] = {}              # (id, class) -> voxels

    def add(self, occupancy: np.ndarray, class_mask: np.ndarray | None = None) -> None:
        """Feed the next ``(nz, Y, X)`` slab of occupancy ids (and class ids, same shape).

        Raises
        ------
        ValueError
            If the slabs are not 3D, differ in shape, or hold negative / non-integer ids.
        """
        occ = _as_class_ids(occupancy, "occupancy")
        if occ.ndim != 3:
            raise ValueError(f"occupancy slab must be 3D (z, y, x), got shape {occ.shape}")
        cls = None
        if class_mask is not None:
            cls = _as_class_ids(class_mask, "class mask")
            if cls.shape != occ.shape:
                raise ValueError(f"class mask slab {cls.shape} differs from occupancy slab {occ.shape}")
        zz, yy, xx = np.nonzero(occ)
        if zz.size:
            ids, inv = np.unique(occ[zz, yy, xx], return_inverse=True)
            cnt = np.bincount(inv, minlength=len(ids))
            sums = [np.bincount(inv, weights=c, minlength=len(ids)) for c in (zz + self._z, yy, xx)]
            for j, i in enumerate(ids.tolist()):
                row = np.array([cnt[j], sums[0][j], sums[1][j], sums[2][j]], np.float64)
                self._stats[i] = self._stats[i] + row if i in self._stats else row
            if cls is not None:
                c = cls[zz, yy, xx]
                keep = c > 0
                pair, pcount = np.unique(np.stack([ids[inv[keep]], c[keep]], axis=1), axis=0,
                                         return_counts=True)
                for (i, k), m in zip(pair.tolist(), pcount.tolist()):
                    self._votes[(i, k)] = self._votes.get((i, k), 0) + m
        self._z += occ.shape[0]

    def result(self) -> LabelStats:
        """The objects found so far (see :class:`LabelStats`)."""
        ids = np.array(sorted(self._stats), dtype=np.int64)
        best: dict[int, tuple[int, int]] = {}
        for (i, k), m in sorted(self._votes.items()):
            if i not in best or m > best[i][1]:
                best[i] = (k, m)
        cls = np.array([best.get(int(i), (0, 0))[0] for i in ids], dtype=np.int32)
        st = np.array([self._stats[int(i)] for i in ids]).reshape(-1, 4)
        cnt = st[:, 0].astype(np.int64)
        return LabelStats(class_id=cls, count=cnt, centroid_zyx=st[:, 1:] / np.maximum(cnt, 1)[:, None],
                          key=ids)
