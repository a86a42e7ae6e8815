"""Orientation conventions, proved: every export that carries orientations is read back with the
format's own semantics, its particles are re-rendered from the file alone (template turned by the
written orientation, placed at the written position) and matched against the rendered specimen.

* RELION 5 STAR: ``rlnAngleRot/Tilt/Psi`` through RELION's own ``Euler_angles2matrix`` (the
  closed form of ``src/euler.cpp``), applied reference → particle (RELION's projector and
  ``ParticleSet::getMatrix4x4``); positions from ``rlnCenteredCoordinate{X,Y,Z}Angst``.
* SHREC 2021 ``particle_locations.txt``: ``Rz(Z1) Rx(X) Rz(Z2)`` active (the SHREC generator's
  voltools ``szxz`` rotation), positions ``x y z`` in voxels.
* CZ cryoET Data Portal NDJSON: ``xyz_rotation_matrix`` as the active rotation reference →
  particle on (x, y, z) columns, ``location`` in voxels.
* copick picks (``export-copick``): ``transformation_`` object → tomogram (copick
  ``docs/geometry.md`` §2.2), ``location`` in Å (voxel ``i`` at ``i · voxel_spacing``).

Each has a negative control — the same file read with a wrong convention (the transposed
matrix, ZXZ read as ZYZ) — that must miss the threshold, so the test can fail. The specimen is
small (two procedural classes with 4 and 6 lobes and one asymmetric map class, particles on a
lattice so no neighbour reaches into another's sphere, rotations of 40°-140° so that a
transposed matrix is a different orientation) and renders in a fraction of a second.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import starfile
from scipy.spatial.transform import Rotation

from faket_dask.kernels.specimen import render_block
from faket_dask.kernels.specimen_placement import COLUMNS, EXTRA_COLUMNS
from faket_dask.kernels.specimen_templates import map_class, procedural_class
from faket_dask.stages.particle_export import export_particles
from faket_dask.stages.particles import particles_dataset

sys.path.insert(0, str(Path(__file__).parent))
from rerender import particle_correlations, template_radius_vox

PIX = 6.0
SPACING = 31                       # lattice step (voxels): > twice the largest template radius
NX, NY = 4, 2
SHAPE = (32, 16 + SPACING * (NY - 1) + 17, 16 + SPACING * (NX - 1) + 17)     # Z, Y, X
THRESHOLD = 0.99


def _map_template() -> np.ndarray:
    """An asymmetric density: three blobs of different sizes at the corners of a scalene triangle."""
    n = 25
    zz, yy, xx = np.indices((n, n, n), dtype=np.float64) - (n - 1) / 2
    out = np.zeros((n, n, n))
    for (x, y, z), s in (((6.0, 0.0, 0.0), 2.5), ((-3.0, 5.0, 1.0), 2.0), ((-2.0, -4.0, -5.0), 1.5)):
        out += np.exp(-((xx - x) ** 2 + (yy - y) ** 2 + (zz - z) ** 2) / (2 * s * s))
    return out


CLASSES = [procedural_class("1u6g", 11.5), procedural_class("3cf3", 13.0),
           map_class("blobs", _map_template(), PIX, PIX)]
CLASS_OF_SITE = [1, 2, 3, 1, 2, 1, 2, 3]                       # class ids on the 8 lattice sites


@pytest.fixture(scope="module")
def specimen() -> dict:
    """The rendered density and the particle table (8 particles of 3 classes)."""
    rng = np.random.default_rng(7)
    rots: list[Rotation] = []
    while len(rots) < NX * NY:
        r = Rotation.random(random_state=rng)
        if 40.0 <= np.degrees(r.magnitude()) <= 140.0:
            rots.append(r)
    euler = np.array([r.as_euler("ZYZ", degrees=True) for r in rots])
    sites = np.array([[16.0 + SPACING * i, 16.0 + SPACING * j, 16.0] for j in range(NY) for i in range(NX)])
    pos = sites + rng.uniform(-0.5, 0.5, sites.shape)               # sub-voxel positions
    n = len(pos)
    table = {c: np.zeros(n) for c in COLUMNS + EXTRA_COLUMNS}
    table["class_id"] = np.asarray(CLASS_OF_SITE, np.int32)
    table["class_name"] = np.array([CLASSES[k - 1].name for k in CLASS_OF_SITE])
    table["x"], table["y"], table["z"] = pos.T
    table["rot"], table["tilt"], table["psi"] = euler.T
    table["radius_A"] = np.array([CLASSES[k - 1].bounding_radius_A(PIX) for k in CLASS_OF_SITE])
    assert max(template_radius_vox(c, PIX) for c in CLASSES) < SPACING / 2      # no neighbour reaches in
    density = render_block(table, CLASSES, (0, 0, 0), SHAPE, PIX)[0]
    return {"density": density, "particles": particles_dataset(table, PIX, {"tomo": 0}), "table": table}


def _by_class(names: np.ndarray, pos: np.ndarray, mats: np.ndarray, density: np.ndarray) -> dict[str, np.ndarray]:
    """Correlation of every particle, per class name."""
    out = {}
    for cls in CLASSES:
        sel = np.asarray(names) == cls.name
        assert sel.any(), cls.name
        out[cls.name] = particle_correlations(cls, PIX, pos[sel], mats[sel], density)
    return out


def _check(good: dict[str, np.ndarray], bad: dict[str, np.ndarray], what: str) -> None:
    """Every particle matches with the format's convention; none with the wrong one."""
    lo = min(float(c.min()) for c in good.values())
    hi = max(float(c.max()) for c in bad.values())
    print(f"{what}: min correlation {lo:.5f}; wrong convention: max {hi:.3f}")
    assert all(len(c) for c in good.values())
    assert lo >= THRESHOLD, {k: np.round(v, 4).tolist() for k, v in good.items()}
    assert hi < THRESHOLD, {k: np.round(v, 4).tolist() for k, v in bad.items()}


