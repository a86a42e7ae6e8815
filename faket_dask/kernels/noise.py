"""Noise kernels of FakET (METHOD.md §2 and §3): estimation, the noise field, injection.

Pure numpy: no dask, no I/O. Everything a Dask stage needs to run the method chunk by chunk on
tilt-series chunked ``(t, cy, X)`` without ever materialising a tilt.

Moments (the statistics contract)
---------------------------------
Every per-tilt statistic (mean/std of a tilt, the correlation of a measured and a noiseless
tilt) is computed from *per-row moments*:

* ``row_moments(a)`` -> ``(t, cy, 3)`` columns ``[n, sum, css]``;
* ``row_paired_moments(m, c)`` -> ``(t, cy, 6)`` columns
  ``[n, sum_m, sum_c, css_m, css_c, csp_mc]``;

where ``css`` / ``csp`` are sums of squares / products of deviations from the *row's own mean*
(float64). Centring each row first keeps the variance free of the ``Σx² − (Σx)²/n``
cancellation that plain power sums suffer when ``|mean| >> std``.

A row's moments depend only on that row's pixels, never on how rows are grouped into chunks.
:func:`reduce_rows` then combines all rows of a tilt with exactly rounded sums
(:func:`math.fsum`), whose result does not depend on the order of the rows. Hence:

    **Stage contract.** Compute row moments chunk-wise, concatenate the row moments of *all*
    rows of a tilt along the row axis (any order; they are tiny: ``Y × 6`` float64 per tilt),
    and call :func:`reduce_rows` once on the full array. Do **not** reduce per chunk and merge
    the partial results with a dask tree reduction: that makes the last bits depend on the
    chunking (use :func:`merge_moments` only where bit-reproducibility does not matter).

Followed this way, every per-tilt scalar, and therefore every output pixel, is bit-identical
for any y-chunking and any number of workers.

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

Modalities (METHOD §3) are only parameters of the same kernels, see :data:`MODALITIES`:
NOISY = order-2 curves, k = 1; CONTENT = order-2 curves, k = 0.25; BASELINE = order-0
curves, k = 1. NOISY, CONTENT and BASELINE of one tomogram use the same ``(seed, tomo)``,
hence the same field z: CONTENT's noise term is exactly a quarter of NOISY's.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from faket_dask.errors import InputError

__all__ = [
    "CURVE_KEYS",
    "MODALITIES",
    "Modality",
    "add_noise_reference",
    "curves_from_arrays",
    "curves_from_moments",
    "fit_and_average",
    "fit_curve",
    "mean_std",
    "merge_moments",
    "mix",
    "moments",
    "normal_block",
    "normal_field",
    "paired_moments",
    "philox4x32_10",
    "reduce_rows",
    "rescale",
    "row_moments",
    "row_paired_moments",
]

# --------------------------------------------------------------------------------------------
# Moments
# --------------------------------------------------------------------------------------------

#: Columns of single-array moments: count, sum, centred sum of squares.
N, SUM, CSS = 0, 1, 2
#: Columns of paired moments (measured m, noiseless c).
P_N, P_SUM_M, P_SUM_C, P_CSS_M, P_CSS_C, P_CSP = 0, 1, 2, 3, 4, 5


def _as_f64_rows(a: np.ndarray, name: str) -> np.ndarray:
    """``a`` (t, cy, X) as a C-contiguous float64 array.

    A fixed memory layout makes numpy's per-row (pairwise) summation identical whatever the
    input's strides, so a row's moments cannot depend on how the chunk was sliced.
    """
    a = np.asarray(a)
    if a.ndim != 3:
        raise InputError(f"{name}: expected a (tilt, y, x) array, got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float64)


def row_moments(a: np.ndarray) -> np.ndarray:
    """Per-row moments of a tilt-series chunk, the mergeable primitive of all statistics.

    Parameters
    ----------
    a : ndarray, shape (t, cy, X)
        Any real dtype (converted to float64).

    Returns
    -------
    ndarray, float64, shape (t, cy, 3)
        Columns ``[n, sum, css]``: pixel count, sum of values and sum of squared deviations
        from the row's own mean (units of ``a`` and ``a²``).

    Notes
    -----
    Depends only on the pixels of each row, so it is independent of the chunking. Combine
    rows of a tilt with :func:`reduce_rows` (see the module docstring for the contract).
    """
    a = _as_f64_rows(a, "row_moments")
    nx = a.shape[2]
    s = a.sum(axis=2)
    d = a - (s / nx)[..., None]
    css = np.einsum("tyx,tyx->ty", d, d) if nx else np.zeros_like(s)
    return np.stack([np.full_like(s, nx), s, css], axis=-1)


def row_paired_moments(measured: np.ndarray, noiseless: np.ndarray) -> np.ndarray:
    """Per-row paired moments of a measured chunk M and the noiseless chunk C of the same pixels.

    Parameters
    ----------
    measured, noiseless : ndarray, shape (t, cy, X)
        The same tilts and rows of the measured reference and of its noiseless projection.

    Returns
    -------
    ndarray, float64, shape (t, cy, 6)
        Columns ``[n, ΣM, ΣC, css_M, css_C, csp_MC]``: count, sums, and sums of squared /
        cross-multiplied deviations from each row's own means.
    """
    m = _as_f64_rows(measured, "measured")
    c = _as_f64_rows(noiseless, "noiseless")
    if m.shape != c.shape:
        raise InputError(f"measured {m.shape} and noiseless {c.shape} shapes differ")
    nx = m.shape[2]
    sm, sc = m.sum(axis=2), c.sum(axis=2)
    dm = m - (sm / nx)[..., None]
    dc = c - (sc / nx)[..., None]
    # einsum over the contiguous last axis: one pass, no (t, cy, X) product temporaries.
    css_m = np.einsum("tyx,tyx->ty", dm, dm)
    css_c = np.einsum("tyx,tyx->ty", dc, dc)
    csp = np.einsum("tyx,tyx->ty", dm, dc)
    return np.stack([np.full_like(sm, nx), sm, sc, css_m, css_c, csp], axis=-1)


def _fsum_last(a: np.ndarray) -> np.ndarray:
    """Exactly rounded sum over axis 1 of a (t, rows) array: independent of the row order."""
    return np.array([math.fsum(row) for row in a], dtype=np.float64)


def reduce_rows(rows: np.ndarray) -> np.ndarray:
    """Combine the row moments of whole tilts into per-tilt moments, bit-reproducibly.

    Parameters
    ----------
    rows : ndarray, float64, shape (t, Y, 3) or (t, Y, 6)
        Output of :func:`row_moments` or :func:`row_paired_moments` for *all* Y rows of each
        of t tilts, concatenated along axis 1 in any order.

    Returns
    -------
    ndarray, float64, shape (t, 3) or (t, 6)
        The same columns for the whole tilt, deviations now taken from the tilt mean.

    Notes
    -----
    Uses the exact decomposition ``css = Σ_rows css_r + Σ_rows n_r (mean_r − mean)²`` (both
    terms are non-negative: no cancellation) and :func:`math.fsum` for every sum, so the
    result is the same for any row order and hence for any chunking, as long as it is called
    once with all rows of the tilt.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 3 or rows.shape[2] not in (3, 6):
        raise InputError(f"reduce_rows: expected (t, rows, 3|6) moments, got {rows.shape}")
    paired = rows.shape[2] == 6
    n_r = rows[..., 0]
    n = _fsum_last(n_r)
    nsum = 2 if paired else 1
    sums = [_fsum_last(rows[..., 1 + j]) for j in range(nsum)]
    with np.errstate(invalid="ignore", divide="ignore"):
        # Deviations of the row means from the tilt mean (rows with n_r = 0 contribute 0).
        devs = [
            np.where(n_r > 0, rows[..., 1 + j] / n_r - (sums[j] / n)[:, None], 0.0)
            for j in range(nsum)
        ]
    out = [n, *sums]
    if paired:
        d_m, d_c = devs
        out.append(_fsum_last(rows[..., P_CSS_M]) + _fsum_last(n_r * d_m * d_m))
        out.append(_fsum_last(rows[..., P_CSS_C]) + _fsum_last(n_r * d_c * d_c))
        out.append(_fsum_last(rows[..., P_CSP]) + _fsum_last(n_r * d_m * d_c))
    else:
        (d,) = devs
        out.append(_fsum_last(rows[..., CSS]) + _fsum_last(n_r * d * d))
    return np.stack(out, axis=-1)


