"""MRC header rules on import (docs/formats.md): mode 0 as IMOD reads it, exact integer modes,
class-mask labels, odd machine stamps and big-endian files, tilt order, angle lists, voxel size
and origin. Every test builds its own small MRC file with mrcfile."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

import faket_dask as fd
from faket_dask import datamodel, store
from faket_dask.formats.convert import angle_order, load_labels, load_mrc
from faket_dask.formats.mrc_header import IMOD_STAMP, read_info
from faket_dask.formats.tlt import read_tlt
from faket_dask.store.layout import specimen_group, tiltseries_group, tiltseries_var, tomogram_group

from conftest import write_mrc

EXE = str(Path(sys.executable).with_name("faket-dask"))


def _poke(path: Path, offset: int, raw: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(raw)


def imod_stamp(path: Path, flags: int, byte_order: str = "<") -> Path:
    """Add IMOD's stamp (byte 152) and imodFlags (byte 156), as IMOD writes them."""
    _poke(path, 152, np.array([IMOD_STAMP, flags], byte_order + "i4").tobytes())
    return path


def set_range(path: Path, dmin: float, dmax: float) -> Path:
    with mrcfile.open(path, mode="r+") as m:
        m.header.dmin, m.header.dmax = dmin, dmax
    return path


def stack_file(path: Path, data: np.ndarray, *, voxel=10.0, origin=None) -> Path:
    """An image stack whose header voxel size is right in x, y and z (space group first)."""
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        m.set_image_stack()
        m.voxel_size = voxel
        if origin is not None:
            m.header.origin = origin
    return path


def values(path: Path, **kw) -> np.ndarray:
    kw.setdefault("kind", "volume")
    return np.asarray(load_mrc(path, **kw).values)


def run_cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, FAKET_PROGRESS="0")
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=180)


def one_line(text: str, prefix: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, text
    return lines[0]


# --------------------------------------------------------------------------- mode 0 (8-bit)

def test_imod_signed_bytes_read_as_stored_plus_128(tmp_path):
    label = np.zeros((6, 8, 9), np.int16)
    label[2:4, 3:6, 2:7] = 1
    label[0, 0, :3] = (2, 255, 127)
    src = tmp_path / "class_mask.mrc"
    write_mrc(src, (label - 128).astype(np.int8), stack=False)  # IMOD signed-byte storage
    imod_stamp(src, flags=1)
    info = read_info(src)
    assert info.notices == () and info.value_shift == 128
    vol = load_mrc(src, kind="volume")
    np.testing.assert_array_equal(vol.values, label.astype(np.float32))
    assert vol.attrs["mrc_mode0"] == "signed bytes + 128 (IMOD stamp, signed flag set)"
    labels = load_labels(src)
    assert labels.dtype == np.uint8 and labels.dims == ("z", "y", "x")
    np.testing.assert_array_equal(labels.values, label.astype(np.uint8))


def test_imod_unsigned_bytes_are_exact(tmp_path):
    u8 = np.random.default_rng(8).integers(0, 256, (5, 16, 12), dtype=np.uint8)
    u8[0, 0, :2] = (0, 255)
    src = stack_file(tmp_path / "ts_u8.mrc", u8.view(np.int8))
    imod_stamp(src, flags=0)
    set_range(src, 0, 255)
    arr = load_mrc(src, kind="tiltseries", angles_deg=np.arange(5) * 10.0 - 20)
    np.testing.assert_array_equal(arr.values, u8.astype(np.float32))
    assert arr.attrs["mrc_mode0"] == "unsigned (IMOD stamp, signed flag clear)"
    assert read_info(src).notices == ()


def test_imod_signed_flag_wins_over_header_range(tmp_path):
    stored = np.array([-128, -127, 0, 127], np.int8).reshape(1, 2, 2).repeat(2, 0)
    src = write_mrc(tmp_path / "m.mrc", stored, stack=False)
    imod_stamp(src, flags=1 | 8)  # other flag bits do not matter
    set_range(src, 0, 255)
    np.testing.assert_array_equal(values(src, pixel_size_A=1.0), stored.astype(np.float32) + 128)


def test_no_stamp_header_range_above_127_means_unsigned(tmp_path):
    u8 = np.random.default_rng(3).integers(0, 256, (3, 7, 5), dtype=np.uint8)
    src = write_mrc(tmp_path / "u.mrc", u8.view(np.int8), stack=False)
    set_range(src, float(u8.min()), float(u8.max()))
    info = read_info(src)
    assert len(info.notices) == 1 and "unsigned" in info.notices[0] and str(src) in info.notices[0]
    vol = load_mrc(src, kind="volume")
    np.testing.assert_array_equal(vol.values, u8.astype(np.float32))
    assert vol.attrs["mrc_mode0"].startswith("unsigned (no IMOD stamp")


@pytest.mark.parametrize(("dmin", "dmax", "why"), [(None, None, "agree"), (0.0, -1.0, "do not help"),
                                                   (0.0, 300.0, "do not help")])
def test_no_stamp_defaults_to_signed_mrc2014(tmp_path, dmin, dmax, why):
    i8 = np.random.default_rng(4).integers(-128, 128, (3, 6, 6), dtype=np.int8)
    src = write_mrc(tmp_path / "s.mrc", i8, stack=False)  # mrcfile writes dmin/dmax of the data
    if dmin is not None:
        set_range(src, dmin, dmax)
    info = read_info(src)
    assert len(info.notices) == 1 and "signed bytes -128..127 (MRC2014" in info.notices[0]
    assert why in info.notices[0]
    vol = load_mrc(src, kind="volume")
    np.testing.assert_array_equal(vol.values, i8.astype(np.float32))
    assert vol.attrs["mrc_mode0"].startswith("signed (no IMOD stamp; MRC2014 default")


# --------------------------------------------------------------- every integer mode is exact

@pytest.mark.parametrize(
    ("dtype", "mode", "lo", "hi"),
    [(np.int8, 0, -128, 127), (np.int16, 1, -32768, 32767), (np.uint16, 6, 0, 65535),
     (np.float16, 12, -65504, 65504)],
)
def test_integer_and_half_modes_are_exact_in_float32(tmp_path, dtype, mode, lo, hi):
    rng = np.random.default_rng(mode)
    if np.dtype(dtype).kind == "f":
        data = (rng.standard_normal((4, 9, 7)) * 300).astype(dtype)
        data.flat[:4] = (lo, hi, np.finfo(np.float16).tiny, -0.0)
    else:
        data = rng.integers(lo, hi + 1, (4, 9, 7), dtype=dtype, endpoint=False)
        data.flat[:2] = (lo, hi)
    src = write_mrc(tmp_path / f"m{mode}.mrc", data, stack=False)
    assert read_info(src).mode == mode
    got = values(src)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, data.astype(np.float64))  # exact, compared in float64


