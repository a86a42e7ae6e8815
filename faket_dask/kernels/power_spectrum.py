"""Radially averaged power spectra of whole images (pure numpy; the report maps them with Dask).

:func:`faket_dask.report.radial_power_spectrum` runs :func:`tilt_power` over blocks of whole
tilts of a tilt-series and averages over tilts.
"""
from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def radial_bins(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Ring index and weight of every ``rfft2`` coefficient of a ``(ny, nx)`` image.

    Ring ``k`` holds the frequencies with ``round(|f| * n) == k`` (``f`` in cycles per pixel,
    ``n = min(ny, nx)``), so rings are ``1 / n`` wide and ring ``n // 2`` ends at Nyquist along
    the shorter axis. Rings ``1 .. n // 2`` are kept (``0`` is the mean, removed; larger
    frequencies, in the corners, are dropped). The weight counts each half-plane coefficient
    as often as it occurs in the full plane (2, or 1 for the columns 0 and Nyquist), so ring
    means equal those of the full 2D spectrum.
    """
    n = min(ny, nx)
    nbins = n // 2
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.rfftfreq(nx)[None, :]
    ring = np.rint(np.hypot(fy, fx) * n).astype(np.int64)
    ring[ring > nbins] = nbins + 1
    weight = np.full(ring.shape, 2.0)
    weight[:, 0] = 1.0
    if nx % 2 == 0:
        weight[:, -1] = 1.0
    ring.flags.writeable = False
    weight.flags.writeable = False
    return ring.ravel(), weight.ravel(), nbins


def tilt_power(block: np.ndarray) -> np.ndarray:
    """Radially averaged power spectrum of each whole tilt of a ``(t, Y, X)`` block.

    Power = ``|FFT(tilt - mean)|² / (Y X)`` (a periodogram: white noise of variance σ² gives
    σ² in every ring).

    Parameters
    ----------
    block : numpy.ndarray, shape (t, Y, X)
        Whole tilts, any real dtype (computed in float64).

    Returns
    -------
    numpy.ndarray, float64, shape (t, min(Y, X) // 2)
        Mean power of rings ``1 .. min(Y, X) // 2`` (see :func:`radial_bins`) per tilt.
    """
    t, ny, nx = block.shape
    ring, weight, nbins = radial_bins(ny, nx)
    counts = np.bincount(ring, weights=weight, minlength=nbins + 2)[1 : nbins + 1]
    out = np.empty((t, nbins), dtype=np.float64)
    for i in range(t):
        img = np.asarray(block[i], dtype=np.float64)
        img = img - img.mean()
        power = np.abs(np.fft.rfft2(img)) ** 2 / (ny * nx)
        sums = np.bincount(ring, weights=power.ravel() * weight, minlength=nbins + 2)
        out[i] = sums[1 : nbins + 1] / counts
    return out
