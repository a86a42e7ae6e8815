"""Figures for reports (matplotlib, Agg canvas: no display and no global backend change).

* :func:`plot_noise_curves`: per-tilt noise curves of a :class:`~faket_dask.NoiseModel`, raw
  values of every reference as dots, the fitted-and-averaged polynomials as lines.
* :func:`plot_tilt_montage`: evenly spaced tilts of a tilt-series side by side.
* :func:`radial_power_spectrum` / :func:`plot_power_spectra`: tilt-averaged radial power
  spectra of tilt-series, normalised so their shapes compare.
* :func:`plot_central_slices`: central xy and xz slices of reconstructed volumes.
* :func:`write_report`: all of the above for a run store, into a folder of PNGs.

Nothing here loads a whole stack: tilts and slices are selected lazily and block-mean
downsampled to at most :data:`MAX_PANEL_PX` pixels per side before they are computed; the power
spectrum is a dask map over blocks of whole tilts followed by a mean, so only ``T × n/2``
numbers come back. Computation goes through :func:`faket_dask.progress.compute` (the current
distributed client if there is one, the local scheduler otherwise); :func:`write_report`
computes everything a tomogram's figures need in one graph, then draws on the client.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import dask.array as da
import numpy as np
import xarray as xr

from . import store as _store
from .datamodel import TILT_DIMS, VOLUME_DIMS
from .errors import InputError
from .noise_model import NOISE_MODEL_GROUP, NoiseModel
from .progress import compute

#: Largest side (pixels) of an image panel; bigger tilts/slices are block-mean downsampled.
MAX_PANEL_PX: int = 512

#: Display order of modalities (others follow, sorted by name).
MODALITY_ORDER: tuple[str, ...] = ("noiseless", "measured", "noisy", "content", "baseline", "faket")

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
    return _save(fig, path, dpi)


# -- helpers ---------------------------------------------------------------------------------
def _new_figure(figsize: tuple[float, float], *, constrained: bool = True) -> Any:
    """A matplotlib Figure on its own Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def _image_grid(row_heights: Sequence[float], ncols: int, width: float, title: str) -> tuple[Any, np.ndarray]:
    """A figure of image panels ``width`` inches wide, rows of the given heights (inches).

    Fixed placement (no layout engine: several times faster to draw) with room for a title
    above each panel and a figure title on top. Returns the figure and a (rows, ncols) array
    of axes without ticks or frames.
    """
    pad, head, top = 0.08, 0.28, 0.42  # inches: gap, panel title, figure title
    fig_w = ncols * (width + 2 * pad)
    fig_h = top + sum(h + head + pad for h in row_heights)
    fig = _new_figure((fig_w, fig_h), constrained=False)
    axes = np.empty((len(row_heights), ncols), dtype=object)
    y = fig_h - top
    for r, h in enumerate(row_heights):
        y -= head + h
        for c in range(ncols):
            x = pad + c * (width + 2 * pad)
            ax = fig.add_axes((x / fig_w, y / fig_h, width / fig_w, h / fig_h))
            ax.set_axis_off()
            axes[r, c] = ax
        y -= pad
    fig.suptitle(title, y=1 - 0.08 / fig_h, va="top")
    return fig, axes


def _save(fig: Any, path: str | Path, dpi: int) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, format="png", pil_kwargs={"compress_level": 3})
    return out


def _dask(arr: xr.DataArray) -> da.Array:
    """The array's data as a dask array (numpy-backed arrays are wrapped, one chunk)."""
    data = arr.data
    return data if isinstance(data, da.Array) else da.from_array(np.asarray(data), chunks=-1)


def _check_dims(arr: xr.DataArray, dims: tuple[str, ...], what: str) -> None:
    if tuple(arr.dims) != dims:
        raise InputError(f"{what}: expected dims {dims}, got {tuple(arr.dims)} ({arr.name or 'array'})")


