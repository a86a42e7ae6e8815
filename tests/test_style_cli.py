"""``faket-dask style`` and ``faket-dask fetch-weights``: the console script end to end (joining
the session's cluster), checked against the library; user errors are one line, exit 2, no
traceback, nothing written. No downloads: offline behaviour is checked with an empty
``TORCH_HOME`` and a patched fetch."""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import dask
import numpy as np
import pytest
import torch
import xarray as xr

import faket_dask as fd
from faket_dask import cli, store
from faket_dask.datamodel import tiltseries
from faket_dask.kernels import nst
from faket_dask.stages import style_grams as sgr
from faket_dask.store.layout import style_grams_group

EXE = str(Path(sys.executable).with_name("faket-dask"))
STYLE = "tomo_001/tiltseries/measured"
GRAMS = style_grams_group(STYLE)


def run_cli(*args, **env) -> subprocess.CompletedProcess:
    e = dict(os.environ, FAKET_PROGRESS="0", **env)
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=e, timeout=300)


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def assert_one_line_error(err: str, *needles: str) -> None:
    err = err.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("faket-dask: error:"), err
    for n in needles:
        assert n in err, err


def main_exit(argv: list[str], capsys) -> tuple[int, str, str]:
    """``faket-dask ARGV`` in this process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def _ts(a: np.ndarray, name: str) -> xr.DataArray:
    return tiltseries(a, np.linspace(-60.0, 60.0, a.shape[0]), 10.0, name=name).chunk({"tilt": 1, "y": 32})


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def gold(golden):
    return golden("style_transfer")


@pytest.fixture(scope="module")
def run(tmp_path_factory, gold):
    """tomo_000 (content, noisy: golden, 5 tilts), tomo_001's measured = the golden style,
    tomo_002's measured with 4 tilts."""
    path = tmp_path_factory.mktemp("style_cli") / "run.zarr"
    fd.save(_ts(gold["content"], "content"), path, "tomo_000/tiltseries")
    fd.save(_ts(gold["init"], "noisy"), path, "tomo_000/tiltseries")
    fd.save(_ts(gold["style"], "measured"), path, "tomo_001/tiltseries")
    fd.save(_ts(gold["style"][:4], "measured"), path, "tomo_002/tiltseries")
    return path


@pytest.fixture(scope="module")
def expected(gold):
    """The library's result with random weights (seed 0), computed on local threads."""
    c, s, x = _ts(gold["content"], "content"), _ts(gold["style"], "measured"), _ts(gold["init"], "noisy")
    out = fd.style_transfer(c, s, x, weights="random", seed=0)
    return np.asarray(dask.compute(out.data, scheduler="threads")[0])


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """``torch.manual_seed(0); torchvision.models.vgg19(weights=None)``'s state dict."""
    import torchvision

    path = tmp_path_factory.mktemp("weights") / "vgg19_seed0.pth"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(torchvision.models.vgg19(weights=None).state_dict(), path)
    return path


def _faket(path: Path) -> np.ndarray:
    return store.open_var(path, "tomo_000/tiltseries/faket").values


def test_style_end_to_end_then_exists_then_weights_file(run, expected, gold, weights_file,
                                                        client, capsys):
    sched = client.scheduler.address
    base = ["style", run, "--tomo", 0, "--style", STYLE, "--scheduler", sched]
    proc = run_cli(*base, "--weights", "random", "--seed", 0)
    assert_ok(proc)
    assert f"computed style Grams -> {run}/{GRAMS}" in proc.stdout
    assert "wrote" in proc.stdout and "tomo_000/tiltseries/faket (5, 64, 64)" in proc.stdout
    got = _faket(run)
    np.testing.assert_array_equal(got, expected)
    err = np.abs(got - gold["styled"]) / gold["styled"].std(axis=(1, 2), keepdims=True)
    assert float((err <= 1e-3).mean()) >= 0.999
    status = store.stage_status(run)
    assert status["tomo_000/tiltseries/faket"]["status"] == "complete"
    assert status["tomo_000/tiltseries/faket"]["weights"] == "random"
    assert status[GRAMS]["status"] == "complete"
    faket = store.open_var(run, "tomo_000/tiltseries/faket")
    assert faket.attrs["style"] == STYLE and faket.attrs["nst_weights"] == "random"

    # the output exists: refused before any work, the store untouched
    before = snapshot(run)
    code, _, err = main_exit([str(a) for a in base] + ["--weights", "random"], capsys)
    assert code == 2
    assert_one_line_error(err, "tomo_000/tiltseries/faket exists", "--overwrite")
    assert snapshot(run) == before

    # a torchvision state-dict file of the same network: another weights key, so the Grams
    # are recomputed (that cache group only), and the same bits as --weights random --seed 0
    proc = run_cli(*base, "--weights", weights_file, "--overwrite")
    assert_ok(proc)
    assert "computed style Grams" in proc.stdout
    np.testing.assert_array_equal(_faket(run), expected)
    assert sgr.load_style_grams(run, GRAMS).attrs["weights"] == str(weights_file.resolve())
    # unchanged settings: the cached Grams are reused (in this process, same cluster)
    code, out, err = main_exit([str(a) for a in base] + ["--weights", str(weights_file), "--overwrite"], capsys)
    assert code == 0, err
    assert f"reusing style Grams {run}/{GRAMS}" in out
    np.testing.assert_array_equal(_faket(run), expected)


