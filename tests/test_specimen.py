"""Specimen generator: determinism, no overlaps, labels agree with the potential, table matches
the rendering, chunk invariance, class sizes, particle-list exports, CLI.

The helpers (:func:`table_of`, :func:`one_row`, :func:`envelope_spheres`) are shared with
``tests/test_specimen_*.py``."""
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
from faket_dask.kernels import specimen_membranes as mem
from faket_dask.kernels.specimen_placement import (
    EXCLUSION_MARGIN_VOXELS,
    FILAMENT_COLUMNS,
    random_rotations,
    rotation_matrices,
)
from faket_dask.kernels.specimen_templates import (
    PROTEIN_CONTRAST_V,
    builtin_classes,
    procedural_class,
)
from faket_dask.stages.particle_export import export_particles
from faket_dask.stages.particles import filament_paths, open_particles
from faket_dask.stages.specimen import (
    EXTRA_CLASSES,
    build_classes,
    generate_specimen,
    write_specimen,
)
from faket_dask.store.layout import specimen_group

EXE = str(Path(sys.executable).with_name("faket-dask"))
SHAPE = (64, 80, 80)
PIX = 10.0
VOLUMES = ("density", "absorption", "class_mask", "occupancy")


def gen(seed=1, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)      # small volume: some objects find no room
        kw.setdefault("n_particles", 30)
        kw.setdefault("n_vesicles", 1)
        kw.setdefault("n_fiducials", 3)
        kw.setdefault("n_actin", 1)
        return generate_specimen(kw.pop("shape", SHAPE), kw.pop("pixel_size_A", PIX), seed, **kw)


def table_of(parts) -> dict[str, np.ndarray]:
    """The kernel table (every column and the filament paths) of a particles Dataset."""
    return {c: np.asarray(parts[c].values) for c in parts.data_vars}


def one_row(table: dict, r: int) -> dict:
    """Row ``r`` alone (its filament path renumbered to id 1)."""
    out = {c: v[r:r + 1] for c, v in table.items() if not c.startswith("filament_")}
    fid = np.asarray(table.get("filament_id", np.zeros(0)))
    sel = fid == r + 1
    for c in FILAMENT_COLUMNS:
        if c in table:
            out[c] = np.asarray(table[c])[sel]
    if sel.any():
        out["filament_id"] = np.ones(int(sel.sum()), np.uint32)
    return out


def envelope_spheres(table: dict, classes, px: float) -> list[np.ndarray]:
    """Per row: its exclusion spheres ``(z, y, x, r)`` in voxels (margin included)."""
    out = []
    fids = np.asarray(table.get("filament_id", np.zeros(0)))
    for r in range(len(table["x"])):
        cls = classes[int(table["class_id"][r]) - 1]
        c = np.array([table["z"][r], table["y"][r], table["x"][r]])
        m = EXCLUSION_MARGIN_VOXELS
        if cls.kind == "filament":
            sel = fids == r + 1
            p = np.stack([table["filament_z"][sel], table["filament_y"][sel], table["filament_x"][sel]], 1)
            out.append(np.c_[p, np.full(len(p), cls.filament.tube_radius_A / px + m)])
        elif cls.kind == "shell":
            out.append(np.r_[c, (table["shell_radius_A"][r] + mem.ENVELOPE_HALF_A) / px + m][None])
        elif cls.kind == "ball":
            out.append(np.r_[c, table["bead_radius_A"][r] / px + m][None])
        else:
            env = cls.envelope_spheres_A(px)
            rot = rotation_matrices(np.array([table["rot"][r], table["tilt"][r], table["psi"][r]]))[0]
            xyz = env[:, :3] @ rot.T / px
            out.append(np.c_[xyz[:, ::-1] + c, env[:, 3] / px + m])
    return out


@pytest.fixture(scope="module")
def rendered():
    spec, parts = gen(1, cy=16, cz=8)
    return spec.compute(), parts


