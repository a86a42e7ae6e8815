"""Figures of ``faket-dask compare``: one PNG per measure, the modalities side by side.

Drawn from the result dict alone (:func:`faket_dask.stages.compare.compare`, the same numbers
as ``compare.json``), so nothing is read or computed here. Each figure has one panel per
simulated modality, in :data:`~faket_dask.report.drawing.MODALITY_ORDER`; the reference is the
black dashed line in every panel and the panel title gives the pooled distance
(``docs/compare.md``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..params.compare import COMPARE_MEASURES
from .drawing import new_figure, ordered_modalities, save_png

__all__ = ["FIGURE_NAMES", "plot_compare"]

#: The histogram figure merges this many bins per drawn step (the distance uses every bin).
DISPLAY_BINS: int = 10

#: Measure -> PNG file name in the output folder.
FIGURE_NAMES: dict[str, str] = {m: f"{m}.png" for m in COMPARE_MEASURES}

_CURVE_LABELS = {
    "mean": "mean of the tilt (data units)",
    "std": "std of the tilt (data units)",
    "noise_sigma": "σ = noise std / tilt std (unpaired)",
    "correlation": "Pearson ρ with noiseless",
}
_TITLES = {
    "spectrum": "radial power spectrum (normalised to unit power in the band; mean over tilts)",
    "mean": "mean over tilts", "std": "std over tilts", "noise_sigma": "noise σ over tilts (unpaired estimate)",
    "histogram": "histogram of values standardised per tilt (pooled over tilts)",
    "correlation": "correlation with noiseless over tilts",
}


def _panels(result: dict[str, Any], measure: str) -> tuple[Any, list[Any], list[str]]:
    mods = ordered_modalities(result["modalities"])
    width = 3.0 * len(mods) + 0.9
    fig = new_figure((width, 3.6), constrained=False)  # fixed placement: a layout engine costs ~3x the drawing
    fig.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, bottom=0.15, top=0.76, wspace=0.08)
    axes = fig.subplots(1, len(mods), sharey=True, squeeze=False)[0]
    n = len(result["tomograms"])
    more = f"; {n} tomograms, one line each, {result['tomograms'][0]} opaque" if n > 1 and measure in _CURVE_LABELS else ""
    fig.suptitle(f"{_TITLES[measure]} — reference: {result['reference']}{more}", fontsize=10)
    for ax, m in zip(axes, mods):
        d = result["pooled"][m][measure]
        ax.set_title(f"{m}\n{measure} distance {d:.4g}" if d is not None else f"{m}\n(no {measure} distance)",
                     fontsize=9)
        ax.grid(alpha=0.3)
    return fig, list(axes), mods


def _colour(i: int) -> str:
    return f"C{i % 10}"


def _spectrum(result: dict[str, Any], path: Path, dpi: int) -> Path:
    fig, axes, mods = _panels(result, "spectrum")
    pxs = {t["pixel_size_A"] for t in result["per_tomogram"].values()}
    first = next(iter(result["per_tomogram"].values()))
    if len(pxs) == 1 and first["spectrum"]["frequency_per_A"] is not None:
        freq, xlabel = np.asarray(first["spectrum"]["frequency_per_A"]), "spatial frequency (1/Å)"
    else:
        freq, xlabel = np.asarray(result["spectrum"]["frequency_per_px"]), "spatial frequency (cycles/pixel)"
    lo, hi = result["settings"]["spectrum"]["band_nyquist"]
    nyq = freq[-1]
    power = result["spectrum"]["power"]
    for i, (ax, m) in enumerate(zip(axes, mods)):
        ax.axvspan(freq[0], lo * nyq, color="0.9", lw=0)  # outside the band
        ref = np.asarray(power[result["reference"]], dtype=np.float64)
        ax.plot(freq, np.log10(ref), "k--", lw=1.2, label=result["reference"])
        ax.plot(freq, np.log10(np.asarray(power[m], dtype=np.float64)), color=_colour(i), lw=1.5, label=m)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=7)
        ax.set_xlim(freq[0], hi * nyq)
    axes[0].set_ylabel("log₁₀ power (unit power in band)")
    return save_png(fig, path, dpi)


def _curve(result: dict[str, Any], measure: str, path: Path, dpi: int) -> Path:
    fig, axes, mods = _panels(result, measure)
    ref_name = result["reference"]
    for i, (ax, m) in enumerate(zip(axes, mods)):
        drawn = False
        for k, (tomo, t) in enumerate(result["per_tomogram"].items()):
            x = t["tilt_angle_deg"] or list(range(len(t["curves"][m]["mean"])))
            for name, style in ((ref_name, {"color": "k", "ls": "--", "lw": 1.0}), (m, {"color": _colour(i), "lw": 1.4})):
                y = t["curves"][name][measure]
                if y is None:
                    continue
                y = np.array([np.nan if v is None else v for v in y], dtype=np.float64)
                ax.plot(x, y, alpha=1.0 if k == 0 else 0.6, label=name if k == 0 else None, **style)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "no noiseless partner", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("tilt angle (°)" if next(iter(result["per_tomogram"].values()))["tilt_angle_deg"] else "tilt")
        if drawn:
            ax.legend(fontsize=7)
    axes[0].set_ylabel(_CURVE_LABELS[measure])
    return save_png(fig, path, dpi)


def _histogram(result: dict[str, Any], path: Path, dpi: int) -> Path:
    fig, axes, mods = _panels(result, "histogram")
    hs = result["settings"]["histogram"]
    lo, width, n = hs["range_std"][0], hs["bin_width_std"], hs["bins"]
    counts = result["histogram"]["counts"]

    # drawn at DISPLAY_BINS x the bin width (the distance uses the fine bins): smoother lines
    f = max(1, min(DISPLAY_BINS, n // 50))
    n_draw = n // f
    width, z = width * f, lo + (np.arange(n_draw) + 0.5) * width * f

    def density(name: str) -> np.ndarray:
        c = np.asarray(counts[name], dtype=np.float64)[: n_draw * f].reshape(n_draw, f).sum(axis=1)
        return np.where(c > 0, c / (c.sum() * width), np.nan)

    ref = density(result["reference"])
    used = np.flatnonzero(np.isfinite(ref))
    span = (z[used[0]] - 0.5, z[used[-1]] + 0.5) if used.size else (lo, -lo)
    keep = (z >= span[0]) & (z <= span[1])  # draw only the reference's range (faster, same view)
    for i, (ax, m) in enumerate(zip(axes, mods)):
        ax.semilogy(z[keep], ref[keep], "k--", lw=1.0, label=result["reference"])
        ax.semilogy(z[keep], density(m)[keep], color=_colour(i), lw=1.2, label=m)
        ax.set_xlim(*span)
        ax.set_xlabel("(value − tilt mean) / tilt std")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("density")
    return save_png(fig, path, dpi)


def plot_compare(result: dict[str, Any], out: str | Path, *, dpi: int = 110) -> list[Path]:
    """Write one PNG per measure of a comparison into ``out``.

    Parameters
    ----------
    result : dict
        :func:`faket_dask.stages.compare.compare`'s result (or ``compare.json`` loaded).
    out : path
        Output folder (created); files :data:`FIGURE_NAMES`.
    dpi : int
        Resolution.

    Returns
    -------
    list of Path
        The PNGs, in the order of :data:`~faket_dask.params.compare.COMPARE_MEASURES`:
        ``spectrum`` (pooled spectra), ``mean``, ``std``, ``noise_sigma`` and ``correlation``
        (per-tilt curves, one line per tomogram), ``histogram`` (pooled standardised densities,
        log scale).
    """
    folder = Path(out)
    paths = []
    for m in COMPARE_MEASURES:
        path = folder / FIGURE_NAMES[m]
        if m == "spectrum":
            paths.append(_spectrum(result, path, dpi))
        elif m == "histogram":
            paths.append(_histogram(result, path, dpi))
        else:
            paths.append(_curve(result, m, path, dpi))
    return paths
