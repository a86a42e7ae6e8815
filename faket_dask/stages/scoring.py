"""Scoring picks files against a truth (``faket-dask score``): read, reconcile, score.

:func:`score_files` reads the picks (:func:`~faket_dask.stages.scoring_points.read_points`) and
the truth (a file, or a run store through
:func:`~faket_dask.stages.scoring_truth.truth_from_store`), reconciles them — class names from
class ids, ``--classes``, ``--radius``, tomograms, a common frame (``docs/scoring.md``) — and
scores them with :func:`faket_dask.kernels.scoring.score_picks` (the rules; no I/O there). The
outputs are :mod:`faket_dask.stages.scoring_outputs`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..kernels.scoring import METRICS, score_picks
from ..kernels.scoring_result import ScoreResult
from .scoring_points import FRAMES, TOMO_COLUMNS, PointTable, read_points
from .scoring_truth import occupancy_hits, truth_from_store


def _parse_pairs(items: Mapping[str, float] | Sequence[str] | None, option: str) -> dict[str, float]:
    """``["NAME=VALUE", ...]`` (or a mapping) as ``{NAME: float}``."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(k): float(v) for k, v in items.items()}
    out = {}
    for s in items:
        name, sep, value = str(s).rpartition("=")
        try:
            v = float(value)
        except ValueError:
            v = float("nan")
        if not sep or not name.strip() or not np.isfinite(v):
            raise InputError(f"{option} {s!r}: give NAME=NUMBER")
        out[name.strip()] = v
    return out


def _tomograms(picks: PointTable, truth: PointTable, notes: list[str]) -> tuple[PointTable, np.ndarray, np.ndarray]:
    """Each pick's and each true particle's tomogram, and the picks kept (CZII keeps the picks
    of the truth's tomograms only)."""
    t_names = truth.tomograms or (sorted(set(truth.tomo.tolist())) if truth.tomo is not None else None)
    if truth.tomo is None:
        if picks.tomo is not None and len(set(picks.tomo.tolist())) > 1:
            raise InputError(f"{picks.source}: picks in {len(set(picks.tomo.tolist()))} tomograms, but "
                             f"{truth.source} names no tomogram (add a tomo column)")
        return picks, np.full(len(picks), "", object), np.full(len(truth), "", object)
    if picks.tomo is None:
        if len(t_names or []) > 1:
            raise InputError(f"{picks.source}: no tomogram column ({', '.join(TOMO_COLUMNS)}); the truth has "
                             f"{len(t_names or [])} tomograms")
        only = (t_names or [""])[0]
        return picks, np.full(len(picks), only, object), truth.tomo
    keep = np.isin(picks.tomo, list(t_names or []))
    if len(picks) and not keep.any():
        raise InputError(f"{picks.source}: no pick lies in a tomogram of the truth (picks: "
                         f"{', '.join(sorted(set(picks.tomo.tolist()))[:5])}; truth: {', '.join((t_names or [])[:5])})")
    if not keep.all():
        other = sorted(set(picks.tomo[~keep].tolist()))
        notes.append(f"ignored {int((~keep).sum())} picks in tomograms not in the truth: {', '.join(other[:5])}"
                     + (" ..." if len(other) > 5 else ""))
        picks = picks.select(keep)
    return picks, picks.tomo, truth.tomo


def _frame(picks: PointTable, truth: PointTable) -> str:
    for f in FRAMES:
        if f in picks.frames and f in truth.frames:
            return f
    raise InputError(f"{picks.source} has positions in {' and '.join(sorted(picks.frames))} Å, "
                     f"{truth.source} in {' and '.join(sorted(truth.frames))} Å: no common frame "
                     "(give voxel positions with --pixel-size-A, or Å from the volume corner)")