# ------------------------------------------------------------------------- class-mask labels

@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (np.array([0, 1, 0.5, 2], np.float32), "value 0.5 at (z=0, y=1, x=0) is not an integer"),
        (np.array([0, 1, 2, -3], np.int16), "value -3 at (z=0, y=1, x=1) is negative"),
        (np.array([0, 300, 1, 2], np.int16), "value 300 at (z=0, y=0, x=1) is above 255"),
        (np.array([0, np.nan, 1, 2], np.float32), "value nan at (z=0, y=0, x=1) is NaN or inf"),
    ],
)
@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_load_labels_refuses_non_labels(tmp_path, data, needle):
    src = write_mrc(tmp_path / "mask.mrc", np.stack([data.reshape(2, 2), np.zeros((2, 2), data.dtype)]),
                    stack=False)
    with pytest.raises(fd.InputError) as err:
        load_labels(src)
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(f"{src}: class mask ") and needle in msg, msg


def test_load_labels_keeps_0_to_255_and_names_mode0_reading(tmp_path):
    lab = np.arange(256, dtype=np.int16).reshape(4, 8, 8)
    src = write_mrc(tmp_path / "all.mrc", lab, stack=False)
    np.testing.assert_array_equal(load_labels(src).values, lab.astype(np.uint8))
    # IMOD signed bytes without the stamp: MRC2014 reads -128 -> refused, saying how it was read
    bare = write_mrc(tmp_path / "bare.mrc", np.full((2, 3, 3), -128, np.int8), stack=False)
    with pytest.raises(fd.InputError, match=r"value -128 .* negative.*mode 0 read as signed"):
        load_labels(bare)


# ------------------------------------------------------------- machine stamps and byte order

