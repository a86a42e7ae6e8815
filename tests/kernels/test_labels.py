"""The tomogram-grid geometry of labels: mask sampling and particle coordinates agree."""
from __future__ import annotations

import numpy as np
import pytest

from faket_dask.kernels.labels import centre_voxels, source_slices, to_tomogram_grid


@pytest.mark.parametrize(("Z", "X", "b", "nz_full", "z0", "nz_keep"),
                         [(24, 48, 2, 24, 0, 24), (31, 64, 4, 20, 3, 12), (16, 32, 1, 40, 10, 20)])
def test_particle_lands_in_the_voxel_that_samples_it(Z, X, b, nz_full, z0, nz_keep):
    src, valid = source_slices(Z, nz_full, z0, nz_keep, b)
    xs = np.arange(X)[centre_voxels(X, b)]
    assert xs.size == X // b
    for zt in range(nz_keep):
        if not valid[zt]:
            continue
        for j, xv in enumerate(xs):
            x, y, z = to_tomogram_grid(np.array([xv]), np.array([xv]), np.array([src[zt]]),
                                       specimen_z=Z, nz_full=nz_full, z0=z0, binning=b)
            # the sampled voxel maps inside tomogram voxel (zt, j, j)
            assert abs(x[0] - j) <= 0.5 and abs(y[0] - j) <= 0.5 and abs(z[0] - zt) <= 0.5


def test_slices_outside_the_specimen_are_invalid():
    src, valid = source_slices(10, 40, 0, 40, 1)  # a 40-slice tomogram of a 10-slice specimen
    assert valid.sum() == 10 and np.array_equal(src[valid], np.arange(10))
    assert not valid[:15].any() and not valid[25:].any()
