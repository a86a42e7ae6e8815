"""Each task of an array's last layer fused with the input tasks only it reads
(``faket_dask/graph_fusion.py``), on real Zarr stores opened by xarray, as the stages open them."""
from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from faket_dask.graph_fusion import fuse_private_inputs


def _contract(c: np.ndarray, g: np.ndarray) -> np.ndarray:
    # a block of tilts and the per-tilt matrices of the same tilts, as the NST task gets them
    return c * g.sum(axis=(1, 2))[:, None, None]


@pytest.fixture()
def stacks(tmp_path):
    rng = np.random.default_rng(0)
    ds = xr.Dataset({"c": (("tilt", "y", "x"), rng.random((12, 8, 8), dtype=np.float32)),
                     "g": (("tilt", "a", "b"), rng.random((12, 5, 5), dtype=np.float32))})
    ds.chunk({"tilt": 4}).to_zarr(tmp_path / "s.zarr", zarr_format=3, consolidated=False)
    opened = xr.open_zarr(tmp_path / "s.zarr", consolidated=False, zarr_format=3)
    return ds, opened


def _graph(arr: da.Array) -> dict:
    (opt,) = dask.optimize(arr)
    return dict(opt.__dask_graph__())


def test_each_task_reads_its_own_inputs_and_computes_the_same(stacks):
    ds, opened = stacks
    c, g = opened.c.data, opened.g.data
    out = da.blockwise(_contract, "tyx", c, "tyx", g, "tab", concatenate=True, dtype=np.float32)
    before = _graph(out)
    # the stores' readers are tasks of their own, behind each array's shared handle
    assert len(before) > out.npartitions
    fused = fuse_private_inputs(out)
    after = _graph(fused)
    assert set(after) == set(dask.core.flatten(out.__dask_keys__()))  # one task per block, nothing else
    assert all(not node.dependencies for node in after.values())
    assert fused.name == out.name and fused.chunks == out.chunks and fused.dtype == out.dtype
    expected = ds.c.values * ds.g.values.sum(axis=(1, 2))[:, None, None]
    np.testing.assert_array_equal(fused.compute(scheduler="sync"), expected)


def test_an_input_two_tasks_read_stays_a_task_and_annotations_are_kept(stacks):
    _, opened = stacks
    c = opened.c.data
    shared = (c.sum(axis=0, keepdims=True)).rechunk({0: 1})  # one block every task reads
    with dask.annotate(resources={"GPU": 1}):
        out = da.map_blocks(lambda a, s: a - s, c, shared, dtype=np.float32)
    fused = fuse_private_inputs(out)
    graph = _graph(fused)
    out_keys = set(dask.core.flatten(out.__dask_keys__()))
    shared_keys = set(dask.core.flatten(shared.__dask_keys__()))
    # the shared sum is computed once, by its own task, and every block's task reads it; the
    # readers of C feed both the sum and a block's task, so they stay tasks too
    assert shared_keys <= set(graph)
    assert all(shared_keys <= set(graph[k].dependencies) for k in out_keys)
    assert len(graph) > len(out_keys) + len(shared_keys)
    layer = fused.__dask_graph__().layers[fused.name]
    assert layer.annotations == {"resources": {"GPU": 1}}
    np.testing.assert_allclose(fused.compute(scheduler="sync"), out.compute(scheduler="sync"))
