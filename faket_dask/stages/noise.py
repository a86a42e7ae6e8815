"""The noise stage (METHOD.md §2–3): estimate a noise model, add noise to a tilt-series.

Both directions work chunk by chunk on tilt-series chunked ``(t, cy, X)``; no tilt is ever
held whole. Per-tilt statistics follow the contract of :mod:`faket_dask.kernels.noise`:
per-row moments are computed per chunk, the rows of a tilt are gathered (``Y × 3..6`` float64,
tiny) and reduced once with exactly rounded sums, so every statistic, and every output pixel,
is bit-identical for any chunking and any number of workers.

Estimation (:func:`estimate_noise`)
    paired: ``row_paired_moments`` of each (measured, noiseless) chunk pair, reduced per tilt,
    ``curves_from_moments``, then fitted and averaged by :class:`~faket_dask.NoiseModel`.
    unpaired: ``row_band_power`` (white-noise power of each row from the high-frequency band of
    its spectrum, see ``docs/noise.md``) and row moments, reduced per tilt. Statistics are
    computed eagerly (the result is a small model, not an array).

Injection (:func:`add_noise`), a lazy graph of three passes over the input:
    0. ``row_moments(P)`` per chunk -> per-tilt mean/std of P;
    A. regenerate the field ``z`` of the chunk from its position, ``x = mix(P, ...)``,
       ``row_moments(x)`` -> per-tilt mean/std of x;
    B. regenerate ``z`` and ``x`` (deterministic), ``rescale`` -> float32 output chunk.
    One graph, computed by whoever saves or computes the result. An input chunk is read once
    and stays in memory until pass B of its tilt has used it; Dask's ordering finishes a tilt's
    three passes before it reads far ahead (measured: 61 × 1024² from Zarr, 2 workers, the
    process tree grew by ~70 MB over its idle size for a 256 MB stack; see
    ``benchmarks/bench_noise.py``). Memory per task is a few chunk-sized float64 arrays.
    (Re-reading the input per pass, e.g. with ``dask.graph_manipulation.clone``, would bound
    memory without relying on the ordering; clone mis-handles rechunk graphs in the pinned
    Dask, so it is not used.)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import dask.array as da
import numpy as np
import xarray as xr

from .. import chunking
from ..datamodel import TILT_DIMS
from ..errors import InputError
from ..tilt_pairing import is_identity, match_tilts, tilt_label
from ..kernels import noise as nz
from ..noise_model import NoiseModel
from ..progress import compute

__all__ = [
    "DEFAULT_BAND",
    "TAPER",
    "add_noise",
    "add_noise_modality",
    "band_bins",
    "check_references",
    "check_values",
    "estimate_noise",
    "estimate_noise_unpaired",
    "modality_specs",
    "row_band_power",
    "unpaired_curves",
]

#: Band of the unpaired estimate, as fractions of the Nyquist frequency (0.5 cycles/pixel):
#: 0.6–1.0 Nyquist = 0.3–0.5 cycles/pixel, where the CTF envelope and the detector MTF
#: usually leave no signal at tomography pixel sizes (assumptions: docs/noise.md).
DEFAULT_BAND: Final = (0.6, 1.0)
#: Tukey window taper fraction: tapers 12.5 % at each row end (kills the edge-discontinuity
#: leakage) and weights the flat 75 % middle equally, so a noise level that varies across
#: the row is averaged almost uniformly (a Hann window over-weights the row centre).
TAPER: Final = 0.25


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def _as_tiltseries(obj: Any, what: str) -> xr.DataArray:
    """A (tilt, y, x) DataArray backed by dask, with whole rows per chunk.

    numpy-backed inputs are chunked ``(1, cy, X)`` with the project's ``cy`` rule; dask inputs
    keep their chunks, except that several x-chunks are merged (row statistics need whole
    rows; the data model never splits x).
    """
    if not isinstance(obj, xr.DataArray):
        if not hasattr(obj, "ndim"):
            raise InputError(f"{what}: expected a (tilt, y, x) array, got {type(obj).__name__}")
        if obj.ndim != 3:
            raise InputError(f"{what}: expected a (tilt, y, x) array, got shape {tuple(obj.shape)}")
        obj = xr.DataArray(obj, dims=TILT_DIMS)
    if tuple(obj.dims) != TILT_DIMS:
        raise InputError(f"{what}: expected dims {TILT_DIMS}, got {tuple(obj.dims)}")
    if min(obj.shape) < 1:
        raise InputError(f"{what}: empty tilt-series, shape {obj.shape}")
    if not np.issubdtype(obj.dtype, np.number) or np.issubdtype(obj.dtype, np.complexfloating):
        raise InputError(f"{what}: expected real numbers, got dtype {obj.dtype}")
    data = obj.data
    if not isinstance(data, da.Array):
        t, ny, nx = obj.shape
        chunks = chunking.tiltseries_chunks(obj.shape, chunking.choose_cy(ny, nx, t))
        data = da.from_array(np.asarray(data), chunks=chunks)
    if data.numblocks[2] != 1:
        data = data.rechunk({2: -1})
    return obj.copy(data=data)


def _name(arr: Any, given: str | None, default: str) -> str:
    """What to call an input in messages and in the model: given > the array's name > default."""
    if given:
        return str(given)
    name = getattr(arr, "name", None) if isinstance(arr, xr.DataArray) else None
    return str(name) if name is not None else default


