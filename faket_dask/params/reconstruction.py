"""Tomogram reconstruction settings (``docs/method.md §5``): the one owner of their names and defaults.

Torch-free; :mod:`faket_dask.kernels.filters`, the reconstruction stage, the ``reconstruct``
command and :mod:`faket_dask.config` import from here.
"""
from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = [
    "CROWTHER",
    "FILTER_NAMES",
    "FilterName",
    "RECONSTRUCTED_MODALITIES",
    "RECONSTRUCTION_BINNING",
    "RECONSTRUCTION_FILTER",
    "SHREC_Z_VALID",
]

#: The 2D Fourier filters applied to each binned tilt before back-projection
#: (``docs/method.md §5``): the reverse-engineered SHREC filter, a plain ramp, or none.
FilterName = Literal["approx_shrec", "ramp", "none"]
#: The names of :data:`FilterName`, in that order.
FILTER_NAMES: Final[tuple[str, ...]] = get_args(FilterName)
#: The paper's filter (``docs/method.md §5``: SHREC's "approxShrec").
RECONSTRUCTION_FILTER: Final[FilterName] = "approx_shrec"
#: The paper's binning factor in y and x (cubic spline, ``docs/method.md §5``).
RECONSTRUCTION_BINNING: Final = 2
#: Crowther frequency of approxShrec, a fraction of Nyquist (SHREC's 0.61,
#: ``docs/method.md §5``): where its ramp reaches 1.
CROWTHER: Final = 0.61
#: Relative z-range of valid voxels in the SHREC reconstructions (``docs/method.md §5``): for a
#: 512-slice volume these are slices 165 … 344 (``0.32226 ≈ 165/512``, ``0.67382 ≈ 345/512``).
SHREC_Z_VALID: Final[tuple[float, float]] = (0.32226, 0.67382)
#: Tilt-series a run reconstructs by default (those it has; CONTENT is an intermediate of the
#: style transfer, never looked at as a tomogram).
RECONSTRUCTED_MODALITIES: Final = ("noiseless", "measured", "noisy", "baseline", "faket")
