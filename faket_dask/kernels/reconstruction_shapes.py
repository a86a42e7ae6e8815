"""Shapes of the reconstruction's steps, torch-free, for graph builders.

Owned by the reconstruction kernels (:mod:`faket_dask.kernels.filters` and
:mod:`faket_dask.kernels.backprojection` re-export them), kept apart so that the reconstruction
and label stages size their outputs on the client without importing torch: the pipeline's
client imports torch nowhere (issue 15; ``faket_dask/torch_import.py`` says why a late import
beside running stages would be unsafe as well as slow).
"""
from __future__ import annotations

import math

__all__ = ["binned_shape", "z_valid_slice"]


def binned_shape(ny: int, nx: int, factor: int) -> tuple[int, int]:
    """Shape of one tilt after :func:`bin_tilts`.

    ``scipy.ndimage.zoom`` sizes each axis as ``int(round(n * (1 / factor)))``, with Python's
    ``round`` (half to even) applied to the floating-point product. For ``factor = 2`` that is
    ``n // 2`` for even ``n`` and, for odd ``n``, ``(n - 1) / 2`` or ``(n + 1) / 2``, whichever
    is even (65 -> 32, 67 -> 34). Knowing the size without running the zoom lets the Dask stage
    declare output chunks up front.

    Parameters
    ----------
    ny, nx : int
        Tilt rows and columns (pixels).
    factor : int
        Binning factor (>= 1).

    Returns
    -------
    tuple of int
        ``(ny_out, nx_out)`` in pixels.
    """
    if factor < 1:
        raise ValueError(f"binning factor must be >= 1, got {factor}")
    if factor == 1:
        return ny, nx
    z = 1.0 / factor
    # Same expression as scipy.ndimage.zoom's output_shape, so the sizes agree bit for bit.
    return int(round(ny * z)), int(round(nx * z))


def z_valid_slice(nz: int, z_valid: tuple[float, float]) -> slice:
    """Slice of z indices kept by :func:`crop_z`.

    Parameters
    ----------
    nz : int
        Number of z slices of the volume.
    z_valid : (float, float)
        Relative start and stop in [0, 1], start < stop.

    Returns
    -------
    slice
        ``slice(floor(a·nz + 0.5), floor(b·nz + 0.5))``: both ends rounded half up to the
        nearest slice boundary, stop exclusive. The SHREC fractions are 165/512 and 345/512
        truncated to 5 decimals, so rounding (not truncating) recovers slices 165 … 344 of a
        512-slice volume (180 slices).
    """
    a, b = (float(v) for v in z_valid)
    if not (0.0 <= a < b <= 1.0):
        raise ValueError(f"z_valid must satisfy 0 <= start < stop <= 1, got {z_valid}")
    return slice(math.floor(a * nz + 0.5), math.floor(b * nz + 0.5))
