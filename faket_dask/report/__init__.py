"""Figures for reports (matplotlib, Agg canvas: no display and no global backend change).

* :func:`plot_noise_curves`: per-tilt noise curves of a :class:`~faket_dask.NoiseModel`, raw
  values of every reference as dots, the fitted-and-averaged polynomials as lines.
* :func:`plot_tilt_montage`: evenly spaced tilts of a tilt-series side by side.
* :func:`radial_power_spectrum` / :func:`plot_power_spectra`: tilt-averaged radial power
  spectra of tilt-series, normalised so their shapes compare.
* :func:`plot_central_slices`: central xy and xz slices of reconstructed volumes.
* :func:`write_report`: all of the above for a run store, into a folder of PNGs.

Modules: :mod:`~faket_dask.report.figures` (noise curves, montages, slices),
:mod:`~faket_dask.report.spectra` (power spectra), :mod:`~faket_dask.report.drawing` (shared
helpers); their public names are importable from here.

Nothing here loads a whole stack: tilts and slices are selected lazily and block-mean
downsampled to at most :data:`MAX_PANEL_PX` pixels per side before they are computed; the power
spectrum is a dask map over blocks of whole tilts followed by a mean, so only ``T × n/2``
numbers come back. Computation goes through :func:`faket_dask.progress.compute` (the current
distributed client if there is one, the local scheduler otherwise); :func:`write_report`
computes and draws every figure in one graph (on the workers, when there is a cluster).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from .. import store as _store
from ..datamodel import TILT_DIMS, VOLUME_DIMS
from ..errors import InputError
from ..noise_model import NoiseModel
from ..store.layout import NOISE_MODEL_GROUP, tiltseries_group, tomo_name, tomogram_group
from .drawing import MAX_PANEL_PX, MODALITY_ORDER, LazyFigure, ordered_modalities, render
from .figures import (
    NOISE_PANELS,
    montage_figure,
    plot_central_slices,
    plot_noise_curves,
    plot_tilt_montage,
    slices_figure,
    tilt_indices,
)
from .spectra import (
    SPECTRUM_TASK_BYTES, plot_power_spectra, radial_power_spectrum, spectra_figure, spectrum_tilts_per_task,
)

__all__ = [
    "MAX_PANEL_PX",
    "MODALITY_ORDER",
    "NOISE_PANELS",
    "SPECTRUM_TASK_BYTES",
    "plot_central_slices",
    "plot_noise_curves",
    "plot_power_spectra",
    "plot_tilt_montage",
    "radial_power_spectrum",
    "tilt_indices",
    "write_report",
]

def _tomo_ids(store: str | Path) -> list[int]:
    """Indices of the ``tomo_NNN`` groups of a store (names as made by ``store.layout.tomo_name``)."""
    root = _store.open_root(store)
    ids = []
    for name in root.group_keys():
        # a group is tomogram i when layout spells tomogram i's name exactly so
        m = re.search(r"(\d+)$", name)
        if m and tomo_name(int(m.group(1))) == name:
            ids.append(int(m.group(1)))
    return sorted(ids)


def _open_group(store: str | Path, group: str) -> xr.Dataset | None:
    """A store group as a lazy Dataset, or None if it does not exist."""
    root = _store.open_root(store)
    if group not in root:
        return None
    return _store.open(store, group)


def _style_stack(store: str | Path, faket: xr.DataArray) -> tuple[str, xr.DataArray] | None:
    """The style tilt-series named by ``faket.attrs["style"]`` (``GROUP/VAR``), if in the store."""
    ref = faket.attrs.get("style")
    if not isinstance(ref, str) or not ref:
        return None
    try:
        if not _store.has_var(store, ref):
            return None
        arr = _store.open_var(store, ref)
        if tuple(arr.dims) == TILT_DIMS:  # read for its power spectrum (as in write_report)
            arr = _store.open_var(store, ref, tilts_per_chunk=spectrum_tilts_per_task(arr.shape))
    except InputError:
        return None
    if tuple(arr.dims) != TILT_DIMS:
        return None
    return ref, arr


def write_report(
    store: str | Path,
    out_dir: str | Path,
    *,
    tomos: Sequence[int] | None = None,
    noise_curves: bool = True,
    tilt_series: bool = True,
    tomograms: bool = True,
    dpi: int = 110,
) -> list[Path]:
    """Write the figures of a run store as PNGs into ``out_dir``.

    Files (each only if its data are in the store; missing data are skipped):

    * ``noise_curves.png``: :func:`plot_noise_curves` of the store's noise model;
    * per tomogram ``tomo_NNN``:
      ``tomo_NNN_montage_<modality>.png`` for every tilt-series variable
      (:func:`plot_tilt_montage`);
      ``tomo_NNN_power_spectra.png``: FAKET, BASELINE and NOISY and the style stack named in
      ``faket.attrs["style"]``, those present (:func:`plot_power_spectra`);
      ``tomo_NNN_central_slices.png``: every reconstructed volume
      (:func:`plot_central_slices`).

    Parameters
    ----------
    store : path
        The run store (``run.zarr``).
    out_dir : path
        Output folder (created).
    tomos : sequence of int, optional
        Tomogram indices to show (default: every ``tomo_NNN`` group of the store); indices
        without data are skipped.
    noise_curves : bool
        Also draw ``noise_curves.png`` (the pipeline draws each tomogram's figures in a stage
        of its own, and the noise curves once).
    tilt_series, tomograms : bool
        Draw each tomogram's tilt-series figures (montages, power spectra) and its central
        slices (the pipeline draws them in two stages: the slices wait for the FAKET tomogram).
    dpi : int
        Resolution of the PNGs.

    Returns
    -------
    list of Path
        The files written, in the order above.

    Raises
    ------
    InputError
        If ``store`` is not a run store.
    """
    root = _store.open_root(store)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[LazyFigure] = []
    if noise_curves and NOISE_MODEL_GROUP in root:
        model = NoiseModel.load(store)
        path = out / "noise_curves.png"
        figures.append(LazyFigure([], lambda _: plot_noise_curves(model, path, dpi=dpi)))
    ids = _tomo_ids(store) if tomos is None else [int(t) for t in tomos]
    for i in ids:
        tomo = tomo_name(i)
        ts = _open_group(store, tiltseries_group(i)) if tilt_series else None
        if ts is not None:
            tilt_vars = {str(v): ts[v] for v in ts.data_vars if tuple(ts[v].dims) == TILT_DIMS}
            for name in ordered_modalities(tilt_vars):
                figures.append(montage_figure(
                    tilt_vars[name], out / f"{tomo}_montage_{name}.png", 5, f"{tomo}: {name}", dpi,
                ))
            series: dict[str, xr.DataArray] = {}
            spectra_vars = [m for m in ("faket", "baseline", "noisy") if m in tilt_vars]
            if spectra_vars:
                # read as many whole tilts per chunk as one spectrum task takes: each task reads
                # its own tilts (no read and merge task per stored tilt: ~1,000 in the demo)
                k = spectrum_tilts_per_task(tilt_vars[spectra_vars[0]].shape)
                grouped = _store.open(store, tiltseries_group(i), tilts_per_chunk=k)
                series = {m.upper(): grouped[m] for m in spectra_vars}
            if "faket" in tilt_vars:
                style = _style_stack(store, tilt_vars["faket"])
                if style is not None:
                    series[f"style ({style[0]})"] = style[1]
            if series:
                figures.append(spectra_figure(
                    series, out / f"{tomo}_power_spectra.png", f"{tomo}: radial power spectra", dpi,
                ))
        vols = _open_group(store, tomogram_group(i)) if tomograms else None
        if vols is not None:
            volumes = {str(v): vols[v] for v in vols.data_vars if tuple(vols[v].dims) == VOLUME_DIMS}
            if volumes:
                figures.append(slices_figure(
                    {n: volumes[n] for n in ordered_modalities(volumes)}, out / f"{tomo}_central_slices.png",
                    f"{tomo}: central slices", dpi,
                ))
    # one graph: each stack is opened once, every figure drawn by a task of its own
    return render(figures, "report")
