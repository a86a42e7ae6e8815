"""The noise stage (``docs/method.md §2–3``): estimate a noise model, add noise to a tilt-series.

Both directions work chunk by chunk on tilt-series chunked ``(t, cy, X)``; no tilt is ever
held whole. Per-tilt statistics follow the contract of :mod:`faket_dask.kernels.noise_moments`
(wired by :mod:`faket_dask.stages.tilt_statistics`): per-row moments are computed per chunk,
the rows of a tilt are gathered (``Y × 3..6`` float64, tiny) and reduced once with exactly
rounded sums, so every statistic, and every output pixel, is bit-identical for any chunking
and any number of workers.

Estimation (:func:`estimate_noise`)
    paired: ``row_paired_moments`` of each (measured, noiseless) chunk pair, reduced per tilt,
    ``curves_from_moments``, then fitted and averaged by :class:`~faket_dask.NoiseModel`.
    unpaired: ``row_band_power`` (:mod:`faket_dask.kernels.noise_spectral`: white-noise power of each row from the high-frequency band of
    its spectrum, see ``docs/noise.md``) and row moments, reduced per tilt. Statistics are
    computed eagerly (the result is a small model, not an array).

Injection (:func:`add_noise`), with the compiled per-pixel kernels of
:mod:`faket_dask.kernels.noise_compiled` (x is recomputed row by row, never stored). When a
whole tilt (its input, field and output: ~20 bytes a pixel) fits one task's budget, the input
is merged into whole-tilt chunks and one task per chunk does it all: P's moments, the field
``z`` generated once, ``x``, its moments, ``rescale`` (:func:`_whole_tilt_block`; half the
field generation of the passes below, the same kernels and reductions, so the same bits),
split back to the input's chunks. Callers read the input as whole tilts then
(:func:`open_input`): each task reads its own tilt, with no merge tasks and no tilt halves sent
between workers. Otherwise (tilts larger
than ~5k × 5k pixels) a lazy graph of three passes over the input:
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

Modalities (:func:`add_noise_modality`)
    NOISY, CONTENT and BASELINE are :func:`add_noise` with a curve order and a noise scale
    (``docs/method.md §3``) taken from a :class:`~faket_dask.params.NoiseParams` (default: the
    paper's table, :data:`faket_dask.params.MODALITIES`). ``faket-dask noise apply`` and the
    pipeline both go through it, so the same settings give the same bits.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import dask.array as da
import numpy as np
import xarray as xr

from .. import chunking
from ..errors import InputError
from ..kernels import noise as nz
from ..kernels import noise_compiled as nc
from ..kernels import noise_moments as nm
from ..kernels.noise_rng import normal_block
from ..kernels.noise_spectral import band_bins, row_band_power, unpaired_curves
from ..noise_model import NoiseModel
from ..params import MODALITY_NAMES, NOISE_ORDER, NOISY_SCALE, UNPAIRED_BAND, UNPAIRED_TAPER, NoiseParams
from ..progress import compute
from ..tilt_pairing import match_tilts
from .tilt_statistics import (
    array_name,
    as_tiltseries,
    check_moments,
    check_references,
    gather_rows,
    tilt_angles,
    tilt_mean_std,
    tilt_moments,
    tilts_mean_std,
)

__all__ = [
    "add_noise",
    "add_noise_modality",
    "estimate_noise",
    "estimate_noise_unpaired",
    "modality_specs",
    "open_input",
    "whole_tilts_fit",
]


# --------------------------------------------------------------------------------------------
# estimation
# --------------------------------------------------------------------------------------------


def estimate_noise(
    measured: Sequence[xr.DataArray] | xr.DataArray,
    noiseless: Sequence[xr.DataArray] | xr.DataArray | None = None,
    order: int = NOISE_ORDER,
    *,
    sources: Sequence[str] | None = None,
    noiseless_sources: Sequence[str] | None = None,
    band: tuple[float, float] = UNPAIRED_BAND,
) -> NoiseModel:
    """Estimate FakET's per-tilt noise curves from reference tilt-series (``docs/method.md §2``).

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
    per_reference = []
    for m, c in zip(ms, cs):
        md, cd = m.data, c.data
        if cd.chunks != md.chunks:
            cd = cd.rechunk(md.chunks)  # pairs must meet chunk for chunk; both stay chunk-sized
        rows = da.map_blocks(
            nm.row_paired_moments, md, cd, chunks=(md.chunks[0], md.chunks[1], (6,)), dtype=np.float64
        )
        per_reference.append(tilt_moments(rows))
    # One array, one compute: every reference shares the scheduling (tilt counts are equal).
    moments = compute(da.stack(per_reference), label="estimating noise (paired)")
    raw = []
    for mo, m, mn, cn in zip(moments, ms, m_names, c_names):
        check_moments(np.asarray(mo), [(mn, nm.P_SUM_M, nm.P_CSS_M, tilt_angles(m)),
                                        (cn, nm.P_SUM_C, nm.P_CSS_C, tilt_angles(m))])
        raw.append(nz.curves_from_moments(mo))
    return NoiseModel.from_raw(
        raw, order, angles_deg=tilt_angles(ms[0]), method="paired",
        sources=[{"measured": mn, "noiseless": cn} for mn, cn in zip(m_names, c_names)],
    )