def score_files(
    picks: str | Path,
    truth: str | Path,
    *,
    metric: str = "shrec",
    tomos: Sequence[int] | None = None,
    tomo_grid: bool = False,
    radius: Mapping[str, float] | Sequence[str] | None = None,
    pixel_size_A: float | None = None,
    beta: float = 4.0,
    weights: Mapping[str, float] | Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
) -> tuple[ScoreResult, list[str]]:
    """Read picks and truth, reconcile them and score them (:func:`~faket_dask.kernels.scoring.score_picks`).

    Parameters
    ----------
    picks : path
        ``.csv``, ``.star`` or SHREC ``.txt`` (:func:`~faket_dask.stages.scoring_points.read_points`).
    truth : path
        A run store (its particle table, :func:`~faket_dask.stages.scoring_truth.truth_from_store`)
        or a file as ``picks``.
    metric : {"shrec", "czii"}
    tomos : list of int, optional
        Tomograms of a run store (default ``[0]``).
    tomo_grid : bool
        The run store's tomogram-grid table (``labels_particles``): positions from the
        reconstructed tomogram's corner, which is where a picker working on it measures.
    radius : mapping or ``["NAME=Å", ...]``, optional
        Class radii replacing the truth's ``radius_A``.
    pixel_size_A : float, optional
        Voxel size of files with voxel positions only.
    beta : float
        β of the per-class F-beta.
    weights : mapping or ``["NAME=w", ...]``, optional
        czii class weights (default 1).
    classes : list of str, optional
        Score these true classes only: other true particles and other picks are dropped (a pick
        on a dropped particle's occupancy counts as background).

    Returns
    -------
    (ScoreResult, list of str)
        The score and notes for the user (picks ignored, picks outside the volume).
    """
    if metric not in METRICS:
        raise InputError(f"--metric must be {' or '.join(METRICS)}, got {metric!r}")
    radius_map = _parse_pairs(radius, "--radius")
    weight_map = _parse_pairs(weights, "--weight")
    if weight_map and metric != "czii":
        raise InputError("--weight applies to --metric czii only")
    bad = [k for k, v in radius_map.items() if v <= 0]
    if bad:
        raise InputError(f"--radius {bad[0]}: the radius must be > 0 Å")
    from ..store import is_store

    tpath = Path(truth)
    if is_store(tpath):
        t = truth_from_store(tpath, list(tomos) if tomos else [0], grid="tomogram" if tomo_grid else "specimen")
    else:
        if tomos or tomo_grid:
            raise InputError(f"{tpath}: --tomo and --tomo-grid apply to a run store truth, not to a file")
        if tpath.is_dir():
            raise InputError(f"{tpath}: not a run store (no zarr.json) and not a particle file")
        t = read_points(tpath, pixel_size_A=pixel_size_A)
        if t.class_name is None:
            raise InputError(f"{tpath}: the truth needs class names (class_name, particle_type or rlnClassName)")
    p = read_points(picks, pixel_size_A=pixel_size_A)
    notes: list[str] = []
    if p.class_name is None:                       # class ids only: named by the truth's ids
        tid = _truth_class_ids(t)
        if tid is None:
            raise InputError(f"{p.source}: has class ids only, and {t.source} has no class ids to name them")
        unknown = sorted(set(p.class_id.tolist()) - set(tid))
        if unknown:
            raise InputError(f"{t.source}: has no class id {', '.join(map(str, unknown))} of {p.source}")
        p = replace(p, class_name=np.array([tid[int(i)] for i in p.class_id], dtype=object))
    t_classes = sorted(set(t.class_name.tolist()))
    if classes:
        unknown = sorted(set(classes) - set(t_classes))
        if unknown:
            raise InputError(f"--classes: {t.source} has no class {', '.join(unknown)} (its classes: {', '.join(t_classes)})")
        t = t.select(np.isin(t.class_name, list(classes)))
        dropped = ~np.isin(p.class_name, list(classes))
        if dropped.any():
            notes.append(f"ignored {int(dropped.sum())} picks of classes not in --classes")
            p = p.select(~dropped)
    unknown = sorted(set(radius_map) - set(t.class_name.tolist()))
    if unknown:
        raise InputError(f"--radius: {t.source} has no class {', '.join(unknown)}")
    r = np.full(len(t), np.nan) if t.radius_A is None else np.asarray(t.radius_A, np.float64).copy()
    for name, v in radius_map.items():
        r[t.class_name == name] = v
    absent = sorted(set(p.class_name.tolist()) - set(t.class_name.tolist()))
    if absent:
        raise InputError(f"{t.source}: has no class {', '.join(absent)} of the picks in {p.source} "
                         f"(its classes: {', '.join(sorted(set(t.class_name.tolist())))})")
    p, ptomo, ttomo = _tomograms(p, t, notes)
    frame = _frame(p, t)
    hits, outside = None, 0
    if metric == "shrec" and t.occupancy and len(p):
        hits, outside = occupancy_hits(t, p.frames[frame], ptomo, frame)
        if outside:
            notes.append(f"{outside} picks lie outside the specimen volume (clipped to its border, as SHREC'21 does)")
    result = score_picks(p.class_name, p.frames[frame], t.class_name, t.frames[frame], r, metric=metric,
                         pick_tomo=ptomo, truth_tomo=ttomo, beta=beta, weights=weight_map or None,
                         hits=hits, outside=outside, labels=(p.source, t.source))
    return result, notes


def _truth_class_ids(t: PointTable) -> dict[int, str] | None:
    if t.class_id is not None and t.class_name is not None:
        return {int(i): str(n) for i, n in zip(t.class_id, t.class_name)}
    return None
