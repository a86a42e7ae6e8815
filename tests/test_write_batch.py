"""Several store writes computed in one graph (faket_dask.store.write_batch.one_graph)."""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

import faket_dask as fd
from faket_dask import store as st
from faket_dask.datamodel import tiltseries
from faket_dask.store.write_batch import one_graph

ANGLES = np.linspace(-60, 60, 5)


def _ts(values: np.ndarray, name: str):
    return tiltseries(da.from_array(values, chunks=(1, 8, 8)), ANGLES, 10.0, name=name)


def _chunks_written(store, path: str) -> int:
    return zarr.open_group(str(store), mode="r")[path].nchunks_initialized


def test_writes_in_a_block_are_computed_together_then_marked_complete(tmp_path):
    store = tmp_path / "run.zarr"
    a = np.arange(5 * 8 * 8, dtype=np.float32).reshape(5, 8, 8)
    with one_graph("two writes"):
        st.save(_ts(a, "one"), store, "tomo_000/tiltseries")
        st.save(_ts(a + 1, "two"), store, "tomo_000/tiltseries")
        # prepared (metadata), not computed (no chunk written), not complete
        assert [_chunks_written(store, f"tomo_000/tiltseries/{n}") for n in ("one", "two")] == [0, 0]
        status = st.stage_status(store)
        assert status["tomo_000/tiltseries/one"]["status"] == "running"
    assert [_chunks_written(store, f"tomo_000/tiltseries/{n}") for n in ("one", "two")] == [5, 5]
    status = st.stage_status(store)
    assert {status[f"tomo_000/tiltseries/{n}"]["status"] for n in ("one", "two")} == {"complete"}
    np.testing.assert_array_equal(fd.open_var(store, "tomo_000/tiltseries/one").values, a)
    np.testing.assert_array_equal(fd.open_var(store, "tomo_000/tiltseries/two").values, a + 1)


def test_a_failed_block_removes_every_member_it_prepared(tmp_path):
    store = tmp_path / "run.zarr"
    a = np.ones((5, 8, 8), np.float32)
    st.save(_ts(a, "kept"), store, "tomo_000/tiltseries")

    def boom(block):
        raise RuntimeError("disk on fire")

    bad = _ts(a, "bad")
    with pytest.raises(RuntimeError, match="disk on fire"), one_graph("failing"):
        st.save(_ts(a, "good"), store, "tomo_000/tiltseries")
        st.save(bad.copy(data=bad.data.map_blocks(boom, dtype=np.float32)), store, "tomo_000/tiltseries")
    status = st.stage_status(store)
    assert status["tomo_000/tiltseries/good"]["status"] == "failed"
    assert status["tomo_000/tiltseries/bad"]["status"] == "failed"
    assert not st.has_var(store, "tomo_000/tiltseries/good")
    assert not st.has_var(store, "tomo_000/tiltseries/bad")
    # what was written before the block is untouched
    np.testing.assert_array_equal(fd.open_var(store, "tomo_000/tiltseries/kept").values, a)