# --------------------------------------------------------------------------------------------
# unpaired estimate: white-noise power from the high-frequency band of each row's spectrum
# --------------------------------------------------------------------------------------------


def _unpaired_rows_block(a: np.ndarray, *, band: tuple[float, float]) -> np.ndarray:
    """(t, cy, X) chunk -> (t, cy, 5) per-row ``[n, sum, css, P_lower, P_upper]``."""
    return np.concatenate([nm.row_moments(a), row_band_power(a, band)], axis=-1)


def _reduce_unpaired_block(rows: np.ndarray) -> np.ndarray:
    """(t, Y, 5) rows of whole tilts -> (t, 5) per tilt, exactly rounded (any row order)."""
    mo = nm.reduce_rows(rows[..., :3])
    fs = lambda col: np.array([math.fsum(r) for r in rows[..., col]])  # noqa: E731 - order-free sums
    return np.concatenate([mo, fs(3)[:, None], fs(4)[:, None]], axis=1)


def estimate_noise_unpaired(
    measured: Sequence[xr.DataArray] | xr.DataArray,
    order: int = NOISE_ORDER,
    *,
    sources: Sequence[str] | None = None,
    band: tuple[float, float] = UNPAIRED_BAND,
) -> NoiseModel:
    """Estimate the noise curves from measured tilt-series alone (no noiseless partner).

    Each tilt's white-noise variance is the mean power of its rows' spectra in a
    high-frequency ``band`` where the signal has decayed (CTF envelope, detector MTF); the method's
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
        g = gather_rows(rows)
        per_tilt.append(
            g.map_blocks(_reduce_unpaired_block, drop_axis=1, chunks=(g.chunks[0], (5,)), dtype=np.float64)
        )
    moments = compute(da.stack(per_tilt), label="estimating noise (unpaired)")
    raw = []
    for mo, m, n in zip(moments, ms, names):
        check_moments(np.asarray(mo), [(n, nm.SUM, nm.CSS, tilt_angles(m))])
        raw.append(unpaired_curves(mo, m.sizes["x"], band))
    return NoiseModel.from_raw(
        raw, order, angles_deg=tilt_angles(ms[0]), method="unpaired",
        sources=[{"measured": n} for n in names],
        params={"band_nyquist": list(band), "window": f"tukey({UNPAIRED_TAPER})", "estimator": "row spectra"},
    )


# --------------------------------------------------------------------------------------------
# injection (docs/method.md §3)
# --------------------------------------------------------------------------------------------


def _block_field(block_info: dict, *, seed: int, tomo: int) -> tuple[np.ndarray, int, int]:
    """The field z of one chunk, regenerated from the chunk's place in the whole array."""
    (t0, t1), (y0, y1), (x0, x1) = block_info[0]["array-location"]
    return normal_block(seed, tomo, range(t0, t1), y0, y1, x1 - x0, x0=x0), t0, t1


def _p_row_moments_block(p: np.ndarray) -> np.ndarray:
    """Pass 0 of a chunk: the row moments of P (compiled, the same sums as the other passes)."""
    return nc.row_moments(p)


def _x_row_moments_block(p, p_mean, p_std, *, block_info=None, r, sigma, k, **kw) -> np.ndarray:
    """Pass A of a chunk: the row moments of its unscaled x (x is not stored)."""
    z, t0, t1 = _block_field(block_info, **kw)
    return nc.mix_row_moments(p, z, p_mean[:, 0, 0], p_std[:, 0, 0], r[t0:t1], sigma[t0:t1], k)


def _apply_block(p, p_mean, p_std, x_mean, x_std, *, mean, std, block_info=None, r, sigma, k,
                 **kw) -> np.ndarray:
    """Pass B of a chunk: x regenerated exactly as in pass A, rescaled to float32."""
    z, t0, t1 = _block_field(block_info, **kw)
    return nc.mix_rescale(p, z, p_mean[:, 0, 0], p_std[:, 0, 0], r[t0:t1], sigma[t0:t1], k,
                          x_mean[:, 0, 0], x_std[:, 0, 0], mean[t0:t1], std[t0:t1])