def _names(arrays: Sequence[Any], given: Sequence[str] | None, prefix: str) -> list[str]:
    if given is not None and len(given) != len(arrays):
        raise InputError(f"{len(given)} names for {len(arrays)} {prefix} tilt-series")
    return [_name(a, given[i] if given else None, f"{prefix}[{i}]") for i, a in enumerate(arrays)]


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    if isinstance(x, (xr.DataArray, np.ndarray, da.Array)):
        return [x]
    return list(x)


# --------------------------------------------------------------------------------------------
# per-tilt reductions (row moments -> tilt statistics), bit-reproducible
# --------------------------------------------------------------------------------------------


def _gather_rows(rows: da.Array) -> da.Array:
    """All rows of each tilt in one block: ``(t, Y, k)``, a few kB per tilt."""
    return rows.rechunk({1: -1, 2: -1})


def _reduce_block(rows: np.ndarray) -> np.ndarray:
    return nz.reduce_rows(rows)


def _tilt_moments(rows: da.Array) -> da.Array:
    """Per-tilt moments (T, k) from row moments (T, Y, k): one :func:`reduce_rows` per tilt."""
    g = _gather_rows(rows)
    return g.map_blocks(_reduce_block, drop_axis=1, chunks=(g.chunks[0], g.chunks[2]), dtype=np.float64)


def _mean_std_block(rows: np.ndarray, *, what: str, block_info: dict | None = None) -> np.ndarray:
    """(t, Y, 3) row moments -> (t, 1, 2) [mean, std] of each tilt; rejects unusable tilts.

    Raised here, on the worker, because the values are only known when the graph runs; the
    :class:`InputError` travels back to the caller unchanged.
    """
    t0 = block_info[0]["array-location"][0][0] if block_info else 0
    n = block_info[0]["shape"][0] if block_info else rows.shape[0]
    mean, std = nz.mean_std(nz.reduce_rows(rows))
    for i in range(mean.size):
        if not (np.isfinite(mean[i]) and np.isfinite(std[i])):
            raise InputError(f"{what}: {tilt_label(t0 + i, n)} has NaN or inf values")
        if std[i] == 0:
            raise InputError(f"{what}: {tilt_label(t0 + i, n)} is constant "
                             "(zero standard deviation: a blank or dark image)")
    return np.stack([mean, std], axis=-1)[:, None, :]