def moments(a: np.ndarray) -> np.ndarray:
    """Per-tilt moments of a chunk: ``reduce_rows(row_moments(a))``.

    Parameters
    ----------
    a : ndarray, shape (t, cy, X)

    Returns
    -------
    ndarray, float64, shape (t, 3)
        ``[n, sum, css]`` of each tilt of the chunk (deviations from the chunk's tilt mean).

    Notes
    -----
    Convenient for whole tilts. A stage that splits tilts into y-chunks must concatenate
    :func:`row_moments` instead (see the module docstring) to stay bit-reproducible.
    """
    return reduce_rows(row_moments(a))


def paired_moments(measured: np.ndarray, noiseless: np.ndarray) -> np.ndarray:
    """Per-tilt paired moments of a chunk: ``reduce_rows(row_paired_moments(m, c))``.

    Returns
    -------
    ndarray, float64, shape (t, 6)
        ``[n, ΣM, ΣC, css_M, css_C, csp_MC]`` per tilt.
    """
    return reduce_rows(row_paired_moments(measured, noiseless))


def merge_moments(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Merge per-tilt moments of two disjoint pixel sets of the same tilts (Chan et al.).

    Parameters
    ----------
    a, b : ndarray, float64, shape (t, 3) or (t, 6)
        Per-tilt moments (e.g. from :func:`moments` of two y-chunks).

    Returns
    -------
    ndarray, float64, same shape
        Moments of the union.

    Notes
    -----
    Numerically sound, but the last bits depend on the merge order, i.e. on the chunking.
    The stage should prefer concatenated :func:`row_moments` + :func:`reduce_rows`.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.shape[-1] not in (3, 6):
        raise InputError(f"merge_moments: shapes {a.shape} and {b.shape} do not match")
    na, nb = a[..., 0], b[..., 0]
    n = na + nb
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(n > 0, na * nb / n, 0.0)
        both = (na > 0) & (nb > 0)

        def mean_diff(j: int) -> np.ndarray:
            return np.where(both, b[..., j] / nb - a[..., j] / na, 0.0)

        if a.shape[-1] == 3:
            d = mean_diff(SUM)
            return np.stack([n, a[..., 1] + b[..., 1], a[..., 2] + b[..., 2] + w * d * d], -1)
        dm, dc = mean_diff(P_SUM_M), mean_diff(P_SUM_C)
        return np.stack(
            [
                n,
                a[..., 1] + b[..., 1],
                a[..., 2] + b[..., 2],
                a[..., 3] + b[..., 3] + w * dm * dm,
                a[..., 4] + b[..., 4] + w * dc * dc,
                a[..., 5] + b[..., 5] + w * dm * dc,
            ],
            -1,
        )


def mean_std(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation (ddof = 0) from per-tilt moments.

    Parameters
    ----------
    m : ndarray, float64, shape (t, 3)
        Output of :func:`reduce_rows` / :func:`moments`.

    Returns
    -------
    mean, std : ndarray, float64, shape (t,)
        In the units of the data.
    """
    m = np.asarray(m, dtype=np.float64)
    n = m[..., N]
    return m[..., SUM] / n, np.sqrt(m[..., CSS] / n)


# --------------------------------------------------------------------------------------------
# Noise curves (METHOD §2)
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
# Counter-based standard-normal field
# --------------------------------------------------------------------------------------------

_U32: Final = 0xFFFFFFFF
_PHILOX_M0: Final = np.uint64(0xD2511F53)
_PHILOX_M1: Final = np.uint64(0xCD9E8D57)
_PHILOX_W0: Final = 0x9E3779B9
_PHILOX_W1: Final = 0xBB67AE85
_MASK32: Final = np.uint64(_U32)
_SHIFT32: Final = np.uint64(32)
#: Counters per inner block: big enough to amortise numpy's per-call cost, small enough that
#: the ~10 live uint64 arrays stay in cache (measured: ~4x faster than whole-tilt arrays).
_BLOCK_COUNTERS: Final = 1 << 15


def philox4x32_10(
    counter: Sequence[np.ndarray | int], key: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Philox4x32-10 block function (Salmon et al. 2011, Random123), vectorised.

    Parameters
    ----------
    counter : 4 arrays (broadcastable) or ints
        Counter words c0..c3, each in [0, 2³²).
    key : (int, int)
        Key words k0, k1 in [0, 2³²).

    Returns
    -------
    4 ndarrays, uint64, broadcast shape
        Output words, each in [0, 2³²) (uint64 so the 32×32→64-bit products need no casts).

    Notes
    -----
    Matches the Random123 known-answer vectors (see the tests). numpy's ``np.random.Philox``
    is the 4x64 variant and cannot serve as a reference.
    """
    c = np.broadcast_arrays(*[np.asarray(w, dtype=np.uint64) for w in counter])
    c0, c1, c2, c3 = (np.array(w, dtype=np.uint64) for w in c)  # own, writable copies
    k0, k1 = int(key[0]) & _U32, int(key[1]) & _U32
    for _ in range(10):
        p0 = c0 * _PHILOX_M0  # < 2⁶⁴: exact in uint64
        p1 = c2 * _PHILOX_M1
        n0 = p1 >> _SHIFT32
        n0 ^= c1
        n0 ^= np.uint64(k0)
        n2 = p0 >> _SHIFT32
        n2 ^= c3
        n2 ^= np.uint64(k1)
        p1 &= _MASK32
        p0 &= _MASK32
        c0, c1, c2, c3 = n0, p1, n2, p0
        k0 = (k0 + _PHILOX_W0) & _U32
        k1 = (k1 + _PHILOX_W1) & _U32
    return c0, c1, c2, c3


def _check_u32(name: str, value: int) -> int:
    v = int(value)
    if not 0 <= v <= _U32:
        raise InputError(f"normal field: {name} must be in [0, 2**32), got {value}")
    return v


def normal_block(
    seed: int,
    tomo: int,
    tilts: Sequence[int] | np.ndarray,
    y0: int,
    y1: int,
    nx: int,
    *,
    x0: int = 0,
    stream: int = 0,
) -> np.ndarray:
    """Standard-normal field z for several tilts, a pure function of (seed, tomo, tilt, y, x).

    Parameters
    ----------
    seed, tomo : int
        Philox key ``(seed, tomo)``, each in [0, 2³²). One tomogram's NOISY, CONTENT and
        BASELINE use the same pair, hence the same field.
    tilts : sequence of int, length t
        Tilt indices (counter word 2).
    y0, y1 : int
        Rows ``y0 <= y < y1`` (counter word 1).
    nx : int
        Number of columns, starting at ``x0``.
    x0 : int, keyword
        First column (default 0).
    stream : int, keyword
        Counter word 3, for independent fields under the same key (0 = the noise field z).

    Returns
    -------
    ndarray, float32, shape (t, y1 − y0, nx)
        Independent N(0, 1) samples (dimensionless).

    Notes
    -----
    Pixel ``(tilt, y, x)`` is value ``x mod 4`` of the counter
    ``(x // 4, y, tilt, stream)``: one Philox4x32-10 call gives four 32-bit words, turned into
    four normals by two Box–Muller transforms in float64 (``u1 = (w + 1)·2⁻³² ∈ (0, 1]`` so
    the log is finite, ``u2 = w·2⁻³²``; curand's ``curand_normal4`` scheme; |z| ≤ 6.66).
    Every pixel is computed by elementwise operations from its own counter, so any chunk of
    any tilt is bit-identical however the field is split. (Across *different* CPUs or numpy
    builds, libm/SIMD ``log``/``cos`` may differ in the last float64 ulp, which very rarely
    changes a float32 value.)
    """
    seed = _check_u32("seed", seed)
    tomo = _check_u32("tomo", tomo)
    stream = _check_u32("stream", stream)
    tilts = [_check_u32("tilt", t) for t in np.atleast_1d(np.asarray(tilts)).tolist()]
    y0, y1, nx, x0 = int(y0), int(y1), int(nx), int(x0)
    if y0 < 0 or y1 < y0 or nx < 0 or x0 < 0 or y1 > _U32 + 1 or x0 + nx > 4 * (_U32 + 1):
        raise InputError(f"normal field: bad range y=[{y0}, {y1}) x=[{x0}, {x0 + nx})")
    ny = y1 - y0
    out = np.empty((len(tilts), ny, nx), dtype=np.float32)
    if ny == 0 or nx == 0 or not tilts:
        return out
    b0, b1 = x0 // 4, (x0 + nx + 3) // 4  # counter blocks covering the columns
    nb = b1 - b0
    lead = x0 - 4 * b0
    xb = np.arange(b0, b1, dtype=np.uint64)[None, :]
    rows_per_block = max(1, _BLOCK_COUNTERS // nb)
    two_m32 = 2.0**-32
    two_pi_m32 = 2.0 * math.pi * two_m32
    buf = np.empty((rows_per_block, nb, 4), dtype=np.float64)
    for ti, tilt in enumerate(tilts):
        for ys in range(y0, y1, rows_per_block):
            ye = min(y1, ys + rows_per_block)
            r = ye - ys
            yy = np.arange(ys, ye, dtype=np.uint64)[:, None]
            w = philox4x32_10((xb, yy, tilt, stream), (seed, tomo))
            o = buf[:r]
            for j in (0, 2):
                # Box–Muller on words (j, j+1) -> values j, j+1 of each group of four.
                rad = w[j].astype(np.float64)
                rad += 1.0
                rad *= two_m32
                np.log(rad, out=rad)
                rad *= -2.0
                np.sqrt(rad, out=rad)
                ang = w[j + 1].astype(np.float64)
                ang *= two_pi_m32
                np.multiply(rad, np.cos(ang), out=o[:, :, j])
                np.multiply(rad, np.sin(ang), out=o[:, :, j + 1])
            flat = o.reshape(r, 4 * nb)
            out[ti, ys - y0 : ye - y0] = flat[:, lead : lead + nx]
    return out


def normal_field(
    seed: int, tomo: int, tilt: int, y0: int, y1: int, nx: int, *, x0: int = 0, stream: int = 0
) -> np.ndarray:
    """Standard-normal field of one tilt, rows ``y0 <= y < y1``: ``normal_block(...)[0]``.

    Returns
    -------
    ndarray, float32, shape (y1 − y0, nx)
        See :func:`normal_block` for the counter layout and reproducibility guarantees.
    """
    return normal_block(seed, tomo, [tilt], y0, y1, nx, x0=x0, stream=stream)[0]


# --------------------------------------------------------------------------------------------
# Noise injection (METHOD §3)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Modality:
    """Parameters of one noise modality.

    Attributes
    ----------
    order : int
        Polynomial order of the noise-model curves it uses.
    k : float
        Scale of the noise term ``z·σ·k``.
    """

    order: int
    k: float


#: METHOD §3: NOISY and CONTENT use order-2 curves, BASELINE order-0; CONTENT's noise is a
#: quarter of NOISY's (same field z).
MODALITIES: Final[dict[str, Modality]] = {
    "noisy": Modality(order=2, k=1.0),
    "content": Modality(order=2, k=0.25),
    "baseline": Modality(order=0, k=1.0),
}


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
        Mean and population std of each *whole* tilt of P (from :func:`mean_std` of
        :func:`reduce_rows` of :func:`row_moments`).
    z_chunk : ndarray, shape (t, cy, X)
        The standard-normal field of the same pixels (:func:`normal_block`).
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

    Algebraically METHOD §3's ``x ← x/std(x)·s; x ← x − (mean(x) − μ)``; the centred form
    avoids cancellation when ``|μ| >> s``.

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
    """METHOD §3 literally, on a whole in-memory tilt-series (the reference for the stage).

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
