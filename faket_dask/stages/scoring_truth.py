"""The true particles of a run store for scoring, and SHREC'21's occupancy lookup in it.

:func:`truth_from_store` reads the particle tables of some tomograms (specimen or tomogram grid)
as one :class:`~faket_dask.stages.scoring_points.PointTable`, with, for SHREC's rule, where the
specimen's occupancy volume is; :func:`occupancy_hits` finds the true particle each pick's voxel
belongs to in it. The rules are :mod:`faket_dask.kernels.scoring_match`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..kernels.scoring_match import (
    HIT_BACKGROUND,
    HIT_BY_RADIUS,
    cross_neighbours,
    pick_voxels,
)
from ..store.layout import specimen_group, tomo_name
from .scoring_points import OccupancySource, PointTable


def truth_from_store(store: str | Path, tomos: Sequence[int] = (0,), *, grid: str = "specimen") -> PointTable:
    """The particle tables of tomograms ``tomos`` of a run store as one truth table.

    Rows come from :func:`faket_dask.stages.particles.open_particles` (``grid="tomogram"``:
    ``tomo_NNN/labels_particles``, positions from the tomogram's corner); the radius is the
    table's ``radius_A``. Where the specimen has an ``occupancy`` volume and the table is the
    stored one (not derived from masks), SHREC's occupancy rule can be used: occupancy id =
    the table's ``particle`` coordinate (table row + 1).
    """
    from ..store import has_var
    from .particles import open_particles

    names, corner, centred, radius, tnames, occ, cids = [], [], [], [], [], [], []
    have_centred = True
    row0 = 0
    for t in tomos:
        if int(t) < 0:
            raise InputError(f"--tomo must be >= 0, got {t}")
        p = open_particles(store, int(t), grid=grid)  # type: ignore[arg-type]
        n = p.sizes.get("particle", 0)
        name = tomo_name(int(t))
        px = p.attrs.get("pixel_size_A")
        if n and "x_A" in p:
            c = np.stack([p[a].values for a in ("x_A", "y_A", "z_A")], 1).astype(np.float64)
        elif n and px is not None:
            c = (np.stack([p[a].values for a in "xyz"], 1).astype(np.float64) + 0.5) * float(px)
        elif n:
            raise InputError(f"{store}: {name}'s particle table has no pixel size")
        else:
            c = np.zeros((0, 3))
        if n and "x_centred_A" in p:
            centred.append(np.stack([p[a].values for a in ("x_centred_A", "y_centred_A", "z_centred_A")], 1))
        else:
            have_centred = have_centred and n == 0
            centred.append(np.zeros((n, 3)))
        corner.append(c)
        names.append(np.asarray(p["class_name"].values).astype(str).astype(object) if n else np.zeros(0, object))
        radius.append(np.asarray(p["radius_A"].values, np.float64) if n else np.zeros(0))
        cids.append(np.asarray(p["class_id"].values, np.int64) if n else np.zeros(0, np.int64))
        tnames.append(np.full(n, name, dtype=object))
        shape = p.attrs.get("volume_shape_zyx")
        spx = p.attrs.get("specimen_pixel_size_A", px)
        if (n and shape is not None and not p.attrs.get("derived_from") and "x_centred_A" in p
                and has_var(store, f"{specimen_group(int(t))}/occupancy")):
            from ..store import open as open_group

            sshape = tuple(int(s) for s in open_group(store, specimen_group(int(t)))["occupancy"].shape)
            half = np.asarray(sshape[::-1], np.float64) / 2.0 * float(spx)   # specimen corner - centred (xyz)
            to_centred = np.median(centred[-1] - c, axis=0)                    # this grid's corner -> centred
            ids = np.asarray(p["particle"].values, np.int64)
            occ.append(OccupancySource(str(store), int(t), name, sshape, float(spx),
                                       {"centred": half, "corner": to_centred + half},
                                       {int(i): row0 + k for k, i in enumerate(ids)}))
        row0 += n
    frames = {"corner": np.concatenate(corner) if corner else np.zeros((0, 3))}
    if have_centred:
        frames["centred"] = np.concatenate(centred) if centred else np.zeros((0, 3))
    return PointTable(str(store), np.concatenate(names) if names else np.zeros(0, object), frames,
                      tomo=np.concatenate(tnames) if tnames else np.zeros(0, object),
                      radius_A=np.concatenate(radius) if radius else np.zeros(0),
                      class_id=np.concatenate(cids) if cids else np.zeros(0, np.int64), tomograms=[tomo_name(int(t)) for t in tomos], occupancy=occ)


def occupancy_hits(truth: PointTable, xyz: np.ndarray, pick_tomo: np.ndarray, frame: str) -> tuple[np.ndarray, int]:
    """SHREC'21's lookup: the truth row each pick's voxel belongs to in the dilated occupancy.

    Per tomogram with an :class:`~faket_dask.stages.scoring_points.OccupancySource`: the pick's
    voxel in the specimen volume (:func:`~faket_dask.kernels.scoring_match.pick_voxels`, clipped
    into it), the maximum occupancy id over it and its 6 face neighbours
    (:func:`~faket_dask.kernels.scoring_match.cross_neighbours`), the id's row (ids of rows not in
    the truth, e.g. other classes, and 0 are background). Only the voxels needed are read (dask
    ``vindex``).

    Returns
    -------
    (ndarray (M,) int64, int)
        Rows (:data:`HIT_BACKGROUND`; :data:`HIT_BY_RADIUS` where the tomogram has no occupancy)
        and the number of picks that lay outside a volume.
    """
    from ..store import open as open_group

    hits = np.full(len(xyz), HIT_BY_RADIUS, dtype=np.int64)
    outside = 0
    for src in truth.occupancy:
        m = np.flatnonzero(pick_tomo == src.name)
        if len(m) == 0:
            continue
        vox, out = pick_voxels(xyz[m] + src.shift[frame], src.pixel_size_A, src.shape_zyx)
        outside += int(out.sum())
        neigh = cross_neighbours(vox, src.shape_zyx).reshape(-1, 3)
        uniq, inv = np.unique(neigh, axis=0, return_inverse=True)
        arr = open_group(src.store, specimen_group(src.tomo))["occupancy"].data
        vals = np.asarray(arr.vindex[uniq[:, 0], uniq[:, 1], uniq[:, 2]].compute(), dtype=np.int64)
        ids = vals[np.asarray(inv).reshape(-1)].reshape(len(m), -1).max(axis=1)
        hits[m] = [src.rows.get(int(i), HIT_BACKGROUND) for i in ids]
    return hits, outside
