"""Scoring particle picks against the true particles: SHREC'21 and CZII rules (pure numpy/scipy).

Two metrics, each following its challenge's own evaluation code (quoted in the functions):

* ``"shrec"`` — the SHREC 2021 cryo-ET track (``misc/eval.py`` of the track's repository, as
  re-published with FakET's bug fixes in FakET's ``evaluation/eval.py``): a pick is a *hit* on
  the particle whose (one-voxel dilated) occupancy it falls in; without an occupancy volume we
  use the nearest true centre within that particle's radius instead. Localisation counts each
  found particle once; classification takes the class of the *first* pick (in input order) on
  each particle. Headline: the classification macro-F1 over the true classes.
* ``"czii"`` — the CZ Imaging Institute "CryoET Object Identification" Kaggle challenge (2024-25;
  metric notebook ``kaggle.com/code/metric/czi-cryoet-84969``, ``score`` and ``compute_metrics``):
  per class and tomogram, a true particle is found when a pick *of the same class* lies within
  ``0.5 × radius`` of it; TP/FP/FN are summed over tomograms, then F-beta (β = 4) per class;
  headline: the weighted mean of the per-class F-beta.

Positions are in Å in one common frame (the caller converts); nothing here reads files.
:func:`score_picks` returns a :class:`~faket_dask.kernels.scoring_result.ScoreResult`
(``docs/scoring.md`` describes each field); the geometric matching rules are
:mod:`faket_dask.kernels.scoring_match`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import InputError
from .scoring_match import (
    HIT_BACKGROUND,
    HIT_BY_RADIUS,
    as_points,
    czii_counts,
    nearest_within,
)
from .scoring_result import BACKGROUND, CZII_BETA, Counts, ScoreResult

#: The metrics :func:`score_picks` knows.
METRICS = ("shrec", "czii")
#: CZII: a pick finds a particle within this fraction of the particle's radius
#: (the Kaggle metric's ``distance_multiplier=0.5``).
CZII_DISTANCE_MULTIPLIER = 0.5
#: The CZII challenge's class weights and radii (Å), for reference; our default weight is 1 for
#: every class (pass ``weights=CZII_CHALLENGE_WEIGHTS`` to reproduce the challenge's score).
CZII_CHALLENGE_WEIGHTS = {"apo-ferritin": 1.0, "beta-amylase": 0.0, "beta-galactosidase": 2.0,
                          "ribosome": 1.0, "thyroglobulin": 2.0, "virus-like-particle": 1.0}
CZII_CHALLENGE_RADII_A = {"apo-ferritin": 60.0, "beta-amylase": 65.0, "beta-galactosidase": 90.0,
                          "ribosome": 150.0, "thyroglobulin": 130.0, "virus-like-particle": 135.0}


def _names(a, n: int, what: str) -> np.ndarray:
    out = np.asarray(a).astype(str).reshape(-1) if n else np.zeros(0, dtype=str)
    if len(out) != n:
        raise InputError(f"{what}: {len(out)} class names for {n} positions")
    return out


def _tomos(a, n: int, what: str) -> np.ndarray:
    if a is None:
        return np.full(n, "", dtype=object)
    out = np.asarray(a).astype(str).reshape(-1).astype(object)
    if len(out) != n:
        raise InputError(f"{what}: {len(out)} tomogram names for {n} positions")
    return out


def check_weights(weights: Mapping[str, float] | None, classes: Sequence[str], what: str = "weights") -> dict[str, float]:
    """Class weights for every class (1 unless given); InputError for unknown classes,
    negative or non-finite weights, or weights summing to 0."""
    w = {c: 1.0 for c in classes}
    unknown = sorted(set(weights or {}) - set(classes))
    if unknown:
        raise InputError(f"{what}: no class {', '.join(unknown)} in the truth (its classes: {', '.join(classes)})")
    for k, v in (weights or {}).items():
        v = float(v)
        if not np.isfinite(v) or v < 0:
            raise InputError(f"{what}: the weight of {k} must be a finite number >= 0, got {v}")
        w[k] = v
    if classes and sum(w.values()) <= 0:
        raise InputError(f"{what}: the class weights sum to 0")
    return w


def score_picks(
    pick_class,
    pick_xyz,
    truth_class,
    truth_xyz,
    truth_radius=None,
    *,
    metric: str = "shrec",
    pick_tomo=None,
    truth_tomo=None,
    beta: float = CZII_BETA,
    weights: Mapping[str, float] | None = None,
    hits=None,
    outside: int = 0,
    labels: tuple[str, str] = ("picks", "truth"),
) -> ScoreResult:
    """Score picked particles against the true ones by the SHREC'21 or the CZII rules.

    **Assignment** (both metrics; gives the SHREC localisation and the confusion matrix): each
    pick goes to at most one true particle of its tomogram, whatever the classes:

    * ``shrec``: the particle whose occupancy the pick falls in — ``hits`` from an occupancy
      volume (:func:`~.scoring_match.pick_voxels`, :func:`~.scoring_match.cross_neighbours`)
      — or, where ``hits`` is :data:`HIT_BY_RADIUS` or not given, the nearest centre within the
      particle's radius (:func:`nearest_within`);
    * ``czii``: the nearest centre within ``0.5 ×`` the particle's radius.

    **SHREC'21** (``misc/eval.py``): ``found_particles[gt_id].append(...)`` for every pick, then
    TP = particles found at least once (``n_unique_particles_found``), FN = particles never found,
    recall = TP / particles, precision = TP / picks (``localization_precision =
    n_unique_particles_found / n_predicted_particles``), F1 = their harmonic mean. We report
    ``fp = picks - TP``: background picks *and* extra picks on a found particle, so that
    ``precision = tp / (tp + fp)`` is SHREC's precision (SHREC's own printed "FP" counts the
    background picks only). Classification: each particle's predicted class is that of its
    *first* pick in input order ("taking the first occurrence only"), background when none; per
    class ``c`` over the true particles (pycm's one-vs-rest counts): ``tp`` = class-``c``
    particles predicted ``c``, ``fp`` = other particles predicted ``c``, ``fn`` = class-``c``
    particles predicted otherwise or missed. Picks on no particle are left out of the
    classification, as in SHREC (they are in the localisation's fp). ``score`` = the macro-F1 over
    the true classes (pycm's "F1 Macro" would also average a ``background`` class, whose F1 is 0
    as soon as one particle is missed; we leave it out).

    **CZII** (Kaggle ``score``): per class and tomogram :func:`czii_counts` of the picks *of that
    class* against the true particles of that class with matching radius ``0.5 × radius``; TP,
    FP and FN are summed over the tomograms, *then* precision, recall and F-beta per class
    ("raw results (TP, FP, FN) are aggregated across all experiments for each particle type");
    ``score = Σ w_c Fβ_c / Σ w_c`` over the true classes. A pick of the wrong class is a FP of its
    class and leaves the particle a FN of its own. ``localization`` (not part of the challenge)
    is the same rule with the classes pooled; ``classification_macro_f1`` the mean per-class F1.

    Parameters
    ----------
    pick_class, truth_class : array of str, shape (M,) / (N,)
        Class names; every pick class must be a true class.
    pick_xyz, truth_xyz : array (M, 3) / (N, 3)
        Positions in Å, one frame for both.
    truth_radius : float or array (N,), optional
        Particle radii (Å), needed wherever the radius rule is used (czii; shrec without hits).
    metric : {"shrec", "czii"}
    pick_tomo, truth_tomo : array of str, optional
        Tomogram of each row (default: all in one). Picks only match particles of their own
        tomogram; picks in a tomogram without true particles are all false positives.
    beta : float
        β of the per-class ``fbeta`` (both metrics; CZII's is 4).
    weights : mapping of class to float, optional
        czii class weights (default 1 each).
    hits : int array (M,), optional
        shrec: the true row each pick falls in (its occupancy), :data:`HIT_BACKGROUND` for none,
        :data:`HIT_BY_RADIUS` to use the radius rule for that pick.
    outside : int
        Picks that lay outside the occupancy volume (reported only).
    labels : (str, str)
        Names of the two tables in error messages.

    Returns
    -------
    ScoreResult

    Raises
    ------
    InputError
        Unknown metric, β <= 0, pick classes absent from the truth, no true
        particle, a missing or non-positive radius where one is needed, bad weights, bad shapes.
    """
    pl, tl = labels
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r} (use {' or '.join(METRICS)})")
    beta = float(beta)
    if not np.isfinite(beta) or beta <= 0:
        raise InputError(f"beta must be > 0, got {beta}")
    pxyz, txyz = as_points(pick_xyz, pl), as_points(truth_xyz, tl)
    pcls, tcls = _names(pick_class, len(pxyz), pl), _names(truth_class, len(txyz), tl)
    ptomo, ttomo = _tomos(pick_tomo, len(pxyz), pl), _tomos(truth_tomo, len(txyz), tl)
    if len(txyz) == 0:
        raise InputError(f"{tl}: no true particles to score against")
    classes = sorted(set(tcls.tolist()))
    absent = sorted(set(pcls.tolist()) - set(classes))
    if absent:
        raise InputError(f"{tl}: has no class {', '.join(absent)} of the {pl} (its classes: {', '.join(classes)})")
    w = check_weights(weights, classes) if metric == "czii" else check_weights(None, classes)
    if hits is not None:
        hits = np.asarray(hits, dtype=np.int64).reshape(-1)
        if len(hits) != len(pxyz) or np.any(hits >= len(txyz)) or np.any(hits < HIT_BY_RADIUS):
            raise InputError(f"{pl}: hits must hold one truth row (or -1, -2) per pick")
        ok = hits < 0
        ok[~ok] = ttomo[hits[~ok]] == ptomo[~ok]
        if not np.all(ok):
            raise InputError(f"{pl}: a hit lies in another tomogram than its pick")
    need = np.ones(len(pxyz), dtype=bool) if (metric == "czii" or hits is None) else hits == HIT_BY_RADIUS
    radius = _radii(truth_radius, tcls, ttomo, ptomo[need], metric, tl)
    scale = CZII_DISTANCE_MULTIPLIER if metric == "czii" else 1.0

    # assignment: one true row (or -1) per pick, tomogram by tomogram
    assigned = np.full(len(pxyz), HIT_BACKGROUND, dtype=np.int64)
    if hits is not None and metric == "shrec":
        assigned[:] = np.where(hits == HIT_BY_RADIUS, HIT_BACKGROUND, hits)
    for t in sorted(set(ptomo[need].tolist())):
        pm = need & (ptomo == t)
        tm = np.flatnonzero(ttomo == t)
        near = nearest_within(pxyz[pm], txyz[tm], scale * radius[tm])
        assigned[pm] = np.where(near >= 0, tm[np.maximum(near, 0)], HIT_BACKGROUND)

    # first pick per particle (input order), duplicates, confusion matrix
    first_pick = np.full(len(txyz), -1, dtype=np.int64)
    on = np.flatnonzero(assigned >= 0)
    rows, idx = np.unique(assigned[on], return_index=True)
    first_pick[rows] = on[idx]
    found = first_pick >= 0
    duplicates = int(len(on) - found.sum())
    names = classes + [BACKGROUND]
    col = {c: i for i, c in enumerate(names)}
    k = len(classes)
    cm = np.zeros((k + 1, k + 1), dtype=np.int64)
    pred = np.where(found, pcls[np.maximum(first_pick, 0)] if len(pcls) else BACKGROUND, BACKGROUND)
    np.add.at(cm, (np.array([col[c] for c in tcls]), np.array([col[c] for c in pred], dtype=np.int64)), 1)
    bg = assigned < 0
    if bg.any():
        np.add.at(cm, (np.full(int(bg.sum()), k), np.array([col[c] for c in pcls[bg]])), 1)

    if metric == "shrec":
        tp = int(found.sum())
        loc = Counts(tp, len(pxyz) - tp, len(txyz) - tp, beta)
        per = {c: Counts(int(cm[i, i]), int(cm[:k, i].sum() - cm[i, i]), int(cm[i].sum() - cm[i, i]), beta)
               for i, c in enumerate(classes)}
    else:
        loc = Counts(0, 0, 0, beta)
        per = {c: Counts(0, 0, 0, beta) for c in classes}
        for t in sorted(set(ttomo.tolist()) | set(ptomo.tolist())):
            pm, tm = ptomo == t, ttomo == t
            loc = loc + Counts(*czii_counts(txyz[tm], scale * radius[tm], pxyz[pm]), beta)
            for c in classes:
                rm, cm_ = tm & (tcls == c), pm & (pcls == c)
                per[c] = per[c] + Counts(*czii_counts(txyz[rm], scale * radius[rm], pxyz[cm_]), beta)
    macro = float(np.mean([per[c].f1 for c in classes]))
    if metric == "shrec":
        score = macro
    else:
        score = float(sum(w[c] * per[c].fbeta for c in classes) / sum(w.values()))
    return ScoreResult(metric=metric, localization=loc, classes=per, classification_macro_f1=macro,
                       score=score, labels=names, confusion=cm, weights=w, beta=beta,
                       n_picks=len(pxyz), n_truth=len(txyz), duplicates=duplicates, outside=int(outside))


def _radii(truth_radius, tcls: np.ndarray, ttomo: np.ndarray, pick_tomos: np.ndarray, metric: str,
           what: str) -> np.ndarray:
    """Per-row radii; InputError naming the classes without a usable radius where one is needed
    (czii: every class; shrec: the classes of tomograms with radius-rule picks)."""
    n = len(tcls)
    if truth_radius is None:
        r = np.full(n, np.nan)
    else:
        r = np.broadcast_to(np.asarray(truth_radius, dtype=np.float64), (n,)).copy()
    if metric == "czii":
        used = np.ones(n, dtype=bool)
    else:
        used = np.isin(ttomo, np.unique(pick_tomos)) if len(pick_tomos) else np.zeros(n, dtype=bool)
    bad = used & ~(np.isfinite(r) & (r > 0))
    if bad.any():
        missing = sorted(set(tcls[bad].tolist()))
        raise InputError(f"{what}: no radius for class {', '.join(missing)} "
                         f"(give one: --radius {missing[0]}=Å)")
    return r
