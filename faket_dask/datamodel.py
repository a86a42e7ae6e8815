"""Labelled arrays of the data model (``docs/architecture.md``, "Data model").

A tilt-series is an ``xarray.DataArray`` with dims ``("tilt", "y", "x")``, float32, coords
``tilt`` (degrees), ``y`` and ``x`` (Å, pixel centres measured from the detector corner) and the
attr ``pixel_size_A``. A volume has dims ``("z", "y", "x")`` and the same conventions.
"""
from __future__ import annotations

from typing import Literal

import dask.array as da
import numpy as np
import xarray as xr

from .errors import InputError

TILT_DIMS = ("tilt", "y", "x")
VOLUME_DIMS = ("z", "y", "x")
Kind = Literal["tiltseries", "volume"]


def pixel_coords(n: int, pixel_size_A: float) -> np.ndarray:
    """Pixel-centre coordinates in Å of ``n`` pixels: ``(i + 0.5) * pixel_size_A``."""
    return (np.arange(n, dtype=np.float64) + 0.5) * float(pixel_size_A)


def _spatial_coords(shape: tuple[int, ...], pixel_size_A: float) -> dict[str, xr.Variable]:
    units = {"units": "angstrom"}
    return {
        "y": xr.Variable("y", pixel_coords(shape[-2], pixel_size_A), units),
        "x": xr.Variable("x", pixel_coords(shape[-1], pixel_size_A), units),
    }


def tiltseries(
    data: np.ndarray | da.Array,
    angles_deg: np.ndarray | list[float],
    pixel_size_A: float,
    *,
    name: str | None = None,
    attrs: dict | None = None,
) -> xr.DataArray:
    """Wrap a ``(tilt, y, x)`` array as a labelled tilt-series.

    Parameters
    ----------
    data : array, shape (T, Y, X)
        Projections; converted to float32 lazily if it is a dask array.
    angles_deg : sequence of float, length T
        Tilt angle of each projection (degrees).
    pixel_size_A : float
        Detector pixel size (Å).
    name, attrs : optional
        Variable name and extra attributes.

    Returns
    -------
    xarray.DataArray
        dims ``("tilt", "y", "x")``, float32.
    """
    angles = np.asarray(angles_deg, dtype=np.float64)
    if data.ndim != 3:
        raise InputError(f"a tilt-series needs 3 dimensions (tilt, y, x), got shape {data.shape}")
    if angles.shape != (data.shape[0],):
        raise InputError(f"{angles.size} tilt angles for {data.shape[0]} tilts")
    _check_pixel_size(pixel_size_A)
    coords = {"tilt": xr.Variable("tilt", angles, {"units": "degree"})}
    coords.update(_spatial_coords(data.shape, pixel_size_A))
    out = xr.DataArray(data.astype(np.float32, copy=False), dims=TILT_DIMS, coords=coords, name=name)
    out.attrs.update(attrs or {})
    out.attrs["pixel_size_A"] = float(pixel_size_A)
    return out


def volume(
    data: np.ndarray | da.Array,
    pixel_size_A: float,
    *,
    name: str | None = None,
    attrs: dict | None = None,
    dtype: np.dtype | type | None = np.float32,
) -> xr.DataArray:
    """Wrap a ``(z, y, x)`` array as a labelled volume (coords in Å, pixel centres).

    ``dtype=None`` keeps the input dtype (label volumes are integer).
    """
    if data.ndim != 3:
        raise InputError(f"a volume needs 3 dimensions (z, y, x), got shape {data.shape}")
    _check_pixel_size(pixel_size_A)
    coords = {"z": xr.Variable("z", pixel_coords(data.shape[0], pixel_size_A), {"units": "angstrom"})}
    coords.update(_spatial_coords(data.shape, pixel_size_A))
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    out = xr.DataArray(data, dims=VOLUME_DIMS, coords=coords, name=name)
    out.attrs.update(attrs or {})
    out.attrs["pixel_size_A"] = float(pixel_size_A)
    return out


def kind_of(arr: xr.DataArray) -> Kind:
    """``"tiltseries"`` or ``"volume"`` from the dims; :class:`InputError` otherwise."""
    if tuple(arr.dims) == TILT_DIMS:
        return "tiltseries"
    if tuple(arr.dims) == VOLUME_DIMS:
        return "volume"
    raise InputError(f"expected dims {TILT_DIMS} or {VOLUME_DIMS}, got {tuple(arr.dims)}")


def pixel_size_of(arr: xr.DataArray) -> float:
    """The pixel size (Å) of a labelled array, from its attrs or its ``x`` coordinate spacing."""
    if "pixel_size_A" in arr.attrs:
        return float(arr.attrs["pixel_size_A"])
    if "x" in arr.coords and arr.sizes["x"] > 1:
        return float(arr["x"][1] - arr["x"][0])
    raise InputError(f"{arr.name or 'array'}: no pixel size (attr 'pixel_size_A')")


def _check_pixel_size(p: float) -> None:
    if not np.isfinite(p) or p <= 0:
        raise InputError(f"pixel size must be a positive number of Å, got {p}")