def _tilt_mean_std(rows: da.Array, what: str) -> tuple[da.Array, da.Array]:
    """Per-tilt mean and std as ``(T, 1, 1)`` arrays that broadcast over a tilt's chunks."""
    g = _gather_rows(rows)
    ms = g.map_blocks(
        _mean_std_block, what=what, chunks=(g.chunks[0], (1,), (2,)), dtype=np.float64,
        name=f"tilt-mean-std-{da.core.tokenize(g, what)}",
    )
    return ms[:, :, 0:1], ms[:, :, 1:2]


def _row_moments_block(a: np.ndarray) -> np.ndarray:
    return nz.row_moments(a)


def _row_moments(data: da.Array) -> da.Array:
    return data.map_blocks(
        _row_moments_block, chunks=(data.chunks[0], data.chunks[1], (3,)), dtype=np.float64
    )


# --------------------------------------------------------------------------------------------
# estimation
# --------------------------------------------------------------------------------------------


def _check_moments(mo: np.ndarray, checks: Sequence[tuple]) -> None:
    """Reject NaN/inf and constant tilts after the reduction, naming the array and the tilt.

    ``checks`` holds ``(name, sum column, css column[, angles])`` of each array in the
    moments; tilts are named 1-based with their angle when known.
    """
    for check in checks:
        name, col_sum, col_css = check[:3]
        angles = check[3] if len(check) > 3 else None
        bad = np.flatnonzero(~(np.isfinite(mo[:, col_sum]) & np.isfinite(mo[:, col_css])))
        if bad.size:
            raise InputError(f"{name}: {tilt_label(int(bad[0]), len(mo), angles)} has NaN or inf values")
        const = np.flatnonzero(mo[:, col_css] <= 0)
        if const.size:
            raise InputError(f"{name}: {tilt_label(int(const[0]), len(mo), angles)} is constant "
                             "(zero standard deviation: a blank or dark image)")


def _angles(arr: xr.DataArray) -> np.ndarray | None:
    if "tilt" in arr.coords and np.issubdtype(arr["tilt"].dtype, np.number):
        return np.asarray(arr["tilt"].values, dtype=np.float64)
    return None


def _check_tilt_counts(arrays: Sequence[xr.DataArray], names: Sequence[str]) -> None:
    counts = [a.sizes["tilt"] for a in arrays]
    if len(set(counts)) > 1:
        listed = ", ".join(f"{n} has {c}" for n, c in zip(names, counts))
        raise InputError(f"references differ in tilt count ({listed}); curves are averaged per tilt")


def _align(arr: xr.DataArray, to: xr.DataArray, name: str, to_name: str,
           match_angles: str = "exact") -> xr.DataArray:
    """``arr`` reordered so its tilt i has the angle of ``to``'s tilt i (by position when
    either has no angles). Curves are averaged, and pairs are compared, angle by angle."""
    a, b = _angles(arr), _angles(to)
    if a is None or b is None:
        return arr
    idx = match_tilts(b, a, target=to_name, source=name, mode=match_angles,
                      option="references with the same angles (curves are averaged angle by angle) or")
    return arr if is_identity(idx) else arr.isel(tilt=idx)


