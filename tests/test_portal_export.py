"""CZ cryoET Data Portal NDJSON export: the record schema, one file per class, point vs
orientedPoint classes, and refusing to overwrite (every per-class file checked before any is
written). The orientation convention itself is proved in ``tests/test_orientations.py``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from scipy.spatial.transform import Rotation

from faket_dask import datamodel
from faket_dask.errors import InputError, OutputExistsError
from faket_dask.kernels.specimen_placement import COLUMNS, EXTRA_COLUMNS
from faket_dask.stages.particle_export import export_particles
from faket_dask.stages.particles import particles_dataset, particles_from_masks
from faket_dask.stages.portal_export import portal_annotation_files
from faket_dask.stages.specimen import write_specimen

EXE = str(Path(sys.executable).with_name("faket-dask"))
PIX = 10.0
SHAPE = (16, 24, 32)

#: (class name, class id, x, y, z, size column or None) — proteins, a vesicle, gold, actin, and
#: a class name that needs sanitising
ROWS = [("ribo", 1, 3.0, 4.0, 5.0, None), ("vesicle", 2, 10.5, 12.0, 8.0, "shell_radius_A"),
        ("ribo", 1, 20.25, 7.0, 9.5, None), ("fiducial", 3, 28.0, 20.0, 3.0, "bead_radius_A"),
        ("actin", 4, 15.0, 15.0, 12.0, "length_A"), ("my map", 5, 6.0, 18.0, 11.0, None)]
FILES = {"ribo": "ann_ribo_orientedpoint.ndjson", "vesicle": "ann_vesicle_orientedpoint.ndjson",
         "fiducial": "ann_fiducial_point.ndjson", "actin": "ann_actin_point.ndjson",
         "my map": "ann_my_map_orientedpoint.ndjson"}


def table() -> dict[str, np.ndarray]:
    n = len(ROWS)
    t = {c: np.zeros(n) for c in COLUMNS + EXTRA_COLUMNS}
    t["class_name"] = np.array([r[0] for r in ROWS])
    t["class_id"] = np.array([r[1] for r in ROWS], np.int32)
    for j, a in enumerate("xyz"):
        t[a] = np.array([r[2 + j] for r in ROWS])
    for i, r in enumerate(ROWS):
        if r[5]:
            t[r[5]][i] = 40.0
    t["rot"], t["tilt"], t["psi"] = np.arange(n) * 37.0 - 80, np.arange(n) * 21.0 + 5, np.arange(n) * -13.0
    return t


def read_ndjson(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n") and "\n\n" not in text            # one record per line
    return [json.loads(line) for line in text.splitlines()]


def test_records_and_one_file_per_class(tmp_path):
    p = particles_dataset(table(), PIX)
    assert export_particles(p, tmp_path / "ann.ndjson") == tmp_path / "ann.ndjson"
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(FILES.values())   # no ann.ndjson, no .part
    t = table()
    euler = np.stack([t["rot"], t["tilt"], t["psi"]], 1)
    for name, fname in FILES.items():
        recs = read_ndjson(tmp_path / fname)
        rows = [i for i, r in enumerate(ROWS) if r[0] == name]
        assert len(recs) == len(rows)
        for rec, i in zip(recs, rows):
            assert rec["location"] == {"x": ROWS[i][2], "y": ROWS[i][3], "z": ROWS[i][4]}
            if fname.endswith("_orientedpoint.ndjson"):
                assert set(rec) == {"type", "location", "xyz_rotation_matrix"} and rec["type"] == "orientedPoint"
                m = np.array(rec["xyz_rotation_matrix"])
                assert m.shape == (3, 3) and np.isclose(np.linalg.det(m), 1.0)
                assert np.allclose(m @ m.T, np.eye(3))              # the portal's own validation
                assert np.allclose(m, Rotation.from_euler("ZYZ", euler[i], degrees=True).as_matrix())
            else:
                assert set(rec) == {"type", "location"} and rec["type"] == "point"
    # the file names the CLI prints are the ones written
    assert {n: f.name for n, (f, _) in portal_annotation_files(p, tmp_path / "ann.ndjson").items()} == FILES


def test_tables_derived_from_masks_are_points(tmp_path):
    cm = np.zeros(SHAPE, np.uint8)
    cm[2:5, 2:5, 2:5], cm[8:11, 10:13, 20:23] = 1, 2
    p = particles_from_masks(cm, pixel_size_A=PIX, class_names=["ribo", "proteasome"])
    export_particles(p, tmp_path / "d.ndjson")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["d_proteasome_point.ndjson", "d_ribo_point.ndjson"]
    rec = read_ndjson(tmp_path / "d_ribo_point.ndjson")
    assert rec == [{"type": "point", "location": {"x": 3.0, "y": 3.0, "z": 3.0}}]


def test_existing_file_refused_before_anything_is_written(tmp_path):
    p = particles_dataset(table(), PIX)
    old = tmp_path / FILES["fiducial"]
    old.write_text("old\n")
    with pytest.raises(OutputExistsError, match="ann_fiducial_point.ndjson.*--overwrite"):
        export_particles(p, tmp_path / "ann.ndjson")
    assert [f.name for f in tmp_path.iterdir()] == [old.name] and old.read_text() == "old\n"
    export_particles(p, tmp_path / "ann.ndjson", overwrite=True)
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(FILES.values())
    assert read_ndjson(old)[0]["type"] == "point"


def test_bad_input_writes_nothing(tmp_path):
    t = table()
    t["class_name"][0] = t["class_name"][2] = "a b"
    t["class_name"][5] = "a_b"                                   # the same file name as "a b"
    with pytest.raises(InputError, match="'a b' and 'a_b'"):
        export_particles(particles_dataset(t, PIX), tmp_path / "x.ndjson")
    with pytest.raises(InputError, match="empty"):
        export_particles(particles_dataset(table(), PIX).isel(particle=slice(0, 0)), tmp_path / "x.ndjson")
    with pytest.raises(InputError, match="does not exist"):
        export_particles(particles_dataset(table(), PIX), tmp_path / "nowhere" / "x.ndjson")
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_and_refuses(tmp_path, capsys):
    """In-process for the files it prints; the real console script for the one-line refusal."""
    from faket_dask import cli

    store = tmp_path / "run.zarr"
    spec = xr.Dataset({"density": datamodel.volume(np.zeros(SHAPE, np.float32), PIX, name="density")})
    spec.attrs.update(pixel_size_A=PIX)
    write_specimen(spec, particles_dataset(table(), PIX, {"source": "test"}), store, 0, progress=None)
    out = tmp_path / "out"
    out.mkdir()
    argv = ["export-particles", str(store), str(out / "ann.ndjson"), "--tomo", "0"]
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    assert all(str(out / f) in printed for f in FILES.values()) and "6 particles" in printed
    before = {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in out.iterdir()}
    (out / FILES["ribo"]).unlink()                                # one missing, the others exist
    proc = subprocess.run([EXE, *argv], check=False, capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, FAKET_PROGRESS="0"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faket-dask: error: ") and "--overwrite" in lines[0]
    assert not (out / FILES["ribo"]).exists()                     # nothing written, not even the free one
    assert {f.name: (f.read_bytes(), f.stat().st_mtime_ns) for f in out.iterdir()} == \
        {k: v for k, v in before.items() if k != FILES["ribo"]}


def test_tomogram_grid_keeps_sizes_and_record_types(reference_run, tmp_path):
    """The tomogram-grid table carries the per-object sizes (Å, grid-independent), so gold beads
    stay ``point`` records there too, as on the specimen grid."""
    from faket_dask.stages.particles import open_particles

    store = reference_run["out"] / "run.zarr"
    spec = open_particles(store, 0, grid="specimen")
    tomo = open_particles(store, 0, grid="tomogram")
    for c in EXTRA_COLUMNS:
        assert np.array_equal(tomo[c].values, spec[c].values), c
    kinds = {k: kind for k, (_, kind) in portal_annotation_files(spec, tmp_path / "a.ndjson").items()}
    assert {k: kind for k, (_, kind) in portal_annotation_files(tomo, tmp_path / "a.ndjson").items()} == kinds
    assert "point" in kinds.values() and "orientedPoint" in kinds.values(), kinds