def test_same_seed_identical_different_seed_differs(rendered):
    spec, parts = rendered
    again, parts2 = gen(1, cy=40, cz=12)
    again = again.compute()
    for v in VOLUMES:
        assert np.array_equal(spec[v].values, again[v].values), v
    assert parts.equals(parts2)
    other, parts3 = gen(2)
    assert not np.array_equal(spec["density"].values, other["density"].values)
    assert not np.array_equal(parts["x"].values[:5], parts3["x"].values[:5])


def test_chunked_equals_one_piece(rendered):
    spec, parts = rendered
    classes = build_classes(PIX)
    table = table_of(parts)
    d, a, m, o = K.render_block(table, classes, (0, 0, 0), SHAPE, PIX)
    for v, x in zip(VOLUMES, (d, a, m, o)):
        assert np.array_equal(spec[v].values, x), v
    assert d.dtype == a.dtype == np.float32 and m.dtype == np.uint8 and o.dtype == np.uint32
    # an odd block anywhere equals the same window of the whole
    d2, a2, m2, o2 = K.render_block(table, classes, (7, 13, 21), (17, 29, 33), PIX)
    assert np.array_equal(d2, d[7:24, 13:42, 21:54]) and np.array_equal(a2, a[7:24, 13:42, 21:54])
    assert np.array_equal(o2, o[7:24, 13:42, 21:54])


def test_contents_and_no_overlaps(rendered):
    _, parts = rendered
    names = list(parts["class_name"].values)
    assert "vesicle" in names and "fiducial" in names and "actin" in names
    assert sum(n not in EXTRA_CLASSES for n in names) >= 10
    spheres = envelope_spheres(table_of(parts), build_classes(PIX), PIX)
    for i in range(len(spheres)):
        for j in range(i + 1, len(spheres)):
            a, b = spheres[i], spheres[j]
            d = np.sqrt(((a[:, None, :3] - b[None, :, :3]) ** 2).sum(-1))
            assert np.all(d >= a[:, None, 3] + b[None, :, 3] - 1e-9), (i, j)
    # every object's centre lies inside the volume
    c = np.stack([parts[k].values for k in ("z", "y", "x")], 1)
    assert np.all(c >= -0.5) and np.all(c <= np.array(SHAPE) - 0.5)


def test_labels_agree_with_density(rendered):
    """One object per voxel: the potential of every voxel is that of ONE object rendered alone
    (its owner, the labelling one where there is a label), labels of two objects never overlap,
    and labels sit where the owner's potential reaches its class threshold."""
    spec, parts = rendered
    d, a, m, o = (spec[v].values for v in VOLUMES)
    thr = np.asarray(spec["class_mask"].attrs["thresholds"])
    ratios = np.asarray(spec["absorption"].attrs["absorption_ratios"])
    names = spec["class_mask"].attrs["class_names"]
    cid = parts["class_id"].values
    classes = build_classes(PIX)
    table = table_of(parts)
    assert np.array_equal(m > 0, o > 0)
    labelled = o > 0
    assert np.array_equal(m[labelled], cid[o[labelled] - 1])
    explained = np.zeros(SHAPE, bool)
    n_labels = np.zeros(SHAPE, np.int32)
    for r in range(len(cid)):
        da, _, ma, oa = K.render_block(one_row(table, r), classes, (0, 0, 0), SHAPE, PIX)
        n_labels += oa > 0
        mine = o == r + 1
        assert np.array_equal(d[mine], da[mine]) and np.all(oa[mine] == 1)
        explained |= (d == da) & (da != 0)
    assert n_labels.max() <= 1, "two objects label the same voxel"
    assert np.all(explained | (d == 0)), "a voxel's potential is no single object's"
    assert np.all(a == 0) == np.all(d == 0) and np.all(a[d == 0] == 0)
    rules = spec["class_mask"].attrs["label_rules"]
    for k in np.unique(m[labelled]):
        sel = m == k
        if rules[k - 1] == "potential >= threshold":
            assert np.all(d[sel] >= np.float32(thr[k - 1]))
        elif rules[k - 1] == "centre in the envelope":      # proteins: matter everywhere inside
            assert np.all(d[sel] > 0) and d[sel].mean() > 0.3 * PROTEIN_CONTRAST_V
        assert np.allclose(a[sel], ratios[k - 1] * d[sel], rtol=1e-6, atol=0)
    assert names[-4:] == ["vesicle", "fiducial", "actin", "microtubule"]


