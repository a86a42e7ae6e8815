"""Bad inputs: non-zero exit, one line naming the file and the problem, no traceback, nothing
half-written or overwritten. Runs the real console script in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from faket_dask.store.layout import tiltseries_var

from conftest import write_mrc

EXE = str(Path(sys.executable).with_name("faket-dask"))


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, FAKET_PROGRESS="0")
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr
    assert len(err.splitlines()) == 1, err
    assert err.startswith("faket-dask: error:"), err
    for n in needles:
        assert n in err, err


@pytest.fixture()
def ts_mrc(tmp_path):
    return write_mrc(tmp_path / "ts.mrc", np.random.default_rng(0).random((5, 8, 8), dtype=np.float32))


def test_missing_file(tmp_path):
    run = tmp_path / "run.zarr"
    proc = run_cli("import-mrc", tmp_path / "nope.mrc", run, tiltseries_var(0, "measured"), "--angles", "-4", "4", "2")
    assert_one_line_error(proc, "nope.mrc", "no such file")
    assert not run.exists()


def test_not_an_mrc(tmp_path):
    bad = tmp_path / "notes.mrc"
    bad.write_text("hello, I am a text file\n" * 100)
    run = tmp_path / "run.zarr"
    proc = run_cli("import-mrc", bad, run, tiltseries_var(0, "measured"), "--angles", "-4", "4", "2")
    assert_one_line_error(proc, "notes.mrc", "not a valid MRC file")
    assert not run.exists()


def test_corrupt_header(tmp_path, ts_mrc):
    raw = bytearray(ts_mrc.read_bytes())
    raw[208:212] = b"XXXX"  # the MAP identifier
    ts_mrc.write_bytes(bytes(raw))
    proc = run_cli("import-mrc", ts_mrc, tmp_path / "run.zarr", "t/ts/m", "--angles", "-4", "4", "2")
    assert_one_line_error(proc, "ts.mrc", "not a valid MRC file")


def test_truncated_file(tmp_path, ts_mrc):
    raw = ts_mrc.read_bytes()
    ts_mrc.write_bytes(raw[: len(raw) - 100])
    proc = run_cli("import-mrc", ts_mrc, tmp_path / "run.zarr", "t/ts/m", "--angles", "-4", "4", "2")
    assert_one_line_error(proc, "ts.mrc")
    assert not (tmp_path / "run.zarr").exists()


def test_2d_as_tiltseries(tmp_path):
    img = write_mrc(tmp_path / "image.mrc", np.zeros((8, 8), np.float32))
    proc = run_cli("import-mrc", img, tmp_path / "run.zarr", "t/ts/m", "--angles", "0", "0", "1")
    assert_one_line_error(proc, "image.mrc", "2D", "3 dimensions")
    assert not (tmp_path / "run.zarr").exists()


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf(tmp_path, value):
    data = np.zeros((5, 8, 8), np.float32)
    data[3, 2, 1] = value
    src = write_mrc(tmp_path / "bad.mrc", data)
    proc = run_cli("import-mrc", src, tmp_path / "run.zarr", "t/ts/m", "--angles", "-4", "4", "2")
    assert_one_line_error(proc, "bad.mrc", "NaN or inf", "tilt 4 of 5, counting from 1")
    assert not (tmp_path / "run.zarr").exists()


def test_angle_count_mismatch(tmp_path, ts_mrc):
    proc = run_cli("import-mrc", ts_mrc, tmp_path / "run.zarr", "t/ts/m", "--angles", "-60", "60", "2")
    assert_one_line_error(proc, "ts.mrc", "5 tilts", "61 tilt angles")
    tlt = tmp_path / "a.tlt"
    tlt.write_text("-3\n0\n3\n")
    proc = run_cli("import-mrc", ts_mrc, tmp_path / "run.zarr", "t/ts/m", "--angles-file", tlt)
    assert_one_line_error(proc, "ts.mrc", "3 tilt angles")
    assert not (tmp_path / "run.zarr").exists()


def test_missing_angles(tmp_path, ts_mrc):
    proc = run_cli("import-mrc", ts_mrc, tmp_path / "run.zarr", "t/ts/m")
    assert_one_line_error(proc, "ts.mrc", "no tilt angles")


def test_import_into_existing_variable_refused(tmp_path, ts_mrc):
    run = tmp_path / "run.zarr"
    ok = run_cli("import-mrc", ts_mrc, run, "t/ts/m", "--angles", "-4", "4", "2")
    assert ok.returncode == 0, ok.stderr
    before = sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file())
    proc = run_cli("import-mrc", ts_mrc, run, "t/ts/m", "--angles", "-4", "4", "2")
    assert_one_line_error(proc, "run.zarr", "t/ts/m exists", "--overwrite")
    after = sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file())
    assert before == after


def test_export_target_exists(tmp_path, ts_mrc):
    run = tmp_path / "run.zarr"
    assert run_cli("import-mrc", ts_mrc, run, "t/ts/m", "--angles", "-4", "4", "2").returncode == 0
    dest = tmp_path / "out.mrc"
    dest.write_bytes(b"precious")
    proc = run_cli("export-mrc", run, "t/ts/m", dest)
    assert_one_line_error(proc, "out.mrc", "exists", "--overwrite")
    assert dest.read_bytes() == b"precious"
    ok = run_cli("export-mrc", run, "t/ts/m", dest, "--overwrite")
    assert ok.returncode == 0, ok.stderr
    with mrcfile.open(dest) as mrc:
        assert mrc.data.shape == (5, 8, 8)


def test_unknown_group_or_variable(tmp_path, ts_mrc):
    run = tmp_path / "run.zarr"
    assert run_cli("import-mrc", ts_mrc, run, "t/ts/m", "--angles", "-4", "4", "2").returncode == 0
    proc = run_cli("export-mrc", run, "t/ts/nothing", tmp_path / "o.mrc")
    assert_one_line_error(proc, "run.zarr", "no variable 'nothing'")
    proc = run_cli("export-mrc", run, "nogroup/x", tmp_path / "o.mrc")
    assert_one_line_error(proc, "run.zarr", "no group 'nogroup'")
    proc = run_cli("export-mrc", run, "justone", tmp_path / "o.mrc")
    assert_one_line_error(proc, "justone", "GROUP/VAR")
    assert not (tmp_path / "o.mrc").exists()


def test_info_on_non_store(tmp_path, ts_mrc):
    proc = run_cli("info", ts_mrc)
    assert_one_line_error(proc, "ts.mrc", "not a Zarr store")
    proc = run_cli("info", tmp_path / "missing.zarr")
    assert_one_line_error(proc, "missing.zarr", "no such store")


def test_info_lists_store(tmp_path, ts_mrc):
    run = tmp_path / "run.zarr"
    assert run_cli("import-mrc", ts_mrc, run, tiltseries_var(0, "measured"), "--angles", "-4", "4", "2").returncode == 0
    proc = run_cli("info", run)
    assert proc.returncode == 0, proc.stderr
    assert tiltseries_var(0, "measured") in proc.stdout
    assert "(5, 8, 8)" in proc.stdout and "float32" in proc.stdout and "complete" in proc.stdout
