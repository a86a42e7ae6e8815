"""Spectral kernels of the unpaired noise estimate (``docs/noise.md``; ``docs/method.md §2``).

Pure numpy: no dask, no I/O. Without a noiseless partner, the white-noise power of a tilt is
read from the high-frequency band of its rows' spectra, where the signal has decayed (CTF
envelope, detector MTF): :func:`row_band_power` per row of a chunk (one 1-D FFT per row, so
no tilt is ever held whole), reduced per tilt by the stage with exactly rounded sums, then
:func:`unpaired_curves` turns the per-tilt sums into FakET's curves. The band and the window
are :data:`faket_dask.params.UNPAIRED_BAND` and :data:`faket_dask.params.UNPAIRED_TAPER`.
"""
from __future__ import annotations

import numpy as np

from faket_dask.errors import InputError
from faket_dask.params import UNPAIRED_BAND, UNPAIRED_TAPER

from .noise_moments import mean_std

__all__ = ["band_bins", "row_band_power", "unpaired_curves"]


def _tukey(n: int, alpha: float = UNPAIRED_TAPER) -> np.ndarray:
    """Tukey window of ``n`` points, float64 (scipy imported here: only this estimate needs it)."""
    from scipy.signal.windows import tukey

    return tukey(n, alpha).astype(np.float64)


def band_bins(nx: int, band: tuple[float, float] = UNPAIRED_BAND) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``rfft`` bins of a row of ``nx`` pixels inside ``band``, split in halves.

    Parameters
    ----------
    nx : int
        Row length (pixels).
    band : (lo, hi)
        Fractions of the Nyquist frequency, ``0 <= lo < hi <= 1``.

    Returns
    -------
    lower, upper : ndarray of int
        Bins ``k`` with ``lo·nx/2 <= k <= hi·nx/2`` (frequency ``k/nx`` cycles/pixel), the lower
        and the upper half of the band (their power ratio is a check that the signal decayed).

    Raises
    ------
    InputError
        For a bad band, or fewer than 4 bins in it (the row is too short).
    """
    lo, hi = float(band[0]), float(band[1])
    if not (0.0 <= lo < hi <= 1.0):
        raise InputError(f"band must satisfy 0 <= LO < HI <= 1 (fractions of Nyquist), got {lo} {hi}")
    k = np.arange(nx // 2 + 1)
    f = k / (nx / 2.0)  # fraction of Nyquist
    sel = k[(f >= lo) & (f <= hi) & (k > 0)]
    if sel.size < 4:
        raise InputError(f"band {lo}-{hi} of Nyquist holds {sel.size} frequencies for rows of {nx} pixels; widen it")
    half = sel.size // 2
    return sel[:half], sel[half:]


def row_band_power(a: np.ndarray, band: tuple[float, float] = UNPAIRED_BAND) -> np.ndarray:
    """Per-row white-noise power of a chunk, from the high-frequency band of the row spectra.

    Parameters
    ----------
    a : ndarray, shape (t, cy, X)
        Tilt-series chunk (any real dtype; computed in float64).
    band : (lo, hi)
        Fractions of Nyquist (see :func:`band_bins`).

    Returns
    -------
    ndarray, float64, shape (t, cy, 2)
        Per row, the sums over the lower / upper half of the band of
        ``|rfft(w·(row − mean(row)))|² / Σw²`` (w a Tukey window). For white noise of variance
        v each term has expectation v (data units²), so the sum divided by the bin count is an
        unbiased estimate of v.

    Notes
    -----
    A pure function of each row: the same for any chunking (one 1-D FFT per row, so no tilt
    is ever held whole).

    Raises
    ------
    InputError
        For a chunk that is not 3-D, or a band :func:`band_bins` refuses.
    """
    a = np.ascontiguousarray(a, dtype=np.float64)
    if a.ndim != 3:
        raise InputError(f"row_band_power: expected a (t, cy, X) chunk, got shape {a.shape}")
    nx = a.shape[2]
    lower, upper = band_bins(nx, band)
    w = _tukey(nx)
    d = a - a.mean(axis=2, keepdims=True)
    d *= w
    f = np.fft.rfft(d, axis=2)
    p = f.real**2 + f.imag**2
    norm = float(w @ w)
    return np.stack([p[..., lower].sum(axis=2) / norm, p[..., upper].sum(axis=2) / norm], axis=-1)


def unpaired_curves(moments: np.ndarray, nx: int, band: tuple[float, float] = UNPAIRED_BAND) -> dict[str, np.ndarray]:
    """Per-tilt curves of the unpaired estimate from reduced row statistics.

    Parameters
    ----------
    moments : ndarray, float64, shape (T, 5)
        Per tilt ``[n, sum, css, P_lower, P_upper]``:
        :func:`faket_dask.kernels.noise_moments.reduce_rows` of the row moments and exactly
        rounded sums of :func:`row_band_power`.
    nx : int
        Row length (pixels).
    band : (lo, hi)
        The band used.

    Returns
    -------
    dict of str -> ndarray (T,)
        ``sigma`` = noise std / tilt std (the method's normalised σ, ``docs/method.md §2``, clipped to 1), ``r`` =
        sqrt(1 − σ²) (noise independent of the signal), ``mean``, ``std`` (data units),
        ``noise_std`` (data units) and ``band_ratio`` = mean power of the lower over the upper
        half of the band (≈ 1 when the band holds only white noise; > 1 means signal left in
        it and ``sigma`` overestimated).
    """
    mo = np.asarray(moments, dtype=np.float64)
    lower, upper = band_bins(nx, band)
    n_rows = mo[:, 0] / nx
    p_lo = mo[:, 3] / (n_rows * lower.size)
    p_hi = mo[:, 4] / (n_rows * upper.size)
    noise_var = (mo[:, 3] + mo[:, 4]) / (n_rows * (lower.size + upper.size))
    mean, std = mean_std(mo[:, :3])
    sigma = np.minimum(np.sqrt(noise_var) / std, 1.0)
    return {
        "r": np.sqrt(np.maximum(1.0 - sigma * sigma, 0.0)),
        "sigma": sigma,
        "mean": mean,
        "std": std,
        "noise_std": np.sqrt(noise_var),
        "band_ratio": p_lo / p_hi,
    }
