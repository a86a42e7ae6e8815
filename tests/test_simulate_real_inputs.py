"""`simulate` with real-world style stacks: orders, ranges, pixel sizes, bad tilts, changed files.

Every refusal is one line naming the user's file, before any stage (nothing written); every
accepted input gives the right pairing, checked on values.
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import yaml

import faket_dask as fd
from conftest import write_mrc
from faket_dask.config import parse_config
from faket_dask.errors import InputError
from faket_dask.pipeline import plan_run
from pipeline_helpers import cli

ANGLES = np.array([-30.0, -15, 0, 15, 30])
DOSE_SYMMETRIC = np.array([0.0, 15, -15, -30, 30])


def _config(tmp_path, entry: dict, **acq) -> dict:
    return {
        "output": "out",
        "acquisition": {"tilt_start_deg": -30, "tilt_stop_deg": 30, "tilt_step_deg": 15,
                        "pixel_size_A": 10, **acq},
        "specimens": {"source": "generate", "count": 1, "shape_zyx": [32, 48, 48], "particles": 5,
                      "vesicles": 0, "fiducials": 1},
        "style_data": {"source": "import", "files": [entry]},
        "style": {"weights": "random"},
        "report": {"figures": False},
    }


def _write(tmp_path, cfg: dict):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _stack(tmp_path, name: str, angles: np.ndarray, *, mean=100.0, voxel=10.0, seed=9):
    rng = np.random.default_rng(seed)
    data = np.stack([rng.normal(mean + a, 2, (48, 48)) for a in angles]).astype(np.float32)
    write_mrc(tmp_path / f"{name}.mrc", data, voxel_size=voxel)
    (tmp_path / f"{name}.tlt").write_text("".join(f"{a:g}\n" for a in angles))
    return data


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("faket-dask: error: "), proc.stderr
    return lines[0]


def _plan(tmp_path, cfg: dict):
    return plan_run(parse_config(cfg), tmp_path / "out", base_dir=tmp_path)


# ------------------------------------------------------------------------------------------
# refusals before any work
# ------------------------------------------------------------------------------------------
def test_style_header_without_pixel_size_names_the_config_key(tmp_path):
    _stack(tmp_path, "ts", ANGLES, voxel=0.0)
    entry = {"measured": "ts.mrc", "angles_file": "ts.tlt"}
    msg = _one_line_error(cli("simulate", _write(tmp_path, _config(tmp_path, entry))))
    assert "ts.mrc: header has no pixel size" in msg and "style_data.files[0].pixel_size_A" in msg
    assert not (tmp_path / "out").exists()
    # the key the message names exists and fixes it
    plan = _plan(tmp_path, _config(tmp_path, {**entry, "pixel_size_A": 10}))
    assert plan.n_tomos == 1


@pytest.mark.parametrize("voxel", [85.76, 10.5, 5.0])
def test_style_pixel_size_must_match_the_content(tmp_path, voxel):
    _stack(tmp_path, "ts", ANGLES, voxel=voxel)
    entry = {"measured": "ts.mrc", "angles_file": "ts.tlt"}
    msg = _one_line_error(cli("simulate", _write(tmp_path, _config(tmp_path, entry))))
    assert f"ts.mrc: pixel size {voxel:g} Å differs from the content's 10 Å" in msg
    assert not (tmp_path / "out").exists()
    # within the tolerance it passes; the tolerance is a setting
    _plan(tmp_path, _config(tmp_path, entry, pixel_size_A=voxel))
    loose = _config(tmp_path, entry)
    loose["style_data"]["pixel_size_rtol"] = 1.0
    if voxel < 20:
        _plan(tmp_path, loose)


@pytest.mark.parametrize(("kind", "needle"), [
    ("nan", "tilt 5 of 5 (30°) has NaN or inf values"),
    ("dark", "tilt 5 of 5 (30°) is constant (all 0: a blank or dark image)"),
    ("dark_first_in_acquisition_order", "tilt 1 of 5 (0°) is constant"),
])
def test_bad_style_tilts_refused_before_any_stage(tmp_path, kind, needle):
    angles = DOSE_SYMMETRIC if kind.endswith("order") else ANGLES
    data = _stack(tmp_path, "ts", angles)
    if kind == "nan":
        data[4, 10:12, 10:12] = np.nan
    else:
        data[4 if kind == "dark" else 0] = 0.0
    write_mrc(tmp_path / "ts.mrc", data)
    entry = {"measured": "ts.mrc", "angles_file": "ts.tlt"}
    msg = _one_line_error(cli("simulate", _write(tmp_path, _config(tmp_path, entry))))
    assert f"{tmp_path / 'ts.mrc'}: {needle}" in msg
    assert "reference/" not in msg
    assert not (tmp_path / "out").exists()


def test_lamella_range_refused_then_nearest_by_option(tmp_path):
    _stack(tmp_path, "flat", np.arange(-60, 61, 3.0))
    entry = {"measured": "flat.mrc", "angles_file": "flat.tlt"}
    cfg = _config(tmp_path, entry, tilt_start_deg=-54, tilt_stop_deg=66, tilt_step_deg=3)
    msg = _one_line_error(cli("simulate", _write(tmp_path, cfg)))
    assert "-60..60 (41 tilts, step 3)" in msg and "-54..66 (41 tilts, step 3)" in msg
    assert "style_data.match_angles: nearest" in msg
    assert not (tmp_path / "out").exists()
    cfg["style_data"]["match_angles"] = "nearest"
    assert _plan(tmp_path, cfg).n_tomos == 1


def test_degenerate_acquisition_refused(tmp_path):
    _stack(tmp_path, "ts", ANGLES)
    cfg = _config(tmp_path, {"measured": "ts.mrc", "angles_file": "ts.tlt"},
                  tilt_start_deg=0, tilt_stop_deg=0)
    with pytest.raises(InputError, match=r"acquisition \(tilt_start_deg.*at least two distinct angles"):
        _plan(tmp_path, cfg)


def test_style_stacks_with_different_angles_refused(tmp_path):
    _stack(tmp_path, "a", ANGLES)
    _stack(tmp_path, "b", ANGLES + 8)
    cfg = _config(tmp_path, {"measured": "a.mrc", "angles_file": "a.tlt"})
    cfg["style_data"]["files"].append({"measured": "b.mrc", "angles_file": "b.tlt"})
    cfg["style_data"]["match_angles"] = "nearest"
    with pytest.raises(InputError, match="b.mrc.*averages them per angle"):
        _plan(tmp_path, cfg)


# ------------------------------------------------------------------------------------------
# whole runs
# ------------------------------------------------------------------------------------------
def test_dose_symmetric_style_stack_styles_each_tilt_with_its_own_angle(tmp_path):
    data = _stack(tmp_path, "ds", DOSE_SYMMETRIC)
    entry = {"measured": "ds.mrc", "angles_file": "ds.tlt"}
    proc = cli("simulate", _write(tmp_path, _config(tmp_path, entry)), "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = tmp_path / "out" / "run.zarr"
    ref = fd.open(store, "reference/style_000")["measured"]
    assert ref["tilt"].values.tolist() == ANGLES.tolist()            # stored sorted
    assert ref["acquisition_index"].values.tolist() == [3, 2, 0, 1, 4]  # file order kept
    faket = fd.open(store, "tomo_000/tiltseries")["faket"]
    want = {a: float(data[i].astype(np.float64).mean()) for i, a in enumerate(DOSE_SYMMETRIC)}
    got = faket.mean(("y", "x")).values
    np.testing.assert_allclose(got, [want[a] for a in faket["tilt"].values], rtol=1e-5)
    assert faket.sel(tilt=0, method="nearest").shape == (48, 48)


@pytest.mark.slow
def test_changed_style_file_is_recomputed_on_resume(tmp_path):
    _stack(tmp_path, "ts", ANGLES, mean=100.0, seed=100)
    cfg = _write(tmp_path, _config(tmp_path, {"measured": "ts.mrc", "angles_file": "ts.tlt"}))
    store = tmp_path / "out" / "run.zarr"
    assert cli("simulate", cfg, "--workers", "1").returncode == 0
    first = float(fd.open(store, "tomo_000/tiltseries")["faket"].mean())
    assert 90 < first < 110

    # same bytes, new mtime (a copy, a touch): nothing is recomputed
    later = time.time() + 5
    os.utime(tmp_path / "ts.mrc", (later, later))
    proc = cli("simulate", cfg, "--workers", "1")
    assert proc.returncode == 0 and "[run" not in proc.stdout and "[rerun]" not in proc.stdout

    # re-exported under the same name with new content: that stage and all after it rerun
    _stack(tmp_path, "ts", ANGLES, mean=500.0, seed=500)
    proc = cli("simulate", cfg, "--workers", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[skip] specimen/000" in proc.stdout and "[skip] noiseless/000" in proc.stdout
    assert "[rerun] style_import/000: input changed" in proc.stdout and "ts.mrc" in proc.stdout
    for later_stage in ("noise_model", "noise/000", "style_grams/000", "faket/000", "reconstruct/000"):
        assert f"[rerun] {later_stage}" in proc.stdout
    second = float(fd.open(store, "tomo_000/tiltseries")["faket"].mean())
    assert 490 < second < 510

    # replaced by a stack with a blank tilt: refused before any stage, the store untouched
    data = _stack(tmp_path, "ts", ANGLES, mean=500.0, seed=500)
    data[2] = 0
    write_mrc(tmp_path / "ts.mrc", data)
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted((tmp_path / "out").rglob("*"))}
    msg = _one_line_error(cli("simulate", cfg, "--workers", "1"))
    assert "ts.mrc: tilt 3 of 5 (0°) is constant" in msg
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted((tmp_path / "out").rglob("*"))}
    assert after == before
