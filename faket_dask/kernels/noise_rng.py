"""The counter-based standard-normal noise field z of FakET (``docs/method.md §3``).

No dask, no I/O; the Philox rounds are compiled (:mod:`.philox_compiled`, numba), the rest is
numpy. Philox4x32-10 (Salmon et al. 2011, Random123) keyed by ``(seed, tomogram)`` with the
counter ``(x // 4, y, tilt, stream)``, turned into normals by Box–Muller in float64: any chunk
regenerates its own pixels from its position, so the field is never stored and is bit-identical
however it is split (``docs/architecture.md``, "Noise stage").
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np

from faket_dask.errors import InputError

from .philox_constants import PHILOX_M0, PHILOX_M1, PHILOX_W0, PHILOX_W1, U32

__all__ = ["normal_block", "normal_field", "philox4x32_10"]

# Philox4x32-10 constants (owner: .philox_constants) in the dtypes of the numpy rounds below.
_U32: Final = U32
_PHILOX_M0: Final = np.uint64(PHILOX_M0)
_PHILOX_M1: Final = np.uint64(PHILOX_M1)
_PHILOX_W0: Final = PHILOX_W0
_PHILOX_W1: Final = PHILOX_W1
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
    impl: str = "compiled",
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
    impl : {"compiled", "numpy"}, keyword
        ``"compiled"`` (default): Philox rounds in :mod:`.philox_compiled` (numba), ~2.5× faster
        per tilt. ``"numpy"``: Philox by :func:`philox4x32_10`, pure numpy, the reference the
        tests and ``benchmarks/bench_noise.py`` compare with. Both give the same bits.

    Returns
    -------
    ndarray, float32, shape (t, y1 − y0, nx)
        Independent N(0, 1) samples (dimensionless).

    Raises
    ------
    InputError
        A key, tilt or stream outside [0, 2³²), a bad row/column range, an unknown ``impl``.

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
    if impl not in ("compiled", "numpy"):
        raise InputError(f"normal field: impl must be 'compiled' or 'numpy', got {impl!r}")
    ny = y1 - y0
    out = np.empty((len(tilts), ny, nx), dtype=np.float32)
    if ny == 0 or nx == 0 or not tilts:
        return out
    if impl == "compiled":
        from .philox_compiled import box_muller_rows, philox_uniforms  # lazy: numba, ~0.3 s
    b0, b1 = x0 // 4, (x0 + nx + 3) // 4  # counter blocks covering the columns
    nb = b1 - b0
    lead = x0 - 4 * b0
    rows_per_block = max(1, _BLOCK_COUNTERS // nb)
    o_buf = np.empty((rows_per_block, nb, 4), dtype=np.float64) if impl == "numpy" else None
    for ti, tilt in enumerate(tilts):
        for ys in range(y0, y1, rows_per_block):
            ye = min(y1, ys + rows_per_block)
            r = ye - ys
            # rad[j], ang[j]: contiguous (r, nb) arrays, so numpy takes the same (SIMD) log loop
            # in both implementations: the log stays numpy's, bit for bit.
            rad = np.empty((2, r, nb), dtype=np.float64)
            ang = np.empty((2, r, nb), dtype=np.float64)
            if impl == "compiled":
                philox_uniforms(b0, nb, ys, r, tilt, stream, seed, tomo, rad, ang)
                np.log(rad, out=rad)
                box_muller_rows(rad, ang, out[ti, ys - y0 : ye - y0], lead)
                continue
            _numpy_uniforms(b0, nb, ys, r, tilt, stream, seed, tomo, rad, ang)
            o = o_buf[:r]
            for j in (0, 1):
                # Box–Muller on words (2j, 2j+1) -> values 2j, 2j+1 of each group of four.
                rr = rad[j]
                np.log(rr, out=rr)
                rr *= -2.0
                np.sqrt(rr, out=rr)
                np.multiply(rr, np.cos(ang[j]), out=o[:, :, 2 * j])
                np.multiply(rr, np.sin(ang[j]), out=o[:, :, 2 * j + 1])
            flat = o.reshape(r, 4 * nb)
            out[ti, ys - y0 : ye - y0] = flat[:, lead : lead + nx]
    return out


def _numpy_uniforms(b0, nb, ys, r, tilt, stream, key0, key1, rad, ang) -> None:
    """:func:`.philox_compiled.philox_uniforms` in numpy: the same words, the same scalings."""
    xb = np.arange(b0, b0 + nb, dtype=np.uint64)[None, :]
    yy = np.arange(ys, ys + r, dtype=np.uint64)[:, None]
    w = philox4x32_10((xb, yy, tilt, stream), (key0, key1))
    two_m32 = 2.0**-32
    for j in (0, 1):
        np.multiply(w[2 * j].astype(np.float64) + 1.0, two_m32, out=rad[j])
        np.multiply(w[2 * j + 1].astype(np.float64), 2.0 * math.pi * two_m32, out=ang[j])


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
