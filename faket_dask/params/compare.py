"""Defaults of ``faket-dask compare`` (``docs/compare.md``): torch-free, numpy-free.

The one owner of the comparison's settings: the kernels (:mod:`faket_dask.kernels.compare`),
the stage (:mod:`faket_dask.stages.compare`) and the CLI's help texts read these names.
"""
from __future__ import annotations

from typing import Final

__all__ = [
    "COMPARE_HIST_BIN",
    "COMPARE_HIST_RANGE",
    "COMPARE_MEASURES",
    "COMPARE_SPECTRUM_BAND",
    "COMPARE_TILE_PX",
]

#: Side (pixels) of the square tiles whose periodograms are averaged into a tilt's radial
#: power spectrum (Welch's method without overlap, plus one tile flush with each far edge).
#: Rings are ``1 / tile`` cycles per pixel wide. Smaller detectors use ``min(Y, X)``.
COMPARE_TILE_PX: Final = 256
#: Frequency band of the spectrum distance, fractions of the Nyquist frequency: the lowest
#: rings (specimen-scale content, tile edges) are left out.
COMPARE_SPECTRUM_BAND: Final = (0.1, 1.0)
#: Range of the standardised-intensity histogram, in units of the tilt's std; values outside
#: are counted in the end bins (and reported as ``clipped_fraction``).
COMPARE_HIST_RANGE: Final = (-10.0, 10.0)
#: Bin width of that histogram (units of the tilt's std): the bound on the error of the
#: 1-Wasserstein distance computed from it (``docs/compare.md``).
COMPARE_HIST_BIN: Final = 0.01
#: The measures, in the order of the JSON, the table and the figures.
COMPARE_MEASURES: Final = ("spectrum", "mean", "std", "noise_sigma", "histogram", "correlation")
