"""Noise kernels of FakET (``docs/method.md §2`` and ``§3``): noise curves and injection.

Pure numpy: no dask, no I/O. With :mod:`faket_dask.kernels.noise_moments` (the per-tilt
statistics, bit-reproducible for any chunking) and :mod:`faket_dask.kernels.noise_rng` (the
noise field z), everything a Dask stage needs to run the method chunk by chunk on tilt-series
chunked ``(t, cy, X)`` without ever materialising a tilt.

Pass structure of the stages
----------------------------
Noise estimation (per reference pair M, C):
    1. ``rows = row_paired_moments(M_chunk, C_chunk)`` for every chunk; concatenate per tilt;
    2. ``curves_from_moments(reduce_rows(rows))`` -> raw per-tilt curves;
    3. ``fit_and_average([curves_1, ..., curves_K], order)`` -> the noise model.

Noise injection (per noiseless tilt-series P, a noise model and a modality):
    0. P statistics: ``row_moments(P_chunk)`` -> ``reduce_rows`` -> ``mean_std`` -> p_mean, p_std;
    A. ``z = normal_block(seed, tomo, tilts, y0, y1, X)``,
       ``x = mix(P_chunk, p_mean, p_std, z, r, sigma, k)``, ``row_moments(x)``
       -> ``reduce_rows`` -> ``mean_std`` -> x_mean, x_std;
    B. regenerate ``z`` and ``x`` exactly as in A (both are deterministic), then
       ``rescale(x, x_mean, x_std, mean, std)`` -> float32 output chunk.

Modalities (``docs/method.md §3``) are only parameters of the same kernels: a curve order and
a noise scale k, owned by :data:`faket_dask.params.MODALITIES` (NOISY: order 2, k = 1;
CONTENT: order 2, k = 0.25; BASELINE: order 0, k = 1). NOISY, CONTENT and BASELINE of one
tomogram use the same ``(seed, tomo)``, hence the same field z: CONTENT's noise term is exactly
a quarter of NOISY's.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np

from faket_dask.errors import InputError

from .noise_moments import (
    P_CSP,
    P_CSS_C,
    P_CSS_M,
    P_N,
    P_SUM_C,
    P_SUM_M,
    reduce_rows,
    row_paired_moments,
)

__all__ = [
    "CURVE_KEYS",
    "add_noise_reference",
    "curves_from_arrays",
    "curves_from_moments",
    "fit_and_average",
    "fit_curve",
    "mix",
    "rescale",
]

# --------------------------------------------------------------------------------------------
# Noise curves (docs/method.md §2)
# --------------------------------------------------------------------------------------------

#: Keys of a curve dict, each a float64 array of shape (T,): correlation r, residual std
#: sigma, mean/std of the measured tilt, mean/std of the noiseless tilt.
CURVE_KEYS: Final = ("r", "sigma", "mean", "std", "clean_mean", "clean_std")


def curves_from_moments(moments: np.ndarray) -> dict[str, np.ndarray]:
    """Per-tilt noise curves of one reference pair, from its per-tilt paired moments.

    With ``m``, ``c`` the per-tilt standardised measured and noiseless tilts (population std),
    ``r`` is the minimiser over [0, 1] of ``std(m − r·c)``: the Pearson correlation ``ρ``
    clipped to [0, 1], because ``var(m − r·c) = 1 + r² − 2rρ`` is a parabola in r with its
    vertex at ρ. ``sigma = std(m − r·c)`` is evaluated from the same identity, written as
    ``(1 − r)² + 2r(1 − ρ)`` (equal, but accurate when r → 1).

    Parameters
    ----------
    moments : ndarray, float64, shape (T, 6)
        Output of :func:`reduce_rows` on :func:`row_paired_moments` (all rows of each tilt).

    Returns
    -------
    dict of str -> ndarray, float64, shape (T,)
        ``r`` (dimensionless, [0, 1]), ``sigma`` (in units of the measured std),
        ``mean``, ``std`` (of the measured tilt, its units), ``clean_mean``, ``clean_std``
        (of the noiseless tilt, its units).

    Notes
    -----
    A constant tilt (zero variance) has no correlation: it gets ``r = 0, sigma = 1``. The
    stages reject constant tilts before this point.
    """
    mo = np.asarray(moments, dtype=np.float64)
    if mo.ndim != 2 or mo.shape[1] != 6:
        raise InputError(f"curves_from_moments: expected (T, 6) paired moments, got {mo.shape}")
    n = mo[:, P_N]
    css_m, css_c, csp = mo[:, P_CSS_M], mo[:, P_CSS_C], mo[:, P_CSP]
    denom = np.sqrt(css_m) * np.sqrt(css_c)  # two sqrt: no overflow of the product
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(denom > 0, csp / denom, 0.0)
    r = np.clip(rho, 0.0, 1.0)
    var = (1.0 - r) ** 2 + 2.0 * r * (1.0 - rho)
    sigma = np.sqrt(np.maximum(var, 0.0))  # ρ may exceed 1 by rounding: var ≥ 0 regardless
    return {
        "r": r,
        "sigma": sigma,
        "mean": mo[:, P_SUM_M] / n,
        "std": np.sqrt(css_m / n),
        "clean_mean": mo[:, P_SUM_C] / n,
        "clean_std": np.sqrt(css_c / n),
    }


def curves_from_arrays(measured: np.ndarray, noiseless: np.ndarray) -> dict[str, np.ndarray]:
    """Per-tilt noise curves of whole in-memory tilt-series (for tests and small data).

    Parameters
    ----------
    measured, noiseless : ndarray, shape (T, Y, X)

    Returns
    -------
    dict of str -> ndarray, float64, shape (T,)
        As :func:`curves_from_moments`.
    """
    return curves_from_moments(reduce_rows(row_paired_moments(measured, noiseless)))


def fit_curve(values: np.ndarray, order: int) -> np.ndarray:
    """Least-squares polynomial of ``order`` over the tilt index 0…T−1, evaluated at each index.

    Parameters
    ----------
    values : ndarray, shape (T,)
        One per-tilt curve.
    order : int
        Polynomial order p ≥ 0 (FakET: 2 for NOISY/CONTENT, 0 for BASELINE). Lowered to
        T − 1 when there are fewer than p + 1 tilts (the fit then interpolates).

    Returns
    -------
    ndarray, float64, shape (T,)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise InputError(f"fit_curve: expected a non-empty 1-D curve, got shape {v.shape}")
    if order < 0:
        raise InputError(f"fit_curve: polynomial order must be >= 0, got {order}")
    idx = np.arange(v.size, dtype=np.float64)
    coef = np.polyfit(idx, v, min(int(order), v.size - 1))
    return np.polyval(coef, idx)


