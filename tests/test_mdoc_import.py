"""SerialEM ``.mdoc`` tilt-series in: ``import-mrc --mdoc``, ``--exclude-tilts``, the ``simulate``
config keys ``mdoc`` / ``exclude_tilts`` and their checks before any stage (docs/formats.md).

Every stack here holds its own file index as content (tilt k is filled with k), so where each
file tilt ended up is read off the stored values. The ``.mdoc`` files are SerialEM text, checked
to be read by ``mdocfile`` as SerialEM's.
"""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import mrcfile
import numpy as np
import pytest

import faket_dask as fd
from faket_dask.config import parse_config
from faket_dask.errors import InputError
from faket_dask.store.layout import reference_var, tiltseries_group, tiltseries_var

EXE = str(Path(sys.executable).with_name("faket-dask"))
VAR = tiltseries_var(0, "measured")
T0 = datetime(2026, 12, 1, 10, 0, 5)


def dose_symmetric(stop: float = 60, step: float = 3) -> np.ndarray:
    """Hagen's dose-symmetric order from 0°: 0, +3, -3, -6, +6, +9, -9, -12, ... (groups of 2)."""
    pos = list(np.arange(step, stop + step / 2, step))
    neg = [-a for a in pos]
    out, side = [0.0], 1
    out.append(pos.pop(0))
    while pos or neg:
        src = neg if side else pos
        out += [src.pop(0) for _ in range(min(2, len(src)))]
        side ^= 1
    return np.asarray(out, np.float64)


ANGLES = dose_symmetric()          # acquisition order = file order of the stack
N = ANGLES.size                    # 41
DOSES = 2.0 + 0.05 * np.arange(N)  # e/Å² per tilt, distinct
PRIOR = np.concatenate([[0.0], np.cumsum(DOSES)[:-1]])


def write_mdoc(path: Path, angles, *, doses=DOSES, prior=PRIOR, seconds="zvalue", pixel: float | None = 10.0,
               skip: dict[int, str] | None = None) -> Path:
    """A SerialEM tilt-series .mdoc: header, titles, one [ZValue = k] section per image.

    ``seconds[k]``: acquisition time of image k after T0 (default 30 s apart in ZValue order;
    None: no DateTime); ``skip``: {ZValue: key} left out of that section."""
    if isinstance(seconds, str):
        seconds = 30.0 * np.arange(len(angles))
    skip = skip or {}
    lines = [*([f"PixelSpacing = {pixel:g}"] if pixel else []), "Voltage = 300",
             f"ImageFile = {path.with_suffix('').name}", "ImageSize = 10 8", "DataMode = 2", "",
             "[T = SerialEM: Digitized on EMBL Krios                       01-Dec-26  10:00:00    ]", "",
             "[T =     Tilt axis angle = 85.3, binning = 1  spot = 8  camera = 0]", ""]
    for k, a in enumerate(angles):
        sec = {"TiltAngle": f"{a:.4f}", "StagePosition": "12.5 -3.25", "StageZ": "1.5",
               "Magnification": "42000", "Intensity": "0.123", "ExposureDose": f"{doses[k]:g}",
               "PriorRecordDose": f"{prior[k]:g}", "PixelSpacing": f"{pixel:g}" if pixel else None,
               "SpotSize": "8", "Defocus": "-3.5", "ImageShift": "0.01 -0.02", "RotationAngle": "-94.7",
               "ExposureTime": "0.8", "Binning": "1", "MagIndex": "31", "CountsPerElectron": "1",
               "MinMaxMean": "-5 60 20", "TargetDefocus": "-3.5", "TimeStamp": f"{500000000 + k}"}
        if seconds is not None:
            t = T0 + timedelta(seconds=float(seconds[k]))
            sec["DateTime"] = t.strftime("%d-%b-%y  %H:%M:%S")
        sec.pop(skip.get(k, ""), None)
        lines += [f"[ZValue = {k}]", *(f"{key} = {v}" for key, v in sec.items() if v is not None), ""]
    path.write_text("\n".join(lines) + "\n")
    return path


