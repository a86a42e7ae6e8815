"""Helpers shared by the stages: device choice, GPU annotation, slab rechunking, input checks."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ..datamodel import TILT_DIMS
from ..errors import InputError


def check_tiltseries(obj: Any, label: str) -> xr.DataArray:
    """``obj`` as a (tilt, y, x) DataArray of real numbers, data untouched (numpy or dask).

    Parameters
    ----------
    obj : xarray.DataArray or array-like, shape (tilt, y, x)
        A tilt-series; a bare array gets the dims ``(tilt, y, x)``.
    label : str
        How error messages name the input (e.g. ``"style 'measured'"``).

    Raises
    ------
    InputError
        Not 3-D with dims (tilt, y, x), empty, or not real numbers (complex and bool refused).
    """
    if not isinstance(obj, xr.DataArray):
        if not hasattr(obj, "ndim"):
            raise InputError(f"{label}: expected a (tilt, y, x) array, got {type(obj).__name__}")
        if obj.ndim != 3:
            raise InputError(f"{label}: expected a (tilt, y, x) array, got shape {tuple(obj.shape)}")
        obj = xr.DataArray(obj, dims=TILT_DIMS)
    if tuple(obj.dims) != TILT_DIMS:
        raise InputError(f"{label}: expected dims {TILT_DIMS}, got {tuple(obj.dims)}")
    if min(obj.shape) < 1:
        raise InputError(f"{label}: empty tilt-series, shape {obj.shape}")
    if (not np.issubdtype(obj.dtype, np.number) or np.issubdtype(obj.dtype, np.complexfloating)
            or obj.dtype == bool):
        raise InputError(f"{label}: expected real numbers, got dtype {obj.dtype}")
    return obj


def resolve_device(device: str | None) -> str:
    """The torch device a stage computes on.

    Parameters
    ----------
    device : str or None
        ``"cpu"``, ``"cuda"`` (``"cuda:N"``), or ``None``/``"auto"``.

    Returns
    -------
    str
        ``device`` itself, or for ``None``/``"auto"``: ``"cuda"`` when torch sees a GPU in this
        process, else ``"cpu"`` (torch is imported only then).
    """
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


@contextlib.contextmanager
def gpu_annotation(device: str) -> Iterator[None]:
    """Tasks built inside ask for the worker resource ``GPU=1`` when ``device`` is CUDA.

    Workers of a dask-cuda cluster advertise ``GPU=1`` (see ``cluster.py``), so GPU tasks run
    one at a time per GPU and never land on CPU-only workers.
    """
    if device.startswith("cuda"):
        with dask.annotate(resources={"GPU": 1}):
            yield
    else:
        yield


def y_slabs(arr: da.Array) -> da.Array:
    """Merge every chunk along axes 0 and 2 so each block is a whole ``(N, cy, X)`` slab.

    Only concatenates neighbouring chunks of one y-range (never moves data between y-ranges),
    so a slab task holds one slab, as the chunk-alignment rule intends.
    """
    return arr.rechunk({0: -1, 2: -1})
