"""Templates in volts from atomic models (gemmi) and MRC maps with units (issue 11, items 2-3).

Every model is built here with gemmi and written by the test (no downloads).
"""
from __future__ import annotations

import gzip
import shutil

import gemmi
import numpy as np
import pytest
from conftest import write_mrc

from faket_dask.errors import InputError
from faket_dask.kernels import atomic_model as am
from faket_dask.kernels.potential import (
    AVOGADRO,
    POTENTIAL_PER_SCATTERING_V_A2,
    PROTEIN_DENSITY_G_CM3,
    PROTEIN_RESIDUE,
    PROTEIN_RESIDUE_DA,
    ice_potential_V,
    protein_potential_V,
    scattering_f0_A,
)
from faket_dask.stages.templates import load_template_dir

HEAVY = {e: n for e, n in PROTEIN_RESIDUE.items() if e != "H"}
#: averagine H per heavy atom, computed here from the formula (not taken from the module)
H_RATIO = PROTEIN_RESIDUE["H"] / sum(HEAVY.values())
CONTRAST_V = protein_potential_V() - ice_potential_V()

TINY_PDB = """\
HEADER    TEST                                    01-JAN-00   9TST              
ATOM      1  N   GLY A   1      -1.200   0.500   0.100  1.00 10.00           N  
ATOM      2  CA  GLY A   1       0.000   0.000   0.000  1.00 10.00           C  
ATOM      3  C   GLY A   1       1.300   0.700   0.000  1.00 10.00           C  
ATOM      4  O   GLY A   1       1.400   1.900   0.300  1.00 10.00           O  
ATOM      5  SG  CYS A   2       2.500  -0.500   0.700  1.00 10.00           S  
HETATM    6  O   HOH A 101      10.000  10.000  10.000  1.00 10.00           O  
END
"""


def blob(radius_A: float, seed: int = 0, elements=None, centre=(40.0, -25.0, 300.0), resname="ALA"):
    """A protein-like cluster: heavy atoms uniform in a sphere at protein number density
    (averagine heavy atoms at 1.35 g/cm³), elements in averagine proportions, B = 20 Å²."""
    rng = np.random.default_rng(seed)
    names = list(HEAVY) if elements is None else list(elements)
    prob = np.array([HEAVY.get(e, 1.0) for e in names])
    prob /= prob.sum()
    n_per_A3 = PROTEIN_DENSITY_G_CM3 * AVOGADRO * 1e-24 / PROTEIN_RESIDUE_DA * sum(HEAVY.values())
    n = round(4 / 3 * np.pi * radius_A ** 3 * n_per_A3)
    d = rng.normal(size=(n, 3))
    d *= (radius_A * rng.uniform(0, 1, n) ** (1 / 3) / np.linalg.norm(d, axis=1))[:, None]
    st = gemmi.Structure()
    st.name = "blob"
    model, chain = gemmi.Model("1"), gemmi.Chain("A")
    for i, (p, e) in enumerate(zip(d + np.asarray(centre), rng.choice(names, n, p=prob))):
        res = gemmi.Residue()
        res.name, res.seqid = resname, gemmi.SeqId(i + 1, " ")
        a = gemmi.Atom()
        a.name, a.element, a.pos, a.occ, a.b_iso = e, gemmi.Element(e), gemmi.Position(*p), 1.0, 20.0
        res.add_atom(a)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    return st


def write_both(st, tmp_path, stem="blob"):
    pdb, cif = tmp_path / f"{stem}.pdb", tmp_path / f"{stem}.cif"
    st.write_pdb(str(pdb))
    st.make_mmcif_document().write_file(str(cif))
    return pdb, cif


