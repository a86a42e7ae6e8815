"""Per-tilt statistics of tilt-series chunks, bit-reproducible for any chunking.

Pure numpy: no dask, no I/O. The statistics contract of the noise method (``docs/method.md
§2`` and ``§3``: the per-tilt mean/std of a tilt, the correlation of a measured and a noiseless
tilt), used by :mod:`faket_dask.kernels.noise` and wired chunk by chunk by the noise stage.

Every per-tilt statistic is computed from *per-row moments*:

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
"""
from __future__ import annotations

import math

import numpy as np

from faket_dask.errors import InputError

__all__ = [
    "CSS",
    "N",
    "P_CSP",
    "P_CSS_C",
    "P_CSS_M",
    "P_N",
    "P_SUM_C",
    "P_SUM_M",
    "SUM",
    "mean_std",
    "merge_moments",
    "moments",
    "paired_moments",
    "reduce_rows",
    "row_moments",
    "row_paired_moments",
]

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
