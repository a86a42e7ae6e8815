"""Per-chunk kernels of the distribution comparison (``faket-dask compare``, ``docs/compare.md``).

Pure numpy: no dask, no I/O. Every function maps one chunk (or one small per-tilt array) to
a few numbers per tilt, so the stage (:mod:`faket_dask.stages.compare`) can reduce a
tilt-series of any detector size with memory bounded by the chunk size:

* radial power spectrum of square tiles (:func:`tile_ring_sums`, which runs the project's
  periodogram :func:`faket_dask.kernels.power_spectrum.tilt_power` on each tile), compared by
  :func:`log_ratio_rms` over a band;
* a fixed-bin histogram of standardised values (:func:`standardised_histogram`; integer
  counts, so their sum over chunks is exact in any order) and the 1-Wasserstein distance of
  two such histograms (:func:`wasserstein1_binned`);
* the Pearson correlation from the project's paired per-tilt moments (:func:`pearson`).

Per-row moments and the unpaired noise estimate are the noise kernels'
(:mod:`faket_dask.kernels.noise_moments`, :mod:`faket_dask.kernels.noise_spectral`).
"""
from __future__ import annotations

import math

import numpy as np

from faket_dask.errors import InputError
from faket_dask.params.compare import (
    COMPARE_HIST_BIN,
    COMPARE_HIST_RANGE,
    COMPARE_SPECTRUM_BAND,
)

from .noise_moments import P_CSP, P_CSS_C, P_CSS_M
from .power_spectrum import radial_bins, tilt_power

__all__ = [
    "HistogramBins",
    "band_mask",
    "fold_clipped",
    "fsum_axis",
    "histogram_bins",
    "log_ratio_rms",
    "normalise_band",
    "pearson",
    "rms",
    "spectrum_frequencies",
    "standardised_histogram",
    "tile_origins",
    "tile_ring_sums",
    "wasserstein1_binned",
]


# -- radial power spectrum of tiles ------------------------------------------------------------
def tile_origins(n: int, tile: int) -> np.ndarray:
    """Start pixels of the tiles along an axis of ``n`` pixels: ``0, s, 2s, …`` and, when ``s``
    does not divide ``n``, one more tile flush with the far edge (``n − s``), so every pixel
    lies in a tile (the last two overlap).

    Returns
    -------
    ndarray of int64, shape (ceil(n / s),)
    """
    if not 1 <= tile <= n:
        raise InputError(f"tile of {tile} pixels does not fit an axis of {n} pixels")
    starts = np.arange(0, n - tile + 1, tile, dtype=np.int64)
    if n % tile:
        starts = np.append(starts, n - tile)
    return starts


def tile_ring_sums(block: np.ndarray, tile: int) -> np.ndarray:
    """Sum over the tiles of a row of tiles of the tiles' radially averaged power spectra.

    Parameters
    ----------
    block : ndarray, shape (t, tile, X)
        One row of tiles of ``t`` tilts: exactly ``tile`` rows, whole rows (any real dtype).
    tile : int
        Tile side ``s`` (pixels); tiles start at :func:`tile_origins` ``(X, s)``.

    Returns
    -------
    ndarray, float64, shape (t, 1, s // 2)
        Per tilt, the sum over the ``len(tile_origins(X, s))`` tiles of
        :func:`~faket_dask.kernels.power_spectrum.tilt_power` of each tile (its mean removed,
        periodogram ``|FFT|² / s²``, mean over rings ``1 .. s/2`` of width ``1/s`` cycles per
        pixel; data units²). Dividing the sum over all tiles of a tilt by their count gives
        Welch's estimate (no window, no overlap but the edge tiles) of the tilt's spectrum.

    Notes
    -----
    A pure function of the tiles' pixels, so a tilt's sum does not depend on how the stage
    groups tile rows into tasks.
    """
    b = np.asarray(block)
    if b.ndim != 3 or b.shape[1] != tile:
        raise InputError(f"tile_ring_sums: expected a (t, {tile}, X) block, got shape {b.shape}")
    t = b.shape[0]
    xs = tile_origins(b.shape[2], tile)
    tiles = np.stack([b[:, :, x : x + tile] for x in xs], axis=1).reshape(t * xs.size, tile, tile)
    power = tilt_power(tiles).reshape(t, xs.size, -1)
    return fsum_axis(power, axis=1)[:, None, :]