def expected_sum_f0(path, hydrogens):
    """Σ f_e(0) (Å) of a file's non-water atoms, counted here independently of the module."""
    st = gemmi.read_structure(str(path))
    atoms = [a for ch in st[0] for r in ch if not r.is_water() for a in r]
    heavy = [a for a in atoms if not a.element.is_hydrogen]
    total = sum(a.occ * scattering_f0_A(a.element.name) for a in heavy)
    if hydrogens == "implicit":
        total += H_RATIO * sum(a.occ for a in heavy) * scattering_f0_A("H")
    return total


@pytest.fixture(scope="module")
def blob_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("blob")
    return write_both(blob(12.0), d)


@pytest.mark.parametrize("hydrogens", ["implicit", "ignore"])
@pytest.mark.parametrize("pixel", [2.0, 6.0, 15.0])
def test_integral_is_47_878_times_sum_f0(blob_files, pixel, hydrogens):
    pdb, _ = blob_files
    v, _, info = am.potential_map(pdb, pixel, hydrogens=hydrogens)
    want = POTENTIAL_PER_SCATTERING_V_A2 * expected_sum_f0(pdb, hydrogens)
    assert v.dtype == np.float32 and v.ndim == 3
    assert info["sum_f0_A"] == pytest.approx(want / POTENTIAL_PER_SCATTERING_V_A2, rel=1e-9)
    assert float(v.sum(dtype=np.float64)) * pixel ** 3 == pytest.approx(want, rel=0.01)
    assert v.min() >= 0


def test_implicit_hydrogens_add_the_averagine_share(blob_files):
    pdb, _ = blob_files
    _, _, imp = am.potential_map(pdb, 4.0)
    _, _, ign = am.potential_map(pdb, 4.0, hydrogens="ignore")
    assert imp["n_implicit_h"] == pytest.approx(H_RATIO * imp["n_atoms"], rel=1e-9)
    assert ign["n_implicit_h"] == 0
    share = 1 - ign["sum_f0_A"] / imp["sum_f0_A"]
    assert 0.15 < share < 0.21                               # H ≈ 18 % of protein Σ f_e(0)


def test_hand_written_pdb_waters_dropped_and_id_read(tmp_path):
    f = tmp_path / "tiny.ent"
    f.write_text(TINY_PDB)
    v, _, info = am.potential_map(f, 1.0, hydrogens="ignore")
    assert info["pdb_id"] == "9TST"
    assert info["n_atoms"] == 5                              # the HOH is not counted
    want = sum(scattering_f0_A(e) for e in "NCCOS")
    assert float(v.sum(dtype=np.float64)) == pytest.approx(POTENTIAL_PER_SCATTERING_V_A2 * want, rel=0.01)


def test_explicit_hydrogens_are_used_as_they_are(tmp_path):
    lines = TINY_PDB.splitlines()
    h = "ATOM      7  HA  GLY A   1       0.000  -1.000   0.000  1.00 10.00           H  "
    f = tmp_path / "withh.pdb"
    f.write_text("\n".join(lines[:6] + [h] + lines[6:]) + "\n")
    v, _, info = am.potential_map(f, 1.0)
    assert info["n_implicit_h"] == 0
    want = sum(scattering_f0_A(e) for e in "NCCOSH")
    assert float(v.sum(dtype=np.float64)) == pytest.approx(POTENTIAL_PER_SCATTERING_V_A2 * want, rel=0.01)


def test_rna_residues_carry_fewer_hydrogens(tmp_path):
    st = blob(6.0, resname="A")
    _, _, info = am.potential_map(st, 3.0)
    assert info["n_implicit_h"] == pytest.approx(11.75 / 21.25 * info["n_atoms"], rel=1e-9)


