"""Philox4x32-10 counters to Box–Muller uniforms, compiled (numba): the hot loop of the noise field.

Why compiled: in numpy, Philox's ten rounds are ~100 passes over uint64 temporaries. Measured
on the project's 2-core machine (``benchmarks/bench_noise.py``), one 1024² tilt took 36 ms of
Philox plus ~15 ms of integer→float conversions of a 65–82 ms field; fused in one compiled loop
they take ~3 ms and the whole field ~27 ms. Integer arithmetic and the exact float64 scalings
below give the same bits as numpy (tested against :func:`faket_dask.kernels.noise_rng.
philox4x32_10` and the numpy Box–Muller); ``log``/``cos``/``sin`` stay numpy's
(:func:`faket_dask.kernels.noise_rng.normal_block`). Compiled once per machine and cached on
disk (``cache=True``); imported lazily, only when a field is drawn.

:func:`box_muller_rows` does the rest of the transform after numpy's ``log``: ``sqrt``, ``cos``
and ``sin`` and the float32 store. Why compiled: numpy calls the C library's ``cos`` and ``sin``
separately (21 of the field's 29 ms per 1024² tilt, measured); in one loop LLVM turns the pair
into one ``sincos`` call, which gives the same bits as the two (glibc computes them with the same
code; tested on 2²⁴ angles against numpy) in ~2/3 of the time. ``log`` stays numpy's: its
SIMD ``log`` differs from the C library's in ~0.2 % of values.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .philox_constants import PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1, U32

__all__ = ["box_muller_rows", "philox_uniforms"]

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


@numba.njit(cache=True, nogil=True)
def box_muller_rows(log_rad, ang, out, lead):  # pragma: no cover - compiled
    """Box–Muller normals of ``r`` rows of counters into ``out`` (float32, shape (r, nx)).

    ``log_rad`` and ``ang`` (float64, shape (2, r, nb)) are ``log(u1)`` and ``2π·u2`` of
    :func:`philox_uniforms`; counter ``b`` of row ``i`` gives the four values
    ``√(−2·log_rad[j]) · (cos, sin)(ang[j])``, j = 0, 1, at columns ``4b + (2j, 2j + 1) − lead``;
    those outside ``[0, nx)`` are dropped. Each value is the float64 product rounded once to
    float32, as numpy's ``multiply`` followed by a float32 assignment.
    """
    nx = out.shape[1]
    for i in range(log_rad.shape[1]):
        for b in range(log_rad.shape[2]):
            for j in range(2):
                rr = math.sqrt(-2.0 * log_rad[j, i, b])
                a = ang[j, i, b]
                x = 4 * b + 2 * j - lead
                c = rr * math.cos(a)
                sn = rr * math.sin(a)
                if 0 <= x < nx:
                    out[i, x] = np.float32(c)
                if 0 <= x + 1 < nx:
                    out[i, x + 1] = np.float32(sn)