def test_table_matches_rendering(rendered):
    spec, parts = rendered
    o = spec["occupancy"].values
    d = spec["density"].values
    paths = filament_paths(parts)
    for i in range(parts.sizes["particle"]):
        name = parts["class_name"].values[i]
        vox = np.argwhere(o == i + 1)
        assert len(vox), f"particle {i + 1} ({name}) has no labelled voxel"
        if name == "actin":
            assert set(paths) == {i + 1}
            continue
        com = vox.mean(0)
        want = np.array([parts[k].values[i] for k in ("z", "y", "x")])
        assert np.abs(com - want).max() < 1.0, (i, com, want)
        if name == "fiducial":
            assert d[o == i + 1].max() > 20                 # gold: 25 V above ice at its centre
        elif name not in EXTRA_CLASSES:                     # protein: a few volts (lumpy atoms)
            assert 0.3 * PROTEIN_CONTRAST_V < d[o == i + 1].max() < 4 * PROTEIN_CONTRAST_V


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
    # molecular volumes (the lobes' union) grow with the nominal size, below the nominal sphere
    vols = np.array([c.volume_A3 for c in classes])
    assert vols[-1] > 100 * vols[0] and np.all(vols > 0)
    assert np.all(vols < np.pi / 6 * (diam_nm * 10) ** 3)
    # labels are the envelope (the lobes all atoms lie in)
    for c in classes:
        env = c.envelope_A
        d = np.sqrt(((c.atoms_A[:, None] - env[None, :, :3]) ** 2).sum(-1)) - env[None, :, 3]
        assert c.label_envelope and np.all(d.min(1) <= 1e-9)


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
                                    n_fiducials=0, templates_dir=tmp_path, cy=8, cz=5,
                                    template_units="normalised")
    assert parts.sizes["particle"] == 3
    assert set(parts["class_name"].values) == {"ell"}
    s = spec.compute()
    whole, _ = generate_specimen((40, 64, 64), PIX, 0, n_particles=3, n_vesicles=0,
                                 n_fiducials=0, templates_dir=tmp_path, template_units="normalised")
    assert np.array_equal(s["density"].values, whole["density"].values)
    # a normalised map is scaled to volts: its labelled core is about protein minus ice, not 1
    core = s["density"].values[s["occupancy"].values > 0]
    assert 0.5 * PROTEIN_CONTRAST_V < np.median(core) < 1.5 * PROTEIN_CONTRAST_V
    o = s["occupancy"].values
    for i in range(parts.sizes["particle"]):
        com = np.argwhere(o == i + 1).mean(0)
        want = np.array([parts[k].values[i] for k in ("z", "y", "x")])
        assert np.abs(com - want).max() < 1.0
    from faket_dask.errors import InputError

    with pytest.raises(InputError, match="not a directory"):
        generate_specimen((32, 48, 48), PIX, 0, templates_dir=tmp_path / "nothing_here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no template files"):
        generate_specimen((32, 48, 48), PIX, 0, templates_dir=tmp_path / "empty")