def check_references(
    measured: Sequence[xr.DataArray] | xr.DataArray,
    noiseless: Sequence[xr.DataArray] | xr.DataArray | None = None,
    names: Sequence[str] | None = None,
    noiseless_names: Sequence[str] | None = None,
) -> tuple[list[xr.DataArray], list[xr.DataArray] | None, list[str], list[str] | None]:
    """Validate reference tilt-series before any work; cheap (shapes only, nothing computed).

    Returns
    -------
    measured, noiseless, names, noiseless_names
        Dask-backed (tilt, y, x) DataArrays (whole rows per chunk) and their names.

    Raises
    ------
    InputError
        Nothing given, counts differ, a pair's shapes differ, or references differ in tilt
        count (their curves are averaged tilt by tilt).
    """
    ms = _as_list(measured)
    if not ms:
        raise InputError("estimate_noise: no measured tilt-series given")
    m_names = _names(ms, names, "measured")
    ms = [_as_tiltseries(a, n) for a, n in zip(ms, m_names)]
    # every reference's tilt i must have the first reference's angle i (stores keep stacks
    # sorted by angle, but arrays given directly may come in acquisition order)
    # The curves are fitted over the tilt index (METHOD §2), so that index must run over
    # ascending angles: the first reference is sorted, the others follow it angle by angle.
    order = np.argsort(_angles(ms[0]), kind="stable") if _angles(ms[0]) is not None else None
    if order is not None and not is_identity(order):
        ms[0] = ms[0].isel(tilt=order)
    ms = [ms[0]] + [_align(m, ms[0], n, m_names[0]) for m, n in zip(ms[1:], m_names[1:])]
    _check_tilt_counts(ms, m_names)
    if noiseless is None:
        return ms, None, m_names, None
    cs = _as_list(noiseless)
    if len(ms) != len(cs):
        raise InputError(
            f"estimate_noise: {len(ms)} measured but {len(cs)} noiseless tilt-series; give one noiseless per measured"
        )
    c_names = _names(cs, noiseless_names, "noiseless")
    cs = [_as_tiltseries(a, n) for a, n in zip(cs, c_names)]
    cs = [_align(c, m, cn, mn) if m.shape == c.shape else c
          for m, c, mn, cn in zip(ms, cs, m_names, c_names)]
    for m, c, mn, cn in zip(ms, cs, m_names, c_names):
        if m.shape != c.shape:
            raise InputError(f"{mn} has shape {m.shape} but its noiseless partner {cn} has {c.shape}")
    return ms, cs, m_names, c_names


def check_values(arrays: Sequence[xr.DataArray], names: Sequence[str]) -> None:
    """Reject tilt-series with a NaN/inf value or a constant tilt; one read of each array.

    The CLI runs this before it starts a cluster (DESIGN: inputs are validated before any
    work, with one-line errors), on the local threaded scheduler; memory stays at a few chunks.

    Raises
    ------
    InputError
        Naming the array and the first bad tilt.
    """
    arrs = [_as_tiltseries(a, n) for a, n in zip(arrays, names)]
    if not arrs:
        return
    per_tilt = [_tilt_moments(_row_moments(a.data)) for a in arrs]
    results = compute(per_tilt[0] if len(per_tilt) == 1 else da.concatenate(per_tilt), label="checking inputs")
    offsets = np.cumsum([0] + [a.sizes["tilt"] for a in arrs])
    for i, n in enumerate(names):
        _check_moments(np.asarray(results[offsets[i] : offsets[i + 1]]), [(n, nz.SUM, nz.CSS, _angles(arrs[i]))])