@pytest.mark.parametrize("stamp", [b"\x44\x20\x20\x20", b"\x44\x00\x00\x00", b"\x44\x11\x00\x00"])
def test_imod_and_serialem_machine_stamps_are_read(tmp_path, stamp):
    ts = np.random.default_rng(5).normal(50, 5, (5, 12, 10)).astype(np.float32)
    src = stack_file(tmp_path / "ts.mrc", ts, voxel=5.0)
    _poke(src, 212, stamp)
    info = read_info(src)
    assert info.byte_order == "<"
    assert len(info.notices) == 1 and "machine stamp" in info.notices[0] and "little-endian" in info.notices[0]
    arr = load_mrc(src, kind="tiltseries", angles_deg=[-30, -15, 0, 15, 30])
    np.testing.assert_array_equal(arr.values, ts)
    assert arr.attrs["pixel_size_A"] == 5.0


@pytest.mark.parametrize("stamp", [None, b"\x11\x00\x00\x00", b"\x11\x20\x20\x20"])
def test_big_endian_files_read_correctly(tmp_path, stamp):
    ts = np.random.default_rng(6).normal(0, 3, (3, 8, 6)).astype(">f4")
    src = stack_file(tmp_path / "be.mrc", ts, voxel=2.5, origin=(1.5, -2.0, 4.0))
    with open(src, "rb") as f:
        f.seek(212)
        assert f.read(4) == b"\x11\x11\x00\x00"  # mrcfile writes the MRC2014 big-endian stamp
    if stamp is not None:
        _poke(src, 212, stamp)
    info = read_info(src)
    assert info.byte_order == ">" and info.voxel_size_A == (2.5, 2.5, 2.5)
    assert info.origin_A == (1.5, -2.0, 4.0)
    assert len(info.notices) == (0 if stamp is None else 1)
    arr = load_mrc(src, kind="tiltseries", angles_deg=[-10, 0, 10])
    np.testing.assert_array_equal(arr.values, ts.astype(np.float32))
    i16 = np.arange(-20, 20, dtype=">i2").reshape(2, 4, 5)
    assert np.array_equal(values(write_mrc(tmp_path / "be16.mrc", i16, stack=False)), i16)


@pytest.mark.parametrize(
    ("offset", "raw", "needle"),
    [(212, b"\x00\x00\x00\x00", "machine stamp 0x00 0x00 0x00 0x00 gives no byte order"),
     (212, b"\x22\x20\x20\x20", "gives no byte order"),
     (208, b"XXXX", "not a valid MRC file (Map ID")],
)
def test_other_header_faults_stay_one_line_errors(tmp_path, offset, raw, needle):
    src = write_mrc(tmp_path / "bad.mrc", np.zeros((2, 4, 4), np.float32))
    _poke(src, 212, b"\x44\x20\x20\x20")  # an odd stamp does not hide the other faults
    _poke(src, offset, raw)
    with pytest.raises(fd.InputError) as err:
        read_info(src)
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(str(src)) and needle in msg, msg


def test_permuted_axes_are_refused(tmp_path):
    src = write_mrc(tmp_path / "perm.mrc", np.zeros((2, 4, 4), np.float32), stack=False)
    with mrcfile.open(src, mode="r+") as m:
        m.header.mapc, m.header.mapr = 2, 1
    with pytest.raises(fd.InputError, match=r"perm.mrc: axis order mapc/mapr/maps = \(2, 1, 3\)"):
        read_info(src)


# ------------------------------------------------------------------------------ tilt order

def test_angle_order_is_stable_within_1e_6():
    np.testing.assert_array_equal(angle_order([0, 3, -3, -6, 6, 9, -9]), [6, 3, 2, 0, 1, 4, 5])
    np.testing.assert_array_equal(angle_order([0, -15, -30, 0, 15, 30]), [2, 1, 0, 3, 4, 5])
    # 1e-7 apart is "equal": file order, not value order
    np.testing.assert_array_equal(angle_order([5.0, 1e-7, -5.0, 0.0]), [2, 1, 3, 0])
    np.testing.assert_array_equal(angle_order([-2.0, 2.0]), [0, 1])


