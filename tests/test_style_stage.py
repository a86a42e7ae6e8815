"""The Dask style-transfer stage (``docs/method.md §4``) against the golden file, the in-memory kernel,
itself under other chunkings and clusters, with cached Grams, tiled, and on bad input.

Random VGG-19 weights only (no downloads). Exactness: on CPU the stage fixes the algorithm,
runs one tilt per kernel pass with one torch thread, so its output is *bit-identical* for any
chunking, task grouping and cluster, and equal to ``style_transfer_stack(batch=1, streams=1)``
run single-threaded.
"""
from __future__ import annotations

import dask
import numpy as np
import pytest
import torch
import xarray as xr

import faket_dask as fd
from faket_dask.datamodel import tiltseries
from faket_dask.errors import InputError, OutputExistsError
from faket_dask.kernels import nst
from faket_dask.stages import style_grams as sgr
from faket_dask.store.layout import style_grams_group

RANDOM = {"weights": "random", "seed": 0}


def _ts(a: np.ndarray, name: str, chunks: dict | None = None, source: str | None = None) -> xr.DataArray:
    out = tiltseries(a, np.linspace(-60.0, 60.0, a.shape[0]), 10.0, name=name)
    if source:
        out.attrs["source"] = source
    return out.chunk(chunks or {"tilt": 1})


def _smooth_stack(t: int, h: int, w: int, seed: int, offset: float = 0.0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    a = gaussian_filter(rng.standard_normal((t, h, w)), sigma=(0, 2, 2))
    return (a / a.std() + 0.5 * rng.standard_normal((t, h, w)) + offset).astype(np.float32)


def _local(arr: xr.DataArray) -> np.ndarray:
    """Compute on local threads, whatever distributed client a fixture has made default."""
    return np.asarray(dask.compute(arr.data, scheduler="threads")[0])


@pytest.fixture(scope="module")
def gold(golden):
    return golden("style_transfer")


@pytest.fixture(scope="module")
def gold_inputs(gold):
    """Golden stacks, chunked (1, 16, 64): each tilt's task concatenates four y-chunks."""
    ch = {"tilt": 1, "y": 16}
    return (_ts(gold["content"], "content", ch), _ts(gold["style"], "style", ch,
            source="tomo_001/tiltseries/measured"), _ts(gold["init"], "noisy", ch))


@pytest.fixture(scope="module")
def gold_out(gold_inputs):
    out = fd.style_transfer(*gold_inputs, **RANDOM)
    return out, _local(out)


def test_golden_through_the_stage(gold, gold_inputs, gold_out):
    """Acceptance: |out − golden| ≤ 1e-3 × the tilt's std for ≥ 99.9 % of the pixels."""
    arr, out = gold_out
    ref = gold["styled"].astype(np.float64)
    err = np.abs(out - ref) / ref.std(axis=(1, 2), keepdims=True)
    frac = float((err <= 1e-3).mean())
    print(f"golden via stage: {frac:.5%} within 1e-3 std ({int((err > 1e-3).sum())} of "
          f"{err.size} pixels outside), max {err.max():.2e} std, median {np.median(err):.1e} std")
    assert frac >= 0.999
    assert np.median(err) < 1e-5
    s = gold["style"].astype(np.float64)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), s.mean(axis=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), s.std(axis=(1, 2)), rtol=1e-5)
    # a lazy, labelled result with the content's chunks, coords and provenance
    assert arr.name == "faket" and arr.dtype == np.float32 and arr.dims == ("tilt", "y", "x")
    assert arr.data.chunks == gold_inputs[0].data.chunks and arr.data.chunks[1] == (16,) * 4
    np.testing.assert_array_equal(arr["tilt"].values, np.linspace(-60.0, 60.0, 5))
    assert arr.attrs["style"] == "tomo_001/tiltseries/measured"
    assert arr.attrs["nst_weights"] == "random" and arr.attrs["nst_seed"] == 0
    assert arr.attrs["nst_algorithm"] == "direct" and arr.attrs["nst_tile"] is None
    assert arr.attrs["pixel_size_A"] == 10.0


def test_stage_equals_kernel(gold, gold_out):
    """Bit for bit the in-memory kernel run one tilt per pass, single-threaded."""
    vgg = nst.get_vgg("random", 0)
    with nst.nst_runtime("fp32", "cpu", threads=1):
        want = nst.style_transfer_stack(gold["content"], gold["style"], gold["init"], vgg,
                                      batch=1, streams=1, algorithm="direct")
    np.testing.assert_array_equal(gold_out[1], want)