def indexed_stack(path: Path, n: int = N, *, voxel: float = 0.0) -> Path:
    """Tilt k filled with k (+0.25 so nothing is blank), as an image stack; header pixel size
    ``voxel`` (0: none, as mrcfile leaves it)."""
    data = (np.arange(n, dtype=np.float32)[:, None, None] + np.zeros((n, 8, 10), np.float32))
    data[:, 0, 0] += 0.25
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        m.set_image_stack()
        if voxel:
            m.voxel_size = voxel
    return path


def run_cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, FAKET_PROGRESS="0")
    env.pop("FAKET_DASHBOARD_ADDRESS", None)
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def one_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("faket-dask: error: "), proc.stderr
    return lines[0]


# ------------------------------------------------------------------------------ the .mdoc text
def test_the_test_mdoc_is_read_by_mdocfile(tmp_path):
    import mdocfile

    df = mdocfile.read(write_mdoc(tmp_path / "ts.mrc.mdoc", ANGLES))
    assert len(df) == N and df["ZValue"].tolist() == list(range(N))
    np.testing.assert_allclose(df["TiltAngle"], ANGLES)
    np.testing.assert_allclose(df["ExposureDose"], DOSES)
    np.testing.assert_allclose(df["PriorRecordDose"], PRIOR)
    assert df["DateTime"].iloc[1] == "01-Dec-26  10:00:35" and df["PixelSpacing"].iloc[0] == 10.0
    assert ANGLES[:8].tolist() == [0, 3, -3, -6, 6, 9, -9, -12] and sorted(ANGLES) == list(np.arange(-60, 61, 3))


# ------------------------------------------------------------------------------ import-mrc --mdoc
def test_dose_symmetric_mdoc_import_is_sorted_with_angle_and_dose_per_tilt(tmp_path):
    src = indexed_stack(tmp_path / "ts.mrc")        # no pixel size in the header
    mdoc = write_mdoc(tmp_path / "ts.mrc.mdoc", ANGLES)
    run = tmp_path / "run.zarr"
    proc = run_cli("import-mrc", src, run, VAR, "--mdoc", mdoc)
    assert proc.returncode == 0, proc.stderr
    assert "10 Å from PixelSpacing in ts.mrc.mdoc" in proc.stderr  # the notice: where it came from

    arr = fd.open(run, tiltseries_group(0))["measured"]
    file_of = np.argsort(ANGLES, kind="stable")   # stored tilt k is file tilt file_of[k]
    np.testing.assert_array_equal(arr["tilt"].values, np.arange(-60, 61, 3))
    np.testing.assert_array_equal(arr.values[:, 1, 1], file_of)            # the content moved
    np.testing.assert_array_equal(arr["tilt"].values, ANGLES[arr.values[:, 1, 1].astype(int)])
    np.testing.assert_allclose(arr["dose_e_per_A2"].values, DOSES[file_of])
    np.testing.assert_allclose(arr["prior_dose_e_per_A2"].values, PRIOR[file_of])
    np.testing.assert_array_equal(arr["acquisition_index"].values, file_of)  # stack in acquisition order
    np.testing.assert_array_equal(arr["section_index"].values, file_of)
    assert arr["acquisition_index"].dtype == np.int64 and arr["dose_e_per_A2"].attrs["units"] == "e/Å²"
    assert arr.attrs["pixel_size_A"] == 10.0 and arr.attrs["acquisition_order"] == "DateTime"
    zero = arr.sel(tilt=0.0)
    assert float(zero[1, 1]) == 0 and int(zero["acquisition_index"]) == 0 and float(zero["dose_e_per_A2"]) == DOSES[0]


