"""``faket-dask noise estimate|apply``: the real console script in a subprocess, checked against
the library; user errors are one line, no traceback, nothing half-written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import faket_dask as fd
from faket_dask import store
from faket_dask.datamodel import tiltseries
from faket_dask.noise_model import NoiseModel
from faket_dask.params import NoiseParams
from faket_dask.stages import noise as sn

EXE = str(Path(sys.executable).with_name("faket-dask"))
T = 11  # tilts of the references and of tomo_000 (golden subset: quick, same code paths)
MEASURED = "reference/style_000/measured"
NOISELESS = "reference/style_000/noiseless"


def run_cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, FAKET_PROGRESS="0")
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=180)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("faket-dask: error:"), err
    for n in needles:
        assert n in err, err


def _ts(a: np.ndarray, name: str) -> xr.DataArray:
    return tiltseries(a, np.linspace(-60.0, 60.0, a.shape[0]), 10.0, name=name).chunk({"tilt": 1})


@pytest.fixture(scope="module")
def run(tmp_path_factory, golden):
    """A run store with a reference pair, tomo_000 (T tilts), tomo_001 (15 tilts) and
    tomo_002 (T tilts, tilt 3 constant)."""
    assert T != 15
    ref = golden("noise_estimation")
    path = tmp_path_factory.mktemp("noise_cli") / "run.zarr"
    store.save(_ts(ref["measured"][:T], "measured"), path, "reference/style_000")
    store.save(_ts(ref["noiseless"][:T], "noiseless"), path, "reference/style_000")
    store.save(_ts(ref["noiseless"][T : 2 * T], "noiseless"), path, store.tomo_group(0, "tiltseries"))
    store.save(_ts(ref["noiseless"][:15], "noiseless"), path, store.tomo_group(1, "tiltseries"))
    flat = ref["noiseless"][:T].copy()
    flat[3] = 1.0
    store.save(_ts(flat, "noiseless"), path, store.tomo_group(2, "tiltseries"))
    return path


@pytest.fixture(scope="module")
def estimated(run):
    proc = run_cli("noise", "estimate", run, "--measured", MEASURED, "--noiseless", NOISELESS, "--workers", "1")
    return proc


def test_estimate_writes_model_json_and_figure(run, estimated):
    assert_ok(estimated)
    assert f"method: paired (1 reference(s), {T} tilts)" in estimated.stdout
    assert "order 2: r " in estimated.stdout and "order 0: r " in estimated.stdout
    want = fd.estimate_noise(
        [store.open_var(run, MEASURED)], [store.open_var(run, NOISELESS)], order=2,
        sources=[MEASURED], noiseless_sources=[NOISELESS],
    )
    got = NoiseModel.load(run)
    assert got.raw.identical(want.raw) and got.curves.identical(want.curves)
    assert got.sources == ({"measured": MEASURED, "noiseless": NOISELESS},)
    ds = xr.open_zarr(run, group="noise_model", consolidated=False, zarr_format=3)
    assert ds["order"].values.tolist() == [2, 0]
    assert NoiseModel.load(run, order=0).curves.identical(want.with_order(0).curves)
    js = run.parent / "run_noise_model.json"
    assert json.loads(js.read_text())["format"] == "faket-dask/noise-model"
    assert NoiseModel.from_json(js).curves.identical(want.curves)
    png = run.parent / "run_noise_curves.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert store.stage_status(run)["noise_model"]["status"] == "complete"


def test_the_noise_model_is_read_without_cluster_tasks(run, estimated, client):
    """The noise stages read the model here: through the cluster, at Dask's default priority,
    the read waited behind the style Grams (~20 s in the demo)."""
    from distributed import get_task_stream

    with get_task_stream(client) as ts:
        got = NoiseModel.load(run)
    assert ts.data == [] and got.curves.identical(NoiseModel.load(run, order=2).curves)


def test_estimate_refuses_to_overwrite(run, estimated):
    assert_ok(estimated)
    proc = run_cli("noise", "estimate", run, "--measured", MEASURED, "--noiseless", NOISELESS)
    assert_one_line_error(proc, "noise_model", "--overwrite")


def test_apply_writes_the_modalities(run, estimated, client):
    assert_ok(estimated)
    # joins the test session's cluster (--scheduler): no cluster start-up in the subprocess
    proc = run_cli(
        "noise", "apply", run, "--tomo", "0", "--modalities", "noisy,content,baseline", "--seed", "7",
        "--scheduler", client.scheduler.address,
    )
    assert_ok(proc)
    for name in ("noisy", "content", "baseline"):
        assert f"wrote {run}/tomo_000/tiltseries/{name}" in proc.stdout
    ds = fd.open(run, "tomo_000/tiltseries")
    model = NoiseModel.load(run)
    for name in ("noisy", "content", "baseline"):
        want = sn.add_noise_modality(ds["noiseless"], model, name, seed=7, tomo=0).values
        got = ds[name].values
        assert got.dtype == np.float32 and np.array_equal(got, want), name
        assert ds[name].chunks == ds["noiseless"].chunks
        st = store.stage_status(run)[f"tomo_000/tiltseries/{name}"]
        assert st["status"] == "complete" and st["seed"] == 7 and st["modality"] == name
    # existing outputs are not replaced without --overwrite
    again = run_cli("noise", "apply", run, "--modalities", "content", "--seed", "7")
    assert_one_line_error(again, "tomo_000/tiltseries/content", "--overwrite")


def test_apply_orders_and_scales_agree_with_simulate(run, estimated, client):
    """`noise apply --content-scale ...` makes the modality with the function `simulate` uses
    (add_noise_modality with the config's noise settings), so a changed scale agrees too."""
    assert_ok(estimated)
    proc = run_cli(
        "noise", "apply", run, "--tomo", "3", "--input", "tomo_000/tiltseries/noiseless",
        "--modalities", "content,baseline", "--seed", "7", "--order", "1", "--baseline-order", "2",
        "--content-scale", "0.5", "--baseline-scale", "0.75", "--scheduler", client.scheduler.address,
    )
    assert_ok(proc)
    params = NoiseParams(order=1, baseline_order=2, content_scale=0.5, baseline_scale=0.75)
    p = store.open_var(run, "tomo_000/tiltseries/noiseless")
    model = NoiseModel.load(run)
    ds = fd.open(run, "tomo_003/tiltseries")
    for name, order, scale in (("content", 1, 0.5), ("baseline", 2, 0.75)):
        want = sn.add_noise_modality(p, model, name, seed=7, tomo=3, params=params).values
        assert np.array_equal(ds[name].values, want), name
        st = store.stage_status(run)[f"tomo_003/tiltseries/{name}"]
        assert (st["order"], st["scale"]) == (order, scale)


def test_apply_constant_tilt_fails_cleanly(run, estimated):
    assert_ok(estimated)
    proc = run_cli("noise", "apply", run, "--tomo", "2", "--modalities", "noisy", "--workers", "1")
    assert_one_line_error(proc, "tomo_002/tiltseries/noiseless: tilt 4 of 11 (-24°) is constant")
    assert not store.has_var(run, "tomo_002/tiltseries/noisy")
    assert "tomo_002/tiltseries/noisy" not in store.stage_status(run)  # refused before any work


def test_unpaired_estimate(run, tmp_path, client):
    proc = run_cli(
        "noise", "estimate", run, "--measured", MEASURED, "--group", "noise_unpaired", "--order", "2",
        "--json", tmp_path / "unpaired.json", "--figure", tmp_path / "unpaired.png",
        "--scheduler", client.scheduler.address,
    )
    assert_ok(proc)
    assert "method: unpaired" in proc.stdout
    model = NoiseModel.load(run, "noise_unpaired")
    assert model.method == "unpaired" and model.params["band_nyquist"] == [0.6, 1.0]
    assert (tmp_path / "unpaired.png").exists()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--measured", MEASURED, "--noiseless", NOISELESS, "--noiseless", NOISELESS], ["1 --measured but 2 --noiseless"]),
        (["--measured", "tomo_001/tiltseries/noiseless", "--noiseless", NOISELESS], ["tomo_001/tiltseries/noiseless", "shape"]),
        (["--measured", "tomo_002/tiltseries/noiseless", "--noiseless", NOISELESS], ["tomo_002/tiltseries/noiseless: tilt 4 of 11 (-24°) is constant"]),
        (["--measured", MEASURED, "--band", "0.9", "0.95"], ["widen"]),
    ],
)
def test_estimate_user_errors(run, tmp_path, args, needles):
    files = ["--json", tmp_path / "m.json", "--figure", tmp_path / "m.png"]
    assert_one_line_error(run_cli("noise", "estimate", run, "--group", "never", *files, *args), *needles)
    assert not list(tmp_path.iterdir())
    assert "never" not in [g for g, _ in store.open_root(run).groups()]


def test_estimate_missing_store(tmp_path):
    proc = run_cli("noise", "estimate", tmp_path / "none.zarr", "--measured", MEASURED)
    assert_one_line_error(proc, "none.zarr", "no such store")
    assert not (tmp_path / "none.zarr").exists()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--tomo", "1"], ["but tilt-series 'noiseless' has -60..60 (15 tilts", "--match-angles nearest"]),
        (["--modalities", "noisy,loud"], ["unknown noise modality 'loud'"]),
        (["--model-group", "elsewhere"], ["no noise model in group 'elsewhere'"]),
        (["--order", "11"], ["--order", "less than or equal to 10"]),
    ],
)
def test_apply_user_errors(run, estimated, args, needles):
    assert_ok(estimated)
    assert_one_line_error(run_cli("noise", "apply", run, *args), *needles)
