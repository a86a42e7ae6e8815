"""What a scoring counts and returns: TP/FP/FN with their rates, and the result of one scoring.

:class:`Counts` holds one set of true positives, false positives and false negatives with
precision, recall, F1 and F-beta (:func:`f_beta`, the CZII metric's formula);
:class:`ScoreResult` is what :func:`~faket_dask.kernels.scoring.score_picks` returns, and its
:meth:`~ScoreResult.to_dict` is the stable JSON shape of ``faket-dask score --out``
(``docs/scoring.md`` describes each field). Pure Python and numpy; no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: CZII: β of the per-class F-beta (recall weighs β² = 16 times precision).
CZII_BETA = 4.0
#: Row / column of the confusion matrix for "no particle" (SHREC's class 0).
BACKGROUND = "background"


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


@dataclass
class ScoreResult:
    """The numbers of one scoring; :meth:`to_dict` is the stable JSON shape of ``--out``.

    Attributes
    ----------
    metric : str
        ``"shrec"`` or ``"czii"``.
    localization : Counts
        Class-blind counts (see :func:`~faket_dask.kernels.scoring.score_picks`).
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