def test_bit_identical_for_chunking_batch_and_cluster(gold, gold_out, client):
    """Other input chunks, 2 tilts per task, 2 single-threaded worker processes; then one
    worker with 2 threads (in-process, reused threads): the same bits."""
    from distributed import Client, LocalCluster

    ch = {"tilt": 2, "y": 32}
    other = fd.style_transfer(_ts(gold["content"], "content", ch),
                              _ts(gold["style"], "style", {"tilt": 3}),
                              _ts(gold["init"], "noisy", {"tilt": -1}), batch=2, **RANDOM)
    assert other.data.chunks[0] == (2, 2, 1)
    np.testing.assert_array_equal(client.compute(other.data).result(), gold_out[1])
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as lc, \
            Client(lc, set_as_default=False) as c2:
        np.testing.assert_array_equal(c2.compute(gold_out[0].data).result(), gold_out[1])


def test_cached_grams_reused(tmp_path):
    """Non-square tilts; Grams saved in a store, loaded and reused: identical output;
    grams_match follows the settings; incomplete caches are not trusted."""
    t, h, w = 3, 48, 80
    content = _ts(_smooth_stack(t, h, w, 1), "content", {"tilt": 1, "y": 24})
    style = _ts(_smooth_stack(t, h, w, 2, offset=3.0), "measured", source="tomo_001/tiltseries/measured")
    init = _ts(_smooth_stack(t, h, w, 3), "noisy", {"tilt": 1, "y": 24})
    direct = fd.style_transfer(content, style, init, **RANDOM)

    ds = fd.style_grams_dataset(style, **RANDOM)
    assert ds["gram_1"].dims == ("tilt", "gram_1_i", "gram_1_j") and ds["gram_29"].shape == (t, 512, 512)
    # small tilts go several to a task: 2**16 // (48 * 80) = 17 >= 3 tilts, one task
    assert ds["gram_1"].data.chunks[0] == (3,) and ds["style_std"].dtype == np.float64
    assert fd.style_grams_dataset(style, **RANDOM, batch=1)["gram_1"].data.chunks[0] == (1, 1, 1)
    assert ds.attrs["source"] == "tomo_001/tiltseries/measured" and ds.attrs["style_shape"] == [t, h, w]
    store = tmp_path / "run.zarr"
    group = style_grams_group("tomo_001/tiltseries/measured")
    assert group == "style_grams/tomo_001_tiltseries_measured"
    fd.save(style, store, "tomo_001/tiltseries", name="measured")
    assert sgr.load_style_grams(store, group) is None
    sgr.save_style_grams(ds, store, group)
    with pytest.raises(OutputExistsError):
        sgr.save_style_grams(ds, store, group)
    loaded = sgr.load_style_grams(store, group)
    assert loaded is not None and loaded.attrs["weights"] == "random"
    np.testing.assert_array_equal(loaded["style_mean"].values,
                                  style.values.astype(np.float64).mean(axis=(1, 2)))

    assert sgr.grams_match(loaded, style=style, **RANDOM)
    assert not sgr.grams_match(loaded, weights="random", seed=1)
    assert not sgr.grams_match(loaded, precision="bf16", **RANDOM)
    assert not sgr.grams_match(loaded, tile=32, **RANDOM)
    shifted = style + 1.0
    shifted.attrs.update(style.attrs)
    assert not sgr.grams_match(loaded, style=shifted, **RANDOM)  # same name, other values

    reused = fd.style_transfer(content, loaded, init, **RANDOM)
    a, b = dask.compute(direct.data, reused.data, scheduler="threads")
    assert a.shape == (t, h, w)
    np.testing.assert_array_equal(a, b)
    assert reused.data.chunks == content.data.chunks
    assert reused.attrs["style"] == "tomo_001/tiltseries/measured"
    with pytest.raises(InputError, match="other settings"):
        fd.style_transfer(content, loaded, init, weights="random", seed=1)

    fd.store.mark_stage(store, group, status="running")  # as after an interrupted write
    assert sgr.load_style_grams(store, group) is None


