"""Particle picking kernels: segment one block with the picker, cluster one label block.

Pure numpy/scipy/torch on in-memory blocks; the Dask wiring (which block, reading, merging the
pieces of particles cut by block faces) is :mod:`faket_dask.stages.picking`.

Segmentation (:func:`pad_window`, :func:`segment`)
    The picker (:class:`~faket_dask.kernels.picker_net.PickerUNet`) sees the block plus a halo of
    ``halo`` voxels on every side (zeros = the tomogram's mean outside the tomogram), padded at
    the end to a multiple of 4; its class probabilities are cropped to the block. A voxel's
    label is the argmax over background + classes, its score the largest probability (float16).
    The U-Net's output at voxel ``i`` depends on the input voxels ``i - 31 … i + 34`` (measured by
    perturbation, ``tests/test_pick.py``), so with ``halo >=``
    :data:`~faket_dask.params.picking.PICK_CONTEXT_VOXELS` (36) and blocks starting at multiples
    of 4 (the two 2³ poolings see the same grid), a block's labels are those of the whole
    tomogram (padded with ``halo`` zeros) segmented at once: the segmentation does not depend on
    the block size (bit for bit on CPU, ``tests/test_pick.py``).

Clustering (:func:`block_components`, :func:`face_edges`, :func:`merge_components`)
    A particle is a connected component (6-connectivity, faces) of voxels of one class, its
    position the component's centroid, its size the voxel count and its score the mean score.
    Chosen over DeepFinder's mean-shift (``cryoet-deepfinder``, ``Cluster.launch``: mean-shift
    with a bandwidth = the particle radius over the voxels of each class): no bandwidth to tune
    per class, linear time, and exact blockwise — a component cut by block faces is glued back
    from its pieces (pieces adjacent across a face with the same class are one component), so
    the picks do not depend on the block size. What it loses: two touching particles of one
    class are one pick (mean-shift with the right radius may split them); the segmentation of
    a trained picker rarely joins them at its resolution, and ``--min-size`` drops specks.
    Sums are exact whatever the order (integer coordinates in int64; float16 scores summed in
    float64, exact below 2**29 voxels), so centroids and scores are bit-identical for any
    block size.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from .picker_net import SIZE_MULTIPLE, class_probabilities

#: Bits of a component key below the block index: ``key = (block << KEY_SHIFT) | local id``.
KEY_SHIFT = 32


def pad_window(data: np.ndarray, before: Sequence[int], after: Sequence[int]) -> np.ndarray:
    """Zero-pad a read window to the picker's input: ``before``/``after`` voxels per axis, then
    at the end of each axis up to a multiple of 4.

    Parameters
    ----------
    data : ndarray (z, y, x), float32
        The standardised voxels read (block + the part of the halo inside the tomogram).
    before, after : 3 ints
        Halo voxels missing before / after the window (outside the tomogram).

    Returns
    -------
    ndarray, float32, each edge a multiple of 4.
    """
    width = []
    for n, b, a in zip(data.shape, before, after):
        total = n + int(b) + int(a)
        width.append((int(b), int(a) + (-total) % SIZE_MULTIPLE))
    return np.pad(np.asarray(data, np.float32), width)


def segment(model, window: np.ndarray, halo: int, core: Sequence[int], device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores of the block at ``window[halo:halo + core]``.

    Parameters
    ----------
    model : PickerUNet
        In eval mode on ``device``.
    window : ndarray (z, y, x), float32
        From :func:`pad_window`: the block with ``halo`` voxels before it on every axis.
    halo : int
        Voxels before the block in ``window``.
    core : 3 ints
        The block's shape.
    device : str
        Torch device of ``model``.

    Returns
    -------
    labels : ndarray (core), uint8
        argmax over the picker's channels (0 = background, k = ``class_names[k]``).
    score : ndarray (core), float16
        The largest class probability.
    """
    import torch

    probs = class_probabilities(model, torch.from_numpy(np.ascontiguousarray(window)).to(device))
    z, y, x = (int(c) for c in core)
    probs = probs[:, halo:halo + z, halo:halo + y, halo:halo + x]
    score, labels = probs.max(dim=0)
    return labels.to(torch.uint8).cpu().numpy(), score.to(torch.float16).cpu().numpy()


@dataclass
class Components:
    """Connected components (or pieces of them), one entry per component.

    Attributes
    ----------
    key : int64 (n,)
        ``(block << KEY_SHIFT) | local id`` of the piece (merged: the smallest key).
    cls : int64 (n,)
        Picker channel (1 … C-1).
    count : int64 (n,)
        Voxels.
    sum_zyx : int64 (n, 3)
        Sum of the voxels' global (z, y, x) indices.
    score_sum : float64 (n,)
        Sum of the voxels' scores.
    """

    key: np.ndarray
    cls: np.ndarray
    count: np.ndarray
    sum_zyx: np.ndarray
    score_sum: np.ndarray

    def __len__(self) -> int:
        return len(self.key)

    def select(self, mask: np.ndarray) -> Components:
        return Components(*(getattr(self, f.name)[mask] for f in fields(self)))

    @staticmethod
    def empty() -> Components:
        return Components(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                          np.zeros((0, 3), np.int64), np.zeros(0))

    @staticmethod
    def concat(parts: Sequence[Components]) -> Components:
        parts = [p for p in parts if len(p)] or [Components.empty()]
        return Components(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Components)))

    def centroid_zyx(self) -> np.ndarray:
        """float64 (n, 3): mean voxel index (centre of voxel i at i)."""
        return self.sum_zyx / self.count[:, None]


