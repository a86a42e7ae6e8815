"""Distribution comparison of simulated tilt-series with a reference (``docs/compare.md``).

:func:`compare` measures, per tilt and pooled over tilts and tomograms, how far each simulated
modality (``faket``, ``baseline``, ``noisy``, …) is from the reference microscope's tilt-series
(``measured``): radial power spectrum, mean and std curves, the unpaired noise σ curve, the
1-Wasserstein distance of the standardised intensity histograms and the correlation with
``noiseless``. The numbers are assembled by :mod:`faket_dask.stages.compare_result`; the store
wrapper, input checks and the JSON are :mod:`faket_dask.stages.compare_io`.

Memory is flat in the detector size: every task sees one chunk ``(t, cy, X)`` or one row of
spectrum tiles ``(1, s, X)``, and only per-row or per-tilt numbers come back. Two passes:

1. per chunk, the row moments and band powers of the unpaired noise estimate
   (:mod:`faket_dask.stages.noise`'s own blocks) and the paired moments with ``noiseless``;
   per row of tiles, the tiles' ring powers. Row numbers are reduced per tilt with exactly
   rounded sums (:func:`~faket_dask.kernels.noise_moments.reduce_rows`, :func:`math.fsum`);
   tiles are cut from a layout that depends on the shape only.
2. per chunk, the histogram of the values standardised by the tilt's mean and std from pass 1
   (integer counts, summed exactly).

Hence every number is bit-identical for any input chunking and any number of workers.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import InputError
from ..kernels import compare as K
from ..kernels import noise_moments as nm
from ..params import MIB, UNPAIRED_BAND, CHUNK_MiB
from ..params.compare import (
    COMPARE_HIST_BIN,
    COMPARE_HIST_RANGE,
    COMPARE_SPECTRUM_BAND,
    COMPARE_TILE_PX,
)
from ..progress import compute
from ..tilt_pairing import is_identity, match_tilts
from .noise import _reduce_unpaired_block, _unpaired_rows_block
from .tilt_statistics import as_list, as_tiltseries, check_moments, tilt_angles

__all__ = ["Plan", "Series", "compare", "measure", "plan", "prepare", "run"]


class Series:
    """One tilt-series of one tomogram in the comparison: its name, data and correlation partner.

    Attributes
    ----------
    name : str
        Modality name (``faket``, ``measured``, …).
    tomo : str
        Its tomogram's name (``tomo_000``).
    arr : xarray.DataArray, dims (tilt, y, x)
        Dask-backed, whole rows per chunk, tilts in the tomogram's order.
    partner : xarray.DataArray or None
        The tomogram's ``noiseless`` tilt-series of the same shape, for the correlation.
    """

    def __init__(self, name: str, tomo: str, arr: xr.DataArray, partner: xr.DataArray | None) -> None:
        self.name, self.tomo, self.arr, self.partner = name, tomo, arr, partner


# -- inputs --------------------------------------------------------------------------------------
def _per_tomo(x: Any, n: int | None, what: str) -> list[Any]:
    items = as_list(x)
    if n is not None and len(items) == 1 and n > 1:
        return items * n
    if n is not None and len(items) != n:
        raise InputError(f"compare: {what} has {len(items)} tilt-series for {n} tomograms")
    return items


def _aligned(arr: xr.DataArray, to: xr.DataArray, name: str, to_name: str) -> xr.DataArray:
    """``arr`` with its tilts reordered to pair angle by angle with ``to``'s (by position
    when either has no angles); counts or angles that differ are refused."""
    a, b = tilt_angles(arr), tilt_angles(to)
    if a is None or b is None:
        if arr.sizes["tilt"] != to.sizes["tilt"]:
            raise InputError(f"{name} has {arr.sizes['tilt']} tilts but {to_name} has {to.sizes['tilt']}")
        return arr
    idx = match_tilts(b, a, target=to_name, source=name, option="tilt-series with the same angles or")
    return arr if is_identity(idx) else arr.isel(tilt=idx)


def prepare(
    simulated: Mapping[str, Any],
    reference: Any,
    noiseless: Any = None,
    *,
    reference_name: str = "reference",
    tomo_names: Sequence[str] | None = None,
    reference_noiseless: Any = "same",
) -> list[list[Series]]:
    """Check the inputs (shapes and angles only, nothing computed) and pair them per tomogram.

    Returns
    -------
    list (tomograms) of list of Series
        The reference first, then the simulated modalities in the given order.

    Raises
    ------
    InputError
        No modality; a modality named like the reference; counts of tilt-series that differ
        between modalities; a tilt-series that is not (tilt, y, x); tilts that do not pair.
    """
    if not simulated:
        raise InputError("compare: no simulated modality given")
    if reference_name in simulated:
        raise InputError(f"compare: '{reference_name}' is the reference and cannot also be a simulated modality")
    sims = {str(k): as_list(v) for k, v in simulated.items()}
    n = len(next(iter(sims.values())))
    for name, items in sims.items():
        if len(items) != n:
            raise InputError(f"compare: modality '{name}' has {len(items)} tilt-series, the first has {n}")
    refs = _per_tomo(reference, n, f"reference '{reference_name}'")
    partners = _per_tomo(noiseless, n, "noiseless") if noiseless is not None else [None] * n
    if isinstance(reference_noiseless, str) and reference_noiseless == "same":
        ref_partners = partners
    elif reference_noiseless is None:
        ref_partners = [None] * n
    else:
        ref_partners = _per_tomo(reference_noiseless, n, "the reference's noiseless")
    names = list(tomo_names) if tomo_names is not None else [f"tomogram {i}" for i in range(n)]
    out = []
    for i in range(n):
        def label(m: str, i: int = i) -> str:
            return f"{names[i]} {m}"

        first = next(iter(sims))
        base = as_tiltseries(sims[first][i], label(first))
        series: list[Series] = []
        parts = [None if p is None else _aligned(as_tiltseries(p, label(what)), base, label(what), label(first))
                 for p, what in ((partners[i], "noiseless"), (ref_partners[i], f"{reference_name}'s noiseless"))]
        for name, arr in [(reference_name, refs[i])] + [(m, sims[m][i]) for m in sims]:
            ts = _aligned(as_tiltseries(arr, label(name)), base, label(name), label(first))
            part = parts[1] if name == reference_name else parts[0]
            series.append(Series(name, names[i], ts, part if part is not None and part.shape == ts.shape else None))
        out.append(series)
    return out


def tile_size(tomos: list[list[Series]], tile: int) -> int:
    """The spectrum tile side: ``tile``, at most the smallest side of any tilt, made even."""
    s = min([int(tile)] + [min(sr.arr.sizes["y"], sr.arr.sizes["x"]) for ser in tomos for sr in ser])
    s -= s % 2
    if s < 4:
        raise InputError(f"compare: spectrum tiles of {s} pixels are too small (tilts need at least 4 x 4 pixels)")
    return s


# -- pass 1: row statistics, paired moments, tile spectra ----------------------------------------
def _tilts_per_task(bytes_per_tilt: int) -> int:
    """Tilts batched into one task so that it holds at most a chunk budget (at least one tilt).

    Only the task count changes: every per-tilt number is computed from that tilt alone."""
    return max(1, CHUNK_MiB * MIB // max(1, bytes_per_tilt))


def _per_tilt(rows: da.Array, reduce: Any, k: int) -> da.Array:
    """``(T, R, c)`` per-row numbers -> ``(T, k)`` per tilt, all rows of a tilt in one task."""
    g = rows.rechunk({0: _tilts_per_task(rows.shape[1] * rows.shape[2] * 8), 1: -1, 2: -1})
    return g.map_blocks(reduce, drop_axis=1, chunks=(g.chunks[0], (k,)), dtype=np.float64)


def _tile_rows(d: da.Array, s: int) -> list[tuple[da.Array, int]]:
    """``d`` as blocks of whole rows of spectrum tiles, ``(k tilts, s rows, X)``.

    Rows ``[0, s·⌊Y/s⌋)`` in blocks of ``s`` rows and, when ``s`` does not divide ``Y``, the
    block ``[Y − s, Y)`` flush with the bottom edge, paired with how many of its leading rows
    the blocks before it already hold (``skip``). The layout depends on the shape only.
    """
    _, ny, nx = d.shape
    per = {0: _tilts_per_task(s * nx * 4), 1: s, 2: -1}
    full = (ny // s) * s
    out = [(d[:, :full, :].rechunk(per), 0)]
    if ny % s:
        out.append((d[:, ny - s :, :].rechunk({**per, 1: -1}), s - (ny - full)))
    return out


def _rows_block(block: np.ndarray, partner: np.ndarray | None = None, *, skip: int,
                band: tuple[float, float]) -> np.ndarray:
    """Per row of ``block[:, skip:]``: ``[n, sum, css, P_lower, P_upper]`` (the unpaired
    estimate's numbers) and, with a partner, the 6 paired moments."""
    b = block[:, skip:]
    out = _unpaired_rows_block(b, band=band)
    if partner is not None:
        out = np.concatenate([out, nm.row_paired_moments(b, partner[:, skip:])], axis=-1)
    return out


def _reduce_block(rows: np.ndarray) -> np.ndarray:
    """All rows of whole tilts -> per tilt, exactly rounded (any row order)."""
    head = _reduce_unpaired_block(rows[..., :5])
    return head if rows.shape[2] == 5 else np.concatenate([head, nm.reduce_rows(rows[..., 5:])], axis=1)


def _fsum_rows(a: np.ndarray) -> np.ndarray:
    return K.fsum_axis(a, axis=1)


def _pass1(sr: Series, s: int, noise_band: tuple[float, float]) -> list[da.Array]:
    """Lazy per-tilt numbers of one series: ``(T, 5 [+ 6])`` row statistics (unpaired estimate,
    paired moments with the partner) and the ``(T, s/2)`` Welch spectrum (mean ring power of
    the tilt's tiles, data units²).

    Everything is computed from one grouping of the data, whole rows of tiles, so a task's
    input is one such block and no chunk waits in memory for a consumer of another grouping.
    """
    d = sr.arr.data
    blocks = _tile_rows(d, s)
    partners = _tile_rows(sr.partner.data, s) if sr.partner is not None else [(None, 0)] * len(blocks)
    ncol = 5 if sr.partner is None else 11
    nbins = s // 2
    rows, spectra = [], []
    for (b, skip), (c, _) in zip(blocks, partners):
        args = (b,) if c is None else (b, c)
        rows.append(da.map_blocks(_rows_block, *args, skip=skip, band=noise_band, dtype=np.float64,
                                  chunks=(b.chunks[0], tuple(n - skip for n in b.chunks[1]), (ncol,))))
        spectra.append(b.map_blocks(K.tile_ring_sums, tile=s, chunks=(b.chunks[0], (1,) * b.numblocks[1], (nbins,)),
                                    dtype=np.float64, meta=np.empty((0, 0, 0), np.float64)))
    stats = _per_tilt(da.concatenate(rows, axis=1), _reduce_block, ncol)
    total = _per_tilt(da.concatenate(spectra, axis=1), _fsum_rows, nbins)
    _, ny, nx = d.shape
    return [stats, total / float(K.tile_origins(ny, s).size * K.tile_origins(nx, s).size)]


# -- pass 2: standardised histograms -------------------------------------------------------------
def _pass2(sr: Series, mean: np.ndarray, std: np.ndarray, bins: K.HistogramBins) -> da.Array:
    """Lazy ``(T, n + 2)`` int64 counts of the values standardised by each tilt's mean/std."""
    d = sr.arr.data
    m = da.from_array(mean[:, None, None], chunks=(d.chunks[0], 1, 1))
    sd = da.from_array(std[:, None, None], chunks=(d.chunks[0], 1, 1))
    h = da.map_blocks(K.standardised_histogram, d, m, sd, bins=bins,
                      chunks=(d.chunks[0], (1,) * d.numblocks[1], (bins.n + 2,)), dtype=np.int64)
    return h.sum(axis=1)  # integers: exact in any order


def measure(tomos: list[list[Series]], *, tile: int, noise_band: tuple[float, float],
            bins: K.HistogramBins) -> list[list[dict[str, np.ndarray]]]:
    """Per-tilt raw statistics of every series (two passes over each, computed now).

    One compute per series and pass: a chunk of ``noiseless`` that several series pair with
    is then never held while other series' graphs run.

    Returns
    -------
    list (tomograms) of list (series) of dict
        ``mean``, ``std`` (data units), ``noise_sigma`` (noise std / tilt std, the unpaired
        estimate :func:`~faket_dask.kernels.noise_spectral.unpaired_curves`), ``spectrum``
        (T, s/2: Welch ring power, data units²), ``correlation`` (T,) or absent, ``histogram``
        (T, n + 2) int64 counts with under/overflow.
    """
    from ..kernels.noise_spectral import unpaired_curves

    out = []
    for ser in tomos:
        row = []
        for sr in ser:
            label = f"{sr.tomo} {sr.name}"
            mo, spectrum = (np.asarray(v) for v in compute(_pass1(sr, tile, noise_band), label=f"comparing {label}"))
            check_moments(mo, [(label, nm.SUM, nm.CSS, tilt_angles(sr.arr))])
            curves = unpaired_curves(mo[:, :5], sr.arr.sizes["x"], noise_band)
            st = {"mean": curves["mean"], "std": curves["std"], "noise_sigma": curves["sigma"], "spectrum": spectrum}
            if mo.shape[1] > 5:
                st["correlation"] = K.pearson(mo[:, 5:])
            st["histogram"] = np.asarray(compute(_pass2(sr, st["mean"], st["std"], bins),
                                                 label=f"comparing {label} (histogram)"), dtype=np.int64)
            row.append(st)
        out.append(row)
    return out


def compare(
    simulated: Mapping[str, Any],
    reference: Any,
    *,
    noiseless: Any = None,
    reference_noiseless: Any = "same",
    reference_name: str = "reference",
    tomo_names: Sequence[str] | None = None,
    tile: int = COMPARE_TILE_PX,
    band: tuple[float, float] = COMPARE_SPECTRUM_BAND,
    noise_band: tuple[float, float] = UNPAIRED_BAND,
    hist_range: tuple[float, float] = COMPARE_HIST_RANGE,
    hist_bin: float = COMPARE_HIST_BIN,
) -> dict[str, Any]:
    """Compare simulated tilt-series with a reference, per tilt and pooled (``docs/compare.md``).

    Parameters
    ----------
    simulated : mapping of str to DataArray (tilt, y, x) or sequence of them
        Modality name -> its tilt-series, one per tomogram (a single array: one tomogram).
    reference : DataArray or sequence of them
        The reference tilt-series (e.g. ``measured``): one per tomogram, or one for all.
    noiseless : DataArray or sequence of them, optional
        Each tomogram's noiseless tilt-series, for the correlation measure (a series of another
        shape gets no correlation).
    reference_noiseless : "same", DataArray, sequence of them, or None
        The reference's noiseless partner: ``"same"`` = ``noiseless`` (a reference simulated
        from the same specimen, e.g. ``measured``); None for a reference of another specimen
        (then no correlation distance).
    reference_name : str
        The reference's name in the result.
    tomo_names : sequence of str, optional
        Names of the tomograms in the result (default ``tomo_000``, …).
    tile : int
        Side (pixels) of the spectrum tiles (smaller tilts: their smaller side, made even).
    band : (lo, hi)
        Band of the spectrum distance, fractions of Nyquist.
    noise_band : (lo, hi)
        Band of the unpaired noise estimate, fractions of Nyquist.
    hist_range : (lo, hi)
        Range of the standardised histogram (units of the tilt's std).
    hist_bin : float
        Its bin width (units of std): the error bound of the Wasserstein distance.

    Returns
    -------
    dict
        JSON-ready result (plain lists, floats, None), shape documented in ``docs/compare.md``.

    Notes
    -----
    Computes now (on the active Dask client, if any), two passes over every tilt-series;
    identical numbers for any chunking.
    """
    return run(plan(simulated, reference, noiseless=noiseless, reference_noiseless=reference_noiseless,
                    reference_name=reference_name, tomo_names=tomo_names, tile=tile, band=band,
                    noise_band=noise_band, hist_range=hist_range, hist_bin=hist_bin))


class Plan:
    """A checked comparison, ready to :func:`run`: the paired series and the resolved settings
    (``tile_px``, ``band``, ``mask``, ``noise_band``, ``bins``). Made by :func:`plan`."""

    def __init__(self, tomos: list[list[Series]], names: list[str], reference: str, modalities: list[str],
                 settings: dict[str, Any], noiseless: bool) -> None:
        self.tomos, self.names, self.reference, self.modalities = tomos, names, reference, modalities
        self.settings, self.noiseless = settings, noiseless


def plan(
    simulated: Mapping[str, Any],
    reference: Any,
    *,
    noiseless: Any = None,
    reference_noiseless: Any = "same",
    reference_name: str = "reference",
    tomo_names: Sequence[str] | None = None,
    tile: int = COMPARE_TILE_PX,
    band: tuple[float, float] = COMPARE_SPECTRUM_BAND,
    noise_band: tuple[float, float] = UNPAIRED_BAND,
    hist_range: tuple[float, float] = COMPARE_HIST_RANGE,
    hist_bin: float = COMPARE_HIST_BIN,
) -> Plan:
    """Check everything :func:`compare` needs, reading metadata only (same parameters).

    Raises
    ------
    InputError
        Bad inputs (:func:`prepare`), tiles or bands the tilts cannot hold, a bad histogram.
    """
    from ..kernels.noise_spectral import band_bins

    n_sim = len(as_list(next(iter(simulated.values())))) if simulated else 0
    names = list(tomo_names) if tomo_names is not None else [f"tomo_{i:03d}" for i in range(n_sim)]
    tomos = prepare(simulated, reference, noiseless, reference_name=reference_name, tomo_names=names,
                    reference_noiseless=reference_noiseless)
    s = tile_size(tomos, tile)
    mask = K.band_mask(s // 2, band)
    bins = K.HistogramBins(hist_range[0], hist_range[1], hist_bin)
    noise_band = (float(noise_band[0]), float(noise_band[1]))
    for sr in (sr for ser in tomos for sr in ser):
        band_bins(sr.arr.sizes["x"], noise_band)  # a band the rows cannot hold is refused before any work
    settings = {"tile_px": s, "band": [float(band[0]), float(band[1])], "mask": mask,
                "noise_band": list(noise_band), "bins": bins}
    return Plan(tomos, names, reference_name, list(simulated), settings, noiseless is not None)


def run(p: Plan) -> dict[str, Any]:
    """Compute a :class:`Plan` (two passes over the data) and assemble the result."""
    from .compare_result import assemble

    st = p.settings
    stats = measure(p.tomos, tile=st["tile_px"], noise_band=tuple(st["noise_band"]), bins=st["bins"])
    return assemble(p.tomos, stats, p.names, p.reference, p.modalities, st, noiseless=p.noiseless)