def _whole_tilt_block(p, *, mean, std, what: str, block_info=None, r, sigma, k, **kw) -> np.ndarray:
    """Passes 0, A and B of whole tilts in one task: the field is generated once, not twice.

    The same kernels and reductions as the three-pass graph (:func:`tilts_mean_std` is
    :func:`tilt_mean_std`'s reduction), so the same bits; used when every chunk holds whole
    tilts (the run store's tilt-series are chunked by tilt).
    """
    n = block_info[0]["shape"][0]
    t0 = block_info[0]["array-location"][0][0]
    p = nc.as_kernel_input(p)  # once, not in each of the three kernels (integer input)
    pms = tilts_mean_std(nc.row_moments(p), what, t0, n)  # refuses a NaN/constant tilt first
    z, t0, t1 = _block_field(block_info, **kw)
    pm, ps = pms[:, 0, 0], pms[:, 0, 1]
    xms = tilts_mean_std(nc.mix_row_moments(p, z, pm, ps, r[t0:t1], sigma[t0:t1], k),
                         f"{what} (noise mixture)", t0, n)
    return nc.mix_rescale(p, z, pm, ps, r[t0:t1], sigma[t0:t1], k, xms[:, 0, 0], xms[:, 0, 1],
                          mean[t0:t1], std[t0:t1])


def whole_tilts_fit(shape: Sequence[int], itemsize: int) -> bool:
    """Whether :func:`add_noise` processes whole tilts of a ``(T, Y, X)`` input, one per task.

    A whole-tilt task holds the input, at worst its float64 copy (integer input), the field z
    and the output (float32 each; x is never stored): ``(itemsize + 16)·Y·X`` bytes, within
    :data:`faket_dask.chunking.DEFAULT_TASK_BYTES` (a 1024² float32 tilt: 20 MiB).
    """
    return (int(itemsize) + 16) * int(shape[1]) * int(shape[2]) <= chunking.DEFAULT_TASK_BYTES


def open_input(store, path: str) -> xr.DataArray:
    """Open ``GROUP/VAR`` of a run store as :func:`add_noise` reads it (lazy).

    Whole tilts per chunk when :func:`whole_tilts_fit` (each task reads its own tilts, and the
    result is written one tilt per Zarr chunk); otherwise the stored chunks. Why: a projection
    stores 1024² tilts in two row slabs; merging them in the graph took two read tasks, a merge
    task and often a transfer between workers per tilt (``benchmarks/bench_noise.py``). Small
    tilts go several to a task, ~1 MiB of input each and at least 4 tasks
    (:func:`faket_dask.chunking.small_tilts_per_task`): a 128² tilt's noise takes ~3 ms, less than the task's own overhead and its Zarr
    write (the demo's noise step: 549 tasks of one tilt). The noise does not depend on the
    grouping (counter-based per tilt; ``tests/test_noise_stage.py``).

    Raises
    ------
    InputError, FaketError
        As :func:`faket_dask.store.open_var` (a missing store, group or variable).
    """
    from .. import store as st

    ts = st.open_var(store, path)
    if not whole_tilts_fit(ts.shape, ts.dtype.itemsize):
        return ts
    k = chunking.small_tilts_per_task(ts.shape, itemsize=ts.dtype.itemsize)
    if k > 1 or any(len(c) > 1 for c in (ts.chunks or ((),))[1:]):
        ts = st.open_var(store, path, tilts_per_chunk=k)
    return ts


def _check_u32(name: str, value: int) -> int:
    """``value`` as an int in [0, 2**32) (a Philox key word); :class:`InputError` otherwise."""
    v = int(value)
    if v != value or not 0 <= v < 2**32:
        raise InputError(f"{name} must be an integer in [0, 2**32), got {value}")
    return v


def _three_passes(data: da.Array, what: str, kw: dict, curves: dict, token: str) -> da.Array:
    """Passes 0, A, B as separate tasks (tilts split over several chunks; module docstring)."""
    p_rows = data.map_blocks(_p_row_moments_block, chunks=(data.chunks[0], data.chunks[1], (3,)),
                             dtype=np.float64, name=f"noise-p-moments-{token}")
    p_mean, p_std = tilt_mean_std(p_rows, what)
    x_rows = da.map_blocks(
        _x_row_moments_block, data, p_mean, p_std, **kw,
        chunks=(data.chunks[0], data.chunks[1], (3,)), dtype=np.float64, name=f"noise-x-moments-{token}",
    )
    x_mean, x_std = tilt_mean_std(x_rows, f"{what} (noise mixture)")
    return da.map_blocks(
        _apply_block, data, p_mean, p_std, x_mean, x_std, **kw,
        mean=curves["mean"], std=curves["std"],
        chunks=data.chunks, dtype=np.float32, name=f"add-noise-{token}",
    )


