"""Defaults of ``faket-dask pick``: torch-free, numpy-free.

The one owner of the picking settings: the kernels (:mod:`faket_dask.kernels.picking`), the
stage (:mod:`faket_dask.stages.picking`) and the CLI's help texts read these names.
"""
from __future__ import annotations

from typing import Final

__all__ = ["PEAK_CLASS_RADIUS", "PICK_BLOCK", "PICK_CLUSTERING", "PICK_CONTEXT_VOXELS", "PICK_MIN_SIZE",
           "PICK_PEAK_RADIUS_A", "PICK_PEAK_THRESHOLD", "PICK_PIXEL_SIZE_RTOL", "PICK_SMOOTH_SIGMA"]

#: Block edge (voxels): a task segments a window of ``(PICK_BLOCK + 2 · halo)³`` voxels.
PICK_BLOCK: Final = 64
#: Halo (voxels, a multiple of 4) that makes blockwise segmentation exact: the picker's output
#: at ``i`` depends on the inputs ``i - 31 … i + 34`` (``tests/test_pick.py`` measures it).
PICK_CONTEXT_VOXELS: Final = 36
#: Smallest pick (voxels of its component): a 2³ cube. Drops one-voxel specks and keeps the
#: smallest protein of the demo (47 Å radius ≈ 50 voxels at 20 Å); tune with ``--min-size``.
PICK_MIN_SIZE: Final = 8
#: Picker and tomogram voxel sizes differing by more than this (relative) get a warning.
PICK_PIXEL_SIZE_RTOL: Final = 0.05
#: How voxels become picks: ``peaks`` (local maxima of the particle probability,
#: :mod:`faket_dask.kernels.picking_peaks`) or ``components`` (connected components of the
#: labelled voxels, :mod:`faket_dask.kernels.picking`); measured in ``docs/picking.md``.
PICK_CLUSTERING: Final = "peaks"
#: Peaks: the closest two picks may be (Å; ball radius of the maximum filter, rounded half up to
#: voxels: 3 at 20 Å, 5 at 10 Å). Measured best on the benchmark's noiseless tomograms: 40-60 Å
#: at 20 Å voxels, 50 Å at 10 Å (``docs/picking.md``); about the smallest SHREC protein's radius.
PICK_PEAK_RADIUS_A: Final = 50.0
#: Peaks: Gaussian smoothing (voxels) of the particle probability before the maxima are found.
PICK_SMOOTH_SIGMA: Final = 1.0
#: Peaks: smallest (smoothed) particle probability of a pick.
PICK_PEAK_THRESHOLD: Final = 0.3
#: Peaks: radius (voxels) of the ball whose summed class probabilities give a peak its class.
PEAK_CLASS_RADIUS: Final = 2
