"""Unfiltered back-projection of filtered tilt rows, and the in-memory reconstruction recipe.

Implements step 3 (and 4) of ``docs/method.md §5``. For every detector row y and its filtered rows
``p_k`` (one per tilt, row mean removed)::

    v(z, x) = (π / T) · Σ_k interp(p_k, x·cos φ_k + z·sin φ_k)

with pixel-centre coordinates, linear interpolation, zero outside the row, and z reversed at
the end. This is what the original gets from ``radontea.backproject_3d(..., filtering=None,
weight_angles=False, padding=False)`` followed by a flip of axis 0.

How it is computed
------------------
The interpolation taps (two detector indices and two weights per tilt) depend only on the
output position (z, x) and the angles, never on the row y. So all rows of a slab share one tap
table, and the y-rows are stored innermost: the filtered slab is laid out as a matrix
``P[(k, i), y]`` and each output voxel column ``v[z, x, :]`` is a weighted sum of ``2T`` rows
of ``P``, each a contiguous vector over y. That is exactly
:func:`torch.nn.functional.embedding_bag` (``mode='sum'`` with per-sample weights), a
vectorised, multi-threaded gather-accumulate on CPU and CUDA.

Determinism: each output value is accumulated in one fixed order (lower taps of tilts
0 … T-1, then upper taps of tilts 0 … T-1) that depends neither on the number of rows in the
slab nor on the z-batch size, and different rows never mix. A y-row therefore comes out
bit-identical for any slab split ``cy`` (checked by the tests on CPU), which lets the Dask stage
choose ``cy`` from a memory budget without changing results. The slab matrix must have unit
stride along y (see :func:`backproject_slab`): embedding_bag's FMA kernel is only taken then.

Every function here is a pure array function: no dask, no I/O.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from faket_dask.params import RECONSTRUCTION_BINNING, RECONSTRUCTION_FILTER, FilterName

from .filters import apply_fourier_filter, bin_tilts, make_filter
from .reconstruction_shapes import z_valid_slice  # re-exported: torch-free owner

__all__ = [
    "backproject_slab",
    "crop_z",
    "z_valid_slice",
    "reconstruct_reference",
]

#: Tap-table elements (output voxels × tilts) built per z-batch. Bounds the kernel's temporary
#: memory to roughly 60 bytes × this (float64 coordinates, int64 indices, float32 weights),
#: i.e. ~60 MB, whatever the detector size, plus the output batch (z-batch × X × cy floats).
_TAPS_PER_BATCH = 1_000_000


def _as_tensor(a: np.ndarray | torch.Tensor, device: torch.device | None) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(device) if device is not None else t


def _tap_table(
    cos_phi: torch.Tensor, sin_phi: torch.Tensor, z: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolation taps for output rows at depths ``z`` (float64, pixels) and all tilts.

    Returns ``idx`` (int64) and ``w`` (float32), both shaped ``(len(z) * n, 2 * T)``. Row
    ``j * n + i`` is the bag of output voxel (z[j], x_i): entries ``k`` and ``T + k`` are the
    lower and upper taps into tilt k's detector row, as row indices ``k * n + i0`` and
    ``k * n + i0 + 1`` of the slab matrix, with weights ``1 - frac`` and ``frac``.
    """
    t = cos_phi.shape[0]
    nzb = z.shape[0]
    half = n / 2.0 - 0.5  # pixel-centre coordinates run from -half to +half
    x = torch.arange(n, dtype=torch.float64, device=z.device) - half
    # u[z, x, k]: continuous detector index where the ray through voxel (z, x) meets tilt k's
    # row, in float64 so the inside/outside decision and the weights match radontea's.
    u = torch.outer(z, sin_phi).add_(half)[:, None, :] + torch.outer(x, cos_phi)[None, :, :]
    # radontea's interp1d: linear inside [x_0, x_{n-1}] (both ends included), 0 outside.
    valid = ((u >= 0) & (u <= n - 1)).to(torch.float32)
    i0 = torch.floor(u).clamp_(0, n - 2)
    frac = u.sub_(i0).to(torch.float32)
    base = torch.arange(t, dtype=torch.int64, device=z.device) * n
    idx = torch.empty((nzb, n, 2, t), dtype=torch.int64, device=z.device)
    torch.add(i0.to(torch.int64), base, out=idx[:, :, 0, :])
    torch.add(idx[:, :, 0, :], 1, out=idx[:, :, 1, :])
    # Outside taps keep an in-range index with weight 0: they add exact zeros (inputs are
    # finite), which is cheaper than compacting the bags and keeps every bag the same length.
    w = torch.empty((nzb, n, 2, t), dtype=torch.float32, device=z.device)
    torch.mul(frac, valid, out=w[:, :, 1, :])
    torch.sub(valid, w[:, :, 1, :], out=w[:, :, 0, :])
    return idx.view(nzb * n, 2 * t), w.view(nzb * n, 2 * t)


