"""`tile="auto"`: a tilt runs untiled whenever its NST fits one task's memory on the workers.

The kernel owns the figures (bytes per pixel, halo) and turns a budget into a tile; the stage
asks the workers for the budget (memory limit / threads) and records the tile in the attrs.
Nothing here computes NST: the stage is lazy, its settings are decided before any work.
"""
from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

import faket_dask as fd
from faket_dask.errors import InputError
from faket_dask.kernels.nst import crop_shape
from faket_dask.kernels.nst.budget import (
    MIN_TILE, NST_BYTES_PER_PIXEL, auto_tile, device_task_bytes, nst_task_bytes,
)

MiB = 2**20


def test_auto_tile_untiled_when_the_tilt_fits_and_largest_fitting_tile_else():
    shape = (1024, 1024)
    need = 1024 * 1024 * NST_BYTES_PER_PIXEL
    assert auto_tile(shape, need) is None
    t = auto_tile(shape, need - 1)
    assert t is not None and t % 16 == 0 and t >= MIN_TILE
    assert nst_task_bytes(crop_shape(shape, t)) <= need - 1 < nst_task_bytes(crop_shape(shape, t + 16))
    # nothing fits: the smallest tile if its crop is smaller than the tilt, else untiled
    assert auto_tile(shape, 1) == MIN_TILE
    assert auto_tile((256, 256), 1) is None


def test_device_task_bytes_on_cpu_divides_the_limit_by_threads():
    assert device_task_bytes("cpu", memory_limit_bytes=8 * 2**30, threads=4) == 2 * 2**30
    # two reads of the machine's available memory: other processes may free or take some in
    # between, so allow 256 MiB of drift (CI failed on 1 MiB)
    assert 0 < device_task_bytes("cpu") <= device_task_bytes("cpu", threads=1) + 256 * 2**20


def _tilts(t: int, n: int, seed: int, name: str) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    a = da.from_array(rng.standard_normal((t, n, n)).astype(np.float32), chunks=(1, n, n))
    return fd.tiltseries(a, angles_deg=np.linspace(-30, 30, t), pixel_size_A=10.0, name=name)


@pytest.mark.parametrize("limit_MiB, tiled", [(8192, False), (1500, True)])
def test_stage_asks_the_workers_and_records_the_tile(limit_MiB, tiled):
    from distributed import Client, LocalCluster

    c, s, x = (_tilts(3, 1024, k, n) for k, n in enumerate(("content", "style", "noisy")))
    # the workers' memory limit is what is measured; memory management off, because the
    # in-process worker's RSS (this test process, with torch) is above a small limit
    off = {f"distributed.worker.memory.{k}": False for k in ("target", "spill", "pause", "terminate")}
    with dask.config.set(off), LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                            memory_limit=f"{limit_MiB}MiB", dashboard_address=":0") as cl, \
            Client(cl):
        out = fd.style_transfer(c, s, x, weights="random", seed=0, tile="auto", device="cpu")
    assert out.attrs["nst_tile_requested"] == "auto"
    assert out.attrs["nst_task_memory_MiB"] == pytest.approx(limit_MiB / 2, abs=0.1)
    if tiled:
        t = out.attrs["nst_tile"]
        assert t == auto_tile((1024, 1024), limit_MiB / 2 * MiB) and t % 16 == 0
    else:
        assert out.attrs["nst_tile"] is None


def test_bad_tile_is_refused_before_any_work():
    c, s, x = (_tilts(2, 64, k, n) for k, n in enumerate(("content", "style", "noisy")))
    for bad in ("big", 100, 0, True):
        with pytest.raises(InputError, match="tile must be 'auto' or a positive multiple of 16"):
            fd.style_transfer(c, s, x, weights="random", tile=bad)