def fit_and_average(
    curves: Sequence[Mapping[str, np.ndarray]], order: int
) -> dict[str, np.ndarray]:
    """Fit every curve of every reference with :func:`fit_curve`, then average over references.

    Parameters
    ----------
    curves : sequence of K dicts
        Raw curves of K reference pairs (from :func:`curves_from_moments`), all with the same
        number of tilts T. Every key present in the first dict is fitted.
    order : int
        Polynomial order (2: NOISY/CONTENT, 0: BASELINE).

    Returns
    -------
    dict of str -> ndarray, float64, shape (T,)
        Mean of the K fitted curves, per key. Fitted curves are not clipped (as the original).
    """
    if len(curves) == 0:
        raise InputError("fit_and_average: no reference curves given")
    keys = list(curves[0])
    out: dict[str, np.ndarray] = {}
    for key in keys:
        vals = [np.asarray(c[key], dtype=np.float64) for c in curves]
        if len({v.shape for v in vals}) != 1:
            raise InputError(
                f"fit_and_average: references differ in tilt count for {key!r}: "
                f"{[v.shape for v in vals]}"
            )
        out[key] = np.mean([fit_curve(v, order) for v in vals], axis=0)
    return out


# --------------------------------------------------------------------------------------------
# Noise injection (docs/method.md §3)
# --------------------------------------------------------------------------------------------


def _per_tilt(v: np.ndarray | float, t: int, name: str) -> np.ndarray:
    """A per-tilt vector (t,) or scalar as float64 shaped (t, 1, 1) for broadcasting."""
    a = np.asarray(v, dtype=np.float64)
    if a.ndim == 0:
        a = np.full(t, float(a))
    if a.shape != (t,):
        raise InputError(f"{name}: expected {t} per-tilt values, got shape {a.shape}")
    return a[:, None, None]