def estimate_noise(
    measured: Sequence[xr.DataArray] | xr.DataArray,
    noiseless: Sequence[xr.DataArray] | xr.DataArray | None = None,
    order: int = 2,
    *,
    sources: Sequence[str] | None = None,
    noiseless_sources: Sequence[str] | None = None,
    band: tuple[float, float] = DEFAULT_BAND,
) -> NoiseModel:
    """Estimate FakET's per-tilt noise curves from reference tilt-series (METHOD.md §2).

    Parameters
    ----------
    measured : DataArray (tilt, y, x) or sequence of K
        Measured reference tilt-series (e.g. the physics simulator's output), any units.
    noiseless : DataArray or sequence of K, optional
        The noiseless projection of the same specimen for each measured one, same shape.
        Omitted (None): the unpaired estimate of :func:`estimate_noise_unpaired`.
    order : int
        Polynomial order of the model's curves (2: NOISY/CONTENT; ``model.with_order(0)``
        gives BASELINE's).
    sources, noiseless_sources : sequence of str, optional
        Names recorded in the model (default: the arrays' names).
    band : (float, float)
        Unpaired estimate only: the frequency band, fractions of Nyquist.

    Returns
    -------
    NoiseModel
        Raw curves of every reference (``r``, ``sigma``, ``mean``, ``std``, ``clean_mean``,
        ``clean_std``: T values each), fitted at ``order`` and averaged.

    Notes
    -----
    Computes now (on the active Dask client, if any): two float64 numbers per row and
    reference travel back, never a tilt. Results do not depend on the chunking.
    """
    if noiseless is None:
        return estimate_noise_unpaired(measured, order, sources=sources, band=band)
    ms, cs, m_names, c_names = check_references(measured, noiseless, sources, noiseless_sources)
    tilt_moments = []
    for m, c in zip(ms, cs):
        md, cd = m.data, c.data
        if cd.chunks != md.chunks:
            cd = cd.rechunk(md.chunks)  # pairs must meet chunk for chunk; both stay chunk-sized
        rows = da.map_blocks(
            nz.row_paired_moments, md, cd, chunks=(md.chunks[0], md.chunks[1], (6,)), dtype=np.float64
        )
        tilt_moments.append(_tilt_moments(rows))
    # One array, one compute: every reference shares the scheduling (tilt counts are equal).
    moments = compute(da.stack(tilt_moments), label="estimating noise (paired)")
    raw = []
    for mo, m, mn, cn in zip(moments, ms, m_names, c_names):
        _check_moments(np.asarray(mo), [(mn, nz.P_SUM_M, nz.P_CSS_M, _angles(m)),
                                        (cn, nz.P_SUM_C, nz.P_CSS_C, _angles(m))])
        raw.append(nz.curves_from_moments(mo))
    return NoiseModel.from_raw(
        raw, order, angles_deg=_angles(ms[0]), method="paired",
        sources=[{"measured": mn, "noiseless": cn} for mn, cn in zip(m_names, c_names)],
    )


# --------------------------------------------------------------------------------------------
# unpaired estimate: white-noise power from the high-frequency band of each row's spectrum
# --------------------------------------------------------------------------------------------


def _tukey(n: int, alpha: float = TAPER) -> np.ndarray:
    from scipy.signal.windows import tukey

    return tukey(n, alpha).astype(np.float64)


def band_bins(nx: int, band: tuple[float, float] = DEFAULT_BAND) -> tuple[np.ndarray, np.ndarray]:
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


def row_band_power(a: np.ndarray, band: tuple[float, float] = DEFAULT_BAND) -> np.ndarray:
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
    is ever held whole). Pure numpy; it belongs with the kernels of ``kernels/noise.py``.
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


def _unpaired_rows_block(a: np.ndarray, *, band: tuple[float, float]) -> np.ndarray:
    return np.concatenate([nz.row_moments(a), row_band_power(a, band)], axis=-1)


