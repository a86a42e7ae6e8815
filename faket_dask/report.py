"""Figures for reports (matplotlib, Agg canvas: no display and no global backend change).

* :func:`plot_noise_curves`: per-tilt noise curves of a :class:`~faket_dask.NoiseModel`, raw
  values of every reference as dots, the fitted-and-averaged polynomials as lines.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .noise_model import NoiseModel

#: Panels of the noise-curve figure: variable -> axis label.
NOISE_PANELS: dict[str, str] = {
    "r": "r  (weight of the signal)",
    "sigma": "σ  (noise std, normalised)",
    "mean": "mean of the tilt",
    "std": "std of the tilt",
}


def plot_noise_curves(
    model: NoiseModel,
    path: str | Path,
    *,
    orders: Iterable[int] | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Save a PNG of the model's per-tilt curves and their polynomial fits.

    One panel per variable (``r``, ``sigma``, ``mean``, ``std``) against the tilt angle
    (degrees; the tilt index when the model has no angles). Dots: raw curve of each reference.
    Lines: the fitted curves averaged over references, one line per order (solid for the
    model's own order, dashed for the others).

    Parameters
    ----------
    model : NoiseModel
        The model to show.
    path : path
        Output PNG file (parent directories are created).
    orders : iterable of int, optional
        Fit orders to draw (default: the model's order, then 2 and 0).
    title : str, optional
        Figure title (default: a summary of the model).
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ords = [model.order]
    for o in orders if orders is not None else (2, 0):
        if int(o) not in ords:
            ords.append(int(o))
    angles = model.angles_deg
    x = angles if angles is not None else np.arange(model.n_tilts)
    xlabel = "tilt angle (°)" if angles is not None else "tilt index"

    fig = Figure(figsize=(10, 7), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, sharex=True).ravel()
    colours = [f"C{i % 10}" for i in range(model.n_references)]
    fits = {o: model.with_order(o).curves for o in ords}
    for ax, (var, label) in zip(axes, NOISE_PANELS.items()):
        for i in range(model.n_references):
            src = model.sources[i].get("measured", f"reference {i}") if model.sources else f"reference {i}"
            ax.plot(x, model.raw[var].values[i], "o", ms=3, alpha=0.6, color=colours[i], label=f"raw: {src}")
        for j, o in enumerate(ords):
            ax.plot(
                x, fits[o][var].values, "-" if j == 0 else "--", lw=2 if j == 0 else 1.5,
                color="k" if j == 0 else f"C{(j + 3) % 10}", label=f"fit, order {o} (mean of {model.n_references})",
            )
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for ax in axes[2:]:
        ax.set_xlabel(xlabel)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title or f"FakET noise model ({model.method}, {model.n_references} reference(s), {model.n_tilts} tilts)")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, format="png")
    return out