def backproject_slab(
    filtered: np.ndarray | torch.Tensor,
    angles_deg: Sequence[float] | np.ndarray,
    *,
    nz: int | None = None,
    device: torch.device | str | None = None,
    taps_per_batch: int | None = None,
) -> np.ndarray | torch.Tensor:
    """Back-project a slab of filtered tilt rows into a (z, y, x) volume slab.

    Parameters
    ----------
    filtered : ndarray or Tensor, shape (T, cy, X)
        Fourier-filtered (and binned) tilt-series rows ``cy`` of one slab; float32 preferred
        (other real dtypes are accepted). The tilt axis is y, so rows are independent.
    angles_deg : sequence of float, length T
        Tilt angles in degrees, in the order of ``filtered``'s first axis.
    nz : int, optional
        Number of output z slices (default ``X``, as the original). The z sample positions are
        pixel centres ``-nz/2 + 0.5 … nz/2 - 0.5`` about the rotation centre, the same centre
        as x. So for ``X - nz`` even the result equals slices ``(X - nz)//2 …`` of the default
        volume: a centred crop for ``nz < X``, a centred extension for ``nz > X`` (the extra
        slices still get every tilted ray that meets the detector row). For ``X - nz`` odd the
        z samples sit half a pixel off the default volume's.
    device : torch.device or str, optional
        Where to compute (``"cpu"``, ``"cuda"``, …). Default: the device of ``filtered`` if it
        is a tensor, else CPU.
    taps_per_batch : int, optional
        Tap-table elements (output voxels × tilts) built per z-batch, the bound on temporary
        memory (default :data:`_TAPS_PER_BATCH`, ~60 MB). The result is bit-identical for any
        value.

    Returns
    -------
    ndarray or Tensor, float32, shape (nz, cy, X)
        ``v[z, y, x] = (π/T) · Σ_k interp(p_k,y, x·cos φ_k + z'·sin φ_k)`` with ``p_k,y`` the
        row minus its mean and ``z'`` the z coordinate of slice ``nz - 1 - z`` (z reversed).
        Same container type as ``filtered``; a tensor result stays on ``device``.

    Notes
    -----
    The row means are removed in float64 and the accumulation runs in float32 (sum over
    tilts in fixed order), which agrees with the original's float64 result to ~1e-7 relative.
    Output for a y-row is bit-identical for any ``cy`` split (see module docstring).
    Inputs must be finite: taps outside a row multiply some in-row pixel by 0, so an inf
    would turn into NaN there (the pipeline validates inputs before any work).
    Temporary memory is bounded by z-batching (``taps_per_batch``), not by batching over
    angles: splitting the angle sum would change its rounding with the batch size.
    """
    as_numpy = not isinstance(filtered, torch.Tensor)
    dev = torch.device(device) if device is not None else None
    p = _as_tensor(filtered, dev)
    if p.ndim != 3:
        raise ValueError(f"filtered slab must be 3D (tilt, y, x), got shape {tuple(p.shape)}")
    t, cy, n = p.shape
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    if angles.shape[0] != t:
        raise ValueError(f"{angles.shape[0]} angles given for {t} tilts")
    if t == 0:
        raise ValueError("need at least one tilt")
    if n < 2:
        raise ValueError(f"rows must have at least 2 pixels for interpolation, got X = {n}")
    nz = n if nz is None else int(nz)
    if nz < 1:
        raise ValueError(f"nz must be positive, got {nz}")
    taps = _TAPS_PER_BATCH if taps_per_batch is None else int(taps_per_batch)
    if taps < 1:
        raise ValueError(f"taps_per_batch must be positive, got {taps_per_batch}")
    dev = p.device
    if cy == 0:
        out = torch.empty((nz, 0, n), dtype=torch.float32, device=dev)
        return out.cpu().numpy() if as_numpy else out

    # Row means removed in float64: that is what radontea's FFT with a zeroed DC term does.
    p64 = p.to(torch.float64)
    p64 = p64 - p64.mean(dim=-1, keepdim=True)
    # Matrix P[(k, i), y]: y innermost, so every gather is a contiguous vector over the slab's
    # rows (one SIMD-friendly axpy per tap) and all rows share the tap table.
    # A fresh allocation, not ``.contiguous()``: for cy = 1 the permuted view already counts
    # as contiguous but keeps a non-unit stride, which sends embedding_bag to a different
    # (non-FMA) kernel and breaks bit-identity across slab splits.
    mat = torch.empty((t, n, cy), dtype=torch.float32, device=dev)
    mat.copy_(p64.permute(0, 2, 1))
    mat = mat.view(t * n, cy)
    del p64

    phi = torch.as_tensor(np.deg2rad(angles), dtype=torch.float64, device=dev)
    cos_phi, sin_phi = torch.cos(phi), torch.sin(phi)
    # Output slice r holds depth z = nz/2 - 0.5 - r: the final z reversal folded into the grid.
    z_all = (nz / 2.0 - 0.5) - torch.arange(nz, dtype=torch.float64, device=dev)
    out = torch.empty((nz, cy, n), dtype=torch.float32, device=dev)
    zb = max(1, taps // (n * t))
    scale = math.pi / t
    for z0 in range(0, nz, zb):
        z1 = min(nz, z0 + zb)
        idx, w = _tap_table(cos_phi, sin_phi, z_all[z0:z1], n)
        acc = F.embedding_bag(idx, mat, mode="sum", per_sample_weights=w)  # ((z1-z0)·n, cy)
        acc *= scale
        out[z0:z1] = acc.reshape(z1 - z0, n, cy).permute(0, 2, 1)
    return out.cpu().numpy() if as_numpy else out


def crop_z(
    volume: np.ndarray | torch.Tensor, z_valid: tuple[float, float]
) -> np.ndarray | torch.Tensor:
    """Keep a relative z-range of a reconstructed volume (``docs/method.md §5``).

    Parameters
    ----------
    volume : ndarray or Tensor, shape (Z, ...)
        Reconstruction, z first (after the z reversal of :func:`backproject_slab`).
    z_valid : (float, float)
        Relative start and stop, e.g. :data:`faket_dask.params.SHREC_Z_VALID`; rounding rule in
        :func:`z_valid_slice`.

    Returns
    -------
    ndarray or Tensor, shape (Z', ...)
        A view ``volume[z_valid_slice(Z, z_valid)]``.
    """
    return volume[z_valid_slice(volume.shape[0], z_valid)]


def reconstruct_reference(
    projections: np.ndarray,
    angles_deg: Sequence[float] | np.ndarray,
    binning: int = RECONSTRUCTION_BINNING,
    filter: FilterName | str = RECONSTRUCTION_FILTER,
    *,
    nz: int | None = None,
    z_valid: tuple[float, float] | None = None,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """The whole reconstruction recipe of ``docs/method.md §5`` in memory (for tests and small data).

    Parameters
    ----------
    projections : ndarray, shape (T, Y, X)
        Tilt-series (float32), tilt axis y.
    angles_deg : sequence of float, length T
        Tilt angles in degrees.
    binning : int
        Binning factor for :func:`~faket_dask.kernels.filters.bin_tilts` (1 = none).
    filter : {"approx_shrec", "ramp", "none"}
        Fourier filter applied to every binned tilt.
    nz : int, optional
        Output z size (default: binned X); see :func:`backproject_slab`.
    z_valid : (float, float), optional
        Relative z-range to keep (:func:`crop_z`); default keeps everything.
    device : torch.device or str, optional
        Device for filtering and back-projection (default CPU).

    Returns
    -------
    ndarray, float32, shape (Z, Y', X')
        Reconstructed volume, z already reversed as in the original.
    """
    ts = bin_tilts(projections, binning)
    filt = make_filter(filter, ts.shape[1], ts.shape[2])
    dev = torch.device(device) if device is not None else torch.device("cpu")
    filtered = apply_fourier_filter(torch.from_numpy(ts).to(dev), filt)
    vol = backproject_slab(filtered, angles_deg, nz=nz, device=dev).cpu().numpy()
    if z_valid is not None:
        vol = np.ascontiguousarray(crop_z(vol, z_valid))
    return vol
