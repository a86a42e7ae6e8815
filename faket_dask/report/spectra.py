"""Radial power spectra of tilt-series and their figure (FAKET against BASELINE and the style).

The spectrum is a dask map over blocks of whole tilts followed by a mean, so only
``T × min(Y, X) / 2`` numbers come back and the result does not depend on the input chunking.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr

from ..chunking import tilts_per_task
from ..datamodel import TILT_DIMS
from ..errors import InputError
from ..kernels.power_spectrum import radial_bins, tilt_power
from ..params import MIB
from ..progress import compute
from .drawing import LazyFigure, as_dask, check_dims, new_figure, render, save_png

#: Input bytes (float32) of one power-spectrum task: whole tilts are batched up to this size
#: (one tilt per task when a tilt is larger), to keep the task count low for small tilts.
SPECTRUM_TASK_BYTES: int = 32 * MIB


def spectrum_tilts_per_task(shape: tuple[int, int, int]) -> int:
    """Whole tilts per power-spectrum task of a (tilt, y, x) stack: up to
    :data:`SPECTRUM_TASK_BYTES` of float32, at least 1. The report opens tilt-series with this
    many tilts per chunk (``store.open(tilts_per_chunk=...)``), so each task reads its own."""
    return tilts_per_task(shape, SPECTRUM_TASK_BYTES)


def _power_graph(ts: xr.DataArray) -> tuple[np.ndarray, da.Array]:
    """Frequencies (1/Å) and the lazy tilt-averaged radial power of a tilt-series."""
    check_dims(ts, TILT_DIMS, "radial_power_spectrum")
    n_t, ny, nx = (ts.sizes[d] for d in TILT_DIMS)
    if n_t < 1 or min(ny, nx) < 2:
        raise InputError(f"radial_power_spectrum: {ts.name or 'tilt-series'} is too small ({n_t} × {ny} × {nx})")
    pixel = float(ts.attrs.get("pixel_size_A", 1.0))
    _, _, nbins = radial_bins(ny, nx)
    # Whole tilts per task: the rows of a tilt are joined (rechunk along y), tilts are batched
    # up to SPECTRUM_TASK_BYTES. The blocks depend on the shape only, not on the input chunks,
    # so the result (sums included) is identical for any chunking.
    per_task = spectrum_tilts_per_task((n_t, ny, nx))
    data = as_dask(ts).rechunk({0: per_task, 1: -1, 2: -1})
    per_tilt = data.map_blocks(
        tilt_power, drop_axis=2, chunks=(data.chunks[0], (nbins,)), dtype=np.float64,
        meta=np.empty((0, 0), np.float64),
    )
    freq = np.arange(1, nbins + 1, dtype=np.float64) / (min(ny, nx) * pixel)
    return freq, per_tilt.mean(axis=0)


def radial_power_spectrum(ts: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """Tilt-averaged radial power spectrum of a tilt-series.

    For each tilt (mean subtracted): the 2D periodogram ``|FFT|² / (Y X)``, averaged over rings
    of width ``1 / min(Y, X)`` cycles per pixel; then the mean over tilts. Computed as a dask
    map over blocks of whole tilts (the chunks along ``y`` of a tilt are joined; small tilts
    are batched up to :data:`SPECTRUM_TASK_BYTES` per task, large ones go one per task), so
    only a few tilts are in memory at once and only ``T × min(Y, X) / 2`` numbers come back.
    The result does not depend on the input chunking.

    Parameters
    ----------
    ts : xarray.DataArray, dims (tilt, y, x)
        Tilt-series (numpy- or dask-backed); ``attrs["pixel_size_A"]`` gives the pixel size
        (Å, default 1).

    Returns
    -------
    freq_per_A : numpy.ndarray, shape (min(Y, X) // 2,)
        Ring centre frequencies ``k / (min(Y, X) · pixel)``, ``k = 1 .. min(Y, X) // 2``, in
        1/Å; the last is Nyquist, ``1 / (2 · pixel)``, for an even ``min(Y, X)``.
    power : numpy.ndarray, same shape
        Mean power per ring (white noise of variance σ² gives σ² everywhere).
    """
    freq, power = _power_graph(ts)
    return freq, np.asarray(compute(power, label="power spectrum"))


def spectra_figure(
    series: Mapping[str, xr.DataArray], path: str | Path, title: str | None, dpi: int
) -> LazyFigure:
    if not series:
        raise InputError("plot_power_spectra: no tilt-series given")
    graphs = {label: _power_graph(ts) for label, ts in series.items()}

    def draw(powers: list[np.ndarray]) -> Path:
        fig = new_figure((7, 4.5))
        ax = fig.subplots()
        for (label, (freq, _)), power in zip(graphs.items(), powers):
            p = np.asarray(power, dtype=np.float64)
            total = p.sum()
            p = p / total if total > 0 else p
            with np.errstate(divide="ignore", invalid="ignore"):
                ax.plot(freq, np.log10(np.where(p > 0, p, np.nan)), lw=1.5, label=label)
        ax.set_xlabel("spatial frequency (1/Å)")
        ax.set_ylabel("log₁₀ power (normalised to unit total)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        ax.set_title(title or "radial power spectra (mean over tilts)")
        return save_png(fig, path, dpi)

    return LazyFigure([g[1] for g in graphs.values()], draw)


def plot_power_spectra(
    series: Mapping[str, xr.DataArray],
    path: str | Path,
    *,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Save a PNG of the radial log-power spectra of several tilt-series, one line each.

    Each spectrum (:func:`radial_power_spectrum`) is normalised to unit total power, so the
    lines compare the spectral shape (e.g. FAKET against BASELINE, NOISY and the style data)
    rather than the intensity scale. All spectra are computed in one pass.

    Parameters
    ----------
    series : mapping of str to xarray.DataArray (tilt, y, x)
        Legend label -> tilt-series.
    path : path
        Output PNG file (parent directories are created).
    title : str, optional
        Figure title.
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    Path
        ``path``.
    """
    return render([spectra_figure(series, path, title, dpi)], "power spectra")[0]