def band_mask(nbins: int, band: tuple[float, float] = COMPARE_SPECTRUM_BAND) -> np.ndarray:
    """Rings ``k = 1 .. nbins`` of a tile spectrum whose frequency ``k / nbins`` (fraction of
    Nyquist for an even tile) lies in ``band``; bool, shape (nbins,).

    Raises
    ------
    InputError
        A bad band, or fewer than 2 rings in it (tiles too small).
    """
    lo, hi = float(band[0]), float(band[1])
    if not 0.0 <= lo < hi <= 1.0:
        raise InputError(f"spectrum band must satisfy 0 <= LO < HI <= 1 (fractions of Nyquist), got {lo} {hi}")
    f = np.arange(1, nbins + 1) / nbins
    mask = (f >= lo - 1e-12) & (f <= hi + 1e-12)
    if mask.sum() < 2:
        raise InputError(f"spectrum band {lo:g}-{hi:g} of Nyquist holds {int(mask.sum())} rings of a "
                         f"{2 * nbins}-pixel tile; widen it or use larger tiles")
    return mask


def normalise_band(power: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``power / Σ_{rings in band} power`` along the last axis (unit power in the band), so
    spectra of different intensity scales compare by shape."""
    p = np.asarray(power, dtype=np.float64)
    total = np.array([math.fsum(row) for row in p[..., mask].reshape(-1, int(mask.sum()))])
    return p / total.reshape(p.shape[:-1] + (1,))


def log_ratio_rms(p: np.ndarray, q: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RMS over the rings in ``mask`` of ``log10(p̂ / q̂)``, with ``p̂, q̂`` normalised to unit
    power in the band (:func:`normalise_band`).

    Parameters
    ----------
    p, q : ndarray, float64, shape (..., nbins)
        Spectra (any units, the same for both).
    mask : ndarray of bool, shape (nbins,)

    Returns
    -------
    ndarray, float64, shape (...)
        0 for spectra of the same shape; 0.3 ≈ a factor 2 off on average (decades, RMS).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log10(normalise_band(p, mask)[..., mask] / normalise_band(q, mask)[..., mask])
    return np.sqrt(np.array([math.fsum(row) for row in (r * r).reshape(-1, r.shape[-1])]) / r.shape[-1]).reshape(r.shape[:-1])


def spectrum_frequencies(tile: int) -> np.ndarray:
    """Ring centre frequencies ``k / s`` (cycles per pixel), ``k = 1 .. s // 2``."""
    _, _, nbins = radial_bins(tile, tile)
    return np.arange(1, nbins + 1, dtype=np.float64) / tile


# -- standardised histogram and the 1-Wasserstein distance -------------------------------------
class HistogramBins:
    """Fixed bins of standardised values: ``n`` bins of width ``width`` from ``lo``, plus an
    underflow bin (index 0) and an overflow bin (index ``n + 1``).

    Attributes
    ----------
    lo, hi : float
        Range, units of the tilt's std.
    width : float
        Bin width (same units).
    n : int
        Bins inside the range.
    """

    def __init__(self, lo: float, hi: float, width: float) -> None:
        if not (hi > lo and width > 0):
            raise InputError(f"histogram range {lo:g}..{hi:g} with bins of {width:g} is empty")
        self.lo, self.hi, self.width = float(lo), float(hi), float(width)
        self.n = round((self.hi - self.lo) / self.width)
        if self.n < 2 or self.n > 10**6:
            raise InputError(f"histogram range {lo:g}..{hi:g} with bins of {width:g} gives {self.n} bins (2 .. 10^6)")

    def centres(self) -> np.ndarray:
        """Centres of the ``n`` inner bins, float64 (units of std)."""
        return self.lo + (np.arange(self.n) + 0.5) * self.width


def histogram_bins(range_std: tuple[float, float] = COMPARE_HIST_RANGE, width: float = COMPARE_HIST_BIN) -> HistogramBins:
    """:class:`HistogramBins` of the defaults (``faket_dask.params.compare``)."""
    return HistogramBins(range_std[0], range_std[1], width)


def standardised_histogram(block: np.ndarray, mean: np.ndarray, std: np.ndarray, bins: HistogramBins) -> np.ndarray:
    """Counts of ``z = (x − mean) / std`` of each tilt of a chunk in fixed bins.

    Parameters
    ----------
    block : ndarray, shape (t, cy, X)
        Chunk of a tilt-series (any real dtype; z in float64).
    mean, std : ndarray, float64, shape (t, 1, 1)
        The whole tilts' mean and population std (from the stage's first pass).
    bins : HistogramBins

    Returns
    -------
    ndarray, int64, shape (t, 1, n + 2)
        Per tilt: underflow count, the ``n`` bins (``floor((z − lo) / width)``), overflow count.

    Notes
    -----
    Each pixel's bin depends on that pixel and its tilt's mean/std only, and counts are
    integers, so the sum of the chunks' counts is exact and the same for any chunking. Memory:
    one int64 index per pixel of the chunk.
    """
    b = np.asarray(block, dtype=np.float64)
    t = b.shape[0]
    z = (b - mean) / std
    idx = np.floor((z - bins.lo) / bins.width)
    idx = np.clip(idx, -1, bins.n).astype(np.int64) + 1
    idx += (np.arange(t, dtype=np.int64) * (bins.n + 2))[:, None, None]
    counts = np.bincount(idx.ravel(), minlength=t * (bins.n + 2))
    return counts.reshape(t, 1, bins.n + 2)


def wasserstein1_binned(a: np.ndarray, b: np.ndarray, width: float) -> np.ndarray:
    """1-Wasserstein distance of two histograms on the same bins (mass at the bin centres).

    ``W1 = ∫ |F(z) − G(z)| dz`` (Vallender 1974; ``scipy.stats.wasserstein_distance`` computes
    the same integral for samples); for mass at centres spaced ``width`` apart the CDFs are
    steps and the integral is ``width · Σ_i |F_i − G_i|`` with ``F_i`` the fraction of ``a``
    up to bin ``i``.

    Parameters
    ----------
    a, b : ndarray, shape (..., n)
        Counts (under/overflow folded into the end bins by the caller).
    width : float
        Bin width (units of the values: here the tilt's std).

    Returns
    -------
    ndarray, float64, shape (...)
        In units of ``width``'s. Binning moves each value by at most ``width / 2``, so the
        result is within ``width`` of the exact W1 of the unbinned (clipped) values.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    fa = np.cumsum(a, axis=-1) / a.sum(axis=-1, keepdims=True)
    fb = np.cumsum(b, axis=-1) / b.sum(axis=-1, keepdims=True)
    d = np.abs(fa - fb)[..., :-1].reshape(-1, a.shape[-1] - 1)
    return (width * np.array([math.fsum(row) for row in d])).reshape(a.shape[:-1])


def fold_clipped(counts: np.ndarray) -> np.ndarray:
    """``(…, n + 2)`` counts with under/overflow -> ``(…, n)`` with them in the end bins."""
    c = np.array(counts[..., 1:-1], dtype=np.int64, copy=True)
    c[..., 0] += counts[..., 0]
    c[..., -1] += counts[..., -1]
    return c


# -- correlation and small reductions ----------------------------------------------------------
def pearson(moments: np.ndarray) -> np.ndarray:
    """Pearson correlation ``csp / sqrt(css_m · css_c)`` per tilt from paired moments.

    Parameters
    ----------
    moments : ndarray, float64, shape (T, 6)
        :func:`~faket_dask.kernels.noise_moments.reduce_rows` of
        :func:`~faket_dask.kernels.noise_moments.row_paired_moments` (all rows of each tilt).

    Returns
    -------
    ndarray, float64, shape (T,)
        In [−1, 1] (up to rounding); NaN for a constant tilt.
    """
    mo = np.asarray(moments, dtype=np.float64)
    denom = np.sqrt(mo[:, P_CSS_M]) * np.sqrt(mo[:, P_CSS_C])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, mo[:, P_CSP] / denom, np.nan)


def fsum_axis(a: np.ndarray, axis: int) -> np.ndarray:
    """Exactly rounded sum (:func:`math.fsum`) along ``axis``: independent of the order."""
    m = np.moveaxis(np.asarray(a, dtype=np.float64), axis, -1)
    flat = m.reshape(-1, m.shape[-1])
    return np.array([math.fsum(row) for row in flat], dtype=np.float64).reshape(m.shape[:-1])


def rms(values: np.ndarray) -> float:
    """Root mean square of all values (exactly rounded sum of squares)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    return math.sqrt(math.fsum(v * v) / v.size) if v.size else float("nan")
