"""Issue 4 acceptance: the unpaired noise estimate agrees with the paired one (within 10%) on
the reference microscope's output, where the noiseless partner is known."""
from __future__ import annotations

import numpy as np

import faket_dask as fd
from faket_dask.stages.microscope import simulate_microscope
from faket_dask.stages.specimen import generate_specimen


def test_unpaired_sigma_within_10_percent_of_paired_on_microscope(client):
    spec, _ = generate_specimen((48, 96, 96), 10.0, seed=3, n_particles=40, n_vesicles=1, n_fiducials=2)
    angles = fd.angles_from_range(-60, 60, 6)
    noiseless = fd.project(spec["density"], angles).persist()
    measured = simulate_microscope(noiseless, seed=5).persist()
    paired = fd.estimate_noise([measured], [noiseless], order=2)
    unpaired = fd.estimate_noise([measured], order=2)
    ps, us = paired.raw["sigma"].values[0], unpaired.raw["sigma"].values[0]
    rel = np.abs(us / ps - 1)
    print(f"unpaired/paired sigma: max rel dev {rel.max():.4f}, mean paired sigma {ps.mean():.4f}")
    assert rel.max() < 0.10, rel.round(3)
    assert np.abs(unpaired.curve("sigma") / paired.curve("sigma") - 1).max() < 0.10
