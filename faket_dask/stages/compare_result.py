"""The result of ``faket-dask compare``: distances from per-tilt statistics, as a JSON-ready dict.

Pure numpy on the small per-tilt arrays that :func:`faket_dask.stages.compare.measure`
returns; no data is read here. Every field is documented in ``docs/compare.md``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..kernels import compare as K
from ..params.compare import COMPARE_MEASURES

__all__ = ["FORMAT", "MEASURES", "assemble", "per_tilt_distances", "pooled_distances"]

#: Name and version of the result's shape (``docs/compare.md``); bumped when a field changes.
FORMAT = "faket-dask-compare/1"

#: Measure -> (per-tilt distance, its units); the pooled distance is described in docs/compare.md.
MEASURES: dict[str, tuple[str, str]] = {
    "spectrum": ("RMS over the band's rings of log10(P_sim / P_ref), spectra normalised to unit power in the band",
                 "decades"),
    "mean": ("|mean_sim - mean_ref| / std_ref", "reference std"),
    "std": ("|log10(std_sim / std_ref)|", "decades"),
    "noise_sigma": ("|sigma_sim - sigma_ref|, sigma = unpaired noise std / tilt std", "dimensionless"),
    "histogram": ("1-Wasserstein distance of the values standardised per tilt", "tilt std"),
    "correlation": ("|rho_sim - rho_ref|, rho = Pearson correlation with noiseless", "dimensionless"),
}
assert tuple(MEASURES) == COMPARE_MEASURES


def _floats(a: Any) -> Any:
    """numpy -> plain floats/lists, non-finite -> None (JSON has no NaN)."""
    if a is None:
        return None
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 0:
        v = float(arr)
        return v if np.isfinite(v) else None
    return [_floats(x) for x in arr]


def per_tilt_distances(x: dict[str, np.ndarray], ref: dict[str, np.ndarray], mask: np.ndarray,
                       width: float) -> dict[str, np.ndarray | None]:
    """Per-tilt distance of one series to the reference, for every measure (:data:`MEASURES`).

    Parameters
    ----------
    x, ref : dict
        Per-tilt statistics of :func:`faket_dask.stages.compare.measure` (same tilt count).
    mask : ndarray of bool
        Rings of the spectrum band.
    width : float
        Histogram bin width (units of std).

    Returns
    -------
    dict of str -> ndarray (T,) or None
        None for ``correlation`` when either series has no noiseless partner.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        out: dict[str, np.ndarray | None] = {
            "spectrum": K.log_ratio_rms(x["spectrum"], ref["spectrum"], mask),
            "mean": np.abs(x["mean"] - ref["mean"]) / ref["std"],
            "std": np.abs(np.log10(x["std"] / ref["std"])),
            "noise_sigma": np.abs(x["noise_sigma"] - ref["noise_sigma"]),
            "histogram": K.wasserstein1_binned(K.fold_clipped(x["histogram"]), K.fold_clipped(ref["histogram"]), width),
            "correlation": None,
        }
    if "correlation" in x and "correlation" in ref:
        out["correlation"] = np.abs(x["correlation"] - ref["correlation"])
    return out


def _mean_spectrum(stats: Sequence[dict[str, np.ndarray]], mask: np.ndarray) -> np.ndarray:
    """Mean over all tilts of the band-normalised spectra (exactly rounded sums)."""
    p = np.concatenate([K.normalise_band(s["spectrum"], mask) for s in stats], axis=0)
    return K.fsum_axis(p, axis=0) / p.shape[0]