def unpaired_curves(moments: np.ndarray, nx: int, band: tuple[float, float] = DEFAULT_BAND) -> dict[str, np.ndarray]:
    """Per-tilt curves of the unpaired estimate from reduced row statistics.

    Parameters
    ----------
    moments : ndarray, float64, shape (T, 5)
        Per tilt ``[n, sum, css, P_lower, P_upper]``: :func:`faket_dask.kernels.noise.
        reduce_rows` of the row moments and exactly rounded sums of :func:`row_band_power`.
    nx : int
        Row length (pixels).
    band : (lo, hi)
        The band used.

    Returns
    -------
    dict of str -> ndarray (T,)
        ``sigma`` = noise std / tilt std (METHOD's normalised σ, clipped to 1), ``r`` =
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
    mean, std = nz.mean_std(mo[:, :3])
    sigma = np.minimum(np.sqrt(noise_var) / std, 1.0)
    return {
        "r": np.sqrt(np.maximum(1.0 - sigma * sigma, 0.0)),
        "sigma": sigma,
        "mean": mean,
        "std": std,
        "noise_std": np.sqrt(noise_var),
        "band_ratio": p_lo / p_hi,
    }


def _reduce_unpaired_block(rows: np.ndarray) -> np.ndarray:
    mo = nz.reduce_rows(rows[..., :3])
    fs = lambda col: np.array([math.fsum(r) for r in rows[..., col]])  # noqa: E731 - order-free sums
    return np.concatenate([mo, fs(3)[:, None], fs(4)[:, None]], axis=1)


def estimate_noise_unpaired(
    measured: Sequence[xr.DataArray] | xr.DataArray,
    order: int = 2,
    *,
    sources: Sequence[str] | None = None,
    band: tuple[float, float] = DEFAULT_BAND,
) -> NoiseModel:
    """Estimate the noise curves from measured tilt-series alone (no noiseless partner).

    Each tilt's white-noise variance is the mean power of its rows' spectra in a
    high-frequency ``band`` where the signal has decayed (CTF envelope, detector MTF); METHOD's
    normalised σ is its square root over the tilt's std, and ``r = sqrt(1 − σ²)`` assumes
    noise independent of the signal. Justification, assumptions and validation:
    ``docs/noise.md``.

    Parameters
    ----------
    measured : DataArray (tilt, y, x) or sequence of K
        Measured tilt-series.
    order : int
        Polynomial order of the model's curves.
    sources : sequence of str, optional
        Names recorded in the model.
    band : (lo, hi)
        Fractions of Nyquist (default 0.6–1.0).

    Returns
    -------
    NoiseModel
        ``method == "unpaired"``; raw curves ``r``, ``sigma``, ``mean``, ``std``,
        ``noise_std``, ``band_ratio``.
    """
    ms, _, names, _ = check_references(measured, None, sources)
    band = (float(band[0]), float(band[1]))
    for m in ms:
        band_bins(m.sizes["x"], band)  # validate before any work
    per_tilt = []
    for m in ms:
        d = m.data
        rows = d.map_blocks(
            _unpaired_rows_block, band=band, chunks=(d.chunks[0], d.chunks[1], (5,)), dtype=np.float64
        )
        g = _gather_rows(rows)
        per_tilt.append(
            g.map_blocks(_reduce_unpaired_block, drop_axis=1, chunks=(g.chunks[0], (5,)), dtype=np.float64)
        )
    moments = compute(da.stack(per_tilt), label="estimating noise (unpaired)")
    raw = []
    for mo, m, n in zip(moments, ms, names):
        _check_moments(np.asarray(mo), [(n, nz.SUM, nz.CSS, _angles(m))])
        raw.append(unpaired_curves(mo, m.sizes["x"], band))
    return NoiseModel.from_raw(
        raw, order, angles_deg=_angles(ms[0]), method="unpaired",
        sources=[{"measured": n} for n in names],
        params={"band_nyquist": list(band), "window": f"tukey({TAPER})", "estimator": "row spectra"},
    )


# --------------------------------------------------------------------------------------------
# injection (METHOD §3)
# --------------------------------------------------------------------------------------------


def _block_x(
    p: np.ndarray,
    p_mean: np.ndarray,
    p_std: np.ndarray,
    block_info: dict,
    *,
    seed: int,
    tomo: int,
    r: np.ndarray,
    sigma: np.ndarray,
    k: float,
) -> tuple[np.ndarray, int, int]:
    """Unscaled x of one chunk; z is regenerated from the chunk's place in the whole array."""
    (t0, t1), (y0, y1), (x0, x1) = block_info[0]["array-location"]
    z = nz.normal_block(seed, tomo, range(t0, t1), y0, y1, x1 - x0, x0=x0)
    x = nz.mix(p, p_mean[:, 0, 0], p_std[:, 0, 0], z, r[t0:t1], sigma[t0:t1], k)
    return x, t0, t1