def _thumbnail(img: da.Array, max_px: int = MAX_PANEL_PX) -> da.Array:
    """Lazy 2D image block-mean downsampled by an integer factor so both sides are <= max_px."""
    f = max(1, -(-max(img.shape) // max_px))
    if f == 1 or min(img.shape) < f:
        return img
    return da.coarsen(np.mean, img.astype(np.float32), {0: f, 1: f}, trim_excess=True)


def _robust_limits(img: np.ndarray) -> tuple[float, float]:
    """1st and 99th percentile of the finite values (a tiny range if constant)."""
    vals = img[np.isfinite(img)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(vals, [1, 99]))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def _show(ax: Any, img: np.ndarray, title: str) -> None:
    lo, hi = _robust_limits(img)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
    ax.set_title(title, fontsize=9, y=1.0, pad=3)  # a fixed y skips matplotlib's tick-based placement


def _ordered(names: Iterable[str]) -> list[str]:
    names = list(names)
    known = [m for m in MODALITY_ORDER if m in names]
    return known + sorted(n for n in names if n not in MODALITY_ORDER)


# -- lazy figures: what to compute, then how to draw it --------------------------------------
class _LazyFigure(NamedTuple):
    """A figure as the small dask arrays it needs and a function drawing it from their values."""

    parts: list[da.Array]
    draw: Callable[[list[np.ndarray]], Path]


def _render(figures: Sequence[_LazyFigure], label: str) -> list[Path]:
    """Compute the parts of several figures in one pass (one graph), then draw each."""
    flat = [part for fig in figures for part in fig.parts]
    values = compute(flat, label=label) if flat else []
    out, i = [], 0
    for fig in figures:
        n = len(fig.parts)
        out.append(fig.draw([np.asarray(v) for v in values[i : i + n]]))
        i += n
    return out


# -- montage ---------------------------------------------------------------------------------
def tilt_indices(n_total: int, n_tilts: int) -> np.ndarray:
    """``n_tilts`` evenly spaced indices over ``0 .. n_total - 1`` (first and last included)."""
    if n_total < 1:
        return np.zeros(0, dtype=int)
    n = max(1, min(int(n_tilts), n_total))
    return np.unique(np.round(np.linspace(0, n_total - 1, n)).astype(int))


def _montage_figure(ts: xr.DataArray, path: str | Path, n_tilts: int, title: str | None, dpi: int) -> _LazyFigure:
    _check_dims(ts, TILT_DIMS, "plot_tilt_montage")
    idx = tilt_indices(ts.sizes["tilt"], n_tilts)
    if idx.size == 0:
        raise InputError(f"plot_tilt_montage: {ts.name or 'tilt-series'} has no tilts")
    data = _dask(ts)
    angles = ts["tilt"].values if "tilt" in ts.coords else None
    heading = title or str(ts.name or "tilt-series")

    def draw(panels: list[np.ndarray]) -> Path:
        ny, nx = panels[0].shape
        width = 2.6
        fig, axes = _image_grid([width * min(ny / nx, 2.0)], len(idx), width, heading)
        for ax, i, img in zip(axes[0], idx, panels):
            _show(ax, img, f"{float(angles[i]):+.1f}°" if angles is not None else f"tilt {int(i)}")
        return _save(fig, path, dpi)

    return _LazyFigure([_thumbnail(data[int(i)]) for i in idx], draw)


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
    return _render([_montage_figure(ts, path, n_tilts, title, dpi)], "montage")[0]


# -- power spectra ---------------------------------------------------------------------------
#: Input bytes (float32) of one power-spectrum task: whole tilts are batched up to this size
#: (one tilt per task when a tilt is larger), to keep the task count low for small tilts.
SPECTRUM_TASK_BYTES: int = 32 * 2**20


@functools.lru_cache(maxsize=8)
def _radial_bins(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Ring index and weight of every ``rfft2`` coefficient of a ``(ny, nx)`` image.

    Ring ``k`` holds the frequencies with ``round(|f| * n) == k`` (``f`` in cycles per pixel,
    ``n = min(ny, nx)``), so rings are ``1 / n`` wide and ring ``n // 2`` ends at Nyquist along
    the shorter axis. Rings ``1 .. n // 2`` are kept (``0`` is the mean, removed; larger
    frequencies, in the corners, are dropped). The weight counts each half-plane coefficient
    as often as it occurs in the full plane (2, or 1 for the columns 0 and Nyquist), so ring
    means equal those of the full 2D spectrum.
    """
    n = min(ny, nx)
    nbins = n // 2
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.rfftfreq(nx)[None, :]
    ring = np.rint(np.hypot(fy, fx) * n).astype(np.int64)
    ring[ring > nbins] = nbins + 1
    weight = np.full(ring.shape, 2.0)
    weight[:, 0] = 1.0
    if nx % 2 == 0:
        weight[:, -1] = 1.0
    ring.flags.writeable = False
    weight.flags.writeable = False
    return ring.ravel(), weight.ravel(), nbins


def _tilt_power(block: np.ndarray) -> np.ndarray:
    """Radially averaged power spectrum of each whole tilt of a ``(t, Y, X)`` block.

    Power = ``|FFT(tilt - mean)|² / (Y X)`` (a periodogram: white noise of variance σ² gives
    σ² in every ring). Returns ``(t, n // 2)`` float64, rings ``1 .. n // 2``.
    """
    t, ny, nx = block.shape
    ring, weight, nbins = _radial_bins(ny, nx)
    counts = np.bincount(ring, weights=weight, minlength=nbins + 2)[1 : nbins + 1]
    out = np.empty((t, nbins), dtype=np.float64)
    for i in range(t):
        img = np.asarray(block[i], dtype=np.float64)
        img = img - img.mean()
        power = np.abs(np.fft.rfft2(img)) ** 2 / (ny * nx)
        sums = np.bincount(ring, weights=power.ravel() * weight, minlength=nbins + 2)
        out[i] = sums[1 : nbins + 1] / counts
    return out


def _power_graph(ts: xr.DataArray) -> tuple[np.ndarray, da.Array]:
    """Frequencies (1/Å) and the lazy tilt-averaged radial power of a tilt-series."""
    _check_dims(ts, TILT_DIMS, "radial_power_spectrum")
    n_t, ny, nx = (ts.sizes[d] for d in TILT_DIMS)
    if n_t < 1 or min(ny, nx) < 2:
        raise InputError(f"radial_power_spectrum: {ts.name or 'tilt-series'} is too small ({n_t} × {ny} × {nx})")
    pixel = float(ts.attrs.get("pixel_size_A", 1.0))
    _, _, nbins = _radial_bins(ny, nx)
    # Whole tilts per task: the rows of a tilt are joined (rechunk along y), tilts are batched
    # up to SPECTRUM_TASK_BYTES. The blocks depend on the shape only, not on the input chunks,
    # so the result (sums included) is identical for any chunking.
    per_task = int(max(1, min(n_t, SPECTRUM_TASK_BYTES // (ny * nx * 4))))
    data = _dask(ts).rechunk({0: per_task, 1: -1, 2: -1})
    per_tilt = data.map_blocks(
        _tilt_power, drop_axis=2, chunks=(data.chunks[0], (nbins,)), dtype=np.float64,
        meta=np.empty((0, 0), np.float64),
    )
    freq = np.arange(1, nbins + 1, dtype=np.float64) / (min(ny, nx) * pixel)
    return freq, per_tilt.mean(axis=0)


def radial_power_spectrum(ts: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """Tilt-averaged radial power spectrum of a tilt-series.

    For each tilt (mean subtracted): the 2D periodogram ``|FFT|² / (Y X)``, averaged over rings
    of width ``1 / min(Y, X)`` cycles per pixel; then the mean over tilts. Computed as a dask
    map over blocks of whole tilts (the chunks along ``y`` of a tilt are joined; small tilts
    are batched up to :data:`SPECTRUM_TASK_BYTES` per task, large ones go one per task), so
    only a few tilts are in memory at once and only ``T × min(Y, X) / 2`` numbers come back.
    The result does not depend on the input chunking.

    Parameters
    ----------
    ts : xarray.DataArray, dims (tilt, y, x)
        Tilt-series (numpy- or dask-backed); ``attrs["pixel_size_A"]`` gives the pixel size
        (Å, default 1).

    Returns
    -------
    freq_per_A : numpy.ndarray, shape (min(Y, X) // 2,)
        Ring centre frequencies ``k / (min(Y, X) · pixel)``, ``k = 1 .. min(Y, X) // 2``, in
        1/Å; the last is Nyquist, ``1 / (2 · pixel)``, for an even ``min(Y, X)``.
    power : numpy.ndarray, same shape
        Mean power per ring (white noise of variance σ² gives σ² everywhere).
    """
    freq, power = _power_graph(ts)
    return freq, np.asarray(compute(power, label="power spectrum"))


def _spectra_figure(
    series: Mapping[str, xr.DataArray], path: str | Path, title: str | None, dpi: int
) -> _LazyFigure:
    if not series:
        raise InputError("plot_power_spectra: no tilt-series given")
    graphs = {label: _power_graph(ts) for label, ts in series.items()}

    def draw(powers: list[np.ndarray]) -> Path:
        fig = _new_figure((7, 4.5))
        ax = fig.subplots()
        for (label, (freq, _)), power in zip(graphs.items(), powers):
            p = np.asarray(power, dtype=np.float64)
            total = p.sum()
            p = p / total if total > 0 else p
            with np.errstate(divide="ignore", invalid="ignore"):
                ax.plot(freq, np.log10(np.where(p > 0, p, np.nan)), lw=1.5, label=label)
        ax.set_xlabel("spatial frequency (1/Å)")
        ax.set_ylabel("log₁₀ power (normalised to unit total)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        ax.set_title(title or "radial power spectra (mean over tilts)")
        return _save(fig, path, dpi)

    return _LazyFigure([g[1] for g in graphs.values()], draw)


def plot_power_spectra(
    series: Mapping[str, xr.DataArray],
    path: str | Path,
    *,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Save a PNG of the radial log-power spectra of several tilt-series, one line each.

    Each spectrum (:func:`radial_power_spectrum`) is normalised to unit total power, so the
    lines compare the spectral shape (e.g. FAKET against BASELINE, NOISY and the style data)
    rather than the intensity scale. All spectra are computed in one pass.

    Parameters
    ----------
    series : mapping of str to xarray.DataArray (tilt, y, x)
        Legend label -> tilt-series.
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
    return _render([_spectra_figure(series, path, title, dpi)], "power spectra")[0]


# -- central slices --------------------------------------------------------------------------
def _slices_figure(
    volumes: Mapping[str, xr.DataArray], path: str | Path, title: str | None, dpi: int
) -> _LazyFigure:
    if not volumes:
        raise InputError("plot_central_slices: no volumes given")
    parts, mids = [], []
    for vol in volumes.values():
        _check_dims(vol, VOLUME_DIMS, "plot_central_slices")
        data = _dask(vol)
        z_mid, y_mid = data.shape[0] // 2, data.shape[1] // 2
        parts += [_thumbnail(data[z_mid]), _thumbnail(data[:, y_mid, :])]
        mids.append((z_mid, y_mid))

    def draw(slices: list[np.ndarray]) -> Path:
        (ny, nx), (nz, _) = slices[0].shape, slices[1].shape
        width = 2.6
        rows = [width * min(ny / nx, 2.0), width * min(nz / nx, 2.0)]
        fig, axes = _image_grid(rows, len(volumes), width, title or "central slices")
        for j, (name, (z_mid, y_mid)) in enumerate(zip(volumes, mids)):
            _show(axes[0, j], slices[2 * j], f"{name}: xy, z = {z_mid}")
            _show(axes[1, j], slices[2 * j + 1], f"{name}: xz, y = {y_mid}")
        return _save(fig, path, dpi)

    return _LazyFigure(parts, draw)


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
    return _render([_slices_figure(volumes, path, title, dpi)], "central slices")[0]


# -- the run report --------------------------------------------------------------------------
_TOMO = re.compile(r"^tomo_(\d+)$")


def _tomo_ids(store: str | Path) -> list[int]:
    """Indices of the ``tomo_NNN`` groups of a store (names as made by ``store.tomo_group``)."""
    root = _store.open_root(store)
    ids = []
    for name in root.group_keys():
        m = _TOMO.match(name)
        if m and _store.tomo_group(int(m.group(1)), "x").split("/")[0] == name:
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
    written: list[Path] = []
    if NOISE_MODEL_GROUP in root:
        written.append(plot_noise_curves(NoiseModel.load(store), out / "noise_curves.png", dpi=dpi))
    ids = _tomo_ids(store) if tomos is None else [int(t) for t in tomos]
    for i in ids:
        tomo = _store.tomo_group(i, "tiltseries").split("/")[0]
        figures: list[_LazyFigure] = []
        ts = _open_group(store, _store.tomo_group(i, "tiltseries"))
        if ts is not None:
            tilt_vars = {str(v): ts[v] for v in ts.data_vars if tuple(ts[v].dims) == TILT_DIMS}
            for name in _ordered(tilt_vars):
                figures.append(_montage_figure(
                    tilt_vars[name], out / f"{tomo}_montage_{name}.png", 5, f"{tomo}: {name}", dpi,
                ))
            series = {m.upper(): tilt_vars[m] for m in ("faket", "baseline", "noisy") if m in tilt_vars}
            if "faket" in tilt_vars:
                style = _style_stack(store, tilt_vars["faket"])
                if style is not None:
                    series[f"style ({style[0]})"] = style[1]
            if series:
                figures.append(_spectra_figure(
                    series, out / f"{tomo}_power_spectra.png", f"{tomo}: radial power spectra", dpi,
                ))
        vols = _open_group(store, _store.tomo_group(i, "tomogram"))
        if vols is not None:
            volumes = {str(v): vols[v] for v in vols.data_vars if tuple(vols[v].dims) == VOLUME_DIMS}
            if volumes:
                figures.append(_slices_figure(
                    {n: volumes[n] for n in _ordered(volumes)}, out / f"{tomo}_central_slices.png",
                    f"{tomo}: central slices", dpi,
                ))
        # one graph per tomogram: each stack is opened once, one round trip to the cluster
        written += _render(figures, f"report {tomo}")
    return written