def _pooled_histogram(stats: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    return sum(K.fold_clipped(s["histogram"]).sum(axis=0) for s in stats)


def pooled_distances(pairs: Sequence[tuple[dict, dict]], tilts: Sequence[dict], mask: np.ndarray,
                     width: float) -> dict[str, float | None]:
    """Distance of one modality to the reference pooled over several tomograms' tilts.

    ``spectrum``: :func:`~faket_dask.kernels.compare.log_ratio_rms` of the tilt-averaged
    band-normalised spectra; ``histogram``: W1 of the summed per-tilt standardised histograms;
    the curve measures: RMS of the per-tilt distances (``tilts``: :func:`per_tilt_distances`
    of each pair); ``correlation`` None unless every tilt has one.
    """
    xs = [p[0] for p in pairs]
    refs = [p[1] for p in pairs]
    out: dict[str, float | None] = {
        "spectrum": float(K.log_ratio_rms(_mean_spectrum(xs, mask), _mean_spectrum(refs, mask), mask)),
        "histogram": float(K.wasserstein1_binned(_pooled_histogram(xs), _pooled_histogram(refs), width)),
    }
    for m in ("mean", "std", "noise_sigma", "correlation"):
        per = [t[m] for t in tilts]
        out[m] = None if any(v is None for v in per) else K.rms(np.concatenate(per))
    return {m: out[m] for m in COMPARE_MEASURES}


def _curves(st: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"mean": _floats(st["mean"]), "std": _floats(st["std"]), "noise_sigma": _floats(st["noise_sigma"]),
            "correlation": _floats(st.get("correlation"))}


def _pixel_size(arr: Any) -> float | None:
    v = arr.attrs.get("pixel_size_A") if hasattr(arr, "attrs") else None
    return float(v) if v is not None else None


def assemble(tomos: list[list[Any]], stats: list[list[dict[str, np.ndarray]]], names: Sequence[str],
             reference: str, modalities: Sequence[str], settings: dict[str, Any], *, noiseless: bool) -> dict[str, Any]:
    """The JSON-ready result of :func:`faket_dask.stages.compare.compare` (``docs/compare.md``).

    Parameters
    ----------
    tomos : list (tomograms) of list of Series
        Reference first, then ``modalities`` in order.
    stats : same nesting, dict
        :func:`faket_dask.stages.compare.measure`'s per-tilt statistics.
    names : sequence of str
        Tomogram names.
    reference : str
        The reference's name.
    modalities : sequence of str
        Simulated modality names.
    settings : dict
        ``tile_px``, ``band``, ``mask``, ``noise_band``, ``bins`` (:class:`~faket_dask.kernels.compare.HistogramBins`).
    noiseless : bool
        Whether noiseless partners were given.
    """
    mask, bins, s = settings["mask"], settings["bins"], settings["tile_px"]
    series = [reference, *modalities]
    per_tomogram: dict[str, Any] = {}
    tilt_d: dict[str, list[dict]] = {m: [] for m in modalities}
    for name, ser, st in zip(names, tomos, stats):
        ref = st[0]
        per_tilt = {m: per_tilt_distances(x, ref, mask, bins.width) for m, x in zip(modalities, st[1:])}
        for m in modalities:
            tilt_d[m].append(per_tilt[m])
        px = _pixel_size(ser[0].arr)
        angles = ser[1].arr["tilt"].values if "tilt" in ser[1].arr.coords else None
        per_tomogram[name] = {
            "tilt_angle_deg": _floats(angles) if angles is not None and np.issubdtype(angles.dtype, np.number) else None,
            "pixel_size_A": px,
            "pooled": {m: pooled_distances([(x, ref)], [per_tilt[m]], mask, bins.width)
                       for m, x in zip(modalities, st[1:])},
            "per_tilt": {m: {k: _floats(v) for k, v in per_tilt[m].items()} for m in modalities},
            "curves": {n: _curves(x) for n, x in zip(series, st)},
            "spectrum": {
                "frequency_per_A": _floats(K.spectrum_frequencies(s) / px) if px else None,
                "power": {n: _floats(_mean_spectrum([x], mask)) for n, x in zip(series, st)},
            },
        }
    by_series = {n: [st[i] for st in stats] for i, n in enumerate(series)}
    refs = by_series[reference]
    pooled = {m: pooled_distances(list(zip(by_series[m], refs)), tilt_d[m], mask, bins.width) for m in modalities}
    ranking = {meas: sorted((m for m in modalities if pooled[m][meas] is not None), key=lambda m: pooled[m][meas])
               for meas in COMPARE_MEASURES}
    hist = {n: _pooled_histogram(v) for n, v in by_series.items()}
    clipped = {n: sum(int(x["histogram"][:, [0, -1]].sum()) for x in v) / sum(int(x["histogram"].sum()) for x in v)
               for n, v in by_series.items()}
    return {
        "format": FORMAT,
        "reference": reference,
        "correlation_partner": "noiseless" if noiseless else None,
        "modalities": list(modalities),
        "tomograms": list(names),
        "measures": {m: {"per_tilt": d, "units": u} for m, (d, u) in MEASURES.items()},
        "settings": {
            "spectrum": {"tile_px": s, "band_nyquist": settings["band"], "rings": int(s // 2),
                         "rings_in_band": int(mask.sum()), "log": "log10"},
            "noise_sigma": {"band_nyquist": settings["noise_band"], "estimator": "unpaired (row spectra)"},
            "histogram": {"range_std": [bins.lo, bins.hi], "bin_width_std": bins.width, "bins": bins.n,
                          "w1_error_bound_std": bins.width},
        },
        "pooled": pooled,
        "ranking": ranking,
        "spectrum": {"frequency_per_px": _floats(K.spectrum_frequencies(s)),
                     "power": {n: _floats(_mean_spectrum(v, mask)) for n, v in by_series.items()}},
        "histogram": {"counts": {n: [int(c) for c in h] for n, h in hist.items()},
                      "clipped_fraction": {n: float(c) for n, c in clipped.items()}},
        "per_tomogram": per_tomogram,
    }