def add_noise(
    ts: xr.DataArray,
    model: NoiseModel,
    seed: int,
    scale: float = NOISY_SCALE,
    *,
    tomo: int = 0,
    name: str | None = None,
    match_angles: str = "exact",
    match_option: str = "match_angles='nearest'",
) -> xr.DataArray:
    """Add FakET noise to a noiseless tilt-series (``docs/method.md §3``), lazily.

    ``x = standardise_per_tilt(P)·r + z·σ·scale``, then each tilt gets the model's std and
    mean. The modalities (:func:`add_noise_modality`) are this with an order and a scale:
    NOISY = ``add_noise(P, model_order2, seed)``; CONTENT = the same with ``scale=0.25``;
    BASELINE = ``add_noise(P, model.with_order(0), seed)``. All three share the field z of
    ``(seed, tomo)``: CONTENT's noise is exactly a quarter of NOISY's.

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
    what = array_name(ts, None, "tilt-series")
    ts = as_tiltseries(ts, what)
    src = ", ".join(s.get("measured", "?") for s in model.sources) or "given curves"
    ts_angles, model_angles = tilt_angles(ts), model.angles_deg
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
    kw = {"seed": seed, "tomo": tomo, "r": curves["r"], "sigma": curves["sigma"], "k": k}
    token = da.core.tokenize(data.name, seed, tomo, k, curves)
    if whole_tilts_fit(data.shape, data.dtype.itemsize):
        whole = data.rechunk({1: -1, 2: -1})
        out = da.map_blocks(_whole_tilt_block, whole, **kw, mean=curves["mean"], std=curves["std"],
                            what=what, dtype=np.float32, name=f"add-noise-{token}")
        out = out.rechunk(data.chunks)
    else:
        out = _three_passes(data, what, kw, curves, token)
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
    ts: xr.DataArray,
    model: NoiseModel,
    modality: str,
    seed: int,
    *,
    tomo: int = 0,
    params: NoiseParams | None = None,
    match_angles: str = "exact",
    match_option: str = "match_angles='nearest'",
) -> xr.DataArray:
    """One of FakET's modalities, ``"noisy"``, ``"content"`` or ``"baseline"`` (``docs/method.md §3``).

    The one place a modality is made from its ``(order, scale)``: :func:`add_noise` with the
    model refitted at the modality's curve order (from its raw curves, when needed) and its
    noise scale. ``faket-dask noise apply`` and the pipeline both call it.

    Parameters
    ----------
    ts : DataArray, dims (tilt, y, x)
        Noiseless projections P (see :func:`add_noise`).
    model : NoiseModel
        The noise model (any stored order; refitted as needed).
    modality : {"noisy", "content", "baseline"}
        Which modality.
    seed : int
        Seed of the noise field, in [0, 2³²); the three modalities of a tomogram share it.
    tomo : int, keyword
        Tomogram index, the field's second key.
    params : NoiseParams, optional
        Orders and scales of the modalities (the config's ``noise`` section, or the options of
        ``noise apply``). Default: the paper's, :data:`faket_dask.params.MODALITIES` (NOISY:
        order 2, scale 1; CONTENT: order 2, scale 0.25; BASELINE: order 0, scale 1).
    match_angles, match_option : str
        As in :func:`add_noise`.

    Returns
    -------
    DataArray, float32 (T, Y, X)
        Lazy, named after the modality; attrs as :func:`add_noise` plus ``noise_modality``.

    Raises
    ------
    InputError
        Unknown modality, or anything :func:`add_noise` refuses.
    """
    spec = (params if params is not None else NoiseParams()).modality(modality)
    out = add_noise(ts, model.with_order(spec.order), seed, spec.scale, tomo=tomo, name=modality,
                    match_angles=match_angles, match_option=match_option)
    out.attrs["noise_modality"] = modality
    return out


def modality_specs(names: str | Sequence[str]) -> list[str]:
    """Parse ``"noisy,content"`` (or a list) into validated modality names, order kept.

    Raises
    ------
    InputError
        An unknown name, or none given (the message lists :data:`faket_dask.params.MODALITY_NAMES`).
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for n in (i.strip().lower() for i in items):
        if not n:
            continue
        if n not in MODALITY_NAMES:
            raise InputError(f"unknown noise modality '{n}' (choose from {', '.join(MODALITY_NAMES)})")
        if n not in out:
            out.append(n)
    if not out:
        raise InputError(f"no noise modality given (choose from {', '.join(MODALITY_NAMES)})")
    return out