def test_imagenet_offline_is_one_line(run, tmp_path, capsys, monkeypatch):
    """Default weights = imagenet; not cached under TORCH_HOME: exit 2 before any work."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    before = snapshot(run)
    code, _, err = main_exit(["style", str(run), "--style", STYLE, "--overwrite"], capsys)
    assert code == 2
    assert_one_line_error(err, "faket-dask fetch-weights", str(tmp_path))
    assert snapshot(run) == before


def test_bad_input_errors(run, tmp_path, capsys):
    cases = [
        (["--style", "tomo_002/tiltseries/measured"],
         ["style stack 'tomo_002/tiltseries/measured' has angles -60..60 (4 tilts, step 40) but content 'content' has -60..60 (5 tilts", "--match-angles nearest"]),
        (["--style", STYLE, "--tile", "40"], ["multiple of 16"]),
        (["--style", STYLE, "--precision", "fp16"], ["--precision"]),
        (["--style", "tomo_001/tiltseries/nothing"], ["no variable 'nothing'"]),
        (["--style", STYLE, "--tomo", "7"], ["no group 'tomo_007/tiltseries'"]),
        (["--style", STYLE, "--weights", str(tmp_path / "nope.pth")], ["nope.pth", "not found"]),
    ]
    before = snapshot(run)
    for extra, needles in cases:
        code, _, err = main_exit(["style", str(run), "--weights", "random", *extra], capsys)
        assert code == 2, (extra, err)
        assert_one_line_error(err, *needles)
    code, _, err = main_exit(["style", str(tmp_path / "none.zarr"), "--style", STYLE], capsys)
    assert code == 2 and "no such store" in err
    assert snapshot(run) == before


def test_fetch_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(progress=True):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(nst, "fetch_imagenet_weights", offline)
    code, out, err = main_exit(["fetch-weights"], capsys)
    assert code == 2
    assert_one_line_error(err, "cannot download", "faket-dask fetch-weights", "internet")

    path = nst.imagenet_weights_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"cached")
    code, out, err = main_exit(["fetch-weights"], capsys)
    assert code == 0 and f"already cached: {path}" in out


def test_style_reuses_the_grams_of_a_simulate_run(tmp_path, reference_run):
    """The pipeline and ``faket-dask style`` share the one Gram-cache key
    (``store.layout.style_grams_group`` of the style stack's GROUP/VAR): restyling a simulated
    tomogram with the pipeline's settings reuses the Grams the run saved."""
    import shutil

    from pipeline_helpers import TINY, cli

    # a copy of the session's simulate run of the TINY config (2 workers), restyled in place
    out = tmp_path / "run.zarr"
    shutil.copytree(reference_run["out"] / "run.zarr", out)
    grams = style_grams_group(STYLE)
    assert store.stage_status(out)[grams]["status"] == "complete"
    before = store.open_var(out, "tomo_000/tiltseries/faket").values
    proc = cli("style", out, "--tomo", 0, "--style", STYLE, "--weights", "random",
               "--seed", TINY["seed"], "--overwrite", "--workers", "2")
    assert_ok(proc)
    assert f"reusing style Grams {out}/{grams}" in proc.stdout, proc.stdout
    # same Grams, same settings: the CLI restyles tomo_000 bit for bit as the pipeline did
    np.testing.assert_array_equal(store.open_var(out, "tomo_000/tiltseries/faket").values, before)