def _x_row_moments_block(p, p_mean, p_std, *, block_info=None, **kw) -> np.ndarray:
    x, _, _ = _block_x(p, p_mean, p_std, block_info, **kw)
    return nz.row_moments(x)


def _apply_block(p, p_mean, p_std, x_mean, x_std, *, mean, std, block_info=None, **kw) -> np.ndarray:
    x, t0, t1 = _block_x(p, p_mean, p_std, block_info, **kw)
    return nz.rescale(x, x_mean[:, 0, 0], x_std[:, 0, 0], mean[t0:t1], std[t0:t1])


def _check_u32(name: str, value: int) -> int:
    v = int(value)
    if v != value or not 0 <= v < 2**32:
        raise InputError(f"{name} must be an integer in [0, 2**32), got {value}")
    return v


def add_noise(
    ts: xr.DataArray,
    model: NoiseModel,
    seed: int,
    scale: float = 1.0,
    *,
    tomo: int = 0,
    name: str | None = None,
    match_angles: str = "exact",
    match_option: str = "match_angles='nearest'",
) -> xr.DataArray:
    """Add FakET noise to a noiseless tilt-series (METHOD.md §3), lazily.

    ``x = standardise_per_tilt(P)·r + z·σ·scale``, then each tilt gets the model's std and
    mean. NOISY = ``add_noise(P, model_order2, seed)``; CONTENT = the same with
    ``scale=0.25``; BASELINE = ``add_noise(P, model.with_order(0), seed)``. All three share the
    field z of ``(seed, tomo)``: CONTENT's noise is exactly a quarter of NOISY's.

    Parameters
    ----------
    ts : DataArray, dims (tilt, y, x), shape (T, Y, X)
        Noiseless projections P (numpy- or dask-backed; any units).
    model : NoiseModel
        Curves ``r``, ``sigma``, ``mean``, ``std`` of T tilts (its :attr:`~NoiseModel.order`
        is used as it is).
    seed : int
        Seed of the standard-normal field, in [0, 2³²).
    scale : float
        Noise scale k (1: NOISY/BASELINE, 0.25: CONTENT).
    tomo : int, keyword
        Tomogram index, the second key of the field: tomograms of one run get different
        fields under one seed.
    name : str, optional
        Name of the result (default ``"noisy"``).
    match_angles : {"exact", "nearest"}
        When both the model and ``ts`` carry angles, tilt i takes the curves at its own angle
        (:func:`faket_dask.tilt_pairing.match_tilts`): ``"exact"`` needs the same angle set,
        ``"nearest"`` takes the nearest model angle. Without angles, by position.
    match_option : str
        How the caller spells the ``"nearest"`` setting (named in the refusal).

    Returns
    -------
    DataArray, float32, shape (T, Y, X)
        Lazy, with the input's chunks (x merged into whole rows if it was split) and coords;
        values in the units of the model's ``mean``/``std``. Identical bits for any chunking
        and any number of workers.

    Raises
    ------
    InputError
        Tilt count of the model and the tilt-series differ, bad seed/tomo/scale; when
        computed: a constant or non-finite tilt in ``ts``.
    """
    if not isinstance(model, NoiseModel):
        raise InputError(f"add_noise: model must be a NoiseModel, got {type(model).__name__}")
    what = _name(ts, None, "tilt-series")
    ts = _as_tiltseries(ts, what)
    src = ", ".join(s.get("measured", "?") for s in model.sources) or "given curves"
    ts_angles, model_angles = _angles(ts), model.angles_deg
    if ts_angles is not None and model_angles is not None:
        # curves are the model's per-angle values: tilt i gets the curve at its own angle
        pick = match_tilts(ts_angles, np.asarray(model_angles, np.float64),
                           target=f"tilt-series '{what}'", source=f"noise model ({src})",
                           mode=match_angles, option=match_option)
    elif model.n_tilts != ts.sizes["tilt"]:
        raise InputError(
            f"noise model ({src}) has {model.n_tilts} tilts but tilt-series '{what}' has "
            f"{ts.sizes['tilt']}; estimate the model from references with the same tilts"
        )
    else:
        pick = np.arange(model.n_tilts)
    seed = _check_u32("seed", seed)
    tomo = _check_u32("tomo", tomo)
    k = float(scale)
    if not (np.isfinite(k) and k >= 0):
        raise InputError(f"noise scale must be a finite number >= 0, got {scale}")
    curves = {c: model.curve(c)[pick] for c in ("r", "sigma", "mean", "std")}
    if (curves["std"] <= 0).any():
        bad = int(np.flatnonzero(curves["std"] <= 0)[0])
        raise InputError(f"noise model: fitted std of tilt {bad} is {curves['std'][bad]:.4g} <= 0 (try a lower order)")

    data = ts.data
    p_mean, p_std = _tilt_mean_std(_row_moments(data), what)
    kw = {"seed": seed, "tomo": tomo, "r": curves["r"], "sigma": curves["sigma"], "k": k}
    token = da.core.tokenize(data.name, seed, tomo, k, curves)
    x_rows = da.map_blocks(
        _x_row_moments_block, data, p_mean, p_std, **kw,
        chunks=(data.chunks[0], data.chunks[1], (3,)), dtype=np.float64, name=f"noise-x-moments-{token}",
    )
    x_mean, x_std = _tilt_mean_std(x_rows, f"{what} (noise mixture)")
    out = da.map_blocks(
        _apply_block, data, p_mean, p_std, x_mean, x_std, **kw,
        mean=curves["mean"], std=curves["std"],
        chunks=data.chunks, dtype=np.float32, name=f"add-noise-{token}",
    )
    attrs = dict(ts.attrs)
    attrs.update({
        "noise_seed": seed,
        "noise_tomo": tomo,
        "noise_scale": k,
        "noise_order": int(model.order),
        "noise_method": model.method,
    })
    return xr.DataArray(out, dims=ts.dims, coords=ts.coords, attrs=attrs, name=name or "noisy")


