"""The confusion-matrix figure of ``faket-dask score`` (one PNG, matplotlib on an Agg canvas).

SHREC'21's evaluation drew its confusion matrix with ``scikitplot.metrics.plot_confusion_matrix``
(true class down, predicted across, counts in the cells); this draws the same layout from a
:class:`~faket_dask.kernels.scoring_result.ScoreResult` without those extra packages: colour = the
fraction of the row, text = the count (zeros left blank).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..kernels.scoring_result import ScoreResult
from .drawing import new_figure, save_png


def plot_confusion(result: ScoreResult, path: str | Path, *, dpi: int = 120, title: str | None = None) -> Path:
    """Draw ``result.confusion`` (rows: true class, then ``background`` = picks on no particle;
    columns: class of the particle's first pick, then ``background`` = never found) to ``path``."""
    cm = np.asarray(result.confusion, dtype=np.int64)
    labels = list(result.labels)
    k = len(labels)
    side = min(16.0, 2.5 + 0.55 * k)
    fig = new_figure((side + 1.2, side))
    ax = fig.add_subplot(1, 1, 1)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the row")
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("picked class (first pick on the particle; background: not found)")
    ax.set_ylabel("true class (background: picks on no particle)")
    size = max(6.0, 11.0 - 0.25 * k)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=size,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set_title(title or f"{result.metric}: score {result.score:.3f}, localisation F1 {result.localization.f1:.3f}")
    return save_png(fig, path, dpi)