@pytest.mark.slow
def test_tiled_equals_untiled_512x384():
    """Acceptance: tile 256 on 512 × 384 tilts agrees with the whole-tilt path within
    1e-4 × std (up to isolated flipped sign steps, ≤ 0.1 % of the pixels)."""
    t = 2
    content = _ts(_smooth_stack(t, 512, 384, 4), "content", {"tilt": 1, "y": 128})
    style = _ts(_smooth_stack(t, 512, 384, 6), "style")
    init = _ts(_smooth_stack(t, 512, 384, 5), "noisy", {"tilt": 1, "y": 128})
    full = fd.style_transfer(content, style, init, **RANDOM)
    tiled = fd.style_transfer(content, style, init, tile=256, **RANDOM)
    assert tiled.attrs["nst_tile"] == 256
    a, b = dask.compute(full.data, tiled.data, scheduler="threads")
    d = np.abs(b.astype(np.float64) - a) / a.std(axis=(1, 2), keepdims=True)
    frac_bad = float((d > 1e-4).mean())
    print(f"tiled 512x384 tile 256 [{full.attrs['nst_algorithm']}]: {frac_bad:.4%} of pixels "
          f"beyond 1e-4 std, max {d.max():.2e} std")
    assert frac_bad <= 1e-3


def test_errors_before_any_work(gold, tmp_path, monkeypatch):
    c = _ts(gold["content"], "content")
    s = _ts(gold["style"], "measured", source="tomo_001/tiltseries/measured")
    x = _ts(gold["init"], "noisy")
    with pytest.raises(InputError, match=r"style stack 'tomo_001/tiltseries/measured' has angles "
                                         r"-60..30 \(4 tilts, step 30\) but content 'content' has "
                                         r"-60..60 \(5 tilts"):
        fd.style_transfer(c, s[:4], x, **RANDOM)
    # without angles on either side, tilt i styles tilt i: then the counts must agree
    with pytest.raises(InputError, match=r"has 4 tilts but content 'content' has 5"):
        fd.style_transfer(c, s[:4].drop_vars("tilt"), x, **RANDOM)
    with pytest.raises(InputError, match="shape"):
        fd.style_transfer(c, s, x[:, :32], **RANDOM)
    for bad in (40, 0, -16, 24.0):
        with pytest.raises(InputError, match="multiple of 16"):
            fd.style_transfer(c, s, x, tile=bad, **RANDOM)
    with pytest.raises(InputError, match="precision"):
        fd.style_transfer(c, s, x, precision="fp16", **RANDOM)
    with pytest.raises(InputError, match="dims"):
        fd.style_transfer(c.transpose("y", "tilt", "x"), s, x, **RANDOM)
    with pytest.raises(InputError, match="batch"):
        fd.style_transfer(c, s, x, batch=0, **RANDOM)
    with pytest.raises(InputError, match="missing.pth: VGG-19 weights file not found"):
        fd.style_transfer(c, s, x, weights=tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(InputError, match="bad.pth"):
        fd.style_transfer(c, s, x, weights=bad)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    with pytest.raises(InputError, match="faket-dask fetch-weights") as info:
        fd.style_transfer(c, s, x, weights="imagenet")
    assert "\n" not in str(info.value)
    # values: found by the eager input-range reduction, before the per-tilt graph is built
    nan = gold["init"].copy()
    nan[2, 3, 4] = np.nan
    with pytest.raises(InputError, match="'noisy' has NaN"):
        fd.style_transfer(c, s, _ts(nan, "noisy"), **RANDOM)
    with pytest.raises(InputError, match="constant"):
        fd.style_transfer(_ts(np.ones_like(gold["content"]), "content"), s, x, **RANDOM)


def test_extrema_are_exact_over_blocks_and_refuse_nan_and_constant_stacks():
    import dask.array as da

    from faket_dask.stages.style_settings import extrema

    rng = np.random.default_rng(3)
    a = rng.normal(0, 1, (7, 20, 24)).astype(np.float32)
    a[5, 13, 2], a[1, 0, 23] = -9.5, 7.25  # the extremes sit in different blocks
    lazy = xr.DataArray(da.from_array(a, chunks=(2, 7, 9)), dims=("tilt", "y", "x"))
    eager = xr.DataArray(a + 1, dims=("tilt", "y", "x"))
    assert extrema([lazy, eager], ["a", "b"]) == [(-9.5, 7.25), (-8.5, 8.25)]
    bad = a.copy()
    bad[6, 19, 0] = np.nan
    with pytest.raises(InputError, match="'noisy' has NaN or inf"):
        extrema([lazy, xr.DataArray(da.from_array(bad, chunks=(3, 20, 24)), dims=("tilt", "y", "x"))],
                ["content", "noisy"])
    with pytest.raises(InputError, match="'flat' is constant"):
        extrema([xr.DataArray(np.full((3, 4, 4), 2.0, np.float32), dims=("tilt", "y", "x"))], ["flat"])