def add_noise_modality(
    ts: xr.DataArray, model: NoiseModel, modality: str, seed: int, *, tomo: int = 0,
    match_angles: str = "exact", match_option: str = "match_angles='nearest'",
) -> xr.DataArray:
    """One of FakET's modalities: ``"noisy"``, ``"content"`` or ``"baseline"`` (METHOD §3).

    Uses :data:`faket_dask.kernels.noise.MODALITIES` for the curves' order and the noise scale
    (NOISY: order 2, 1; CONTENT: order 2, 0.25; BASELINE: order 0, 1); the model is refitted
    at that order from its raw curves when needed.

    Returns
    -------
    DataArray, float32 (T, Y, X), lazy, named after the modality.
    """
    spec = nz.MODALITIES.get(modality)
    if spec is None:
        raise InputError(f"unknown noise modality '{modality}' (choose from {', '.join(nz.MODALITIES)})")
    out = add_noise(ts, model.with_order(spec.order), seed, spec.k, tomo=tomo, name=modality,
                    match_angles=match_angles, match_option=match_option)
    out.attrs["noise_modality"] = modality
    return out


def modality_specs(names: str | Sequence[str]) -> list[str]:
    """Parse ``"noisy,content"`` (or a list) into validated modality names, order kept."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for n in (i.strip().lower() for i in items):
        if not n:
            continue
        if n not in nz.MODALITIES:
            raise InputError(f"unknown noise modality '{n}' (choose from {', '.join(nz.MODALITIES)})")
        if n not in out:
            out.append(n)
    if not out:
        raise InputError(f"no noise modality given (choose from {', '.join(nz.MODALITIES)})")
    return out
