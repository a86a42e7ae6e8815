"""Philox4x32-10 counters to Box–Muller uniforms, compiled (numba): the hot loop of the noise field.

Why compiled: in numpy, Philox's ten rounds are ~100 passes over uint64 temporaries. Measured
on the project's 2-core machine (``benchmarks/bench_noise.py``), one 1024² tilt took 36 ms of
Philox plus ~15 ms of integer→float conversions of a 65–82 ms field; fused in one compiled loop
they take ~3 ms and the whole field ~27 ms. Integer arithmetic and the exact float64 scalings
below give the same bits as numpy (tested against :func:`faket_dask.kernels.noise_rng.
philox4x32_10` and the numpy Box–Muller); ``log``/``cos``/``sin`` stay numpy's
(:func:`faket_dask.kernels.noise_rng.normal_block`). Compiled once per machine and cached on
disk (``cache=True``); imported lazily, only when a field is drawn.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .philox_constants import PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1, U32

__all__ = ["philox_uniforms"]

# As uint64 scalars: numba would type a Python int as int64, and uint64 (+) int64 as float64.
_M0 = np.uint64(PHILOX_M0)
_M1 = np.uint64(PHILOX_M1)
_W0 = np.uint64(PHILOX_W0)
_W1 = np.uint64(PHILOX_W1)
_MASK = np.uint64(U32)
_S32 = np.uint64(32)
_TWO_M32 = 2.0**-32
_TWO_PI_M32 = 2.0 * math.pi * _TWO_M32


@numba.njit(cache=True, nogil=True)
def philox_uniforms(b0, nb, ys, r, tilt, stream, key0, key1, rad, ang):  # pragma: no cover - compiled
    """Fill ``rad`` and ``ang`` (float64, shape (2, r, nb)) for counters ``(b0 + b, ys + i, tilt, stream)``.

    ``rad[j] = (w[2j] + 1)·2⁻³²`` ∈ (0, 1] (exact) and ``ang[j] = w[2j+1]·2π·2⁻³²`` (one
    rounding), with ``w`` the four output words of Philox4x32-10 under the key ``(key0, key1)``
    (Salmon et al. 2011): the inputs of the two Box–Muller transforms of each counter.
    """
    for i in range(r):
        for b in range(nb):
            c0 = np.uint64(b0 + b)
            c1 = np.uint64(ys + i)
            c2 = np.uint64(tilt)
            c3 = np.uint64(stream)
            k0 = np.uint64(key0)
            k1 = np.uint64(key1)
            for _ in range(10):
                p0 = c0 * _M0  # < 2⁶⁴: exact in uint64
                p1 = c2 * _M1
                n0 = (p1 >> _S32) ^ c1 ^ k0
                n2 = (p0 >> _S32) ^ c3 ^ k1
                c0, c1, c2, c3 = n0, p1 & _MASK, n2, p0 & _MASK
                k0 = (k0 + _W0) & _MASK
                k1 = (k1 + _W1) & _MASK
            rad[0, i, b] = (np.float64(c0) + 1.0) * _TWO_M32
            ang[0, i, b] = np.float64(c1) * _TWO_PI_M32
            rad[1, i, b] = (np.float64(c2) + 1.0) * _TWO_M32
            ang[1, i, b] = np.float64(c3) * _TWO_PI_M32