@dataclass
class BlockPieces:
    """What clustering one block gives: complete components, pieces on faces, the faces.

    ``faces[(axis, side)]`` (side 0: first plane, 1: last plane; only sides with a neighbour
    block) is the plane of local ids (int32, 0 = none) and ``local_cls[id]`` the id's class.
    """

    complete: Components
    partial: Components
    key_base: int
    faces: dict
    local_cls: np.ndarray


def block_components(labels: np.ndarray, score: np.ndarray, *, origin: Sequence[int], classes: Sequence[int],
                     block_index: int, neighbours: Sequence[tuple[bool, bool]], min_size: int) -> BlockPieces:
    """Connected components of each class in one label block.

    Parameters
    ----------
    labels : ndarray (z, y, x), uint8
        Picker channels (from :func:`segment`).
    score : ndarray (z, y, x), float16
        Scores of the voxels.
    origin : 3 ints
        Global (z, y, x) index of the block's first voxel.
    classes : sequence of int
        Channels to cluster (others count as background).
    block_index : int
        The block's number (< 2**31): high bits of the keys.
    neighbours : 3 pairs of bool
        Per axis, whether a block lies before / after this one.
    min_size : int
        Complete components (touching no face with a neighbour) smaller than this are dropped
        here; pieces on faces are kept for :func:`merge_components`.

    Returns
    -------
    BlockPieces
    """
    from scipy import ndimage

    ids = np.zeros(labels.shape, np.int32)
    local_cls = [0]
    for c in classes:
        mask = labels == c
        if not mask.any():
            continue
        lab, n = ndimage.label(mask)
        ids[mask] = lab[mask] + (len(local_cls) - 1)
        local_cls += [int(c)] * n
    n = len(local_cls)
    flat = ids.ravel()
    count = np.bincount(flat, minlength=n).astype(np.int64)
    sums = np.zeros((n, 3), np.int64)
    for axis in range(3):
        coord = np.arange(labels.shape[axis], dtype=np.int64) + int(origin[axis])
        shape = [1, 1, 1]
        shape[axis] = -1
        # integer weights summed in float64 are exact (< 2**53); stored as int64
        sums[:, axis] = np.rint(np.bincount(flat, weights=np.broadcast_to(coord.reshape(shape), labels.shape).ravel(),
                                            minlength=n)).astype(np.int64)
    score_sum = np.bincount(flat, weights=score.astype(np.float64).ravel(), minlength=n)
    key_base = int(block_index) << KEY_SHIFT
    comps = Components(key_base + np.arange(n, dtype=np.int64), np.asarray(local_cls, np.int64), count, sums,
                       score_sum).select(np.arange(n) > 0)
    faces = {}
    on_face = np.zeros(n, bool)
    for axis, sides in enumerate(neighbours):
        for side, has in enumerate(sides):
            if has:
                plane = np.take(ids, 0 if side == 0 else -1, axis=axis)
                faces[(axis, side)] = np.ascontiguousarray(plane)
                on_face[plane.ravel()] = True
    on_face = on_face[1:]
    complete = comps.select(~on_face)
    complete = complete.select(complete.count >= int(min_size))
    return BlockPieces(complete, comps.select(on_face), key_base, faces, np.asarray(local_cls, np.int64))


def face_edges(low: BlockPieces, high: BlockPieces, axis: int) -> np.ndarray:
    """Pairs of piece keys that touch across the face between two neighbouring blocks.

    ``low`` lies before ``high`` along ``axis``; two voxels facing each other are one component
    when both are labelled with the same class.

    Returns
    -------
    ndarray (E, 2), int64
        Unique ``(key in low, key in high)`` pairs.
    """
    a = low.faces[(axis, 1)].ravel()
    b = high.faces[(axis, 0)].ravel()
    hit = (a > 0) & (b > 0)
    a, b = a[hit], b[hit]
    same = low.local_cls[a] == high.local_cls[b]
    pairs = np.stack([a[same].astype(np.int64) + low.key_base, b[same].astype(np.int64) + high.key_base], 1)
    return np.unique(pairs, axis=0) if len(pairs) else np.zeros((0, 2), np.int64)


def merge_components(pieces: Components, edges: np.ndarray) -> Components:
    """Glue pieces joined by ``edges`` into components (sums added, smallest key kept).

    Parameters
    ----------
    pieces : Components
        Pieces of components cut by block faces (unique keys).
    edges : ndarray (E, 2), int64
        Keys of touching pieces (from :func:`face_edges`).

    Returns
    -------
    Components
        One entry per connected group of pieces, in the order of their smallest key.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(pieces)
    if n == 0:
        return pieces
    order = np.argsort(pieces.key, kind="stable")
    pieces = pieces.select(order)
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    i = np.searchsorted(pieces.key, edges[:, 0])
    j = np.searchsorted(pieces.key, edges[:, 1])
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    # group numbers in the order of each group's first (smallest-key) piece
    first = np.full(group.max() + 1, n, np.int64)
    np.minimum.at(first, group, np.arange(n))
    rank = np.empty_like(first)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    g = rank[group]
    m = len(first)
    sums = np.zeros((m, 3), np.int64)
    np.add.at(sums, g, pieces.sum_zyx)
    count = np.zeros(m, np.int64)
    np.add.at(count, g, pieces.count)
    score_sum = np.zeros(m)
    np.add.at(score_sum, g, pieces.score_sum)
    head = np.sort(first)
    return Components(pieces.key[head], pieces.cls[head], count, sums, score_sum)