def test_rerender_of_the_table_itself(specimen):
    """The helper reproduces the renderer from the table's own convention (M = Rz Ry Rz active)."""
    t = specimen["table"]
    pos = np.stack([t["x"], t["y"], t["z"]], 1)
    m = Rotation.from_euler("ZYZ", np.stack([t["rot"], t["tilt"], t["psi"]], 1), degrees=True).as_matrix()
    _check(_by_class(t["class_name"], pos, m, specimen["density"]),
           _by_class(t["class_name"], pos, m.transpose(0, 2, 1), specimen["density"]), "table")


# -- RELION 5 STAR -----------------------------------------------------------------------------
def relion_euler_matrix(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION's ``Euler_angles2matrix(rot, tilt, psi)`` (``src/euler.cpp``), degrees."""
    a, b, g = np.radians([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array([[cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
                     [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
                     [sc, ss, cb]])


def test_relion_star(specimen, tmp_path):
    star = starfile.read(export_particles(specimen["particles"], tmp_path / "p.star", tomo_name="TS_1",
                                          shape_zyx=SHAPE), always_dict=True)
    part, px = star["particles"], float(star["optics"]["rlnTomoTiltSeriesPixelSize"].iloc[0])
    Z, Y, X = SHAPE
    centre = np.array([(X - 1) / 2, (Y - 1) / 2, (Z - 1) / 2])      # the export's centre (its docstring)
    pos = np.stack([part[f"rlnCenteredCoordinate{a}Angst"].to_numpy() for a in "XYZ"], 1) / px + centre
    # RELION turns the reference into the particle by A = Euler_angles2matrix(rot, tilt, psi)
    a = np.array([relion_euler_matrix(*r) for r in part[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()])
    names = part["rlnClassName"].to_numpy().astype(str)
    _check(_by_class(names, pos, a, specimen["density"]),
           _by_class(names, pos, a.transpose(0, 2, 1), specimen["density"]), "RELION STAR")


# -- SHREC particle_locations.txt --------------------------------------------------------------
def test_shrec_txt(specimen, tmp_path):
    lines = export_particles(specimen["particles"], tmp_path / "particle_locations.txt").read_text().splitlines()
    rows = [ln.split() for ln in lines]
    names = np.array([r[0] for r in rows])
    pos = np.array([[float(v) for v in r[1:4]] for r in rows])
    angles = np.array([[float(v) for v in r[4:7]] for r in rows])      # rotation_Z1 rotation_X rotation_Z2
    good = Rotation.from_euler("ZXZ", angles, degrees=True).as_matrix()
    wrong = Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix()     # ZXZ read as ZYZ
    _check(_by_class(names, pos, good, specimen["density"]),
           _by_class(names, pos, wrong, specimen["density"]), "SHREC txt")


# -- CZ cryoET Data Portal NDJSON --------------------------------------------------------------
def test_portal_ndjson(specimen, tmp_path):
    export_particles(specimen["particles"], tmp_path / "ann.ndjson")
    names, pos, mats = [], [], []
    for f in sorted(tmp_path.glob("ann_*_orientedpoint.ndjson")):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            assert rec["type"] == "orientedPoint"
            names.append(f.name[len("ann_"):-len("_orientedpoint.ndjson")])
            pos.append([rec["location"][a] for a in "xyz"])
            mats.append(rec["xyz_rotation_matrix"])
    assert len(names) == len(CLASS_OF_SITE)
    names, pos, mats = np.array(names), np.array(pos), np.array(mats)
    _check(_by_class(names, pos, mats, specimen["density"]),
           _by_class(names, pos, mats.transpose(0, 2, 1), specimen["density"]), "portal NDJSON")


# -- copick picks (the copick exporter's files, read as plain JSON) ----------------------------
def test_copick_picks(specimen, tmp_path):
    """``export-copick``'s picks: ``ExperimentRuns/<run>/Picks/<user>_<session>_<object>.json``,
    ``location`` in Å (voxel ``i`` at ``i · voxel_spacing``), ``transformation_`` the 4×4 object →
    tomogram matrix (copick ``docs/geometry.md`` §2.2: ``p_tomo = T p_obj``; full position =
    location + ``T[:3, 3]``)."""
    cx = pytest.importorskip("faket_dask.stages.copick_export")
    from faket_dask import datamodel
    from faket_dask import store as st
    from faket_dask.store.layout import labels_particles_group, tomogram_group

    store = tmp_path / "run.zarr"
    lab = specimen["particles"].copy()                 # tomogram grid = specimen grid (binning 1)
    lab.attrs.update(pixel_size_A=PIX, binning=1, grid="tomogram", class_names=[c.name for c in CLASSES])
    for v in lab.variables.values():
        v.encoding.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                # ome-zarr deprecations, zarr v3 unicode
        st.save_image(datamodel.volume(specimen["density"], PIX, name="density"), store, tomogram_group(0),
                      "noiseless", progress=None)
        lab.to_zarr(str(store), group=labels_particles_group(0), mode="w", zarr_format=3, consolidated=False)
        cx.write_copick_project(cx.plan_copick_export(store, tmp_path / "copick"))
    names, pos, mats = [], [], []
    for f in sorted((tmp_path / "copick" / "ExperimentRuns").glob("*/Picks/*.json")):
        data = json.loads(f.read_text())
        s = float(data["voxel_spacing"])
        for p in data["points"]:
            T = np.asarray(p["transformation_"], np.float64)
            names.append(data["pickable_object_name"])
            pos.append((np.array([p["location"][a] for a in "xyz"]) + T[:3, 3]) / s)
            mats.append(T[:3, :3])
    assert len(names) == len(CLASS_OF_SITE)
    names, pos, mats = np.array(names), np.array(pos), np.array(mats)
    _check(_by_class(names, pos, mats, specimen["density"]),
           _by_class(names, pos, mats.transpose(0, 2, 1), specimen["density"]), "copick picks")
