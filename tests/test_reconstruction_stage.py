"""fd.reconstruct on a real cluster: golden, chunk invariance, round trip, OME-NGFF, CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

import faket_dask as fd
from faket_dask.store import save_image


def _pearson(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize(("binning", "key"), [(2, "reconstruction_bin2"), (1, "reconstruction_bin1")])
def test_reconstruct_reproduces_golden_for_any_cy(client, golden, tmp_path, binning, key):
    g = golden("reconstruction")
    ts = fd.tiltseries(g["projections"], g["theta_deg"], 10.0, name="faket")
    a = fd.reconstruct(ts, binning=binning, cy=3, scratch_dir=tmp_path)
    b = fd.reconstruct(ts, binning=binning, cy=16, scratch_dir=tmp_path)
    assert a.dims == ("z", "y", "x") and a.attrs["pixel_size_A"] == 10.0 * binning
    av = a.values
    assert np.array_equal(av, b.values)
    # without a scratch_dir a stack that fits one task goes tilts -> slabs through Dask's memory
    assert np.array_equal(fd.reconstruct(ts, binning=binning, cy=3).values, av)
    assert _pearson(av, g[key]) >= 0.99
    assert _rel_l2(av, g[key]) <= 0.05


def test_round_trip_project_then_reconstruct(client, tmp_path):
    """A noiseless projection reconstructed (ramp, no binning) matches the specimen."""
    n = 48
    zz, yy, xx = np.mgrid[:n, :6, :n]
    vol = np.zeros((n, 6, n), np.float32)
    rng = np.random.default_rng(0)
    for cz, cx, r in zip(rng.uniform(16, 32, 6), rng.uniform(14, 34, 6), rng.uniform(2, 4, 6)):
        vol += np.exp(-((zz - cz) ** 2 + (xx - cx) ** 2) / (2 * r * r)).astype(np.float32)
    specimen = fd.volume(vol, 10.0)
    ts = fd.project(specimen, fd.angles_from_range(-60, 60, 2))
    rec = fd.reconstruct(ts, binning=1, filter="ramp", scratch_dir=tmp_path).values
    c = slice(n // 4, 3 * n // 4)  # the well-sampled central (z, x) square
    # projections are negated (particles dark), so the tomogram is -density
    assert _pearson(rec[c, :, c], -vol[c, :, c]) >= 0.9


def test_z_valid_and_thickness(client, golden, tmp_path):
    g = golden("reconstruction")
    ts = fd.tiltseries(g["projections"], g["theta_deg"], 10.0)
    full = fd.reconstruct(ts, binning=1, scratch_dir=tmp_path)
    cut = fd.reconstruct(ts, binning=1, z_valid=(0.32226, 0.67382), scratch_dir=tmp_path)
    from faket_dask.kernels.backprojection import z_valid_slice

    sl = z_valid_slice(64, (0.32226, 0.67382))
    assert np.array_equal(cut.values, full.values[sl])
    thick = fd.reconstruct(ts, binning=1, thickness=32, scratch_dir=tmp_path)
    assert thick.shape == (32, 64, 64)
    with pytest.raises(fd.InputError, match="z_valid"):
        fd.reconstruct(ts, z_valid=(0.7, 0.2))


def test_ome_ngff_written_and_readable(client, golden, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    g = golden("reconstruction")
    ts = fd.tiltseries(g["projections"], g["theta_deg"], 10.0)
    vol = fd.reconstruct(ts, binning=1, scratch_dir=tmp_path)
    run = tmp_path / "run.zarr"
    save_image(vol, run, "tomo_000/tomogram", "faket")
    node = list(Reader(parse_url(str(run / "tomo_000/tomogram/faket")))())[0]
    assert len(node.data) >= 3
    assert [tuple(d.shape) for d in node.data[:3]] == [(64, 64, 64), (32, 32, 32), (16, 16, 16)]
    level1 = np.asarray(node.data[1])
    expected = vol.values.reshape(32, 2, 32, 2, 32, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(level1, expected, rtol=1e-5, atol=1e-6)
    got = fd.open(run, "tomo_000/tomogram")["faket"]
    assert got.attrs["pixel_size_A"] == 10.0
    assert np.array_equal(got.values, vol.values)
    with pytest.raises(fd.OutputExistsError):
        save_image(vol, run, "tomo_000/tomogram", "faket")


def test_reconstruct_cli_and_export(tmp_path, golden, client):
    g = golden("reconstruction")
    run = tmp_path / "run.zarr"
    fd.save(fd.tiltseries(g["projections"], g["theta_deg"], 10.0), run, "tomo_000/tiltseries", name="faket")
    exe = str(Path(sys.executable).with_name("faket-dask"))
    env = dict(os.environ, FAKET_PROGRESS="0")
    proc = subprocess.run([exe, "reconstruct", str(run), "--tomo", "0", "--modality", "faket", "--workers", "1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (run / "_scratch").exists()
    out = tmp_path / "tomo.mrc"
    proc = subprocess.run([exe, "export-mrc", str(run), "tomo_000/tomogram/faket", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with mrcfile.open(out) as mrc:
        assert mrc.data.shape == (32, 32, 32) and mrc.voxel_size.x == pytest.approx(20.0)
        assert _pearson(mrc.data, g["reconstruction_bin2"]) >= 0.99
    again = subprocess.run([exe, "reconstruct", str(run)], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 2 and "--overwrite" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_crowther_option_changes_filter(client, golden, tmp_path):
    from faket_dask.kernels.filters import approx_shrec_filter

    np.testing.assert_array_equal(approx_shrec_filter(48, 64, 0.61), approx_shrec_filter(48, 64))
    assert not np.array_equal(approx_shrec_filter(64, 64, 0.3), approx_shrec_filter(64, 64))
    g = golden("reconstruction")
    ts = fd.tiltseries(g["projections"], g["theta_deg"], 10.0)
    default = fd.reconstruct(ts, scratch_dir=tmp_path).values
    assert np.array_equal(fd.reconstruct(ts, crowther=0.61, scratch_dir=tmp_path).values, default)
    assert not np.array_equal(fd.reconstruct(ts, crowther=0.3, scratch_dir=tmp_path).values, default)
    with pytest.raises(fd.InputError, match="crowther"):
        fd.reconstruct(ts, crowther=1.5)