def test_dose_symmetric_stack_is_stored_sorted_with_acquisition_index(tmp_path, client):
    order = np.array([0, 3, -3, -6, 6, 9, -9], np.float64)
    ts = np.stack([np.full((10, 8), 100 + a, np.float32) for a in order])
    ts += np.random.default_rng(9).normal(0, 0.1, ts.shape).astype(np.float32)
    src = stack_file(tmp_path / "dosesym.mrc", ts)
    tlt = tmp_path / "dosesym.tlt"
    tlt.write_text("".join(f"{a:g}\n" for a in order))
    run = tmp_path / "run.zarr"
    fd.import_mrc(src, run, tiltseries_var(0, "measured"), kind="tiltseries", angles_file=tlt, cy=4)

    arr = fd.open(run, tiltseries_group(0))["measured"]
    perm = np.argsort(order, kind="stable")
    np.testing.assert_array_equal(arr["tilt"].values, order[perm])
    np.testing.assert_array_equal(arr["acquisition_index"].values, perm)
    assert arr["acquisition_index"].dtype == np.int64 and arr["acquisition_index"].dims == ("tilt",)
    assert arr.data.chunks[0] == (1,) * 7 and arr.data.chunksize == (1, 4, 8)
    np.testing.assert_array_equal(arr.values, ts[perm])
    zero = arr.sel(tilt=0, method="nearest")
    np.testing.assert_array_equal(zero.values, ts[0])
    assert int(zero["acquisition_index"]) == 0
    np.testing.assert_array_equal(arr.sel(tilt=-4, method="nearest").values, ts[2])  # -3 is nearest

    dest = tmp_path / "back.mrc"
    fd.export_mrc(arr, dest)  # written in stored (angle) order
    with mrcfile.open(dest) as m:
        np.testing.assert_array_equal(m.data, ts[perm])
    np.testing.assert_array_equal(read_tlt(tmp_path / "back.tlt"), order[perm])


def test_bidirectional_repeated_zero_keeps_file_order(tmp_path):
    angles = [0, -15, -30, 0, 15, 30]
    ts = np.arange(6, dtype=np.float32)[:, None, None] * np.ones((6, 4, 4), np.float32)
    src = stack_file(tmp_path / "bidir.mrc", ts)
    arr = load_mrc(src, kind="tiltseries", angles_deg=angles)
    np.testing.assert_array_equal(arr["tilt"].values, [-30, -15, 0, 0, 15, 30])
    np.testing.assert_array_equal(arr["acquisition_index"].values, [2, 1, 0, 3, 4, 5])
    np.testing.assert_array_equal(arr.values[:, 0, 0], [2, 1, 0, 3, 4, 5])


def test_sorted_stack_is_stored_as_before(tmp_path):
    src = stack_file(tmp_path / "s.mrc", np.ones((3, 4, 4), np.float32))
    arr = load_mrc(src, kind="tiltseries", angles_deg=[-1, 0, 1])
    assert "acquisition_index" not in arr.coords  # absent means the identity
    assert arr.data.name.startswith("mrc-")  # the plain graph over the file, no permutation


# ------------------------------------------------------------------------------ angle lists

@pytest.mark.parametrize(
    ("text", "needle"),
    [("0.00\n" * 6, "6 tilt angles are all 0°; a tilt-series needs at least two distinct angles"),
     ("12.5\n", "1 tilt angle is 12.5°"),
     ("5\n5.0000001\n5\n", "3 tilt angles are all 5°"),
     ("-60\n0\n90\n", "tilt angle 90° (line 3) is outside (-90°, 90°)"),
     ("-90.0\n\n0\n30\n", "tilt angle -90° (line 1) is outside"),
     ("-120\n0\n30\n", "tilt angle -120° (line 1)")],
)
def test_degenerate_tlt_is_refused(tmp_path, text, needle):
    tlt = tmp_path / "angles.tlt"
    tlt.write_text(text)
    with pytest.raises(fd.InputError) as err:
        read_tlt(tlt)
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(str(tlt)) and needle in msg, msg


def test_legal_angle_lists(tmp_path):
    tlt = tmp_path / "ok.tlt"
    tlt.write_text("0.00\n-15.00\n-30.00\n0.00\n15.00\n30.00\n")
    np.testing.assert_array_equal(read_tlt(tlt), [0, -15, -30, 0, 15, 30])
    tlt.write_text("-89.99\n89.99\n")
    assert read_tlt(tlt).size == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [((0, 0, 1), "--angles 0 0 1: 1 tilt angle is 0°"),
     ((-90, 90, 30), "--angles -90 90 30: tilt angle -90° (tilt 1 of 7) is outside (-90°, 90°)"),
     ((-60, 90, 30), "tilt angle 90° (tilt 6 of 6)")],
)
def test_degenerate_angle_range_is_refused(args, needle):
    with pytest.raises(fd.InputError) as err:
        fd.angles_from_range(*args)
    assert needle in str(err.value), str(err.value)
    assert fd.angles_from_range(-89, 89, 89).tolist() == [-89.0, 0.0, 89.0]


