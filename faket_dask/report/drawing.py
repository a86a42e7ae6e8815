"""Drawing helpers shared by the report figures (matplotlib on an Agg canvas, dask inputs).

A figure is built in two steps so that :func:`faket_dask.report.write_report` can compute
everything a tomogram's figures need in one graph: a :class:`LazyFigure` holds the small dask
arrays the figure needs and a function drawing it from their values; :func:`render` computes
the parts of several figures at once (:func:`faket_dask.progress.compute`: the current
distributed client if there is one, the local scheduler otherwise), then draws each.

Nothing here loads a whole stack: images are selected lazily and block-mean downsampled
(:func:`thumbnail`) to at most :data:`MAX_PANEL_PX` pixels per side before they are computed.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import InputError
from ..progress import compute

#: Largest side (pixels) of an image panel; bigger tilts/slices are block-mean downsampled.
MAX_PANEL_PX: int = 512

#: Display order of modalities (others follow, sorted by name).
MODALITY_ORDER: tuple[str, ...] = ("noiseless", "measured", "noisy", "content", "baseline", "faket")

def new_figure(figsize: tuple[float, float], *, constrained: bool = True) -> Any:
    """A matplotlib Figure on its own Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def image_grid(row_heights: Sequence[float], ncols: int, width: float, title: str) -> tuple[Any, np.ndarray]:
    """A figure of image panels ``width`` inches wide, rows of the given heights (inches).

    Fixed placement (no layout engine: several times faster to draw) with room for a title
    above each panel and a figure title on top. Returns the figure and a (rows, ncols) array
    of axes without ticks or frames.
    """
    pad, head, top = 0.08, 0.28, 0.42  # inches: gap, panel title, figure title
    fig_w = ncols * (width + 2 * pad)
    fig_h = top + sum(h + head + pad for h in row_heights)
    fig = new_figure((fig_w, fig_h), constrained=False)
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


def save_png(fig: Any, path: str | Path, dpi: int) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parent directories are created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, format="png", pil_kwargs={"compress_level": 3})
    return out


def as_dask(arr: xr.DataArray) -> da.Array:
    """The array's data as a dask array (numpy-backed arrays are wrapped, one chunk)."""
    data = arr.data
    return data if isinstance(data, da.Array) else da.from_array(np.asarray(data), chunks=-1)


def check_dims(arr: xr.DataArray, dims: tuple[str, ...], what: str) -> None:
    """Raise :class:`InputError` naming ``what`` unless ``arr.dims == dims``."""
    if tuple(arr.dims) != dims:
        raise InputError(f"{what}: expected dims {dims}, got {tuple(arr.dims)} ({arr.name or 'array'})")


def thumbnail(img: da.Array, max_px: int = MAX_PANEL_PX) -> da.Array:
    """Lazy 2D image block-mean downsampled by an integer factor so both sides are <= max_px."""
    f = max(1, -(-max(img.shape) // max_px))
    if f == 1 or min(img.shape) < f:
        return img
    return da.coarsen(np.mean, img.astype(np.float32), {0: f, 1: f}, trim_excess=True)


def robust_limits(img: np.ndarray) -> tuple[float, float]:
    """1st and 99th percentile of the finite values (a tiny range if constant)."""
    vals = img[np.isfinite(img)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(vals, [1, 99]))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def show_image(ax: Any, img: np.ndarray, title: str) -> None:
    """Grey-scale ``img`` on ``ax`` with its own robust contrast and a title above it."""
    lo, hi = robust_limits(img)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
    ax.set_title(title, fontsize=9, y=1.0, pad=3)  # a fixed y skips matplotlib's tick-based placement


def ordered_modalities(names: Iterable[str]) -> list[str]:
    """``names`` in :data:`MODALITY_ORDER`, unknown names after them, sorted."""
    names = list(names)
    known = [m for m in MODALITY_ORDER if m in names]
    return known + sorted(n for n in names if n not in MODALITY_ORDER)


# -- lazy figures: what to compute, then how to draw it --------------------------------------
class LazyFigure(NamedTuple):
    """A figure as the small dask arrays it needs and a function drawing it from their values."""

    parts: list[da.Array]
    draw: Callable[[list[np.ndarray]], Path]


def _draw(draw: Callable[[list[np.ndarray]], Path], parts: list[np.ndarray]) -> Path:
    return draw([np.asarray(v) for v in parts])


def render(figures: Sequence[LazyFigure], label: str) -> list[Path]:
    """Compute the parts of several figures and draw each, all in one graph.

    Each figure is drawn by a task of its own, where its parts were computed (a Dask worker
    when a distributed client is current), so figures are drawn in parallel and no image
    travels to the client: the demo's 25 figures took 10 s drawn one by one on the client
    while the workers idled (issue 15). The PNGs are written by the workers, so the output
    folder must be one they can write (it is next to the run store, which they write too).
    """
    import dask

    if not figures:
        return []
    tasks = [dask.delayed(_draw, pure=False)(fig.draw, list(fig.parts)) for fig in figures]
    return list(compute(tasks, label=label))
