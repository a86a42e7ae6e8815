"""The noise injection's per-pixel passes, compiled (numba): row moments, mix, rescale.

Why compiled: in numpy, every step of ``docs/method.md §3`` is a pass over float64 temporaries
of the tilt (``astype``, subtract, divide, multiply, add, cast), ~27 ms per 1024² tilt on the
project's 2-core machine; here each of the three passes reads the float32 inputs once and keeps
a row of float64 in L1 (~6 ms per tilt in all; ``benchmarks/bench_noise.py``,
``docs/noise.md``, "Performance").

Same bits as the numpy kernels where it matters:

* ``x`` is computed by the operations of :func:`faket_dask.kernels.noise.mix`, in its order
  (``((P − p_mean) / p_std) · r + z · (σ·k)``, float64, no fused multiply-add: numba does not
  contract without fastmath) and the output by those of
  :func:`faket_dask.kernels.noise.rescale` (``((x − x_mean) · (s / x_std)) + μ`` cast to
  float32); tested equal bit for bit.
* Row sums use numpy's pairwise summation (``np.add.reduce`` on a contiguous float64 row:
  blocks of at most 128 values summed with eight accumulators, halves split at multiples of
  eight; ``numpy/_core/src/umath/loops_utils.h.src``), so ``sum`` equals
  :func:`faket_dask.kernels.noise_moments.row_moments`'s bit for bit; ``css`` is the same
  pairwise sum of squared deviations (numpy's einsum accumulates in another order: the two
  differ in the last float64 bits, which do not reach the float32 output in practice: the
  benchmark compares the stage with the in-memory numpy path pixel by pixel).

A row's moments depend only on that row, so the chunking contract of
:mod:`faket_dask.kernels.noise_moments` holds: combine rows with ``reduce_rows``.
Compiled once per machine and cached on disk (``cache=True``); imported lazily.
"""
from __future__ import annotations

import numba
import numpy as np

__all__ = ["as_kernel_input", "mix_rescale", "mix_row_moments", "row_moments"]

#: numpy's pairwise-summation block (``PW_BLOCKSIZE`` in numpy's ``loops_utils.h.src``).
_PW_BLOCK = 128