def test_load_mrc_refuses_degenerate_angle_array(tmp_path):
    src = stack_file(tmp_path / "ts.mrc", np.ones((3, 4, 4), np.float32))
    with pytest.raises(fd.InputError, match=r"ts.mrc: tilt angles: 3 tilt angles are all 0°"):
        load_mrc(src, kind="tiltseries", angles_deg=[0, 0, 0])


# ----------------------------------------------------------------- voxel size and origin

def test_anisotropic_pixel_is_refused_unless_overridden(tmp_path):
    src = stack_file(tmp_path / "aniso.mrc", np.ones((3, 6, 8), np.float32), voxel=(10.0, 10.5, 10.0))
    with pytest.raises(fd.InputError) as err:
        load_mrc(src, kind="tiltseries", angles_deg=[-1, 0, 1])
    msg = str(err.value)
    assert msg == (f"{src}: anisotropic pixel size in the header (x 10 Å, y 10.5 Å); one pixel size "
                   "is needed, pass --pixel-size-A to override"), msg
    arr = load_mrc(src, kind="tiltseries", angles_deg=[-1, 0, 1], pixel_size_A=10.25)
    assert arr.attrs["pixel_size_A"] == 10.25
    near = stack_file(tmp_path / "near.mrc", np.ones((3, 6, 8), np.float32), voxel=(10.0, 10.009, 10.0))
    assert load_mrc(near, kind="tiltseries", angles_deg=[-1, 0, 1]).attrs["pixel_size_A"] == 10.0
    # a stack's z "spacing" is ignored (old exports wrote tilts x pixel there)
    oldz = stack_file(tmp_path / "oldz.mrc", np.ones((3, 6, 8), np.float32), voxel=(10.0, 10.0, 30.0))
    assert load_mrc(oldz, kind="tiltseries", angles_deg=[-1, 0, 1]).attrs["pixel_size_A"] == 10.0


def test_anisotropic_volume_is_refused(tmp_path):
    src = tmp_path / "vol.mrc"
    with mrcfile.new(src) as m:
        m.set_data(np.ones((4, 6, 8), np.float32))
        m.voxel_size = (10.0, 10.0, 20.0)
    with pytest.raises(fd.InputError, match=r"vol.mrc: anisotropic voxel size in the header \(x 10 Å, z 20 Å\)"):
        load_mrc(src, kind="volume", pixel_size_hint="set specimens.files[0].pixel_size_A")
    with pytest.raises(fd.InputError, match=r"no pixel size \(0 Å\); pass --pixel-size-A"):
        load_mrc(write_mrc(tmp_path / "nopix.mrc", np.ones((4, 6, 8), np.float32), voxel_size=0), kind="volume")


def test_imod_inverted_origin_flag_is_undone(tmp_path):
    src = write_mrc(tmp_path / "o.mrc", np.ones((2, 4, 4), np.float32), stack=False)
    with mrcfile.open(src, mode="r+") as m:
        m.header.origin = (10.0, -20.0, 30.5)
    assert read_info(src).origin_A == (10.0, -20.0, 30.5)
    imod_stamp(src, flags=4)
    assert read_info(src).origin_A == (-10.0, 20.0, -30.5)


