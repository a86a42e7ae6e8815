"""The xarray ways into a run store that the README documents: plain ``xr.open_zarr`` of a
group (quiet once the metadata is consolidated, never stale), and the OME-NGFF tomograms."""
from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import faket_dask as fd
from faket_dask import datamodel
from faket_dask import store as st
from faket_dask.errors import InputError
from faket_dask.store.layout import tiltseries_group, tiltseries_var, tomo_group, tomogram_group

PIX = 10.0


def tiltseries(name: str, seed: int = 0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    return datamodel.tiltseries(rng.random((3, 8, 12), dtype=np.float32), [-10.0, 0.0, 10.0], PIX, name=name)


def volume(name: str, shape=(8, 16, 12), seed: int = 0) -> xr.DataArray:
    rng = np.random.default_rng(seed)
    return datamodel.volume(rng.random(shape, dtype=np.float32), PIX, name=name)


def open_quietly(store: Path, group: str, **kw) -> tuple[xr.Dataset, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = xr.open_zarr(str(store), group=group, **kw)
    return ds, caught


def has_consolidated(store: Path) -> bool:
    return json.loads((store / "zarr.json").read_text()).get("consolidated_metadata") is not None


def test_plain_open_zarr_is_quiet_once_consolidated(tmp_path):
    store = tmp_path / "run.zarr"
    st.save(tiltseries("noiseless"), store, tiltseries_group(0))
    assert st.consolidate(store)
    ds, caught = open_quietly(store, tiltseries_group(0))
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    assert not caught
    assert list(ds.data_vars) == ["noiseless"] and ds["noiseless"].dims == ("tilt", "y", "x")
    assert np.array_equal(ds["noiseless"].values, tiltseries("noiseless").values)
    # consolidated=False is always quiet too (and never depends on the snapshot)
    ds, caught = open_quietly(store, tiltseries_group(0), consolidated=False)
    assert not caught and list(ds.data_vars) == ["noiseless"]


def test_consolidated_metadata_is_never_stale(tmp_path):
    """The protocol: a stage drops the snapshot when it starts, consolidate() renews it after."""
    store = tmp_path / "run.zarr"
    st.save(tiltseries("noiseless"), store, tiltseries_group(0))
    assert st.consolidate(store) and has_consolidated(store)
    # a stage starts: writing the root attrs without consolidated metadata drops the snapshot
    root = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    root.attrs["stages"] = {**root.attrs["stages"], tiltseries_var(0, "noisy"): {"status": "running"}}
    assert not has_consolidated(store)
    assert not st.consolidate(store)                          # refused while a stage is running
    st.save(tiltseries("noisy", 1), store, tiltseries_group(0))   # marks noisy complete
    ds, _ = open_quietly(store, tiltseries_group(0))         # no snapshot: falls back, complete
    assert sorted(ds.data_vars) == ["noiseless", "noisy"]
    assert st.consolidate(store)                              # nothing running: renewed
    ds, caught = open_quietly(store, tiltseries_group(0))
    assert not caught and sorted(ds.data_vars) == ["noiseless", "noisy"]
    assert list(zarr.open_group(str(store), mode="r")[tiltseries_group(0)].array_keys()) != []
    assert st.has_var(store, tiltseries_var(0, "noisy"))
    assert not st.consolidate(tmp_path / "missing.zarr")


@pytest.mark.skipif("consolidate" not in inspect.getsource(st.mark_stage),
                    reason="store.mark_stage does not call store.consolidate yet (lead integrates)")
def test_every_completed_save_leaves_plain_open_zarr_quiet_and_complete(tmp_path):
    store = tmp_path / "run.zarr"
    st.save(tiltseries("noiseless"), store, tiltseries_group(0))
    st.save(tiltseries("noisy", 1), store, tiltseries_group(0))
    st.save_image(volume("faket"), store, tomogram_group(0), "faket")
    ds, caught = open_quietly(store, tiltseries_group(0))
    assert not caught and sorted(ds.data_vars) == ["noiseless", "noisy"]
    st.save(tiltseries("faket", 2), store, tiltseries_group(0))
    ds, caught = open_quietly(store, tiltseries_group(0))
    assert not caught and sorted(ds.data_vars) == ["faket", "noiseless", "noisy"]


def test_tomograms_through_xarray(tmp_path):
    store = tmp_path / "run.zarr"
    faket, noisy = volume("faket", seed=1), volume("noisy", seed=2)
    st.save_image(faket, store, tomogram_group(0), "faket")
    st.save_image(noisy, store, tomogram_group(0), "noisy")

    # fd.open: one variable per modality, level 0, coordinates in Å
    ds = fd.open(store, tomogram_group(0))
    assert sorted(ds.data_vars) == ["faket", "noisy"]
    assert ds["faket"].dims == ("z", "y", "x") and ds["faket"].attrs["pixel_size_A"] == PIX
    assert np.array_equal(ds["faket"].values, faket.values)
    assert np.array_equal(ds["x"].values, faket["x"].values)
    # one image group, and a coarser level (2x2x2 block means, pixel doubled)
    one = fd.open(store, f"{tomogram_group(0)}/faket")
    assert list(one.data_vars) == ["faket"] and np.array_equal(one["faket"].values, faket.values)
    lv1 = fd.open(store, tomogram_group(0), level=1)["faket"]
    assert lv1.shape == (4, 8, 6) and lv1.attrs["pixel_size_A"] == 2 * PIX
    assert np.allclose(lv1.values, faket.values.reshape(4, 2, 8, 2, 6, 2).mean(axis=(1, 3, 5)), atol=1e-6)
    with pytest.raises(InputError, match="levels 0..2"):
        fd.open(store, tomogram_group(0), level=3)

    # plain xarray: the tomogram group itself holds no arrays, and an image group's levels
    # conflict on z, y, x, so open one level by dropping the others (no Å coordinates then)
    ds, caught = open_quietly(store, tomogram_group(0), consolidated=False)
    assert not ds.data_vars and not caught
    with pytest.raises(ValueError, match="conflicting sizes"):
        xr.open_zarr(str(store), group=f"{tomogram_group(0)}/faket", consolidated=False)
    s0, caught = open_quietly(store, f"{tomogram_group(0)}/faket", consolidated=False, drop_variables=["s1", "s2"])
    assert not caught and list(s0.data_vars) == ["s0"]
    assert np.array_equal(s0["s0"].values, faket.values)
    assert s0.attrs["ome"]["multiscales"][0]["datasets"][0]["path"] == "s0"
    assert st.consolidate(store)
    s0, caught = open_quietly(store, f"{tomogram_group(0)}/faket", drop_variables=["s1", "s2"])
    assert not caught and np.array_equal(s0["s0"].values, faket.values)


def test_open_refuses_clearly(tmp_path):
    store = tmp_path / "run.zarr"
    st.save(tiltseries("noiseless"), store, tiltseries_group(0))
    st.save_image(volume("faket"), store, tomogram_group(0), "faket")
    with pytest.raises(InputError, match=f"no group '{tomo_group(0, 'nothing')}'"):
        fd.open(store, tomo_group(0, "nothing"))
    with pytest.raises(InputError, match="level=1"):
        fd.open(store, tiltseries_group(0), level=1)
    # a variable written into an OME-NGFF image group is refused with a one-line error
    with pytest.raises(InputError, match="not a plain variable group"):
        st.save(volume("extra"), store, f"{tomogram_group(0)}/faket")


def test_a_small_group_is_read_here_without_cluster_tasks(tmp_path, client):
    """``in_memory``: numpy-backed, equal to the lazy read, and no task on the cluster (a
    ``.load()`` of the lazy group waits behind every queued task of higher priority)."""
    from distributed import get_task_stream

    store = tmp_path / "run.zarr"
    st.save(tiltseries("noiseless"), store, tiltseries_group(0))
    lazy = st.open(store, tiltseries_group(0))
    with get_task_stream(client) as ts:
        here = st.open(store, tiltseries_group(0), in_memory=True)
    assert ts.data == []
    assert all(isinstance(v.variable._data, np.ndarray) for v in here.data_vars.values())
    assert here.identical(lazy.compute())
    st.save_image(volume("faket"), store, tomogram_group(0), "faket")
    for group in (tomogram_group(0), f"{tomogram_group(0)}/faket"):
        with pytest.raises(InputError, match="holds images; in_memory is for small plain groups"):
            st.open(store, group, in_memory=True)


def _blosc_lz4(arr: zarr.Array) -> bool:
    from zarr.codecs import BloscCodec

    codecs = [c for c in arr.metadata.codecs if isinstance(c, BloscCodec)]
    return len(codecs) == 1 and codecs[0].cname.value == "lz4" and codecs[0].shuffle.value == "shuffle"


def test_every_written_array_is_blosc_lz4(tmp_path):
    """store.codecs.BLOSC on the variables, their coordinates and every tomogram level, also when
    the source came from a store written with another codec (its encoding is not inherited)."""
    store = tmp_path / "run.zarr"
    other = tmp_path / "zstd.zarr"
    ts = tiltseries("measured")
    ts.to_dataset().to_zarr(str(other), zarr_format=3, consolidated=False)  # zarr's default codec
    src = xr.open_zarr(str(other), consolidated=False)["measured"]
    assert not _blosc_lz4(zarr.open_array(str(other / "measured")))
    st.save(src, store, tiltseries_group(0))
    st.save_image(volume("faket"), store, tomogram_group(0), "faket")
    root = zarr.open_group(str(store), mode="r")
    arrays = [root[tiltseries_var(0, "measured")], root[f"{tiltseries_group(0)}/tilt"]]
    arrays += [root[f"{tomogram_group(0)}/faket/s{k}"] for k in range(3)]
    assert all(_blosc_lz4(a) for a in arrays), [a.metadata.codecs for a in arrays]
    assert np.array_equal(fd.open(store, tiltseries_group(0))["measured"].values, ts.values)


def test_open_groups_whole_tilts_per_chunk_without_changing_values_or_storage(tmp_path):
    store = tmp_path / "r.zarr"
    ts = tiltseries("measured").chunk({"tilt": 1, "y": 5})  # stored in parts of tilts
    fd.save(ts, store, "tomo_000/tiltseries")
    plain = fd.open(store, "tomo_000/tiltseries")["measured"]
    grouped = fd.open(store, "tomo_000/tiltseries", tilts_per_chunk=2)["measured"]
    n = plain.sizes["tilt"]
    assert grouped.chunks[0] == tuple(min(2, n - i) for i in range(0, n, 2))
    assert grouped.chunks[1:] == ((plain.sizes["y"],), (plain.sizes["x"],))  # whole tilts
    np.testing.assert_array_equal(grouped.values, plain.values)
    arr = zarr.open_group(str(store), mode="r")["tomo_000/tiltseries/measured"]
    assert arr.chunks[0] == 1  # what is stored is untouched


def test_a_tilt_series_is_stored_one_tilt_per_chunk_whatever_its_tasks(tmp_path):
    """``save`` writes a tilt-series one tilt per Zarr chunk (the store's layout) even when a
    task holds several tilts, so a stage writes its batches without splitting them; a volume
    keeps its dask chunks."""
    store = tmp_path / "r.zarr"
    ts = tiltseries("faket").chunk({"tilt": 3, "y": 5})
    fd.save(ts, store, "tomo_000/tiltseries")
    root = zarr.open_group(str(store), mode="r")
    assert root["tomo_000/tiltseries/faket"].chunks == (1, 5, ts.sizes["x"])
    np.testing.assert_array_equal(fd.open_var(store, "tomo_000/tiltseries/faket").values, ts.values)
    vol = volume("density").chunk({"z": 4})
    fd.save(vol, store, "tomo_000/specimen")
    assert zarr.open_group(str(store), mode="r")["tomo_000/specimen/density"].chunks[0] == 4


def test_listing_a_group_while_zarr_writes_its_metadata_is_quiet(tmp_path):
    """zarr writes ``zarr.json`` through a temporary ``zarr.<uuid hex>.partial`` beside it; a
    stage listing that group meanwhile (stages run in threads) must neither warn nor miss a
    member. The temporary files are left in place here, as at the instant of the race. Run in
    a fresh interpreter: the store's warning filters are process-wide, and pytest restores its
    own filters after collection."""
    import subprocess
    import sys
    import uuid

    store = tmp_path / "run.zarr"
    st.save(tiltseries("noiseless"), store, tiltseries_group(0))
    st.save(tiltseries("noisy", seed=1), store, tiltseries_group(0))
    for group_dir in (store, store / "tomo_000", store / tiltseries_group(0)):
        (group_dir / "zarr.json").with_suffix(f".{uuid.uuid4().hex}.partial").write_bytes(b"{")
    script = ("import sys, faket_dask as fd\n"
              "print(sorted(fd.open(sys.argv[1], sys.argv[2]).data_vars))\n")

    def open_group() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script, str(store), tiltseries_group(0)],
                              capture_output=True, text=True, timeout=300)

    proc = open_group()
    assert proc.returncode == 0 and "Warning" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() == "['noiseless', 'noisy']", proc.stdout
    # a file of another kind is still reported: the filter is no wider than zarr's temporary name
    (store / tiltseries_group(0) / "notes.txt").write_text("x")
    proc = open_group()
    assert proc.returncode == 0 and "notes.txt is not recognized" in proc.stderr, proc.stderr
