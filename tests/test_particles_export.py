"""Particle-list exports: RELION 5 STAR (centred Å, optics block), CSV Å columns, specimen vs
tomogram grid, tables derived from label masks, and refusing to write an empty list."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import starfile
import xarray as xr
from scipy import ndimage

from faket_dask import datamodel
from faket_dask import store as st
from faket_dask.errors import InputError, OutputExistsError
from faket_dask.kernels.specimen_placement import COLUMNS
from faket_dask.stages.particle_export import export_particles
from faket_dask.stages.particles import open_particles, particles_dataset, particles_from_masks
from faket_dask.stages.specimen import write_specimen
from faket_dask.store.layout import labels_group, labels_particles_group, particles_group, specimen_group

EXE = str(Path(sys.executable).with_name("faket-dask"))
SHAPE = (16, 24, 32)          # Z, Y, X all different, so a swapped axis shows
PIX = 10.0


def run_cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, FAKET_PROGRESS="0")
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=180)


def ball(shape, centre_zyx, r) -> np.ndarray:
    zz, yy, xx = np.indices(shape)
    c = np.asarray(centre_zyx, float)
    return (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r


#: two balls of class 1 and one of class 2, separated; centres are their exact centroids
BALLS = [(1, (5, 6, 7), 3), (1, (10, 17, 24), 3), (2, (8, 6, 24), 2)]


def ball_mask(shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    cm = np.zeros(shape, np.uint8)
    occ = np.zeros(shape, np.uint32)
    for i, (k, c, r) in enumerate(BALLS):
        b = ball(shape, c, r)
        cm[b] = k
        occ[b] = i + 1
    return cm, occ


def table(rows: list[tuple[str, int, float, float, float]]) -> dict[str, np.ndarray]:
    n = len(rows)
    t = {c: np.zeros(n) for c in COLUMNS}
    t["class_name"] = np.array([r[0] for r in rows])
    t["class_id"] = np.array([r[1] for r in rows], np.int32)
    for j, a in enumerate(("x", "y", "z")):
        t[a] = np.array([r[2 + j] for r in rows], float)
    t["rot"] = np.arange(n) * 10.0
    t["tilt"] = np.arange(n) * 5.0 + 1
    t["psi"] = -np.arange(n) * 3.0
    return t


def make_store(path: Path, rows, *, class_mask: np.ndarray | None = None, density_only=False) -> Path:
    """A store with tomo_000/specimen (SHAPE, PIX) and the given particle table."""
    dens = np.zeros(SHAPE, np.float32)
    data = {"density": datamodel.volume(dens, PIX, name="density")}
    if class_mask is not None and not density_only:
        data["class_mask"] = datamodel.volume(class_mask, PIX, name="class_mask", dtype=None)
    spec = xr.Dataset(data)
    spec.attrs.update(pixel_size_A=PIX)
    parts = particles_dataset(table(rows), PIX, {"source": "test"})
    write_specimen(spec, parts, path, 0, progress=None)
    return path


# -- tables derived from masks ------------------------------------------------------------------
def _check_balls(ds: xr.Dataset, names=("class_1", "class_1", "class_2")) -> None:
    assert ds.sizes["particle"] == 3
    assert list(ds["class_id"].values) == [k for k, _, _ in BALLS]
    assert list(ds["class_name"].values) == list(names)
    for j, (_, (z, y, x), r) in enumerate(BALLS):
        assert (ds["z"].values[j], ds["y"].values[j], ds["x"].values[j]) == (z, y, x)   # exact
        assert ds["n_voxels"].values[j] == ball(SHAPE, (z, y, x), r).sum()
    assert np.all(ds[["rot", "tilt", "psi"]].to_array().values == 0)
    assert "unknown" in ds.attrs["orientations"]
    assert ds.attrs["pixel_size_A"] == PIX


def test_particles_from_masks_components_exact():
    cm, occ = ball_mask()
    _check_balls(particles_from_masks(cm, pixel_size_A=PIX))
    # dask input read slab by slab (1 z-slice chunks: every ball crosses slab boundaries)
    d = da.from_array(cm, chunks=(1, 24, 32))
    _check_balls(particles_from_masks(d, pixel_size_A=PIX, slab_voxels=1))
    # a DataArray brings its pixel size and class names
    arr = datamodel.volume(cm, PIX, name="class_mask", dtype=None, attrs={"class_names": ["ribo", "gold"]})
    _check_balls(particles_from_masks(arr), names=("ribo", "ribo", "gold"))
    # with an occupancy volume: one row per id
    _check_balls(particles_from_masks(cm, occ, pixel_size_A=PIX))
    # an MRC class mask imported as float32 works while its values are integers
    _check_balls(particles_from_masks(cm.astype(np.float32), pixel_size_A=PIX))


def test_particles_from_masks_equals_scipy_label_for_any_slab():
    rng = np.random.default_rng(3)
    m = ((rng.random((9, 11, 13)) < 0.3) * rng.integers(1, 4, (9, 11, 13))).astype(np.uint8)
    ref = []
    for k in (1, 2, 3):
        lab, n = ndimage.label(m == k)
        com = ndimage.center_of_mass(np.ones_like(lab), lab, range(1, n + 1))
        ref += [(k, *c) for c in com]
    ref = np.array(ref)
    for chunk in (1, 2, 4, 9):
        ds = particles_from_masks(da.from_array(m, chunks=(chunk, 11, 13)), pixel_size_A=1.0, slab_voxels=1)
        got = np.stack([ds["class_id"].values, ds["z"].values, ds["y"].values, ds["x"].values], axis=1)
        assert got.shape == ref.shape and np.allclose(got, ref)


def test_particles_from_masks_refuses_bad_input():
    cm, _ = ball_mask()
    with pytest.raises(InputError, match="non-integer"):
        particles_from_masks(cm.astype(np.float32) + 0.5, pixel_size_A=PIX)
    with pytest.raises(InputError, match="pixel size"):
        particles_from_masks(cm)
    with pytest.raises(InputError, match="3D"):
        particles_from_masks(cm[0], pixel_size_A=PIX)
    with pytest.raises(InputError, match="occupancy shape"):
        particles_from_masks(cm, np.zeros((2, 2, 2), np.uint32), pixel_size_A=PIX)


# -- RELION 5 STAR and CSV ----------------------------------------------------------------------
def test_star_centred_coordinates_and_optics(tmp_path):
    Z, Y, X = SHAPE
    centre = ((X - 1) / 2, (Y - 1) / 2, (Z - 1) / 2)
    store = make_store(tmp_path / "run.zarr", [("a", 3, *centre), ("b", 5, 0.0, 0.0, 0.0),
                                               ("c", 3, X - 1.0, 2.0, 7.25)])
    p = open_particles(store, 0)
    s = starfile.read(export_particles(p, tmp_path / "p.star"), always_dict=True)
    assert set(s) == {"optics", "particles"}
    opt, part = s["optics"], s["particles"]
    assert opt["rlnTomoTiltSeriesPixelSize"].tolist() == [PIX] and opt["rlnOpticsGroup"].tolist() == [1]
    assert opt["rlnOpticsGroupName"].tolist() == ["tomo_000"]
    assert part["rlnTomoName"].tolist() == ["tomo_000"] * 3
    assert part["rlnTomoParticleName"].tolist() == ["tomo_000/1", "tomo_000/2", "tomo_000/3"]
    cx, cy, cz = (part[f"rlnCenteredCoordinate{a}Angst"].to_numpy() for a in "XYZ")
    assert (cx[0], cy[0], cz[0]) == (0.0, 0.0, 0.0)                      # the exact volume centre
    assert (cx[1], cy[1], cz[1]) == (-(X - 1) / 2 * PIX, -(Y - 1) / 2 * PIX, -(Z - 1) / 2 * PIX)
    assert (cx[2], cy[2], cz[2]) == ((X - 1) / 2 * PIX, (2 - (Y - 1) / 2) * PIX, (7.25 - (Z - 1) / 2) * PIX)
    # legacy voxel columns, angles, classes
    assert part["rlnCoordinateX"].tolist() == [centre[0], 0.0, X - 1.0]
    from scipy.spatial.transform import Rotation

    # RELION's A = Euler_angles2matrix(rot, tilt, psi) = (Rz Ry Rz)ᵀ is the table's active M
    relion_A = Rotation.from_euler("ZYZ", part[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(),
                                   degrees=True).as_matrix().transpose(0, 2, 1)
    M = Rotation.from_euler("ZYZ", np.stack([p[a].values for a in ("rot", "tilt", "psi")], 1),
                            degrees=True).as_matrix()
    assert np.allclose(relion_A, M, atol=1e-6)
    assert part["rlnClassNumber"].tolist() == [3, 5, 3] and part["rlnOpticsGroup"].tolist() == [1] * 3
    # --tomo-name
    s2 = starfile.read(export_particles(p, tmp_path / "q.star", tomo_name="TS_01"), always_dict=True)
    assert s2["particles"]["rlnTomoName"].tolist() == ["TS_01"] * 3
    assert s2["optics"]["rlnOpticsGroupName"].tolist() == ["TS_01"]
    with pytest.raises(InputError, match="tomo-name"):
        export_particles(p, tmp_path / "bad.star", tomo_name="has space")
    assert not (tmp_path / "bad.star").exists()

    csv = pd.read_csv(export_particles(p, tmp_path / "p.csv"))
    spec = st.open(store, specimen_group(0))
    # x_A, y_A, z_A are the store's own coordinates of the particle's voxel: (i + 0.5) * pixel
    assert csv["x_A"].tolist() == [(centre[0] + 0.5) * PIX, 0.5 * PIX, float(spec["x"].values[X - 1])]
    assert csv["z_A"].tolist()[1] == float(spec["z"].values[0]) and csv["y_A"].tolist()[2] == float(spec["y"].values[2])
    assert np.array_equal(csv["x_centred_A"], cx) and np.array_equal(csv["z_centred_A"], cz)
    with pytest.raises(OutputExistsError):
        export_particles(p, tmp_path / "p.csv")


def test_star_from_in_memory_table_needs_the_shape(tmp_path):
    p = particles_dataset(table([("a", 1, 0.0, 0.0, 0.0)]), PIX)
    with pytest.raises(InputError, match="volume shape is unknown"):
        export_particles(p, tmp_path / "p.star", tomo_name="t")
    assert not (tmp_path / "p.star").exists()
    s = starfile.read(export_particles(p, tmp_path / "p.star", tomo_name="t", shape_zyx=(3, 5, 7)),
                      always_dict=True)
    assert s["particles"]["rlnCenteredCoordinateXAngst"].tolist() == [-3 * PIX]
    with pytest.raises(InputError, match="empty"):
        export_particles(p.isel(particle=slice(0, 0)), tmp_path / "e.star", tomo_name="t", shape_zyx=(3, 5, 7))
    assert not (tmp_path / "e.star").exists()


def test_tomogram_grid_gives_the_same_centred_angstroms(tmp_path):
    """labels_particles (binned tomogram grid, Pipeline.labels' mapping) exports the same Å."""
    Z, Y, X = SHAPE
    rows = [("a", 1, 3.0, 4.0, 5.0), ("b", 2, 20.5, 11.0, 9.75), ("c", 1, 31.0, 23.0, 15.0)]
    store = make_store(tmp_path / "run.zarr", rows)
    b, nz_full, z0 = 2, X // 2, 3                      # thickness x // b, cropped by z0 slices
    nz_keep = nz_full - 2 * z0
    parts = st.open(store, particles_group(0)).load()
    lab = parts.copy()
    lab["x"] = (parts["x"] + 0.5) / b - 0.5
    lab["y"] = (parts["y"] + 0.5) / b - 0.5
    lab["z"] = (parts["z"] + 0.5 - Z / 2) / b + nz_full / 2 - 0.5 - z0
    lab.attrs.update(pixel_size_A=PIX * b, binning=b, grid="tomogram")
    for v in lab.variables.values():
        v.encoding.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab.to_zarr(str(store), group=labels_particles_group(0), mode="w", zarr_format=3, consolidated=False)
    grid = datamodel.volume(np.zeros((nz_keep, Y // b, X // b), np.uint8), PIX * b, name="class_mask", dtype=None)
    st.save(grid, store, labels_group(0), name="class_mask")

    a = open_particles(store, 0)
    t = open_particles(store, 0, grid="tomogram")
    assert t.attrs["pixel_size_A"] == PIX * b and t.attrs["volume_shape_zyx"] == [nz_keep, Y // b, X // b]
    for c in ("x_centred_A", "y_centred_A", "z_centred_A", "x_A", "y_A"):
        assert np.allclose(t[c].values, a[c].values, rtol=0, atol=1e-9), c
    # independently of the specimen table: Å from the tomogram's own centre (x, y: X/b voxels)
    assert np.allclose((t["x"].values + 0.5 - (X // b) / 2) * PIX * b, a["x_centred_A"].values)
    assert np.allclose((t["z"].values + z0 + 0.5 - nz_full / 2) * PIX * b, a["z_centred_A"].values)
    # z_A counts from the tomogram's own corner: the full-thickness tomogram reaches
    # (nz_full * b - Z) / 2 specimen slices below the specimen, the crop removes z0 * b of them
    assert np.allclose(t["z_A"].values - a["z_A"].values, ((nz_full * b - Z) / 2 - z0 * b) * PIX)
    ss = starfile.read(export_particles(t, tmp_path / "t.star"), always_dict=True)
    sa = starfile.read(export_particles(a, tmp_path / "a.star"), always_dict=True)
    for ax in "XYZ":
        col = f"rlnCenteredCoordinate{ax}Angst"
        assert np.allclose(ss["particles"][col], sa["particles"][col], atol=1e-6)
    assert ss["optics"]["rlnTomoTiltSeriesPixelSize"].tolist() == [PIX]   # unbinned tilt-series pixel
    assert np.allclose(ss["particles"]["rlnCoordinateX"], t["x"].values)   # tomogram voxels
    with pytest.raises(InputError, match="labels_particles"):
        open_particles(make_store(tmp_path / "other.zarr", rows), 0, grid="tomogram")


# -- empty tables: derive from the class mask, or refuse ------------------------------------
def test_cli_empty_table_refuses_without_class_mask(tmp_path):
    store = make_store(tmp_path / "run.zarr", [], density_only=True)
    for name in ("empty.star", "empty.txt", "empty.csv"):
        proc = run_cli("export-particles", store, tmp_path / name, "--tomo", 0)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"faket-dask: error: {store}: tomo_000 has no particles "
                                   "(imported grandmodel without a class mask)")
        assert not (tmp_path / name).exists()
    assert not list(tmp_path.glob(".*part"))


def test_cli_empty_table_derives_from_class_mask(tmp_path):
    cm, _ = ball_mask()
    store = make_store(tmp_path / "run.zarr", [], class_mask=cm)
    proc = run_cli("export-particles", store, tmp_path / "p.star", "--tomo", 0, "--tomo-name", "TS_7")
    assert proc.returncode == 0, proc.stderr
    assert "derived" in proc.stderr and "orientations unknown" in proc.stderr
    s = starfile.read(tmp_path / "p.star", always_dict=True)["particles"]
    Z, Y, X = SHAPE
    assert len(s) == 3 and s["rlnTomoName"].tolist() == ["TS_7"] * 3
    assert s["rlnCenteredCoordinateXAngst"].tolist() == [(c[2] - (X - 1) / 2) * PIX for _, c, _ in BALLS]
    assert s["rlnClassNumber"].tolist() == [1, 1, 2]
    # an all-zero class mask: nothing to export
    store2 = make_store(tmp_path / "zero.zarr", [], class_mask=np.zeros(SHAPE, np.uint8))
    proc = run_cli("export-particles", store2, tmp_path / "z.csv")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "class mask labels no voxel" in proc.stderr and not (tmp_path / "z.csv").exists()
    # bad destination: refused before anything is read
    proc = run_cli("export-particles", store, tmp_path / "p.json")
    assert proc.returncode == 2 and "unknown particle-list format" in proc.stderr


# -- tables with filaments, and tables written before the size columns ---------------------------
def test_filament_paths_and_size_columns_round_trip(tmp_path):
    """The filament path (dim ``filament_point``) and the per-object sizes travel with the table;
    a table stored without the size columns reads back with zeros; exports keep one line per
    object."""
    from faket_dask.kernels.specimen_placement import EXTRA_COLUMNS, FILAMENT_COLUMNS
    from faket_dask.stages.particles import filament_paths

    t = table([("actin", 13, 5.0, 6.0, 7.0), ("fiducial", 14, 20.0, 12.0, 8.0)])
    t["length_A"] = np.array([40.0, 0.0])
    t["bead_radius_A"] = np.array([0.0, 31.5])
    path = np.array([[3.0, 6.0, 7.0], [4.0, 6.0, 7.0], [5.0, 6.0, 7.0], [6.0, 6.0, 7.0], [7.0, 6.0, 7.0]])
    t["filament_id"] = np.ones(len(path), np.uint32)
    for j, a in enumerate("xyz"):
        t[f"filament_{a}"] = path[:, j]
    t["filament_nx"], t["filament_ny"], t["filament_nz"] = np.zeros(5), np.ones(5), np.zeros(5)
    parts = particles_dataset(t, PIX, {"source": "test"})
    assert parts.sizes == {"particle": 2, "filament_point": 5}
    spec = xr.Dataset({"density": datamodel.volume(np.zeros(SHAPE, np.float32), PIX, name="density")})
    spec.attrs.update(pixel_size_A=PIX)
    store = tmp_path / "run.zarr"
    write_specimen(spec, parts, store, 0, progress=None)
    p = open_particles(store, 0)
    for c in FILAMENT_COLUMNS + EXTRA_COLUMNS:
        assert np.array_equal(p[c].values, parts[c].values), c
    paths = filament_paths(p)
    assert list(paths) == [1] and np.array_equal(paths[1], path)
    assert len(pd.read_csv(export_particles(p, tmp_path / "p.csv"))) == 2
    assert len(starfile.read(export_particles(p, tmp_path / "p.star"), always_dict=True)["particles"]) == 2
    # an older table (no size columns, no filaments): the sizes read as 0
    old = particles_dataset(table([("a", 1, 1.0, 2.0, 3.0)]), PIX).drop_vars(list(EXTRA_COLUMNS))
    store2 = tmp_path / "old.zarr"
    write_specimen(spec, old, store2, 0, progress=None)
    p2 = open_particles(store2, 0)
    assert all(np.array_equal(p2[c].values, [0.0]) for c in EXTRA_COLUMNS)
    assert filament_paths(p2) == {}