@pytest.mark.parametrize("kind", ["tiltseries", "volume"])
def test_round_trip_keeps_voxel_size_and_origin(tmp_path, client, kind):
    pixel, origin = 1.34 * 64, (-1234.5, 678.25, 85.76)
    data = np.random.default_rng(12).normal(100, 10, (5, 9, 13)).astype(np.float32)
    if kind == "tiltseries":
        src = stack_file(tmp_path / "in.mrc", data, voxel=pixel, origin=origin)
        var, extra = tiltseries_var(0, "measured"), {"angles_deg": [-30, -15, 0, 15, 30]}
    else:
        src = tmp_path / "in.mrc"
        with mrcfile.new(src) as m:
            m.set_data(data)
            m.voxel_size = pixel
            m.header.origin = origin
        var, extra = f"{specimen_group(0)}/density", {}
    run = tmp_path / "run.zarr"
    fd.import_mrc(src, run, var, kind=kind, cy=4, **extra)
    arr = fd.open_var(run, var)
    assert arr.attrs["origin_A"] == [float(np.float32(o)) for o in origin]
    dest = tmp_path / "out.mrc"
    fd.export_mrc(arr, dest)
    assert mrcfile.validate(str(dest), print_file=open(os.devnull, "w"))
    with mrcfile.open(src) as a, mrcfile.open(dest) as b:
        # equal up to float32 cella = m x size (x and z of the input differ in the last bit)
        assert b.voxel_size.tolist() == pytest.approx(a.voxel_size.tolist(), rel=1e-6)
        assert b.voxel_size.tolist() == pytest.approx((pixel,) * 3, rel=1e-6)
        assert b.voxel_size.x == a.voxel_size.x
        assert b.header.origin.tolist() == a.header.origin.tolist()
        assert (int(b.header.mx), int(b.header.my), int(b.header.mz)) == (13, 9, 1 if kind == "tiltseries" else 5)
        assert b.is_image_stack() == (kind == "tiltseries")
        np.testing.assert_array_equal(b.data, a.data)


def test_tomogram_export_has_binned_voxel_size_in_xyz(tmp_path, client):
    run = tmp_path / "run.zarr"
    vol = datamodel.volume(np.random.default_rng(1).random((8, 6, 10), dtype=np.float32), 20.0)
    store.save_image(vol, run, tomogram_group(0), "noisy")
    dest = tmp_path / "tomo.mrc"
    assert fd.export_mrc(fd.open_var(run, f"{tomogram_group(0)}/noisy"), dest) == [dest]
    assert mrcfile.validate(str(dest), print_file=open(os.devnull, "w"))
    with mrcfile.open(dest) as m:
        assert m.voxel_size.tolist() == (20.0, 20.0, 20.0)
        assert m.is_volume() and m.data.shape == (8, 6, 10)
        assert m.header.origin.tolist() == (0.0, 0.0, 0.0)


# -------------------------------------------------------------------------------- the CLI

def test_cli_prints_one_notice_and_records_mode0(tmp_path):
    u8 = np.random.default_rng(2).integers(0, 256, (3, 8, 8), dtype=np.uint8)
    src = stack_file(tmp_path / "u8.mrc", u8.view(np.int8))
    set_range(src, 0, 255)
    _poke(src, 212, b"\x44\x00\x00\x00")  # SerialEM's stamp as well: two notices, one line each
    run = tmp_path / "run.zarr"
    proc = run_cli("import-mrc", src, run, tiltseries_var(0, "measured"), "--angles", "-2", "2", "2")
    assert proc.returncode == 0, proc.stderr
    notices = [ln for ln in proc.stderr.splitlines() if ln.startswith("faket-dask: notice:")]
    assert len(notices) == 2, proc.stderr
    assert notices[0] == (f"faket-dask: notice: {src}: non-standard machine stamp 0x44 0x00 0x00 0x00 "
                          "(as IMOD/SerialEM write it); read as little-endian from its first byte")
    assert notices[1].startswith(f"faket-dask: notice: {src}: mode 0 without IMOD stamp read as unsigned")
    arr = fd.open_var(run, tiltseries_var(0, "measured"))
    np.testing.assert_array_equal(arr.values, u8.astype(np.float32))
    assert arr.attrs["mrc_mode0"].startswith("unsigned (no IMOD stamp")


def test_cli_refuses_anisotropic_and_degenerate_angles_in_one_line(tmp_path):
    src = stack_file(tmp_path / "aniso.mrc", np.ones((3, 6, 8), np.float32), voxel=(10.0, 12.0, 10.0))
    run = tmp_path / "run.zarr"
    proc = run_cli("import-mrc", src, run, "t/ts/m", "--angles", "-2", "2", "2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    err = one_line(proc.stderr, "faket-dask: error:")
    assert "aniso.mrc: anisotropic pixel size" in err and "--pixel-size-A" in err
    proc = run_cli("import-mrc", src, run, "t/ts/m", "--angles", "5", "5", "1", "--pixel-size-A", "10")
    assert proc.returncode == 2
    assert "--angles 5 5 1: 1 tilt angle is 5°" in one_line(proc.stderr, "faket-dask: error:")
    assert not run.exists()