def test_acquisition_order_comes_from_datetime_else_zvalue(tmp_path):
    """A stack written in angle order: DateTime says when each tilt was taken."""
    angles = np.sort(ANGLES)
    when = np.argsort(np.argsort(np.abs(angles) + 0.1 * (angles < 0), kind="stable"))  # 0°, 3°, -3°, ...
    src = indexed_stack(tmp_path / "sorted.mrc", voxel=10.0)
    arr = fd.load_mrc(src, kind="tiltseries", mdoc=write_mdoc(tmp_path / "a.mdoc", angles, seconds=30.0 * when))
    np.testing.assert_array_equal(arr.values[:, 1, 1], np.arange(N))       # no reordering
    np.testing.assert_array_equal(arr["acquisition_index"].values, when)
    np.testing.assert_array_equal(arr["section_index"].values, np.arange(N))
    arr = fd.load_mrc(src, kind="tiltseries", mdoc=write_mdoc(tmp_path / "b.mdoc", angles, seconds=None))
    np.testing.assert_array_equal(arr["acquisition_index"].values, np.arange(N))
    assert arr.attrs["acquisition_order"] == "ZValue"


def test_exclude_tilts_drops_views_by_file_index(tmp_path):
    src = indexed_stack(tmp_path / "ts.mrc")
    with mrcfile.open(src, mode="r+") as m:
        m.data[5] = 0.0   # a blank (dark) view: refused unless excluded
    mdoc = write_mdoc(tmp_path / "ts.mdoc", ANGLES)
    run = tmp_path / "run.zarr"
    proc = run_cli("import-mrc", src, run, VAR, "--mdoc", mdoc, "--exclude-tilts", "0,5,7")
    assert proc.returncode == 0, proc.stderr
    arr = fd.open(run, tiltseries_group(0))["measured"]
    kept = np.setdiff1d(np.arange(N), [0, 5, 7])
    file_of = kept[np.argsort(ANGLES[kept], kind="stable")]
    assert arr.sizes["tilt"] == N - 3 and arr.attrs["excluded_tilts"] == [0, 5, 7]
    np.testing.assert_array_equal(arr.values[:, 2, 2], file_of)
    np.testing.assert_array_equal(arr["tilt"].values, ANGLES[file_of])
    assert 0.0 not in arr["tilt"].values and -6.0 in arr["tilt"].values  # 0° (file 0) gone, file 3 kept
    np.testing.assert_allclose(arr["dose_e_per_A2"].values, DOSES[file_of])
    np.testing.assert_array_equal(arr["acquisition_index"].values, file_of)  # places of all images


def _bad(tmp_path, case):
    src = indexed_stack(tmp_path / "ts.mrc", voxel=10.0)
    mdoc = tmp_path / "ts.mdoc"
    if case == "section count":
        write_mdoc(mdoc, ANGLES[:-1])
        return [src, "--mdoc", mdoc], ["ts.mdoc: 40 sections", f"{src} has 41 tilts"]
    write_mdoc(mdoc, ANGLES, skip={3: "TiltAngle"} if case == "no TiltAngle" else None)
    if case == "exclude out of range":
        return [src, "--mdoc", mdoc, "--exclude-tilts", "2,41"], [f"{src}: --exclude-tilts index 41 is out of range", "0..40"]
    if case == "no TiltAngle":
        return [src, "--mdoc", mdoc], ["ts.mdoc: no TiltAngle in [ZValue = 3]"]
    if case == "mdoc and angles file":
        (tmp_path / "ts.tlt").write_text("".join(f"{a:g}\n" for a in ANGLES))
        return [src, "--mdoc", mdoc, "--angles-file", tmp_path / "ts.tlt"], [f"{mdoc}: give the tilt angles once"]
    assert case == "mdoc and angles"
    return [src, "--mdoc", mdoc, "--angles", -60, 60, 3], [f"{mdoc}: give the tilt angles once"]


@pytest.mark.parametrize("case", ["section count", "exclude out of range", "no TiltAngle",
                                  "mdoc and angles file", "mdoc and angles"])