def test_pdb_cif_and_gz_give_the_same_map(blob_files, tmp_path):
    pdb, cif = blob_files
    gz = tmp_path / "blob.pdb.gz"
    with open(pdb, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    mmcif = tmp_path / "blob.mmcif"
    shutil.copy(cif, mmcif)
    ref, c_ref, _ = am.potential_map(pdb, 3.0)
    for other in (cif, gz, mmcif):
        v, c, _ = am.potential_map(other, 3.0)
        assert v.shape == ref.shape
        np.testing.assert_allclose(v, ref, atol=1e-3 * ref.max())
        np.testing.assert_allclose(c, c_ref, atol=1e-3)


@pytest.mark.parametrize("pixel", [1.5, 7.0])
def test_map_centre_is_the_atom_centroid(pixel):
    st = blob(10.0, seed=3, elements=["C"], centre=(1000.0, 7.3, -512.9))
    # stretch it along x so the box is not a cube
    for a in (a for ch in st[0] for r in ch for a in r):
        a.pos = gemmi.Position(a.pos.x * 2 - 1000.0, a.pos.y, a.pos.z)
    v, centre, _ = am.potential_map(st, pixel)
    # one element, one B: the map's centre of mass is the centroid of the atoms
    w = v.astype(np.float64)
    com = (np.indices(v.shape).reshape(3, -1) * w.reshape(-1)).sum(1) / w.sum()
    np.testing.assert_allclose(com, centre, atol=0.5)
    assert v.shape[2] > v.shape[0]                           # x is the last axis
    # the map fades out before the box edge (nothing wrapped around the periodic cell)
    assert max(np.abs(v[[0, -1]]).max(), np.abs(v[:, [0, -1]]).max(), np.abs(v[..., [0, -1]]).max()) < 1e-3 * v.max()


@pytest.mark.parametrize("hydrogens, inside_V", [("implicit", CONTRAST_V), ("ignore", None)])
def test_relative_to_ice_map(hydrogens, inside_V):
    radius = 24.0
    st = blob(radius, seed=1)
    pixel = 2.0
    cls = am.potential_class("blob", st, pixel, hydrogens=hydrogens)
    m = cls.map_zyx
    assert cls.kind == "map" and cls.amplitude == 1.0 and cls.pdb_id == "blob"
    zyx = (np.indices(m.shape).reshape(3, -1).T - cls.map_centre) * pixel
    r = np.sqrt((zyx ** 2).sum(1)).reshape(m.shape)
    # zero outside the envelope (< 0.1 % of the ice displaced, reached ≈ 7 Å past the
    # outermost atoms at 2 Å pixels), where the absolute potential still has its tails (to 9 Å)
    far = radius + 7.5
    assert (r > far).any() and np.all(m[r > far] == 0)
    v, c = am.potential_map(st, pixel, hydrogens=hydrogens)[:2]
    r_v = np.sqrt((((np.indices(v.shape).reshape(3, -1).T - c) * pixel) ** 2).sum(1)).reshape(v.shape)
    assert (v[r_v > far] > 1e-5).any()
    # inside: protein minus ice (3.36 V) with implicit H; without H the protein is
    # 6.49 V absolute, so 1.92 V above ice. Tolerance 5 % (random packing, edge blur)
    if inside_V is None:
        inside_V = 6.494 - ice_potential_V()
    assert float(m[r < radius - 6].mean()) == pytest.approx(inside_V, rel=0.05)
    # the label covers the molecule: its volume is the sphere's within 25 %
    assert 0.4 * inside_V < cls.threshold < 0.55 * inside_V      # half the inside contrast
    labelled = (m >= cls.threshold).sum() * pixel ** 3
    assert labelled == pytest.approx(4 / 3 * np.pi * radius ** 3, rel=0.25)


@pytest.mark.parametrize("pixel", [5.0, 15.0])
def test_relative_map_integral_is_matter_minus_displaced_ice(pixel):
    st = blob(20.0, seed=2)
    _, _, info = am.potential_map(st, pixel)
    cls = am.potential_class("b", st, pixel)
    # each atom displaces its mass (with its implicit H) at protein density
    mass = sum(a.element.weight + H_RATIO * gemmi.Element("H").weight
               for ch in st[0] for res in ch for a in res)
    volume = mass / (PROTEIN_DENSITY_G_CM3 * AVOGADRO * 1e-24)
    want = POTENTIAL_PER_SCATTERING_V_A2 * info["sum_f0_A"] - ice_potential_V() * volume
    assert float(cls.map_zyx.sum(dtype=np.float64)) * pixel ** 3 == pytest.approx(want, rel=0.01)
    assert (cls.map_zyx >= cls.threshold).any()               # coarse pixels keep a label


def test_class_renders_through_render_block():
    """The class works as ClassTemplate "map" expects: render_block samples it as is (no
    amplitude), centred at the table position, and labels the molecule."""
    from faket_dask.kernels.specimen import render_block

    pixel = 4.0
    cls = am.potential_class("b", blob(20.0, seed=4), pixel)
    shape = (48, 48, 48)
    table = {"class_name": np.array(["b"]), "class_id": np.array([1]),
             "x": np.array([20.0]), "y": np.array([24.0]), "z": np.array([26.0]),
             "rot": np.array([30.0]), "tilt": np.array([50.0]), "psi": np.array([70.0]),
             "radius_A": np.array([cls.bounding_radius_A(pixel)]), "shell_radius_A": np.array([0.0])}
    density, absorption, cmask, _ = render_block(table, [cls], (0, 0, 0), shape, pixel)
    np.testing.assert_allclose(absorption, cls.absorption_ratio * density, rtol=1e-5, atol=1e-7)
    # trilinear resampling of a rotated map keeps its integral (loosely) and its place
    assert float(density.sum(dtype=np.float64)) == pytest.approx(float(cls.map_zyx.sum(dtype=np.float64)), rel=0.03)
    w = np.clip(density, 0, None).astype(np.float64)
    com = (np.indices(shape).reshape(3, -1) * w.reshape(-1)).sum(1) / w.sum()
    np.testing.assert_allclose(com, [26.0, 24.0, 20.0], atol=0.5)
    assert (cmask == 1).sum() * pixel ** 3 == pytest.approx(4 / 3 * np.pi * 20.0 ** 3, rel=0.3)


def ball(shape=(24, 24, 24), radius=7.0, scale=123.0):
    z, y, x = np.indices(shape) - (np.asarray(shape) - 1)[:, None, None, None] / 2
    r = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    return (scale / (1 + np.exp((r - radius) / 0.8))).astype(np.float32)


@pytest.mark.parametrize("map_pixel, pixel", [(5.0, 5.0), (4.0, 6.0)])
def test_mrc_normalised_scaled_to_protein_minus_ice(tmp_path, map_pixel, pixel):
    write_mrc(tmp_path / "ball.mrc", ball(), voxel_size=map_pixel)
    (cls,) = load_template_dir(tmp_path, pixel, units="normalised")
    m = cls.map_zyx
    assert cls.name == "ball" and cls.kind == "map"
    assert float(m[am.map_envelope(m)].mean()) == pytest.approx(CONTRAST_V, rel=0.01)
    assert cls.threshold == pytest.approx(0.5 * CONTRAST_V)


def test_mrc_volts_taken_as_is(tmp_path):
    data = ball(scale=3.0)
    data[0, 0, 0] = -0.25                                     # a relative map may dip below 0
    write_mrc(tmp_path / "v.mrc", data, voxel_size=8.0)
    (cls,) = load_template_dir(tmp_path, 8.0, units="V")
    np.testing.assert_array_equal(cls.map_zyx[1:-1, 1:-1, 1:-1], data)
    assert np.all(cls.map_zyx[0] == 0)                        # the zero border
    np.testing.assert_allclose(cls.map_centre, [12.5, 12.5, 12.5], atol=0.05)


def test_template_dir_mixes_models_and_maps_sorted(tmp_path, blob_files):
    pdb, cif = blob_files
    shutil.copy(cif, tmp_path / "b_model.cif")
    shutil.copy(pdb, tmp_path / "a_model.pdb")
    write_mrc(tmp_path / "c_map.mrc", ball(), voxel_size=6.0)
    (tmp_path / "notes.txt").write_text("ignored")
    classes = load_template_dir(tmp_path, 6.0, units="normalised", max_extent_A=500.0)
    assert [c.name for c in classes] == ["a_model", "b_model", "c_map"]
    np.testing.assert_allclose(classes[0].map_zyx, classes[1].map_zyx, atol=1e-3 * classes[0].map_zyx.max())


def test_unknown_units_in_volts_class_from_map():
    with pytest.raises(ValueError, match="'V', 'normalised'"):
        am.volts_class_from_map("x", ball(), 5.0, 5.0, "electrons")


def test_read_model_errors(tmp_path):
    bad_ext = tmp_path / "model.xyz"
    bad_ext.write_text(TINY_PDB)
    with pytest.raises(ValueError, match="model.xyz: unknown model extension"):
        am.read_model(bad_ext)
    junk = tmp_path / "junk.cif"
    junk.write_bytes(b"\x00\x01garbage\xff" * 10)
    with pytest.raises(ValueError, match="junk.cif: not a readable atomic model") as e:
        am.read_model(junk)
    assert "\n" not in str(e.value)


def _bad_dir(tmp_path, case):
    d = tmp_path / case
    d.mkdir()
    name = {"junk_model": "junk.cif", "empty_model": "empty.pdb", "only_water": "water.pdb",
            "junk_mrc": "junk.mrc", "not_3d": "flat.mrc", "nan": "nan.mrc", "no_voxel": "novs.mrc",
            "unknown_element": "xx.pdb", "too_big": "big.pdb", "same_stem": "blob.pdb",
            "no_positive": "neg.mrc"}.get(case, "")
    if case == "junk_model":
        (d / name).write_bytes(b"\x00\x01garbage\xff" * 10)
    elif case == "empty_model":
        (d / name).write_text("HEADER    EMPTY\nEND\n")
    elif case == "only_water":
        (d / name).write_text(TINY_PDB.splitlines()[0] + "\n" + TINY_PDB.splitlines()[6] + "\nEND\n")
    elif case == "unknown_element":
        (d / name).write_text(TINY_PDB.replace("           S  ", "           X  "))
    elif case == "junk_mrc":
        (d / name).write_bytes(b"not an mrc file")
    elif case == "not_3d":
        write_mrc(d / name, np.ones((8, 8), np.float32), stack=False)
    elif case == "nan":
        a = ball((8, 8, 8), 2.0)
        a[1, 1, 1] = np.nan
        write_mrc(d / name, a)
    elif case == "no_voxel":
        write_mrc(d / name, ball((8, 8, 8), 2.0), voxel_size=0.0)
    elif case == "no_positive":
        write_mrc(d / name, -ball((8, 8, 8), 2.0))
    elif case == "too_big":
        blob(30.0).write_pdb(str(d / name))
    elif case == "same_stem":
        (d / name).write_text(TINY_PDB)
        write_mrc(d / "blob.mrc", ball((8, 8, 8), 2.0))
    elif case == "many":
        for i in range(251):
            (d / f"t{i:03d}.mrc").write_bytes(b"")
        name = ""
    elif case == "no_files":
        (d / "readme.txt").write_text("no templates here")
    return d, name


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
@pytest.mark.parametrize("case, message", [
    ("missing", "not a directory"),
    ("no_files", "no template files"),
    ("many", "251 templates; at most 250"),
    ("junk_model", "not a readable atomic model"),
    ("empty_model", "no atoms"),
    ("only_water", "no atoms"),
    ("unknown_element", "no electron scattering factor"),
    ("junk_mrc", "not a readable MRC file"),
    ("not_3d", "must be a 3D density map"),
    ("nan", "NaN or inf"),
    ("no_voxel", "no voxel size"),
    ("no_positive", "no positive value"),
    ("too_big", "Å across but the volume's smallest extent is 40 Å"),
    ("same_stem", "class name 'blob' is also that of"),
])
def test_template_dir_bad_inputs(tmp_path, case, message):
    d, name = _bad_dir(tmp_path, case)
    if case == "missing":
        d = tmp_path / "nowhere"
    with pytest.raises(InputError, match=message) as e:
        load_template_dir(d, 5.0, max_extent_A=40.0)
    text = str(e.value)
    assert "\n" not in text
    assert str(d / name if name else d) in text


def test_template_dir_unknown_units(tmp_path):
    write_mrc(tmp_path / "ok.mrc", ball((8, 8, 8), 2.0))
    with pytest.raises(InputError, match=r"unknown map units 'volts'; allowed: 'V', 'normalised'") as e:
        load_template_dir(tmp_path, 5.0, units="volts")
    assert str(tmp_path) in str(e.value)


def test_too_big_message_states_both_sizes(tmp_path):
    d, _ = _bad_dir(tmp_path, "too_big")
    with pytest.raises(InputError, match=r"big.pdb: the model is \d+ Å across but the volume's "
                                         r"smallest extent is 40 Å"):
        load_template_dir(d, 5.0, max_extent_A=40.0)
    assert len(load_template_dir(d, 10.0, max_extent_A=100.0)) == 1


# ------------------------------------------------------------------------------ through the CLI
def _cli(*args):
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).with_name("faket-dask"))
    env = dict(os.environ, FAKET_PROGRESS="0")
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def test_specimen_cli_with_a_pdb_template_records_the_class_and_pdb_id(tmp_path):
    """``faket-dask specimen --templates DIR`` with one .pdb: a class named by the file, its
    PDB id recorded, the specimen in volts with that class's particles labelled."""
    import faket_dask as fd

    tdir = tmp_path / "t"
    tdir.mkdir()
    st = blob(30.0, seed=2)
    st.setup_entities()
    st.info["_entry.id"] = "9XYZ"
    st.write_pdb(str(tdir / "ribo.pdb"))
    store = tmp_path / "run.zarr"
    proc = _cli("specimen", store, "--shape", 40, 48, 48, "--pixel-size-A", 8, "--templates", tdir,
                "--particles", 3, "--vesicles", 0, "--fiducials", 0, "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    spec = fd.open(store, "tomo_000/specimen")
    names = list(spec["class_mask"].attrs["class_names"])
    assert names[0] == "ribo" and spec["density"].attrs["units"] == "V"
    assert spec["class_mask"].attrs["class_pdb_ids"][0] == "9XYZ"
    assert int((spec["class_mask"].values == 1).sum()) > 0


@pytest.mark.parametrize("case", ["empty pdb", "too large", "units"])
def test_specimen_cli_bad_templates_one_line_nothing_written(tmp_path, case):
    tdir = tmp_path / "t"
    tdir.mkdir()
    extra = []
    if case == "empty pdb":
        (tdir / "empty.pdb").write_text("REMARK nothing here\nEND\n")
        want = "empty.pdb"
    elif case == "too large":
        blob(30.0, seed=1).write_pdb(str(tdir / "big.pdb"))   # 60 Å across, volume 6 × 8 Å thick
        extra = ["--shape", 6, 64, 64]
        want = "big.pdb"
    else:
        blob(10.0).write_pdb(str(tdir / "a.pdb"))
        extra = ["--template-units", "electrons"]
        want = "electrons"
    store = tmp_path / "run.zarr"
    shape = extra[:4] if extra[:1] == ["--shape"] else ["--shape", 16, 64, 64]
    extra = extra[4:] if extra[:1] == ["--shape"] else extra
    proc = _cli("specimen", store, *shape, "--pixel-size-A", 8, "--templates", tdir,
                "--particles", 1, *extra, "--workers", 1)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and want in lines[0], proc.stderr
    assert not store.exists()