@numba.njit(cache=True, nogil=True)
def _leaf_sum(a, lo, n):  # pragma: no cover - compiled
    """numpy's pairwise sum of ``a[lo : lo + n]`` for ``n <= 128`` (no further split)."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    m = n - n % 8
    i = 8
    while i < m:
        j = lo + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@numba.njit(cache=True, nogil=True)
def _pairwise_sum(a, plan, vals):  # pragma: no cover - compiled
    """Sum of the row ``a`` in numpy's pairwise order, following ``plan`` (:func:`_plan`).

    Not recursive: numba's on-disk cache crashes (segfault) when a cached recursive function
    is loaded in a second process.
    """
    sp = 0
    for k in range(plan.shape[0]):
        n = plan[k, 1]
        if n < 0:
            sp -= 1
            vals[sp - 1] = vals[sp - 1] + vals[sp]
        else:
            vals[sp] = _leaf_sum(a, plan[k, 0], n)
            sp += 1
    return vals[0]


def _plan(n: int) -> np.ndarray:
    """numpy's pairwise recursion for a row of n values, in post-order: ``(start, length)``
    rows for the blocks of at most 128 values and ``(0, -1)`` for "add the last two sums"."""
    steps: list[tuple[int, int]] = []

    def split(lo: int, m: int) -> None:
        if m <= _PW_BLOCK:
            steps.append((lo, m))
            return
        m2 = m // 2
        m2 -= m2 % 8
        split(lo, m2)
        split(lo + m2, m - m2)
        steps.append((0, -1))

    split(0, n)
    return np.array(steps, dtype=np.int64)


@numba.njit(cache=True, nogil=True)
def _row_stats(buf, nx, plan, vals, out):  # pragma: no cover - compiled
    """``out[:] = [n, Σ, Σ(v − mean)²]`` of the float64 row ``buf[:nx]`` (buf is overwritten)."""
    s = _pairwise_sum(buf, plan, vals)
    mean = s / nx
    for i in range(nx):
        d = buf[i] - mean
        buf[i] = d * d
    out[0] = nx
    out[1] = s
    out[2] = _pairwise_sum(buf, plan, vals)


@numba.njit(cache=True, nogil=True)
def _row_moments(a, plan, out):  # pragma: no cover - compiled
    t, ny, nx = a.shape
    buf = np.empty(nx, np.float64)
    vals = np.empty(plan.shape[0], np.float64)
    for ti in range(t):
        for y in range(ny):
            for i in range(nx):
                buf[i] = a[ti, y, i]
            _row_stats(buf, nx, plan, vals, out[ti, y])


@numba.njit(cache=True, nogil=True)
def _mix_row(p, z, ti, y, nx, pm, ps, rr, sk, buf):  # pragma: no cover - compiled
    """Row ``y`` of tilt ``ti`` of x, as :func:`faket_dask.kernels.noise.mix` computes it."""
    for i in range(nx):
        buf[i] = ((np.float64(p[ti, y, i]) - pm) / ps) * rr + np.float64(z[ti, y, i]) * sk


@numba.njit(cache=True, nogil=True)
def _mix_row_moments(p, z, p_mean, p_std, r, sk, plan, out):  # pragma: no cover - compiled
    t, ny, nx = p.shape
    buf = np.empty(nx, np.float64)
    vals = np.empty(plan.shape[0], np.float64)
    for ti in range(t):
        for y in range(ny):
            _mix_row(p, z, ti, y, nx, p_mean[ti], p_std[ti], r[ti], sk[ti], buf)
            _row_stats(buf, nx, plan, vals, out[ti, y])


@numba.njit(cache=True, nogil=True)
def _mix_rescale(p, z, p_mean, p_std, r, sk, x_mean, scale, mu, out):  # pragma: no cover - compiled
    t, ny, nx = p.shape
    buf = np.empty(nx, np.float64)
    for ti in range(t):
        xm, sc, m = x_mean[ti], scale[ti], mu[ti]
        for y in range(ny):
            _mix_row(p, z, ti, y, nx, p_mean[ti], p_std[ti], r[ti], sk[ti], buf)
            for i in range(nx):
                out[ti, y, i] = np.float32((buf[i] - xm) * sc + m)


def _f64(v, t: int) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype=np.float64), (t,)))


def as_kernel_input(a: np.ndarray) -> np.ndarray:
    """A (t, cy, X) chunk as C-contiguous float32 or float64 (what the loops are compiled for).

    Other dtypes become float64. Convert once when a chunk goes through several of the
    kernels below: on an already converted chunk this returns it as it is.
    """
    a = np.asarray(a)
    dtype = a.dtype if a.dtype in (np.float32, np.float64) else np.float64
    return np.ascontiguousarray(a, dtype=dtype)


def row_moments(a: np.ndarray) -> np.ndarray:
    """Per-row ``[n, sum, css]`` of a (t, cy, X) chunk; see the module docstring for the bits.

    Returns
    -------
    ndarray, float64, shape (t, cy, 3)
        As :func:`faket_dask.kernels.noise_moments.row_moments` (``sum`` bit-identical).
    """
    a = as_kernel_input(a)
    out = np.empty(a.shape[:2] + (3,), np.float64)
    if a.shape[2]:
        _row_moments(a, _plan(a.shape[2]), out)
    else:
        out[...] = 0.0
    return out


def mix_row_moments(p, z, p_mean, p_std, r, sigma, k: float) -> np.ndarray:
    """Row moments of ``x = mix(p, p_mean, p_std, z, r, sigma, k)`` without storing x.

    Parameters
    ----------
    p, z : ndarray, shape (t, cy, X)
        Noiseless chunk and the standard-normal field of its pixels (float32 or float64).
    p_mean, p_std, r, sigma : ndarray, shape (t,)
        As :func:`faket_dask.kernels.noise.mix`.
    k : float
        Noise scale.

    Returns
    -------
    ndarray, float64, shape (t, cy, 3)
    """
    p, z = as_kernel_input(p), as_kernel_input(z)
    t = p.shape[0]
    sk = _f64(sigma, t) * float(k)  # σ·k per tilt first, as mix does
    out = np.zeros(p.shape[:2] + (3,), np.float64)
    if p.shape[2]:
        _mix_row_moments(p, z, _f64(p_mean, t), _f64(p_std, t), _f64(r, t), sk, _plan(p.shape[2]), out)
    return out


def mix_rescale(p, z, p_mean, p_std, r, sigma, k: float, x_mean, x_std, target_mean,
                target_std) -> np.ndarray:
    """``rescale(mix(p, …), x_mean, x_std, target_mean, target_std)`` in one pass, float32.

    Parameters as :func:`mix_row_moments`, plus the per-tilt ``x_mean``, ``x_std`` (of the
    whole tilts of x) and the noise model's ``target_mean`` (μ), ``target_std`` (s), each (t,).

    Returns
    -------
    ndarray, float32, shape (t, cy, X)
        Bit-identical to ``rescale(mix(...), ...)`` of :mod:`faket_dask.kernels.noise`.
    """
    p, z = as_kernel_input(p), as_kernel_input(z)
    t = p.shape[0]
    sk = _f64(sigma, t) * float(k)
    scale = _f64(target_std, t) / _f64(x_std, t)  # s / x_std per tilt, as rescale does
    out = np.empty(p.shape, np.float32)
    _mix_rescale(p, z, _f64(p_mean, t), _f64(p_std, t), _f64(r, t), sk, _f64(x_mean, t), scale,
                 _f64(target_mean, t), out)
    return out