def test_bad_mdoc_input_is_one_line_and_writes_nothing(tmp_path, case):
    args, expected = _bad(tmp_path, case)
    run = tmp_path / "run.zarr"
    msg = one_error(run_cli("import-mrc", args[0], run, VAR, *args[1:]))
    for part in expected:
        assert part in msg, msg
    assert not run.exists()


def test_mdoc_errors_in_python(tmp_path):
    with pytest.raises(InputError, match=r"nope.mdoc: no such file"):
        fd.load_mrc(indexed_stack(tmp_path / "ts.mrc", voxel=10.0), kind="tiltseries", mdoc=tmp_path / "nope.mdoc")
    (tmp_path / "bad.mdoc").write_text("PixelSpacing = 10\n\n[ZValue = 0]\nTiltAngle = abc\n")
    with pytest.raises(InputError, match=r"bad.mdoc: not a readable SerialEM .mdoc \(TiltAngle = 'abc'"):
        fd.load_mrc(tmp_path / "ts.mrc", kind="tiltseries", mdoc=tmp_path / "bad.mdoc")
    (tmp_path / "dup.mdoc").write_text("[ZValue = 0]\nTiltAngle = 1\n\n[ZValue = 0]\nTiltAngle = 2\n")
    with pytest.raises(InputError, match=r"dup.mdoc: ZValue 0 occurs twice"):
        fd.load_mrc(tmp_path / "ts.mrc", kind="tiltseries", mdoc=tmp_path / "dup.mdoc")


# ------------------------------------------------------------------------------ simulate config
def _config(entry: dict) -> dict:
    return {"style_data": {"source": "import", "files": [entry]}}


def test_config_keys_mdoc_and_exclude_tilts():
    cfg = parse_config(_config({"measured": "ts.mrc", "mdoc": "ts.mrc.mdoc", "exclude_tilts": [0, 5, 7]}))
    f = cfg.style_data.files[0]
    assert f.mdoc == "ts.mrc.mdoc" and f.exclude_tilts == (0, 5, 7) and f.angles_file is None
    old = parse_config(_config({"measured": "ts.mrc", "angles_file": "ts.tlt"}))
    # an entry without the new keys dumps (and so hashes, resume) as before they existed
    assert set(old.model_dump()["style_data"]["files"][0]) == {"measured", "angles_file", "noiseless", "pixel_size_A"}
    assert old.hash() != cfg.hash()
    for entry, msg in [({"measured": "ts.mrc"}, "neither given"),
                       ({"measured": "ts.mrc", "mdoc": "a.mdoc", "angles_file": "a.tlt"}, "both given"),
                       ({"measured": "ts.mrc", "mdoc": "a.mdoc", "exclude_tilts": [-1]}, "0-based")]:
        with pytest.raises(InputError, match=rf"run.yaml: style_data.files.0: .*{msg}"):
            parse_config(_config(entry), source="run.yaml")


def _check(tmp_path, **kw):
    from faket_dask.run_inputs import check_style_file

    args = dict(key="style_data.files[0]", content_angles_deg=np.arange(-60, 61, 3.0),
                content_pixel_size_A=10.0, pixel_size_A=None, match_angles="exact", pixel_size_rtol=0.01)
    args.update(kw)
    return check_style_file(tmp_path / "ts.mrc", args.pop("angles_file", None), **args)


