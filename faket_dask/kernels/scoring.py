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
:func:`score_picks` returns a :class:`ScoreResult`; ``docs/scoring.md`` describes each field.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

#: The metrics :func:`score_picks` knows.
METRICS = ("shrec", "czii")
#: CZII: a pick finds a particle within this fraction of the particle's radius
#: (the Kaggle metric's ``distance_multiplier=0.5``).
CZII_DISTANCE_MULTIPLIER = 0.5
#: CZII: β of the per-class F-beta (recall weighs β² = 16 times precision).
CZII_BETA = 4.0
#: The CZII challenge's class weights and radii (Å), for reference; our default weight is 1 for
#: every class (pass ``weights=CZII_CHALLENGE_WEIGHTS`` to reproduce the challenge's score).
CZII_CHALLENGE_WEIGHTS = {"apo-ferritin": 1.0, "beta-amylase": 0.0, "beta-galactosidase": 2.0,
                          "ribosome": 1.0, "thyroglobulin": 2.0, "virus-like-particle": 1.0}
CZII_CHALLENGE_RADII_A = {"apo-ferritin": 60.0, "beta-amylase": 65.0, "beta-galactosidase": 90.0,
                          "ribosome": 150.0, "thyroglobulin": 130.0, "virus-like-particle": 135.0}
#: Row / column of the confusion matrix for "no particle" (SHREC's class 0).
BACKGROUND = "background"
#: Hit codes of :func:`score_picks`'s ``hits``: no particle there / decide by radius.
HIT_BACKGROUND = -1
HIT_BY_RADIUS = -2
#: The face-connected cross (the voxel and its 6 neighbours): skimage's default footprint of
#: ``morphology.dilation``, with which SHREC'21 dilates its occupancy mask.
CROSS_ZYX = np.array([[0, 0, 0], [-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]])


# -- counts ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Counts:
    """True positives, false positives and false negatives, with the rates derived from them.

    ``precision = tp / (tp + fp)``, ``recall = tp / (tp + fn)``, ``f1`` and ``fbeta`` the
    harmonic means weighting recall β² times; each is 0 when its denominator is 0 (the CZII
    metric's convention, and scikit-learn's ``zero_division=0``).
    """

    tp: int
    fp: int
    fn: int
    beta: float = CZII_BETA

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp > 0 else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn > 0 else 0.0

    @property
    def f1(self) -> float:
        return f_beta(self.precision, self.recall, 1.0)

    @property
    def fbeta(self) -> float:
        return f_beta(self.precision, self.recall, self.beta)

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.beta)

    def as_dict(self, *, with_fbeta: bool = True) -> dict[str, float | int]:
        out: dict[str, float | int] = {"tp": int(self.tp), "fp": int(self.fp), "fn": int(self.fn),
                                       "precision": float(self.precision), "recall": float(self.recall),
                                       "f1": float(self.f1)}
        if with_fbeta:
            out["fbeta"] = float(self.fbeta)
        return out


def f_beta(precision: float, recall: float, beta: float) -> float:
    """``(1 + β²) p r / (β² p + r)``, 0 when ``p + r = 0`` (the CZII metric's formula)."""
    if precision + recall <= 0:
        return 0.0
    b2 = float(beta) ** 2
    return (1.0 + b2) * precision * recall / (b2 * precision + recall)


# -- matching ----------------------------------------------------------------------------------
def _points(xyz, what: str) -> np.ndarray:
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

    ref = _points(ref_xyz, "truth")
    cand = _points(cand_xyz, "picks")
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

    picks = _points(pick_xyz, "picks")
    truth = _points(truth_xyz, "truth")
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
    xyz = _points(xyz_A, "picks")
    zyx = np.floor(xyz[:, ::-1] / float(pixel_size_A)).astype(np.int64)
    hi = np.asarray(shape_zyx, dtype=np.int64) - 1
    clipped = np.clip(zyx, 0, hi)
    return clipped, np.any(clipped != zyx, axis=1)


# -- scoring -----------------------------------------------------------------------------------
@dataclass
class ScoreResult:
    """The numbers of one scoring; :meth:`to_dict` is the stable JSON shape of ``--out``.

    Attributes
    ----------
    metric : str
        ``"shrec"`` or ``"czii"``.
    localization : Counts
        Class-blind counts (see :func:`score_picks`).
    classes : dict of str to Counts
        Per true class, sorted by name.
    classification_macro_f1 : float
        Mean of ``classes[c].f1`` over the true classes.
    score : float
        The metric's headline number: ``classification_macro_f1`` (shrec) or the weighted mean
        of ``classes[c].fbeta`` (czii).
    labels : list of str
        Rows and columns of ``confusion``: the true classes, then :data:`BACKGROUND`.
    confusion : ndarray (K + 1, K + 1) int64
        ``confusion[t, p]``: true particles of class ``t`` whose first pick has class ``p``
        (column ``background``: found by no pick); row ``background``: picks on no particle,
        by their class.
    weights : dict of str to float
        Class weights of the czii score (all classes; 1 unless given).
    beta : float
        β of every ``fbeta``.
    n_picks, n_truth : int
        Picks and true particles scored.
    duplicates : int
        Picks on an already found particle (not the first one on it).
    outside : int
        Picks outside the occupancy volume (clipped into it, as SHREC'21 does); 0 without one.
    """

    metric: str
    localization: Counts
    classes: dict[str, Counts]
    classification_macro_f1: float
    score: float
    labels: list[str]
    confusion: np.ndarray
    weights: dict[str, float] = field(default_factory=dict)
    beta: float = CZII_BETA
    n_picks: int = 0
    n_truth: int = 0
    duplicates: int = 0
    outside: int = 0

    def to_dict(self) -> dict:
        """``{"metric", "localization": {tp, fp, fn, precision, recall, f1}, "classes": {NAME:
        {tp, fp, fn, precision, recall, f1, fbeta}}, "classification_macro_f1", "score"}``."""
        return {
            "metric": self.metric,
            "localization": self.localization.as_dict(with_fbeta=False),
            "classes": {k: v.as_dict() for k, v in self.classes.items()},
            "classification_macro_f1": float(self.classification_macro_f1),
            "score": float(self.score),
        }


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
      volume (:func:`pick_voxels`, :func:`cross_neighbours`) — or, where ``hits`` is
      :data:`HIT_BY_RADIUS` or not given, the nearest centre within the particle's radius
      (:func:`nearest_within`);
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
    pxyz, txyz = _points(pick_xyz, pl), _points(truth_xyz, tl)
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
