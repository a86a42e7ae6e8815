"""MRC -> Zarr -> MRC round trips: bit-identical data, voxel size and tilt angles kept."""
from __future__ import annotations

import mrcfile
import numpy as np
import pytest

import faket_dask as fd
from faket_dask import store
from faket_dask.formats.tlt import read_tlt
from faket_dask.store.layout import specimen_group, tiltseries_group, tiltseries_var

from conftest import write_mrc


@pytest.mark.parametrize(
    ("shape", "angles", "pixel"),
    [
        ((7, 13, 11), [-51.3, -40.0, -12.25, 0.0, 3.5, 29.0, 66.125], 3.37),
        ((5, 9, 17), [10.0, -20.0, 30.0, -40.0, 50.0], 1.0),  # unsorted, asymmetric: stored sorted
        ((61, 33, 31), list(np.arange(-60, 61, 2.0)), 10.0),
    ],
)
def test_tiltseries_round_trip(tmp_path, client, shape, angles, pixel):
    rng = np.random.default_rng(1)
    data = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    src = write_mrc(tmp_path / "in.mrc", data, voxel_size=pixel)
    run = tmp_path / "run.zarr"
    fd.import_mrc(src, run, tiltseries_var(0, "measured"), kind="tiltseries", angles_deg=angles, cy=4)

    arr = fd.open(run, tiltseries_group(0))["measured"]
    assert arr.dims == ("tilt", "y", "x")
    assert arr.data.chunksize == (1, min(4, shape[1]), shape[2])
    # stored sorted by angle; the file's order is the coordinate acquisition_index
    order = np.argsort(angles, kind="stable")
    angles, data = np.asarray(angles)[order], data[order]
    np.testing.assert_array_equal(arr["tilt"].values, angles)
    if np.array_equal(order, np.arange(len(order))):
        assert "acquisition_index" not in arr.coords  # a sorted file is stored as before
    else:
        np.testing.assert_array_equal(arr["acquisition_index"].values, order)
    assert arr.attrs["pixel_size_A"] == pytest.approx(pixel, rel=1e-6)

    dest = tmp_path / "out.mrc"
    written = fd.export_mrc(arr, dest)
    assert written == [dest, tmp_path / "out.tlt"]
    assert mrcfile.validate(str(dest), print_file=open("/dev/null", "w"))
    with mrcfile.open(dest, permissive=False) as mrc:
        assert mrc.data.dtype == np.float32
        assert np.array_equal(mrc.data, data)
        assert mrc.voxel_size.x == pytest.approx(pixel, rel=1e-6)
        assert mrc.is_image_stack()
        assert mrc.header.dmax == pytest.approx(data.max())
        assert mrc.header.rms == pytest.approx(data.std(), rel=1e-5)
    np.testing.assert_array_equal(read_tlt(tmp_path / "out.tlt"), np.asarray(angles))


@pytest.mark.parametrize("shape", [(9, 15, 17), (32, 7, 5)])
def test_volume_round_trip(tmp_path, client, shape):
    data = np.random.default_rng(2).random(shape, dtype=np.float32)
    src = write_mrc(tmp_path / "vol.mrc", data, voxel_size=7.5, stack=False)
    run = tmp_path / "run.zarr"
    fd.import_mrc(src, run, f"{specimen_group(0)}/density", kind="volume", cy=3)
    arr = fd.open_var(run, f"{specimen_group(0)}/density")
    assert arr.dims == ("z", "y", "x")
    assert arr.data.chunksize[1:] == (min(3, shape[1]), shape[2])
    dest = tmp_path / "vol_out.mrc"
    assert fd.export_mrc(arr, dest) == [dest]
    assert not (tmp_path / "vol_out.tlt").exists()
    with mrcfile.open(dest, permissive=False) as mrc:
        assert np.array_equal(mrc.data, data)
        assert mrc.voxel_size.z == pytest.approx(7.5)
        assert mrc.is_volume()


def test_integer_mrc_imports_as_float32(tmp_path, client):
    data = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5) - 20
    src = write_mrc(tmp_path / "int.mrc", data)
    run = tmp_path / "run.zarr"
    fd.import_mrc(src, run, "ref/ts/measured", kind="tiltseries", angles_deg=[-1, 0, 1])
    arr = fd.open_var(run, "ref/ts/measured")
    assert arr.dtype == np.float32
    np.testing.assert_array_equal(arr.values, data.astype(np.float32))


def test_stage_status_and_variables_share_group(tmp_path, client):
    data = np.ones((3, 4, 5), np.float32)
    src = write_mrc(tmp_path / "a.mrc", data)
    run = tmp_path / "run.zarr"
    fd.import_mrc(src, run, tiltseries_var(0, "measured"), kind="tiltseries", angles_deg=[-1, 0, 1])
    fd.import_mrc(src, run, tiltseries_var(0, "noiseless"), kind="tiltseries", angles_deg=[-1, 0, 1])
    ds = fd.open(run, tiltseries_group(0))
    assert set(ds.data_vars) == {"measured", "noiseless"}
    status = store.stage_status(run)
    assert status[tiltseries_var(0, "measured")]["status"] == "complete"
    paths = [v.path for v in store.describe(run)]
    assert paths == [tiltseries_var(0, "measured"), tiltseries_var(0, "noiseless")]


def test_conflicting_shape_in_group_is_refused(tmp_path, client):
    run = tmp_path / "run.zarr"
    a = write_mrc(tmp_path / "a.mrc", np.ones((3, 4, 5), np.float32))
    b = write_mrc(tmp_path / "b.mrc", np.ones((3, 6, 5), np.float32))
    fd.import_mrc(a, run, tiltseries_var(0, "measured"), kind="tiltseries", angles_deg=[-1, 0, 1])
    with pytest.raises(fd.InputError, match="y=4"):
        fd.import_mrc(b, run, tiltseries_var(0, "noiseless"), kind="tiltseries", angles_deg=[-1, 0, 1])
    assert set(fd.open(run, tiltseries_group(0)).data_vars) == {"measured"}


def test_overwrite_replaces_variable(tmp_path, client):
    run = tmp_path / "run.zarr"
    a = write_mrc(tmp_path / "a.mrc", np.ones((3, 4, 5), np.float32))
    b = write_mrc(tmp_path / "b.mrc", np.full((3, 4, 5), 2, np.float32))
    fd.import_mrc(a, run, "t/ts/m", kind="tiltseries", angles_deg=[-1, 0, 1])
    with pytest.raises(fd.OutputExistsError):
        fd.import_mrc(b, run, "t/ts/m", kind="tiltseries", angles_deg=[-1, 0, 1])
    assert float(fd.open_var(run, "t/ts/m").max()) == 1.0
    fd.import_mrc(b, run, "t/ts/m", kind="tiltseries", angles_deg=[-1, 0, 1], overwrite=True)
    assert float(fd.open_var(run, "t/ts/m").min()) == 2.0


def test_angles_from_range_includes_stop():
    assert fd.angles_from_range(-60, 60, 2).size == 61
    np.testing.assert_array_equal(fd.angles_from_range(60, -60, -30), [60, 30, 0, -30, -60])
    with pytest.raises(fd.InputError):
        fd.angles_from_range(-60, 60, -2)
