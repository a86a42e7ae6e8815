"""Specimen generator: determinism, no overlaps, labels agree with density, table matches the
rendering, chunk invariance, class sizes, particle-list exports, CLI."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from faket_dask import store as st
from faket_dask.kernels import specimen as K
from faket_dask.kernels.specimen_placement import COLUMNS, random_rotations, rotation_matrices
from faket_dask.kernels.specimen_templates import builtin_classes, procedural_class
from faket_dask.stages.particle_export import export_particles
from faket_dask.stages.particles import open_particles
from faket_dask.stages.specimen import build_classes, generate_specimen, write_specimen
from faket_dask.store.layout import specimen_group

EXE = str(Path(sys.executable).with_name("faket-dask"))
SHAPE = (64, 80, 80)
PIX = 10.0


def gen(seed=1, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # small volume: some objects find no room
        kw.setdefault("n_particles", 30)
        kw.setdefault("n_vesicles", 1)
        kw.setdefault("n_fiducials", 3)
        return generate_specimen(SHAPE, PIX, seed, **kw)


@pytest.fixture(scope="module")
def rendered():
    spec, parts = gen(1, cy=16, cz=8)
    return spec.compute(), parts


def test_same_seed_identical_different_seed_differs(rendered):
    spec, parts = rendered
    again, parts2 = gen(1, cy=40, cz=12)
    again = again.compute()
    for v in ("density", "class_mask", "occupancy"):
        assert np.array_equal(spec[v].values, again[v].values), v
    assert parts.equals(parts2)
    other, parts3 = gen(2)
    assert not np.array_equal(spec["density"].values, other["density"].values)
    assert not np.array_equal(parts["x"].values[:5], parts3["x"].values[:5])


def test_chunked_equals_one_piece(rendered):
    spec, parts = rendered
    classes = build_classes(PIX)
    table = {c: parts[c].values for c in COLUMNS}
    d, m, o = K.render_block(table, classes, (0, 0, 0), SHAPE, PIX)
    assert np.array_equal(spec["density"].values, d)
    assert np.array_equal(spec["class_mask"].values, m)
    assert np.array_equal(spec["occupancy"].values, o)
    assert spec["density"].dtype == np.float32 and m.dtype == np.uint8 and o.dtype == np.uint32
    # an odd block anywhere equals the same window of the whole
    d2, m2, o2 = K.render_block(table, classes, (7, 13, 21), (17, 29, 33), PIX)
    assert np.array_equal(d2, d[7:24, 13:42, 21:54])
    assert np.array_equal(o2, o[7:24, 13:42, 21:54])


def test_contents_and_no_overlaps(rendered):
    _, parts = rendered
    names = list(parts["class_name"].values)
    assert "vesicle" in names and "fiducial" in names
    assert sum(n not in ("vesicle", "fiducial") for n in names) >= 10
    c = np.stack([parts[k].values for k in ("z", "y", "x")], 1)
    r = parts["radius_A"].values / PIX
    dist = np.sqrt(((c[:, None] - c[None]) ** 2).sum(-1))
    iu = np.triu_indices(len(r), 1)
    assert np.all(dist[iu] >= (r[:, None] + r[None])[iu])
    # every bounding sphere lies inside the volume
    assert np.all(c - r[:, None] >= -0.5) and np.all(c + r[:, None] <= np.array(SHAPE) - 0.5)


def test_labels_agree_with_density(rendered):
    spec, parts = rendered
    d, m, o = (spec[v].values for v in ("density", "class_mask", "occupancy"))
    thr = np.asarray(spec["class_mask"].attrs["thresholds"])
    cid = parts["class_id"].values
    assert np.array_equal(m > 0, o > 0)
    labelled = o > 0
    # occupancy id <-> table row, class mask = the row's class, density above its threshold
    assert np.array_equal(m[labelled], cid[o[labelled] - 1])
    assert np.all(d[labelled] >= thr[m[labelled] - 1])
    # unlabelled voxels: density below the threshold of the particle whose sphere holds them
    zz, yy, xx = np.indices(SHAPE)
    owner = np.zeros(SHAPE, dtype=np.int64)
    for i in range(parts.sizes["particle"]):
        rr = parts["radius_A"].values[i] / PIX
        inside = ((zz - parts["z"].values[i]) ** 2 + (yy - parts["y"].values[i]) ** 2
                  + (xx - parts["x"].values[i]) ** 2) <= rr ** 2
        assert not np.any(owner[inside]), "spheres overlap"
        owner[inside] = i + 1
    assert np.all(d[owner == 0] == 0)                       # no density outside the objects
    bg = (~labelled) & (owner > 0)
    assert np.all(d[bg] < thr[cid[owner[bg] - 1] - 1])
    assert np.all(o[labelled] == owner[labelled])
    assert spec["class_mask"].attrs["class_names"][-2:] == ["vesicle", "fiducial"]


def test_table_matches_rendering(rendered):
    spec, parts = rendered
    o = spec["occupancy"].values
    d = spec["density"].values
    for i in range(parts.sizes["particle"]):
        vox = np.argwhere(o == i + 1)
        assert len(vox), f"particle {i + 1} ({parts['class_name'].values[i]}) has no labelled voxel"
        com = vox.mean(0)
        want = np.array([parts[k].values[i] for k in ("z", "y", "x")])
        assert np.abs(com - want).max() < 1.0, (i, com, want)
        if parts["class_name"].values[i] == "fiducial":
            assert d[o == i + 1].max() > 5                  # gold is much denser than protein


def test_builtin_classes_shapes_and_sizes():
    classes = builtin_classes()
    assert len(classes) >= 12
    diam_nm = np.array([c.diameter_A() / 10 for c in classes])
    assert len(set(np.round(diam_nm, 1))) == len(classes)
    assert diam_nm.min() <= 4.5 and diam_nm.max() >= 24 and np.all((diam_nm >= 3.5) & (diam_nm <= 26))
    # same name -> same atoms (fixed per class); different classes differ in shape, not just scale
    assert np.array_equal(procedural_class("1bxn", 14.5).atoms_A, classes[8].atoms_A)
    shape_sig = {c.name: np.round(np.sort(np.linalg.eigvalsh(np.cov(c.atoms_A.T)))
                                  / np.linalg.eigvalsh(np.cov(c.atoms_A.T)).max(), 2).tobytes()
                 for c in classes}
    assert len(set(shape_sig.values())) == len(classes)


def test_rotations_uniform():
    rng = np.random.default_rng(0)
    e = random_rotations(20000, rng)
    # uniform on SO(3): cos(tilt) is uniform on [-1, 1]
    h, _ = np.histogram(np.cos(np.radians(e[:, 1])), bins=10, range=(-1, 1))
    assert h.min() > 0.9 * 2000 and h.max() < 1.1 * 2000


def test_templates_dir(tmp_path):
    from tests.conftest import write_mrc

    # an L-shaped map at 5 Å -> resampled to 10 Å
    m = np.zeros((24, 24, 24), np.float32)
    m[6:18, 10:14, 10:14] = 1
    m[14:18, 10:14, 14:20] = 1
    write_mrc(tmp_path / "ell.mrc", m, voxel_size=5.0, stack=False)
    spec, parts = generate_specimen((40, 64, 64), PIX, 0, n_particles=3, n_vesicles=0,
                                    n_fiducials=0, templates_dir=tmp_path, cy=8, cz=5)
    assert parts.sizes["particle"] == 3
    assert set(parts["class_name"].values) == {"ell"}
    s = spec.compute()
    whole, _ = generate_specimen((40, 64, 64), PIX, 0, n_particles=3, n_vesicles=0,
                                 n_fiducials=0, templates_dir=tmp_path)
    assert np.array_equal(s["density"].values, whole["density"].values)
    o = s["occupancy"].values
    for i in range(parts.sizes["particle"]):
        com = np.argwhere(o == i + 1).mean(0)
        want = np.array([parts[k].values[i] for k in ("z", "y", "x")])
        assert np.abs(com - want).max() < 1.0
    from faket_dask.errors import InputError

    with pytest.raises(InputError, match="not a directory"):
        generate_specimen((32, 48, 48), PIX, 0, templates_dir=tmp_path / "nothing_here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no \\*.mrc"):
        generate_specimen((32, 48, 48), PIX, 0, templates_dir=tmp_path / "empty")


def test_write_and_exports(rendered, tmp_path, client):
    spec, parts = gen(1, cy=24)
    path = tmp_path / "run.zarr"
    write_specimen(spec, parts, path, 0, progress=None)
    back = st.open(path, specimen_group(0))
    assert tuple(back["density"].dims) == ("z", "y", "x")
    assert np.array_equal(back["occupancy"].values, rendered[0]["occupancy"].values)
    p = open_particles(path, 0)
    assert list(p["class_name"].values) == list(parts["class_name"].values)
    n = p.sizes["particle"]

    import starfile

    star = starfile.read(export_particles(p, tmp_path / "p.star"), always_dict=True)["particles"]
    assert len(star) == n and np.allclose(star["rlnCoordinateX"], p["x"].values)
    assert np.allclose(star["rlnAngleTilt"], p["tilt"].values)
    assert list(star["rlnClassName"]) == list(p["class_name"].values)
    csv = pd.read_csv(export_particles(p, tmp_path / "p.csv"))
    assert len(csv) == n and np.allclose(csv["z"], p["z"].values)
    txt = export_particles(p, tmp_path / "particle_locations.txt").read_text().splitlines()
    assert len(txt) == n
    f = txt[0].split()
    assert f[0] == p["class_name"].values[0] and len(f) == 7
    # the ZXZ angles describe the same rotation as the ZYZ ones
    from scipy.spatial.transform import Rotation

    r1 = Rotation.from_euler("ZXZ", [float(v) for v in f[4:]], degrees=True).as_matrix()
    r2 = rotation_matrices(np.array([p[k].values[0] for k in ("rot", "tilt", "psi")]))[0]
    assert np.allclose(r1, r2, atol=1e-4)
    from faket_dask.errors import InputError, OutputExistsError

    with pytest.raises(OutputExistsError):
        export_particles(p, tmp_path / "p.csv")
    with pytest.raises(InputError, match="unknown particle-list format"):
        export_particles(p, tmp_path / "p.json")


def run_cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, FAKET_PROGRESS="0")
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=180)


def test_cli(tmp_path):
    store = tmp_path / "run.zarr"
    proc = run_cli("specimen", store, "--tomo", 0, "--shape", 64, 96, 96, "--pixel-size-A", 10,
                   "--seed", 5, "--particles", 20, "--vesicles", 1, "--fiducials", 2, "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    ds = st.open(store, specimen_group(0))
    assert ds["density"].shape == (64, 96, 96) and ds["class_mask"].dtype == np.uint8
    assert float(ds["density"].max()) > 0
    proc = run_cli("export-particles", store, tmp_path / "particle_locations.txt", "--tomo", 0)
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "particle_locations.txt").read_text().splitlines()
    assert len(lines) == open_particles(store, 0).sizes["particle"]
    # existing output without --overwrite, and a bad shape: one line, no traceback
    proc = run_cli("specimen", store, "--shape", 64, 96, 96, "--seed", 5)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "exists" in proc.stderr
    proc = run_cli("specimen", tmp_path / "new.zarr", "--shape", 0, 96, 96)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "--shape" in proc.stderr
    assert not (tmp_path / "new.zarr").exists()
