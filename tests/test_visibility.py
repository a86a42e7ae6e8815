"""The specimen is visible in the reference microscope's data (issue 11's acceptance).

The demo's default specimen 0 goes through the real stages (specimen in volts, projection,
reference microscope, reconstruction, labels) on a Dask cluster; then, in the reconstructed
``measured`` tomogram, every gold bead's centre must be ≥ 5 background standard deviations darker
than its surroundings, the tomogram low-passed at 2 voxels must correlate with the noiseless
tomogram at ≥ 0.5, and the per-tilt correlation of ``measured`` with ``noiseless`` must be
highest near 0° and fall with |tilt|.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faket_dask.demo import demo_config
from faket_dask.pipeline.plan import plan_run
from faket_dask.pipeline.run import Pipeline
from faket_dask.report.visibility import specimen_visibility


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory, client):
    out = tmp_path_factory.mktemp("vis")
    plan = plan_run(demo_config(), out, base_dir=Path("."), overwrite=True, device="cpu",
                    fallback_random_weights=True)
    pipe = Pipeline(plan, log=lambda s: None)
    pipe.specimen(0)
    pipe.noiseless(0)
    pipe.measured(0)
    pipe.reconstruct(0)
    return plan.store


@pytest.fixture(scope="module")
def demo_visibility(demo_store):
    return specimen_visibility(demo_store, 0)


def test_filament_paths_are_mapped_to_the_tomogram_grid(demo_store):
    """The demo has an actin filament and a microtubule; their paths move to the tomogram grid
    (binned by 2) like the particle centres do."""
    from faket_dask import store as st

    spec = st.open(demo_store, st.particles_group(0))
    tomo = st.open(demo_store, st.labels_particles_group(0))
    assert {"actin", "microtubule"} <= set(spec["class_name"].values.astype(str))
    b = int(tomo.attrs["binning"])
    np.testing.assert_allclose(tomo["filament_x"].values, (spec["filament_x"].values + 0.5) / b - 0.5)
    np.testing.assert_allclose(tomo["x"].values, (spec["x"].values + 0.5) / b - 0.5)


def test_gold_beads_are_dark(demo_visibility):
    fc = demo_visibility["fiducial_contrast"]
    assert len(fc) >= 1, "the demo specimen has gold beads"
    assert min(fc) >= 5.0, fc


def test_lowpassed_tomogram_correlates_with_noiseless(demo_visibility):
    assert demo_visibility["tomogram_correlation"] >= 0.5, demo_visibility["tomogram_correlation"]


def test_tilt_correlation_peaks_near_zero_and_falls_with_tilt(demo_visibility):
    r = np.array(demo_visibility["tilt_correlation"])
    ang = np.array(demo_visibility["tilt_angles_deg"])
    assert r.min() > 0
    # single tilts scatter by ~0.02, so "highest near 0°" is judged on 10° bins of |tilt|
    bins = [r[(np.abs(ang) >= lo) & (np.abs(ang) < lo + 10)].mean() for lo in range(0, 60, 10)]
    assert int(np.argmax(bins)) == 0, bins
    assert np.polyfit(np.abs(ang), r, 1)[0] < 0
    low, mid, high = (r[np.abs(ang) <= 20].mean(), r[(np.abs(ang) > 20) & (np.abs(ang) <= 40)].mean(),
                      r[np.abs(ang) > 40].mean())
    assert low > mid > high, (low, mid, high)
