"""Pre-processing of tilt-series before back-projection: binning and 2D Fourier filters.

Implements steps 1 and 2 of the reconstruction recipe in ``docs/method.md §5``. The filter
names and defaults are :mod:`faket_dask.params.reconstruction`'s.

Chunking note for the Dask stage: both operations in this module are per-**tilt**, not
per-row. :func:`bin_tilts` runs a cubic-spline prefilter over the whole tilt (an IIR filter
along every axis) and maps output pixels with ``(in - 1) / (out - 1)`` scale factors, and
:func:`apply_fourier_filter` applies a 2D FFT. Neither can be computed from a ``(1, cy, X)``
chunk alone, so the stage must map them over whole tilts ``(1, Y, X)`` (one tilt = ``Y / cy``
chunks, the "per-tilt task" of the design) and only then rechunk to ``(1, cy', X')`` rows for
the per-slab back-projection.

Every function here is a pure array function: no dask, no I/O.
"""
from __future__ import annotations

import functools

import numpy as np
import scipy.fft as sfft
import scipy.ndimage as ndi
import torch

from faket_dask.params import CROWTHER, FILTER_NAMES, FilterName

from .reconstruction_shapes import binned_shape  # re-exported: torch-free owner

__all__ = [
    "binned_shape",
    "bin_tilts",
    "approx_shrec_filter",
    "ramp_filter",
    "make_filter",
    "apply_fourier_filter",
]

@functools.lru_cache(maxsize=8)
def _zoom_matrix(n: int, factor: int) -> torch.Tensor:
    """Matrix ``A`` (n', n) with ``A @ v == scipy.ndimage.zoom(v, 1/factor, order=3)``.

    Column j is the 1D zoom of the unit vector e_j. The cubic-spline prefilter and the
    interpolation are both linear and act on each axis separately, so a 2D zoom is
    ``A_y @ tilt @ A_x.T``. One 1D zoom per column keeps the build at O(n) memory (a 2D zoom
    of the identity would need several n x n float64 arrays: 400 MB for n = 4096).
    """
    m = binned_shape(n, n, factor)[0]
    a = np.empty((m, n), dtype=np.float64)
    e = np.zeros(n, dtype=np.float64)
    for j in range(n):
        e[j] = 1.0
        ndi.zoom(e, 1.0 / factor, output=a[:, j], order=3)
        e[j] = 0.0
    # Cached, so callers must not modify it (they only read it in matrix products).
    return torch.from_numpy(a)