def test_run_inputs_check_mdoc_entry(tmp_path):
    src = indexed_stack(tmp_path / "ts.mrc")
    with mrcfile.open(src, mode="r+") as m:
        m.data[7] = 0.0   # a blank view
    mdoc = write_mdoc(tmp_path / "ts.mdoc", ANGLES)
    with pytest.raises(InputError, match=r"ts.mrc: tilt 8 of 41 \(-12°\) is constant"):
        _check(tmp_path, mdoc=mdoc)
    # with a view gone the style stack has a hole: exact pairing with the content names it
    with pytest.raises(InputError, match=r"ts.mrc \(ts.mdoc\) has angles -60..60 \(40 tilts"):
        _check(tmp_path, mdoc=mdoc, exclude_tilts=(7,))
    sf = _check(tmp_path, mdoc=mdoc, exclude_tilts=(7,), match_angles="nearest")
    assert sf.pixel_size_A == 10.0 and any("PixelSpacing" in n for n in sf.notices)
    np.testing.assert_array_equal(sf.angles_deg, np.delete(ANGLES, 7))
    np.testing.assert_array_equal(sf.kept, np.delete(np.arange(N), 7))
    with pytest.raises(InputError, match=r"ts.mrc: style_data.files\[0\].exclude_tilts index 41 is out of range"):
        _check(tmp_path, mdoc=mdoc, exclude_tilts=(41,))
    write_mdoc(tmp_path / "short.mdoc", ANGLES[:-1])
    with pytest.raises(InputError, match=r"short.mdoc: 40 sections .* has 41 tilts"):
        _check(tmp_path, mdoc=tmp_path / "short.mdoc")
    with pytest.raises(InputError, match=r"missing.mdoc: .mdoc \(style_data.files\[0\].mdoc\) not found"):
        _check(tmp_path, mdoc=tmp_path / "missing.mdoc")


def test_style_import_step_reads_the_mdoc(tmp_path):
    from faket_dask.pipeline.steps import StageSteps

    indexed_stack(tmp_path / "ts.mrc")
    indexed_stack(tmp_path / "ts_noiseless.mrc")
    write_mdoc(tmp_path / "ts.mdoc", ANGLES)
    cfg = parse_config(_config({"measured": "ts.mrc", "noiseless": "ts_noiseless.mrc", "mdoc": "ts.mdoc",
                                "exclude_tilts": [7]}))
    steps = StageSteps()
    steps.plan, steps.cfg, steps.store = SimpleNamespace(base_dir=tmp_path), cfg, tmp_path / "run.zarr"
    steps.style_import(0)
    for name in ("measured", "noiseless"):
        arr = fd.open_var(steps.store, reference_var(0, name))
        kept = np.delete(np.arange(N), 7)
        file_of = kept[np.argsort(ANGLES[kept], kind="stable")]
        np.testing.assert_array_equal(arr.values[:, 1, 1], file_of)
        np.testing.assert_allclose(arr["dose_e_per_A2"].values, DOSES[file_of])


def test_simulate_plan_accepts_an_mdoc_style_entry(tmp_path):
    """``simulate``'s validation (plan_run) reads the mdoc entry before any stage: the stack's
    angles come from the mdoc, and a bad exclusion is refused there, naming the entry."""
    from faket_dask.pipeline.plan import plan_run

    indexed_stack(tmp_path / "ts.mrc")
    indexed_stack(tmp_path / "ts2.mrc")
    write_mdoc(tmp_path / "ts.mdoc", ANGLES)
    write_mdoc(tmp_path / "ts2.mdoc", ANGLES)
    base = {"acquisition": {"tilt_start_deg": -60, "tilt_stop_deg": 60, "tilt_step_deg": 3,
                            "pixel_size_A": 10},
            "specimens": {"count": 2, "shape_zyx": [16, 32, 32], "particles": 2, "vesicles": 0,
                          "fiducials": 0},
            "style_data": {"source": "import", "files": [{"measured": "ts.mrc", "mdoc": "ts.mdoc"},
                                                         {"measured": "ts2.mrc", "mdoc": "ts2.mdoc"}]},
            "style": {"weights": "random"}}
    plan = plan_run(parse_config(base), tmp_path / "out", base_dir=tmp_path, overwrite=False,
                    device="cpu")
    assert plan.n_tomos == 2
    bad = dict(base, style_data={"source": "import", "files": [
        {"measured": "ts.mrc", "mdoc": "ts.mdoc", "exclude_tilts": [99]},
        {"measured": "ts2.mrc", "mdoc": "ts2.mdoc"}]})
    with pytest.raises(InputError, match="99"):
        plan_run(parse_config(bad), tmp_path / "out2", base_dir=tmp_path, overwrite=False, device="cpu")
