"""Report figures of images and curves: tilt montages, central slices, noise curves.

* :func:`plot_noise_curves`: per-tilt noise curves of a :class:`~faket_dask.NoiseModel`, raw
  values of every reference as dots, the fitted-and-averaged polynomials as lines
  (``docs/method.md §2``).
* :func:`plot_tilt_montage`: evenly spaced tilts of a tilt-series side by side.
* :func:`plot_central_slices`: central xy and xz slices of reconstructed volumes.

Power spectra are :mod:`faket_dask.report.spectra`; the shared drawing helpers
:mod:`faket_dask.report.drawing`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from ..datamodel import TILT_DIMS, VOLUME_DIMS
from ..errors import InputError
from ..noise_model import NoiseModel
from .drawing import LazyFigure, as_dask, check_dims, image_grid, render, save_png, show_image, thumbnail

#: Panels of the noise-curve figure: variable -> axis label.
NOISE_PANELS: dict[str, str] = {
    "r": "r  (weight of the signal)",
    "sigma": "σ  (noise std, normalised)",
    "mean": "mean of the tilt",
    "std": "std of the tilt",
}


def plot_noise_curves(
    model: NoiseModel,
    path: str | Path,
    *,
    orders: Iterable[int] | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> Path:
    """Save a PNG of the model's per-tilt curves and their polynomial fits.

    One panel per variable (``r``, ``sigma``, ``mean``, ``std``) against the tilt angle
    (degrees; the tilt index when the model has no angles). Dots: raw curve of each reference.
    Lines: the fitted curves averaged over references, one line per order (solid for the
    model's own order, dashed for the others).

    Parameters
    ----------
    model : NoiseModel
        The model to show.
    path : path
        Output PNG file (parent directories are created).
    orders : iterable of int, optional
        Fit orders to draw (default: the model's order, then 2 and 0).
    title : str, optional
        Figure title (default: a summary of the model).
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ords = [model.order]
    for o in orders if orders is not None else (2, 0):
        if int(o) not in ords:
            ords.append(int(o))
    angles = model.angles_deg
    x = angles if angles is not None else np.arange(model.n_tilts)
    xlabel = "tilt angle (°)" if angles is not None else "tilt index"

    fig = Figure(figsize=(10, 7), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, sharex=True).ravel()
    colours = [f"C{i % 10}" for i in range(model.n_references)]
    fits = {o: model.with_order(o).curves for o in ords}
    for ax, (var, label) in zip(axes, NOISE_PANELS.items()):
        for i in range(model.n_references):
            src = model.sources[i].get("measured", f"reference {i}") if model.sources else f"reference {i}"
            ax.plot(x, model.raw[var].values[i], "o", ms=3, alpha=0.6, color=colours[i], label=f"raw: {src}")
        for j, o in enumerate(ords):
            ax.plot(
                x, fits[o][var].values, "-" if j == 0 else "--", lw=2 if j == 0 else 1.5,
                color="k" if j == 0 else f"C{(j + 3) % 10}", label=f"fit, order {o} (mean of {model.n_references})",
            )
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for ax in axes[2:]:
        ax.set_xlabel(xlabel)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title or f"FakET noise model ({model.method}, {model.n_references} reference(s), {model.n_tilts} tilts)")
    return save_png(fig, path, dpi)


# -- montage ---------------------------------------------------------------------------------
def tilt_indices(n_total: int, n_tilts: int) -> np.ndarray:
    """``n_tilts`` evenly spaced indices over ``0 .. n_total - 1`` (first and last included)."""
    if n_total < 1:
        return np.zeros(0, dtype=int)
    n = max(1, min(int(n_tilts), n_total))
    return np.unique(np.round(np.linspace(0, n_total - 1, n)).astype(int))


def montage_figure(ts: xr.DataArray, path: str | Path, n_tilts: int, title: str | None, dpi: int) -> LazyFigure:
    check_dims(ts, TILT_DIMS, "plot_tilt_montage")
    idx = tilt_indices(ts.sizes["tilt"], n_tilts)
    if idx.size == 0:
        raise InputError(f"plot_tilt_montage: {ts.name or 'tilt-series'} has no tilts")
    data = as_dask(ts)
    angles = ts["tilt"].values if "tilt" in ts.coords else None
    heading = title or str(ts.name or "tilt-series")

    def draw(panels: list[np.ndarray]) -> Path:
        ny, nx = panels[0].shape
        width = 2.6
        fig, axes = image_grid([width * min(ny / nx, 2.0)], len(idx), width, heading)
        for ax, i, img in zip(axes[0], idx, panels):
            show_image(ax, img, f"{float(angles[i]):+.1f}°" if angles is not None else f"tilt {int(i)}")
        return save_png(fig, path, dpi)

    return LazyFigure([thumbnail(data[int(i)]) for i in idx], draw)


def plot_tilt_montage(
    ts: xr.DataArray,
    path: str | Path,
    *,
    n_tilts: int = 5,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Save a PNG of evenly spaced tilts of a tilt-series side by side.

    E.g. the tilts at −60, −30, 0, 30 and 60° of a ±60° series. Each panel shows its tilt
    angle and has its own robust contrast (1st–99th percentile). Only the chosen tilts are
    read, block-mean downsampled to at most :data:`MAX_PANEL_PX` pixels per side.

    Parameters
    ----------
    ts : xarray.DataArray, dims (tilt, y, x)
        Tilt-series (numpy- or dask-backed); coord ``tilt`` in degrees if present.
    path : path
        Output PNG file (parent directories are created).
    n_tilts : int
        Number of panels (at most the number of tilts).
    title : str, optional
        Figure title (default: the array's name).
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    Path
        ``path``.
    """
    return render([montage_figure(ts, path, n_tilts, title, dpi)], "montage")[0]


# -- central slices --------------------------------------------------------------------------
def slices_figure(
    volumes: Mapping[str, xr.DataArray], path: str | Path, title: str | None, dpi: int
) -> LazyFigure:
    if not volumes:
        raise InputError("plot_central_slices: no volumes given")
    parts, mids = [], []
    for vol in volumes.values():
        check_dims(vol, VOLUME_DIMS, "plot_central_slices")
        data = as_dask(vol)
        z_mid, y_mid = data.shape[0] // 2, data.shape[1] // 2
        parts += [thumbnail(data[z_mid]), thumbnail(data[:, y_mid, :])]
        mids.append((z_mid, y_mid))

    def draw(slices: list[np.ndarray]) -> Path:
        (ny, nx), (nz, _) = slices[0].shape, slices[1].shape
        width = 2.6
        rows = [width * min(ny / nx, 2.0), width * min(nz / nx, 2.0)]
        fig, axes = image_grid(rows, len(volumes), width, title or "central slices")
        for j, (name, (z_mid, y_mid)) in enumerate(zip(volumes, mids)):
            show_image(axes[0, j], slices[2 * j], f"{name}: xy, z = {z_mid}")
            show_image(axes[1, j], slices[2 * j + 1], f"{name}: xz, y = {y_mid}")
        return save_png(fig, path, dpi)

    return LazyFigure(parts, draw)


def plot_central_slices(
    volumes: Mapping[str, xr.DataArray],
    path: str | Path,
    *,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Save a PNG with, per volume, a column of its central xy (z mid) and xz (y mid) slices.

    Only the two slices are read (block-mean downsampled to at most :data:`MAX_PANEL_PX`
    pixels per side); each panel has its own robust contrast (1st–99th percentile).

    Parameters
    ----------
    volumes : mapping of str to xarray.DataArray (z, y, x)
        Column title -> volume (numpy- or dask-backed).
    path : path
        Output PNG file (parent directories are created).
    title : str, optional
        Figure title.
    dpi : int
        Resolution of the PNG.

    Returns
    -------
    Path
        ``path``.
    """
    return render([slices_figure(volumes, path, title, dpi)], "central slices")[0]