def bin_tilts(ts: np.ndarray | torch.Tensor, factor: int) -> np.ndarray | torch.Tensor:
    """Down-sample every tilt by ``factor`` with a cubic spline, as the original FakET.

    Computes, per tilt, ``scipy.ndimage.zoom(tilt, 1 / factor, order=3)`` with zoom's
    defaults (``mode='constant'``, ``prefilter=True``, ``grid_mode=False``): interpolation at
    the output positions, not block averaging; it is what the golden reconstructions use.

    Parameters
    ----------
    ts : ndarray or Tensor, shape (t, Y, X)
        Tilt-series, float32 (other real dtypes are first converted to float32, so the spline
        sees the same values as the original's float32 stacks). A tensor is processed on its
        own device.
    factor : int
        Binning factor (>= 1). ``1`` returns a float32 copy.

    Returns
    -------
    ndarray or Tensor, float32, shape (t, Y', X')
        ``(Y', X') = binned_shape(Y, X, factor)``: round-half-to-even of ``Y / factor`` and
        ``X / factor`` (see :func:`binned_shape`). Same container type (and device) as ``ts``.

    Notes
    -----
    The zoom is linear and separable, so it is evaluated as ``A_y @ tilt @ A_x.T`` in float64
    with the two zoom matrices built once by scipy itself (:func:`_zoom_matrix`, cached per
    size). The float32 result equals scipy's per-tilt zoom (bit for bit in the tests; in
    general to float64 rounding before the final cast), runs about 2x faster on CPU as a
    batched matrix product, and runs on GPU.
    Needs whole tilts (the spline prefilter is global): see the module docstring.
    """
    as_numpy = not isinstance(ts, torch.Tensor)
    x = torch.from_numpy(np.asarray(ts, dtype=np.float32)) if as_numpy else ts
    if x.ndim != 3:
        raise ValueError(f"tilt-series must be 3D (tilt, y, x), got shape {tuple(x.shape)}")
    if factor < 1:
        raise ValueError(f"binning factor must be >= 1, got {factor}")
    if factor == 1:
        out = x.to(torch.float32, copy=True)
    else:
        ay = _zoom_matrix(int(x.shape[1]), factor).to(x.device)
        ax = _zoom_matrix(int(x.shape[2]), factor).to(x.device)
        ny, nx = binned_shape(int(x.shape[1]), int(x.shape[2]), factor)
        out = torch.empty((x.shape[0], ny, nx), dtype=torch.float32, device=x.device)
        # Batches of tilts bound the float64 temporaries (~32 MB) yet keep each product one
        # large GEMM. Round to float32 first: the original zooms float32 stacks.
        step = max(1, (2 * 2**20) // max(1, x.shape[1] * x.shape[2]))
        for i in range(0, x.shape[0], step):
            chunk = x[i : i + step].to(torch.float32).to(torch.float64)
            out[i : i + step] = torch.matmul(ay, torch.matmul(chunk, ax.T))
    return out.cpu().numpy() if as_numpy else out


def approx_shrec_filter(ny: int, nx: int, crowther: float = CROWTHER) -> np.ndarray:
    """The reverse-engineered SHREC reconstruction filter "approxShrec" (``docs/method.md §5``).

    Built on a square ``size x size`` grid, ``size = max(ny, nx)``, ``nyquist = size // 2``:

    - Gaussian ``exp(-(x²/(2σx²) + y²/(2σy²))) + 0.33`` on the centred grid
      ``-size//2 + 1 … size//2`` (both axes), ``σx = int(0.34·size)``,
      ``σy = int(0.20·size)``;
    - ramp along x ``min(|k - nyquist| / c, 1)``, ``k = 0 … size-1``,
      ``c = int(crowther·nyquist)`` (the Crowther frequency, 0.61 in SHREC), identical for
      every row;
    - circular mask ``distance < nyquist + 1``, distance measured from index
      ``(nyquist, nyquist)``, i.e. on the grid ``-size//2 … size - 1 - size//2``. This grid is
      one sample off the Gaussian's; that is what the original does (the golden arrays match
      only with this offset), so it is kept;
    - product divided by its maximum, ``ifftshift``-ed so the zero frequency sits at
      ``[0, 0]``, then cropped centred (offset ``(size - n) // 2``) to ``ny x nx``.

    Parameters
    ----------
    ny, nx : int
        Tilt rows and columns (pixels) the filter is applied to.
    crowther : float
        Where the ramp reaches 1, as a fraction of Nyquist (default
        :data:`faket_dask.params.CROWTHER`, SHREC's 0.61).

    Returns
    -------
    ndarray, float64, shape (ny, nx)
        Multiplicative weights for ``numpy.fft.fft2`` layout (zero frequency at ``[0, 0]``),
        dimensionless, maximum 1.
    """
    if ny < 1 or nx < 1:
        raise ValueError(f"filter size must be positive, got {ny} x {nx}")
    if not 0 < crowther <= 1:
        raise ValueError(f"crowther must be a fraction of Nyquist in (0, 1], got {crowther}")
    size = max(ny, nx)
    nyquist = size // 2
    centred = np.arange(-size // 2 + 1, size // 2 + 1, dtype=np.float64)
    yy, xx = np.meshgrid(centred, centred, indexing="ij")
    sigma_x = int(0.34 * size)
    sigma_y = int(0.20 * size)
    gauss = np.exp(-(xx**2 / (2.0 * sigma_x**2) + yy**2 / (2.0 * sigma_y**2))) + 0.33
    c = max(int(crowther * nyquist), 1)
    ramp = np.minimum(np.abs(np.arange(size, dtype=np.float64) - nyquist) / c, 1.0)
    # The mask's centre is index (nyquist, nyquist), one sample away from the Gaussian's.
    mask_grid = np.arange(size, dtype=np.float64) - nyquist
    my, mx = np.meshgrid(mask_grid, mask_grid, indexing="ij")
    mask = (np.sqrt(mx**2 + my**2) < nyquist + 1).astype(np.float64)
    filt = gauss * ramp[None, :] * mask
    filt /= filt.max()
    filt = np.fft.ifftshift(filt)
    y0 = (size - ny) // 2
    x0 = (size - nx) // 2
    return np.ascontiguousarray(filt[y0 : y0 + ny, x0 : x0 + nx])


def ramp_filter(ny: int, nx: int) -> np.ndarray:
    """Plain ramp ``|kx|`` along x, the same for every row, normalised to 1 at Nyquist.

    Parameters
    ----------
    ny, nx : int
        Tilt rows and columns (pixels).

    Returns
    -------
    ndarray, float64, shape (ny, nx)
        ``|fftfreq(nx)| / 0.5`` broadcast over rows, zero frequency at ``[0, 0]`` (the layout
        of :func:`approx_shrec_filter`). Constant along ky, so the 2D filter is exactly a 1D
        ramp on every detector row.

    Notes
    -----
    With :func:`~faket_dask.kernels.backprojection.backproject_slab`'s ``π/T`` scale the
    quantitatively correct filtered back-projection uses ``|k|`` in cycles per pixel (max
    0.5); this normalised ramp therefore gives twice the true attenuation values. The scale is
    kept at max 1 so that it is interchangeable with ``approx_shrec`` (also max 1).
    """
    if ny < 1 or nx < 1:
        raise ValueError(f"filter size must be positive, got {ny} x {nx}")
    kx = np.abs(np.fft.fftfreq(nx)) / 0.5
    return np.ascontiguousarray(np.broadcast_to(kx[None, :], (ny, nx)))


def make_filter(
    name: FilterName | str, ny: int, nx: int, *, crowther: float | None = None
) -> np.ndarray | None:
    """Filter array by name.

    Parameters
    ----------
    name : {"approx_shrec", "ramp", "none"}
        Which filter (:data:`faket_dask.params.FILTER_NAMES`).
    ny, nx : int
        Tilt rows and columns (pixels).
    crowther : float, optional
        Crowther fraction for ``"approx_shrec"`` (default :data:`faket_dask.params.CROWTHER`).

    Returns
    -------
    ndarray, float64, shape (ny, nx), or None
        ``None`` for ``"none"`` (no Fourier filtering at all).
    """
    if name == "approx_shrec":
        return approx_shrec_filter(ny, nx) if crowther is None else approx_shrec_filter(ny, nx, crowther)
    if name == "ramp":
        return ramp_filter(ny, nx)
    if name == "none":
        return None
    raise ValueError(f"unknown filter {name!r}; expected one of {FILTER_NAMES}")


def _hermitian_half(filt: torch.Tensor) -> torch.Tensor:
    """Half-spectrum (Y, X//2 + 1) of ``(H(k) + H(-k)) / 2`` for use with ``irfft2``.

    For a real tilt, ``real(ifft2(F · H)) == ifft2(F · H_sym)`` with ``H_sym`` the symmetric
    part of ``H``; ``H_sym`` is real and even, so the product keeps Hermitian symmetry and the
    half-size real FFTs compute the same thing with half the work.
    """
    mirrored = torch.roll(torch.flip(filt, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))
    return ((filt + mirrored) * 0.5)[:, : filt.shape[1] // 2 + 1].contiguous()


_HALVES: dict[tuple, torch.Tensor] = {}


def _cached_half(f: torch.Tensor) -> torch.Tensor:
    """:func:`_hermitian_half` of a CPU filter, remembered by its bytes (a Dask stage filters
    one tilt per task with the same filter: recomputing the flip/roll cost 11 ms of a 16 ms
    512² tilt)."""
    if f.device.type != "cpu":
        return _hermitian_half(f)
    import hashlib

    key = (tuple(f.shape), hashlib.blake2b(f.numpy().tobytes(), digest_size=16).digest())
    half = _HALVES.get(key)
    if half is None:
        half = _hermitian_half(f)
        if len(_HALVES) >= 8:
            _HALVES.clear()
        _HALVES[key] = half
    return half


def apply_fourier_filter(
    ts: np.ndarray | torch.Tensor, filt: np.ndarray | torch.Tensor | None
) -> np.ndarray | torch.Tensor:
    """Filter every tilt in 2D Fourier space: ``real(ifft2(fft2(tilt) · filt))``.

    Parameters
    ----------
    ts : ndarray or Tensor, shape (t, Y, X)
        Tilt-series. A tensor is processed on its own device (CPU or CUDA).
    filt : ndarray or Tensor, shape (Y, X), or None
        Real weights in FFT layout (zero frequency at ``[0, 0]``), e.g. from
        :func:`approx_shrec_filter`. ``None`` means no filtering (returns a float32 copy).

    Returns
    -------
    ndarray or Tensor, float32, shape (t, Y, X)
        Same container type (and device) as ``ts``.

    Notes
    -----
    Computed as ``irfft2(rfft2(tilt) · H_sym)`` with ``H_sym`` the symmetric part of ``filt``
    (:func:`_hermitian_half`): identical in exact arithmetic, half the FFT work. The
    transforms run in float64/complex128 as the original (numpy FFTs of float32 stacks promote
    to double), which keeps the result within float32 rounding of the golden data.
    Needs whole tilts: see the module docstring.
    """
    as_numpy = not isinstance(ts, torch.Tensor)
    x = torch.from_numpy(np.asarray(ts)) if as_numpy else ts
    if x.ndim != 3:
        raise ValueError(f"tilt-series must be 3D (tilt, y, x), got shape {tuple(x.shape)}")
    if filt is None:
        out = x.to(torch.float32, copy=True)
    else:
        f = torch.as_tensor(filt, dtype=torch.float64, device=x.device)
        if tuple(f.shape) != tuple(x.shape[1:]):
            raise ValueError(
                f"filter shape {tuple(f.shape)} does not match tilt shape {tuple(x.shape[1:])}"
            )
        half = _cached_half(f)
        shape = tuple(x.shape[1:])
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
        # Batches of tilts bound the complex128 temporaries (~16 bytes per pixel) to ~32 MB.
        step = max(1, (2 * 2**20) // max(1, x.shape[1] * x.shape[2]))
        on_cpu = x.device.type == "cpu"
        half_np = half.numpy() if on_cpu else None
        for i in range(0, x.shape[0], step):
            if on_cpu:
                # scipy's pocketfft: same numbers as torch's CPU FFT, but its inverse real
                # transform is ~2x faster. Threads follow torch's setting (one budget per
                # worker, see DESIGN "Execution").
                workers = torch.get_num_threads()
                spec = sfft.rfft2(x[i : i + step].numpy().astype(np.float64), workers=workers)
                spec *= half_np
                res = sfft.irfft2(spec, s=shape, workers=workers)
                out[i : i + step] = torch.from_numpy(res)
            else:
                spec = torch.fft.rfft2(x[i : i + step].to(torch.float64))
                spec *= half
                out[i : i + step] = torch.fft.irfft2(spec, s=shape)
    return out.cpu().numpy() if as_numpy else out