def test_write_and_exports(rendered, tmp_path, client):
    spec, parts = gen(1, cy=24)
    path = tmp_path / "run.zarr"
    write_specimen(spec, parts, path, 0, progress=None)
    back = st.open(path, specimen_group(0))
    assert tuple(back["density"].dims) == ("z", "y", "x")
    for v in VOLUMES:
        assert np.array_equal(back[v].values, rendered[0][v].values), v
    assert back["density"].attrs["units"] == "V" and back["absorption"].attrs["units"] == "V"
    p = open_particles(path, 0)
    assert list(p["class_name"].values) == list(parts["class_name"].values)
    # the filament paths come back with the table
    for c in FILAMENT_COLUMNS:
        assert np.array_equal(p[c].values, parts[c].values), c
    assert np.array_equal(p["bead_radius_A"].values, parts["bead_radius_A"].values)
    n = p.sizes["particle"]

    import starfile

    star = starfile.read(export_particles(p, tmp_path / "p.star"), always_dict=True)["particles"]
    assert len(star) == n and np.allclose(star["rlnCoordinateX"], p["x"].values)
    # RELION's Euler_angles2matrix(rot, tilt, psi) = (Rz Ry Rz)ᵀ must be the table's active M
    from scipy.spatial.transform import Rotation

    relion_A = Rotation.from_euler("ZYZ", star[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(),
                                   degrees=True).as_matrix().transpose(0, 2, 1)
    M = Rotation.from_euler("ZYZ", np.stack([p[a].values for a in ("rot", "tilt", "psi")], 1),
                            degrees=True).as_matrix()
    assert np.allclose(relion_A, M, atol=1e-6)
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


def assert_one_line(proc, *needles) -> None:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faket-dask: error:"), proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.slow
def test_cli(tmp_path):
    store = tmp_path / "run.zarr"
    proc = run_cli("specimen", store, "--tomo", 0, "--shape", 64, 96, 96, "--pixel-size-A", 10,
                   "--seed", 5, "--particles", 20, "--vesicles", 1, "--fiducials", 2, "--actin", 1,
                   "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    ds = st.open(store, specimen_group(0))
    assert ds["density"].shape == (64, 96, 96) and ds["class_mask"].dtype == np.uint8
    assert float(ds["density"].max()) > 20 and float(ds["density"].min()) < 0   # gold; bilayer core
    assert ds["absorption"].dtype == np.float32
    parts = open_particles(store, 0)
    assert "actin" in set(parts["class_name"].values) and "filament_x" in parts
    proc = run_cli("export-particles", store, tmp_path / "particle_locations.txt", "--tomo", 0)
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "particle_locations.txt").read_text().splitlines()
    assert len(lines) == parts.sizes["particle"]
    # existing output without --overwrite, and bad values: one line, no traceback
    assert_one_line(run_cli("specimen", store, "--shape", 64, 96, 96, "--seed", 5), "exists")
    new = tmp_path / "new.zarr"
    assert_one_line(run_cli("specimen", new, "--shape", 0, 96, 96), "--shape")
    assert_one_line(run_cli("specimen", new, "--shape", -16, 96, 96), "--shape")
    assert_one_line(run_cli("specimen", new, "--shape", 16, 32, 32, "--pixel-size-A", -10), "--pixel-size-A")
    assert_one_line(run_cli("specimen", new, "--shape", 16, 32, 32, "--particles", -1), "--particles")
    assert_one_line(run_cli("specimen", new, "--shape", 16, 32, 32, "--actin", -2), "--actin")
    assert_one_line(run_cli("specimen", new, "--shape", 16, 32, 32, "--microtubules", -1), "--microtubules")
    assert_one_line(run_cli("specimen", new, "--shape", 16, 32, 32, "--volume-fraction", 0.6), "--volume-fraction")
    assert_one_line(run_cli("specimen", new, "--shape", 16, 32, 32, "--volume-fraction", 0), "--volume-fraction")
    assert_one_line(run_cli("specimen", new, "--shape", 16, 32, 32, "--volume-fraction", 0.1,
                            "--particles", 3), "not both")
    assert_one_line(run_cli("specimen", new, "--shape", 16, 32, 32, "--volume-fraction", 0.5), "reached")
    assert_one_line(run_cli("specimen", new, "--shape", 16, 32, 32, "--tomo", -1), "--tomo")
    assert not new.exists()
