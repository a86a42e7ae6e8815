"""The compiled injection kernels (numba) against numpy: the same bits, by construction."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest

from faket_dask.kernels import noise as nz
from faket_dask.kernels import noise_compiled as nc
from faket_dask.kernels import noise_moments as nm
from faket_dask.kernels.noise_rng import normal_block

REPO = Path(__file__).resolve().parents[2]


def _pairwise_rows(a: np.ndarray) -> np.ndarray:
    """numpy oracle of ``nc.row_moments``: ``np.add.reduce`` (pairwise) for the sum and css."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    nx = a.shape[2]
    s = np.add.reduce(a, axis=2)
    d = a - (s / nx)[..., None]
    css = np.add.reduce(np.ascontiguousarray(d * d), axis=2)
    return np.stack([np.full_like(s, nx), s, css], axis=-1)


# lengths around numpy's pairwise thresholds: < 8, multiples of 8, the 128-value block, splits
@pytest.mark.parametrize("nx", [1, 5, 8, 9, 64, 127, 128, 129, 136, 255, 1000, 1024, 4097])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_moments_are_numpys_pairwise_sums(nx, dtype):
    rng = np.random.default_rng(nx)
    a = (rng.standard_normal((2, 5, nx)) * 40 - 7).astype(dtype)
    got = nc.row_moments(a)
    assert got.dtype == np.float64 and got.shape == (2, 5, 3)
    assert np.array_equal(got, _pairwise_rows(a))
    ref = nm.row_moments(a)  # the estimation's kernel: same count and sum; css by einsum
    assert np.array_equal(got[..., :2], ref[..., :2])
    np.testing.assert_allclose(got[..., 2], ref[..., 2], rtol=1e-13, atol=0)


def test_row_moments_integer_and_strided_input():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4000, size=(3, 6, 50)).astype(np.uint16)
    assert np.array_equal(nc.row_moments(a), _pairwise_rows(a))
    b = (rng.standard_normal((3, 12, 100)) * 5).astype(np.float32)[:, ::2, 1::2]  # not contiguous
    assert np.array_equal(nc.row_moments(b), _pairwise_rows(b))
    assert np.array_equal(nc.row_moments(np.zeros((2, 3, 0), np.float32)), np.zeros((2, 3, 3)))


@pytest.mark.parametrize("k", [1.0, 0.25])
def test_mix_and_rescale_bit_identical_to_numpy_kernels(k):
    rng = np.random.default_rng(2)
    t, ny, nx = 3, 20, 130
    p = (rng.standard_normal((t, ny, nx)) * 30 - 4).astype(np.float32)
    z = normal_block(11, 2, range(t), 0, ny, nx)
    pm, ps = rng.standard_normal(t), rng.random(t) + 0.5
    r, sigma = rng.random(t), rng.random(t) + 0.1
    x = nz.mix(p, pm, ps, z, r, sigma, k)
    assert np.array_equal(nc.mix_row_moments(p, z, pm, ps, r, sigma, k), _pairwise_rows(x))
    xm, xs = rng.standard_normal(t), rng.random(t) + 0.5
    mu, s = rng.standard_normal(t) * 100, rng.random(t) * 3 + 0.1
    got = nc.mix_rescale(p, z, pm, ps, r, sigma, k, xm, xs, mu, s)
    assert got.dtype == np.float32
    assert np.array_equal(got, nz.rescale(x, xm, xs, mu, s))


def test_stage_equals_numpy_oracle_for_whole_tilts_and_split_tilts():
    """add_noise (whole-tilt task, and the three-pass graph of split tilts) = the numpy kernels
    composed with the same sums, bit for bit."""
    from faket_dask.stages import noise as stage_noise
    from faket_dask.stages.tilt_statistics import tilts_mean_std

    rng = np.random.default_rng(3)
    t, ny, nx = 4, 24, 40
    p = (rng.standard_normal((t, ny, nx)) * 9 + 3).astype(np.float32)
    curves = {"r": rng.random(t), "sigma": rng.random(t) + 0.2, "mean": rng.standard_normal(t),
              "std": rng.random(t) + 0.5}
    seed, tomo, k = 5, 1, 1.0
    z = normal_block(seed, tomo, range(t), 0, ny, nx)
    pms = tilts_mean_std(_pairwise_rows(p), "p")
    pm, ps = pms[:, 0, 0], pms[:, 0, 1]
    x = nz.mix(p, pm, ps, z, curves["r"], curves["sigma"], k)
    xms = tilts_mean_std(_pairwise_rows(x), "x")
    want = nz.rescale(x, xms[:, 0, 0], xms[:, 0, 1], curves["mean"], curves["std"])

    kw = {"seed": seed, "tomo": tomo, "r": curves["r"], "sigma": curves["sigma"], "k": k}
    with dask.config.set(scheduler="sync"):
        whole = da.from_array(p, chunks=(1, ny, nx))
        got_whole = da.map_blocks(stage_noise._whole_tilt_block, whole, mean=curves["mean"],
                                  std=curves["std"], what="p", dtype=np.float32, **kw).compute()
        split = da.from_array(p, chunks=(1, 7, nx))
        got_split = stage_noise._three_passes(split, "p", kw, curves, "test").compute()
    assert np.array_equal(got_whole, want)
    assert np.array_equal(got_split, want)


def test_cached_kernels_load_in_a_fresh_process(tmp_path):
    """numba's on-disk cache is read by a second process (a cached *recursive* function once
    crashed there: the pairwise sum is iterative for that reason)."""
    code = ("import numpy as np; from faket_dask.kernels import noise_compiled as nc; "
            "a = np.arange(3 * 4 * 300, dtype=np.float32).reshape(3, 4, 300); "
            "print(nc.row_moments(a)[2, 3, 1])")
    outs = [subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    for o in outs:
        assert o.returncode == 0, o.stderr[-2000:]
    want = float(np.arange(3 * 4 * 300, dtype=np.float64).reshape(3, 4, 300)[2, 3].sum())
    assert [float(o.stdout.strip()) for o in outs] == [want, want]