def mix(
    p_chunk: np.ndarray,
    p_mean: np.ndarray,
    p_std: np.ndarray,
    z_chunk: np.ndarray,
    r: np.ndarray,
    sigma: np.ndarray,
    k: float,
) -> np.ndarray:
    """Unscaled noisy signal ``x = (P − p_mean)/p_std · r + z · (σ·k)`` of a chunk.

    Parameters
    ----------
    p_chunk : ndarray, shape (t, cy, X)
        Noiseless projections.
    p_mean, p_std : ndarray, shape (t,)
        Mean and population std of each *whole* tilt of P (``mean_std(reduce_rows(
        row_moments(P)))`` of :mod:`faket_dask.kernels.noise_moments`).
    z_chunk : ndarray, shape (t, cy, X)
        The standard-normal field of the same pixels
        (:func:`faket_dask.kernels.noise_rng.normal_block`).
    r, sigma : ndarray, shape (t,)
        Noise-model curves at these tilts.
    k : float
        Noise scale (1 for NOISY/BASELINE, 0.25 for CONTENT).

    Returns
    -------
    ndarray, float64, shape (t, cy, X)
        Deterministic elementwise function of its inputs: pass A and pass B recompute it
        identically.
    """
    p = np.asarray(p_chunk)
    z = np.asarray(z_chunk)
    if p.ndim != 3 or p.shape != z.shape:
        raise InputError(f"mix: P chunk {p.shape} and z chunk {z.shape} must be equal (t, cy, X)")
    t = p.shape[0]
    pm, ps = _per_tilt(p_mean, t, "p_mean"), _per_tilt(p_std, t, "p_std")
    rr, ss = _per_tilt(r, t, "r"), _per_tilt(sigma, t, "sigma")
    x = p.astype(np.float64)
    x -= pm
    x /= ps
    x *= rr
    # z·(σ·k): with k a power of two, CONTENT's term is exactly k × NOISY's.
    x += z.astype(np.float64) * (ss * float(k))
    return x


def rescale(
    x_chunk: np.ndarray,
    x_mean: np.ndarray,
    x_std: np.ndarray,
    target_mean: np.ndarray,
    target_std: np.ndarray,
) -> np.ndarray:
    """Give every tilt the target mean and std: ``(x − x_mean)·(s/x_std) + μ``, as float32.

    Algebraically the method's ``x ← x/std(x)·s; x ← x − (mean(x) − μ)`` (``docs/method.md
    §3``); the centred form avoids cancellation when ``|μ| >> s``.

    Parameters
    ----------
    x_chunk : ndarray, shape (t, cy, X)
        Output of :func:`mix`.
    x_mean, x_std : ndarray, shape (t,)
        Mean and population std of each whole tilt of x (pass A).
    target_mean, target_std : ndarray, shape (t,)
        The noise-model curves ``mean`` (μ) and ``std`` (s) at these tilts.

    Returns
    -------
    ndarray, float32, shape (t, cy, X)
    """
    x = np.asarray(x_chunk, dtype=np.float64)
    if x.ndim != 3:
        raise InputError(f"rescale: expected a (t, cy, X) chunk, got {x.shape}")
    t = x.shape[0]
    xm, xs = _per_tilt(x_mean, t, "x_mean"), _per_tilt(x_std, t, "x_std")
    mu, s = _per_tilt(target_mean, t, "target_mean"), _per_tilt(target_std, t, "target_std")
    y = x - xm
    y *= s / xs
    y += mu
    return y.astype(np.float32)


def add_noise_reference(
    p: np.ndarray,
    r: np.ndarray,
    sigma: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    z: np.ndarray,
    k: float,
) -> np.ndarray:
    """The injection of ``docs/method.md §3`` literally, on a whole in-memory tilt-series.

    The reference the chunked stage is tested against.

    Parameters
    ----------
    p : ndarray, shape (T, Y, X)
        Noiseless tilt-series.
    r, sigma, mean, std : ndarray, shape (T,)
        Noise-model curves.
    z : ndarray, shape (T, Y, X)
        Standard-normal field.
    k : float
        Noise scale.

    Returns
    -------
    ndarray, float32, shape (T, Y, X)
    """
    p = np.asarray(p, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    col = lambda v: np.asarray(v, dtype=np.float64)[:, None, None]  # noqa: E731
    ax = (1, 2)
    x = (p - p.mean(ax, keepdims=True)) / p.std(ax, keepdims=True) * col(r) + z * col(sigma) * k
    x = x / x.std(ax, keepdims=True) * col(std)
    x = x - (x.mean(ax, keepdims=True) - col(mean))
    return x.astype(np.float32)
