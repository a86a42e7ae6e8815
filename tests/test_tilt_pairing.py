"""Pairing by angle: the rule itself, then NST and noise injection on stacks in other orders."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import faket_dask as fd
from faket_dask.datamodel import tiltseries
from faket_dask.errors import InputError
from faket_dask.noise_model import NoiseModel
from faket_dask.tilt_pairing import match_tilts, tilt_label

DOSE_SYMMETRIC = np.array([0.0, 3, -3, -6, 6, 9, -9, -12, 12])


def test_dose_symmetric_order_pairs_each_angle_with_itself():
    sorted_angles = np.sort(DOSE_SYMMETRIC)
    idx = match_tilts(sorted_angles, DOSE_SYMMETRIC)
    assert np.array_equal(DOSE_SYMMETRIC[idx], sorted_angles)
    # and the other way round
    back = match_tilts(DOSE_SYMMETRIC, sorted_angles)
    assert np.array_equal(sorted_angles[back], DOSE_SYMMETRIC)


def test_bidirectional_repeated_zero_pairs_in_order():
    a = np.array([0.0, -15, -30, 0, 15, 30])
    idx = match_tilts(np.sort(a), a)
    assert np.array_equal(a[idx], np.sort(a))
    assert sorted(idx.tolist()) == list(range(6))  # a permutation: each tilt used once


def test_small_offsets_within_half_a_step_are_the_same_angle():
    content = np.arange(-60, 61, 3.0)
    style = content + 1.4  # recorded angles off by 1.4°, less than half of 3°
    assert np.array_equal(match_tilts(content, style), np.arange(content.size))


def test_lamella_range_is_refused_naming_both_ranges():
    content = np.arange(-54, 67, 3.0)
    style = np.arange(-60, 61, 3.0)
    assert content.size == style.size == 41
    with pytest.raises(InputError) as e:
        match_tilts(content, style, target="content", source="style.mrc", option="OPT: nearest")
    msg = str(e.value)
    assert "-60..60 (41 tilts, step 3)" in msg and "-54..66 (41 tilts, step 3)" in msg
    assert "up to 6°" in msg and "OPT: nearest" in msg and "\n" not in msg


def test_nearest_mode_takes_the_nearest_angle_and_allows_other_counts():
    content = np.arange(-54, 67, 3.0)
    style = np.arange(-60, 61, 3.0)
    idx = match_tilts(content, style, mode="nearest")
    assert np.array_equal(style[idx], np.clip(content, -60, 60))
    idx = match_tilts(np.array([-10.0, 0, 10]), np.array([-60.0, 1, 60, -9]), mode="nearest")
    assert idx.tolist() == [3, 1, 1]


def test_counts_differ_exact_mode():
    with pytest.raises(InputError, match=r"-60..60 \(5 tilts, step 30\).*-60..60 \(3 tilts, step 60\)"):
        match_tilts(np.linspace(-60, 60, 3), np.linspace(-60, 60, 5), target="t", source="s")


def test_tilt_labels_are_one_based_with_angle():
    assert tilt_label(4, 5, np.array([-30, -15, 0, 15, 30.0])) == "tilt 5 of 5 (30°)"
    assert tilt_label(0, 3) == "tilt 1 of 3"


# ------------------------------------------------------------------------------------------
# the stages pair by angle
# ------------------------------------------------------------------------------------------
def _style_stack(order: np.ndarray, shape=(32, 32)) -> xr.DataArray:
    rng = np.random.default_rng(9)
    data = np.stack([rng.normal(100 + a, 2 + abs(a) / 10, shape) for a in order]).astype(np.float32)
    return tiltseries(data, order, 10.0, name="measured").chunk({"tilt": 1})


def test_style_transfer_styles_each_content_tilt_with_the_style_tilt_of_its_angle():
    angles = np.array([-30.0, -15, 0, 15, 30])
    order = np.array([0.0, 15, -15, -30, 30])  # dose-symmetric acquisition order
    style = _style_stack(order)
    rng = np.random.default_rng(1)
    content = tiltseries(rng.normal(0, 1, (5, 32, 32)).astype(np.float32), angles, 10.0,
                         name="content").chunk({"tilt": 1})
    noisy = content.copy(data=content.data + 0.1).rename("noisy")
    out = fd.style_transfer(content, style, noisy, weights="random", seed=0).compute()
    # NST ends with match_mean_std to the paired style tilt (mean ~ 100 + its angle)
    want = style.mean(("y", "x")).sel(tilt=angles).values
    np.testing.assert_allclose(out.mean(("y", "x")).values, want, rtol=1e-5)
    assert np.abs(want - (100 + angles)).max() < 1
    assert out.attrs["nst_style_tilt_deg"] == angles.tolist()
    # the same stack given sorted gives the same result, bit for bit
    out2 = fd.style_transfer(content, style.sortby("tilt"), noisy, weights="random", seed=0).compute()
    assert np.array_equal(out.values, out2.values)


def test_style_transfer_nearest_angles_for_a_lamella_range():
    content_angles = np.array([-21.0, -6, 9, 24, 39])  # +9° pre-tilt, more than half of 15°
    style = _style_stack(np.array([-30.0, -15, 0, 15, 30]))
    content = tiltseries(np.random.default_rng(2).normal(0, 1, (5, 32, 32)).astype(np.float32),
                         content_angles, 10.0, name="content").chunk({"tilt": 1})
    noisy = content.copy(data=content.data * 1.1).rename("noisy")
    with pytest.raises(InputError, match="up to 9°"):
        fd.style_transfer(content, style, noisy, weights="random")
    out = fd.style_transfer(content, style, noisy, weights="random", match_angles="nearest").compute()
    nearest = [-15.0, 0.0, 15.0, 30.0, 30.0]
    assert out.attrs["nst_style_tilt_deg"] == nearest
    want = style.mean(("y", "x")).sel(tilt=nearest).values
    np.testing.assert_allclose(out.mean(("y", "x")).values, want, rtol=1e-5)


def test_noise_curves_follow_the_angle_not_the_position():
    angles = np.linspace(-60, 60, 7)
    raw = {"r": np.full(7, 0.5), "sigma": np.full(7, 0.8), "mean": 100 + angles, "std": np.full(7, 3.0)}
    model = NoiseModel.from_raw([raw], order=2, angles_deg=angles)  # a line fits exactly
    perm = np.array([3, 4, 2, 1, 5, 6, 0])
    rng = np.random.default_rng(0)
    p = tiltseries(rng.normal(0, 1, (7, 16, 16)).astype(np.float32), angles[perm], 10.0, name="noiseless")
    out = fd.add_noise(p, model, seed=1).compute()
    np.testing.assert_allclose(out.mean(("y", "x")).values, 100 + angles[perm], atol=1e-3)


def test_noise_estimate_averages_references_angle_by_angle(ref_pair):
    m, c = ref_pair
    perm = np.random.default_rng(3).permutation(m.sizes["tilt"])
    model_sorted = fd.estimate_noise([m, m], [c, c], order=2)
    model_mixed = fd.estimate_noise([m, m.isel(tilt=perm)], [c, c.isel(tilt=perm)], order=2)
    for name in ("r", "sigma", "mean", "std"):
        np.testing.assert_allclose(model_mixed.curve(name), model_sorted.curve(name), rtol=1e-12)
    # a first reference in acquisition order is sorted before the polynomial fit over the index
    model_first_mixed = fd.estimate_noise([m.isel(tilt=perm)], [c.isel(tilt=perm)], order=2)
    np.testing.assert_allclose(model_first_mixed.curve("std"), fd.estimate_noise([m], [c]).curve("std"),
                               rtol=1e-12)
    assert np.array_equal(model_first_mixed.angles_deg, np.sort(m["tilt"].values))


@pytest.fixture(scope="module")
def ref_pair(golden):
    ref = golden("noise_estimation")
    n = 11
    angles = np.linspace(-60.0, 60.0, n)
    m = tiltseries(ref["measured"][:n], angles, 10.0, name="measured").chunk({"tilt": 1})
    c = tiltseries(ref["noiseless"][:n], angles, 10.0, name="noiseless").chunk({"tilt": 1})
    return m, c


def test_a_group_keeps_one_acquisition_order(tmp_path):
    """Imported stacks in one group share the tilt axis: another acquisition order is refused
    (it would rewrite the neighbours' ``acquisition_index``), and ``info`` lists no coordinate."""
    from conftest import write_mrc
    from faket_dask.formats.convert import import_mrc

    write_mrc(tmp_path / "a.mrc", np.random.default_rng(0).normal(size=(3, 8, 8)).astype(np.float32))
    (tmp_path / "a.tlt").write_text("0\n-10\n10\n")
    (tmp_path / "b.tlt").write_text("10\n0\n-10\n")
    store = tmp_path / "s.zarr"
    import_mrc(tmp_path / "a.mrc", store, "g/measured", kind="tiltseries", angles_file=tmp_path / "a.tlt")
    import_mrc(tmp_path / "a.mrc", store, "g/noiseless", kind="tiltseries", angles_file=tmp_path / "a.tlt")
    with pytest.raises(InputError, match=r"'g' has another 'acquisition_index'.*write 'other' to another group"):
        import_mrc(tmp_path / "a.mrc", store, "g/other", kind="tiltseries", angles_file=tmp_path / "b.tlt")
    assert [v.path for v in fd.store.describe(store)] == ["g/measured", "g/noiseless"]
    ds = fd.open(store, "g")
    assert ds["acquisition_index"].values.tolist() == [1, 0, 2]
