"""Scoring picks (``faket-dask score``): SHREC'21 and CZII rules on hand-computed cases, the file
readers and frames, the CLI's outputs and one-line errors, and a real small run scored against
its own particle table.

Every expected number below is derived by hand in the comment above it, never by the code.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from fractions import Fraction as F
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from faket_dask import datamodel
from faket_dask.errors import InputError, OutputExistsError
from faket_dask.kernels.scoring import score_picks
from faket_dask.kernels.scoring_match import czii_counts
from faket_dask.kernels.scoring_result import f_beta
from faket_dask.stages.scoring import score_files
from faket_dask.stages.scoring_points import read_points

EXE = str(Path(sys.executable).with_name("faket-dask"))
PIX = 10.0


def approx(x) -> object:
    return pytest.approx(float(x), rel=1e-12, abs=1e-12)


def counts(c) -> tuple[int, int, int]:
    return (c.tp, c.fp, c.fn)


# -- SHREC'21 and CZII on one hand-made tomogram ---------------------------------------------
#: Two classes; radii 20 Å (a) and 30 Å (b).
TRUTH = [("a", (100, 100, 100), 20.0),   # A1
         ("a", (200, 100, 100), 20.0),   # A2
         ("b", (100, 200, 100), 30.0),   # B1
         ("b", (200, 200, 100), 30.0)]   # B2
#: Picks in file order: two on A1 (a duplicate), one of the wrong class on A2, one on B1, one on
#: nothing; B2 is never picked.
PICKS = [("a", (105, 100, 100)),         # p0 -> A1 (5 Å)
         ("a", (95, 100, 100)),          # p1 -> A1 again (duplicate)
         ("b", (200, 105, 100)),         # p2 -> A2 (5 Å), wrong class
         ("b", (100, 200, 100)),         # p3 -> B1 (0 Å)
         ("a", (400, 400, 400))]         # p4 -> background


def _score(picks, truth, **kw):
    pc = [p[0] for p in picks]
    px = np.array([p[1] for p in picks], float).reshape(-1, 3)
    return score_picks(pc, px, [t[0] for t in truth], np.array([t[1] for t in truth], float),
                       np.array([t[2] for t in truth]), **kw)


def test_shrec_duplicates_wrong_class_and_background():
    r = _score(PICKS, TRUTH, metric="shrec")
    # Localisation: found A1, A2, B1 -> tp 3; 5 picks -> fp 5 - 3 = 2 (p1 duplicate, p4 background);
    # B2 missed -> fn 1. precision = 3/5 (SHREC: unique found / predicted), recall = 3/4,
    # F1 = 2 * 3/5 * 3/4 / (3/5 + 3/4) = (9/10) / (27/20) = 2/3.
    assert counts(r.localization) == (3, 2, 1)
    assert r.localization.precision == approx(F(3, 5))
    assert r.localization.recall == approx(F(3, 4))
    assert r.localization.f1 == approx(F(2, 3))
    assert r.duplicates == 1
    # Classification by the first pick on each particle: A1 -> a (p0), A2 -> b (p2), B1 -> b (p3),
    # B2 -> background. Class a: tp 1 (A1), fp 0, fn 1 (A2) -> P 1, R 1/2, F1 2/3,
    # F4 = 17 * 1 * 1/2 / (16 * 1 + 1/2) = 17/33.
    # Class b: tp 1 (B1), fp 1 (A2 called b), fn 1 (B2 missed) -> P = R = F1 = F4 = 1/2.
    assert counts(r.classes["a"]) == (1, 0, 1) and counts(r.classes["b"]) == (1, 1, 1)
    assert r.classes["a"].f1 == approx(F(2, 3)) and r.classes["a"].fbeta == approx(F(17, 33))
    assert r.classes["b"].f1 == approx(F(1, 2)) and r.classes["b"].fbeta == approx(F(1, 2))
    # macro-F1 = (2/3 + 1/2) / 2 = 7/12 = the SHREC score
    assert r.classification_macro_f1 == approx(F(7, 12)) and r.score == approx(F(7, 12))
    # confusion rows a, b, background; columns a, b, background. The background row holds the
    # pick on no particle (p4, class a); the duplicate p1 is in no cell.
    assert r.labels == ["a", "b", "background"]
    assert r.confusion.tolist() == [[1, 1, 0],
                                    [0, 1, 1],
                                    [1, 0, 0]]


def test_czii_on_the_same_picks():
    r = _score(PICKS, TRUTH, metric="czii")
    # Matching radius 0.5 * radius: a 10 Å, b 15 Å; picks only match their own class.
    # a: references A1, A2; a-picks p0, p1 (both within 5 Å of A1), p4 -> A1 found once:
    #    tp 1, fp 3 - 1 = 2, fn 1 -> P 1/3, R 1/2, F1 = 2/5, F4 = 17 * 1/6 / (16/3 + 1/2) = 17/35.
    # b: references B1, B2; b-picks p2 (95 Å from B2, far from B1), p3 (on B1) -> tp 1, fp 1, fn 1
    #    -> P = R = F1 = F4 = 1/2.
    assert counts(r.classes["a"]) == (1, 2, 1) and counts(r.classes["b"]) == (1, 1, 1)
    assert r.classes["a"].f1 == approx(F(2, 5)) and r.classes["a"].fbeta == approx(F(17, 35))
    assert r.classes["b"].fbeta == approx(F(1, 2))
    # score = (17/35 + 1/2) / 2 = 69/140 (weights 1); macro-F1 = (2/5 + 1/2) / 2 = 9/20
    assert r.score == approx(F(69, 140)) and r.classification_macro_f1 == approx(F(9, 20))
    # weights a=2, b=1: (2 * 17/35 + 1/2) / 3 = 103/210
    assert _score(PICKS, TRUTH, metric="czii", weights={"a": 2}).score == approx(F(103, 210))
    # class-blind localisation, same radii: A1 (p0, p1), A2 (p2 at 5 Å <= 10), B1 (p3) found ->
    # tp 3, fp 5 - 3 = 2, fn 1
    assert counts(r.localization) == (3, 2, 1)


def test_just_inside_and_just_outside_the_radius():
    truth = [("a", (500, 500, 500), 40.0)]
    u = np.array([0.6, 0.8, 0.0])              # a unit vector: offsets along it are exact distances

    def one(d, metric):
        return _score([("a", tuple(np.array([500.0, 500, 500]) + d * u))], truth, metric=metric)

    # SHREC without occupancy: hit within the radius (40 Å): 39.99 -> tp 1; 40.01 -> fp 1, fn 1
    assert counts(one(39.99, "shrec").localization) == (1, 0, 0)
    assert counts(one(40.01, "shrec").localization) == (0, 1, 1)
    assert one(40.01, "shrec").score == 0.0
    # CZII: within 0.5 * 40 = 20 Å: 19.99 -> tp 1 (F4 1); 20.01 -> fp 1, fn 1 (F4 0)
    assert counts(one(19.99, "czii").classes["a"]) == (1, 0, 0) and one(19.99, "czii").score == 1.0
    assert counts(one(20.01, "czii").classes["a"]) == (0, 1, 1) and one(20.01, "czii").score == 0.0
    # exactly on the radius counts (scipy's ball query includes it, as the Kaggle code uses it)
    assert counts(_score([("a", (540.0, 500, 500))], truth, metric="shrec").localization) == (1, 0, 0)
    assert counts(_score([("a", (520.0, 500, 500))], truth, metric="czii").classes["a"]) == (1, 0, 0)


@pytest.mark.parametrize("metric", ["shrec", "czii"])
def test_empty_predictions(metric):
    r = _score([], TRUTH, metric=metric)
    # nothing picked: tp 0, fp 0, fn 4; precision 0/0 -> 0 (stated convention), recall 0, F1 0
    assert counts(r.localization) == (0, 0, 4)
    assert (r.localization.precision, r.localization.recall, r.localization.f1) == (0.0, 0.0, 0.0)
    assert counts(r.classes["a"]) == (0, 0, 2) and counts(r.classes["b"]) == (0, 0, 2)
    assert r.score == 0.0 and r.classification_macro_f1 == 0.0
    assert r.confusion.tolist() == [[0, 0, 2], [0, 0, 2], [0, 0, 0]]


def test_classes_absent_from_the_truth_or_the_picks():
    # a pick class the truth does not have: an error naming it
    with pytest.raises(InputError, match=r"no class c\b.*its classes: a, b"):
        _score(PICKS + [("c", (0, 0, 0))], TRUTH, metric="shrec")
    # a true class nobody picked still counts: picks only on A1 (class a, exact)
    r = _score([("a", (100, 100, 100))], TRUTH, metric="czii")
    # a: tp 1, fp 0, fn 1 -> F4 = 17 * 1/2 / (16 + 1/2) = 17/33; b: tp 0, fn 2 -> F4 0
    # score = (17/33 + 0) / 2 = 17/66
    assert counts(r.classes["b"]) == (0, 0, 2) and r.score == approx(F(17, 66))
    # a weight of 0 leaves b out of the score: 17/33
    assert _score([("a", (100, 100, 100))], TRUTH, metric="czii", weights={"b": 0}).score == approx(F(17, 33))
    with pytest.raises(InputError, match="no class zz"):
        _score([], TRUTH, metric="czii", weights={"zz": 1})


def test_czii_counts_summed_over_tomograms_before_fbeta():
    """A worked example of the CZII definition: per class and tomogram counts, summed, then F4."""
    # class a (radius 100 -> match 50 Å), class b (radius 60 -> match 30 Å)
    truth = [("a", (0, 0, 0), 100.0, "T1"), ("a", (1000, 0, 0), 100.0, "T1"), ("b", (0, 500, 0), 60.0, "T1"),
             ("a", (0, 0, 0), 100.0, "T2")]
    picks = [("a", (10, 0, 0), "T1"),                                      # T1: finds a(0,0,0)
             ("b", (0, 520, 0), "T1"),                                     # T1: finds b (20 Å <= 30)
             ("a", (0, 0, 0), "T2"), ("a", (500, 0, 0), "T2"),             # T2: one hit, 3 misses
             ("a", (700, 0, 0), "T2"), ("a", (0, 0, 51.0), "T2"),            # (51 Å > 50: a miss)
             ("b", (0, 500, 0), "T2")]                                     # T2 has no b: a FP
    r = score_picks([p[0] for p in picks], [p[1] for p in picks], [t[0] for t in truth],
                    [t[1] for t in truth], [t[2] for t in truth], metric="czii",
                    pick_tomo=[p[2] for p in picks], truth_tomo=[t[3] for t in truth], weights={"a": 2})
    # a: T1 tp 1, fp 0, fn 1; T2 tp 1, fp 3, fn 0 -> summed tp 2, fp 3, fn 1:
    #    P = 2/5, R = 2/3, F4 = 17 * (4/15) / (16 * 2/5 + 2/3) = (68/15) / (106/15) = 34/53.
    #    (Averaging the tomograms' F4 instead would give (17/33 + 17/20) / 2 = 0.683, not 34/53.)
    # b: T1 tp 1, fp 0, fn 0; T2 tp 0, fp 1, fn 0 -> tp 1, fp 1, fn 0: P 1/2, R 1, F4 = 8.5/9 = 17/18.
    assert counts(r.classes["a"]) == (2, 3, 1) and counts(r.classes["b"]) == (1, 1, 0)
    assert r.classes["a"].fbeta == approx(F(34, 53)) and r.classes["b"].fbeta == approx(F(17, 18))
    # weighted: (2 * 34/53 + 1 * 17/18) / 3 = (2448 + 901) / (954 * 3) = 2125/2862
    assert r.score == approx(F(2125, 2862))
    # the Kaggle compute_metrics on one tomogram: several picks near one reference = 1 TP + FPs
    assert czii_counts([[0, 0, 0]], 10.0, [[1, 0, 0], [2, 0, 0], [0, 3, 0]]) == (1, 2, 0)
    assert czii_counts(np.zeros((0, 3)), 10.0, [[1, 0, 0]]) == (0, 1, 0)
    assert czii_counts([[0, 0, 0]], 10.0, np.zeros((0, 3))) == (0, 0, 1)
    assert f_beta(0.5, 1.0, 4) == approx(F(17, 18)) and f_beta(0.0, 0.0, 4) == 0.0


def test_missing_radius_and_bad_arguments():
    with pytest.raises(InputError, match="no radius for class a"):
        score_picks(["a"], [[0, 0, 0]], ["a", "b"], [[0, 0, 0], [9, 9, 9]], [np.nan, 5.0], metric="czii")
    with pytest.raises(InputError, match="unknown metric"):
        _score(PICKS, TRUTH, metric="f1")
    with pytest.raises(InputError, match="no true particles"):
        score_picks([], np.zeros((0, 3)), [], np.zeros((0, 3)), metric="shrec")


# -- files, frames, occupancy ------------------------------------------------------------------
def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_read_points_formats_and_frames(tmp_path):
    # our picker's CSV: x_A (corner Å) wins over voxels
    p = read_points(write_csv(tmp_path / "p.csv", [dict(class_name="a", x=1, y=2, z=3, x_A=15.0, y_A=25.0,
                                                        z_A=35.0, size=3, score=0.9)]))
    assert p.frames["corner"].tolist() == [[15.0, 25.0, 35.0]] and p.class_name.tolist() == ["a"]
    # voxels only: corner = (v + 0.5) * pixel
    v = read_points(write_csv(tmp_path / "v.csv", [dict(class_name="a", x=1, y=2, z=3)]), pixel_size_A=10)
    assert v.frames["corner"].tolist() == [[15.0, 25.0, 35.0]]
    with pytest.raises(InputError, match="voxels.*--pixel-size-A"):
        read_points(tmp_path / "v.csv")
    # a CZII submission: x, y, z in Å with voxel i at i * spacing -> + half a voxel
    c = read_points(write_csv(tmp_path / "c.csv", [dict(id=0, experiment="TS_5_4", particle_type="a",
                                                        x=10.0, y=20.0, z=30.0)]), pixel_size_A=10)
    assert c.frames["corner"].tolist() == [[15.0, 25.0, 35.0]] and c.tomo.tolist() == ["TS_5_4"]
    # SHREC particle_locations.txt: voxels, angles ignored, integer tomo names in CSVs -> tomo_NNN
    (tmp_path / "s.txt").write_text("a 1 2 3 10 20 30\n\nb 4.5 5 6\n")
    s = read_points(tmp_path / "s.txt", pixel_size_A=10)
    assert s.class_name.tolist() == ["a", "b"] and s.frames["corner"][1].tolist() == [50.0, 55.0, 65.0]
    t = read_points(write_csv(tmp_path / "t.csv", [dict(class_name="a", x_A=1, y_A=2, z_A=3, tomo=2)]))
    assert t.tomo.tolist() == ["tomo_002"]
    # header only: no picks
    (tmp_path / "e.csv").write_text("class_name,x_A,y_A,z_A\n")
    assert len(read_points(tmp_path / "e.csv")) == 0
    # unreadable
    (tmp_path / "bad.txt").write_text("a 1 2\n")
    with pytest.raises(InputError, match=r"bad.txt:1: not a SHREC particle line"):
        read_points(tmp_path / "bad.txt", pixel_size_A=10)
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(InputError, match="cannot read particles"):
        read_points(tmp_path / "p.json")
    (tmp_path / "n.csv").write_text("class_name,x_A,y_A,z_A\na,1,two,3\n")
    with pytest.raises(InputError, match="must be numbers"):
        read_points(tmp_path / "n.csv")
    (tmp_path / "x.star").write_text("not a star file\n")
    with pytest.raises(InputError, match="not a readable STAR"):
        read_points(tmp_path / "x.star")


SHAPE = (16, 24, 32)


def occupancy_store(path: Path) -> Path:
    """A store with a specimen (SHAPE, PIX), an occupancy and a table of two particles.

    Particle 1 (class a) centred at voxel (x, y, z) = (8, 8, 8), radius 10 Å, occupies the rod
    x = 4..12 at y = z = 8; particle 2 (class b) at (24, 16, 8), radius 10 Å, one voxel."""
    from faket_dask.kernels.specimen_placement import COLUMNS
    from faket_dask.stages.particles import particles_dataset
    from faket_dask.stages.specimen import write_specimen

    occ = np.zeros(SHAPE, np.uint32)
    occ[8, 8, 4:13] = 1
    occ[8, 16, 24] = 2
    spec = xr.Dataset({"density": datamodel.volume(np.zeros(SHAPE, np.float32), PIX, name="density"),
                       "occupancy": datamodel.volume(occ, PIX, name="occupancy", dtype=None)})
    spec.attrs.update(pixel_size_A=PIX)
    t = {c: np.zeros(2) for c in COLUMNS}
    t.update(class_name=np.array(["a", "b"]), class_id=np.array([1, 2], np.int32), x=np.array([8.0, 24.0]),
             y=np.array([8.0, 16.0]), z=np.array([8.0, 8.0]), radius_A=np.array([10.0, 10.0]))
    write_specimen(spec, particles_dataset(t, PIX, {"source": "test"}), path, 0, progress=None)
    return path


def test_shrec_occupancy_with_one_voxel_dilation(tmp_path):
    store = occupancy_store(tmp_path / "run.zarr")
    vox = lambda x, y, z: dict(x_A=(x + 0.5) * PIX, y_A=(y + 0.5) * PIX, z_A=(z + 0.5) * PIX)
    picks = write_csv(tmp_path / "p.csv", [
        dict(class_name="a", **vox(12, 8, 8)),    # in particle 1's rod, 40 Å from its centre (> 10 Å radius)
        dict(class_name="b", **vox(25, 16, 8)),   # a face neighbour of particle 2's voxel: the dilation
        dict(class_name="b", **vox(25, 17, 8)),   # an edge neighbour: not in the cross -> background
        dict(class_name="a", **vox(-3, 8, 8)),    # outside the volume: clipped to x = 0 -> background
    ])
    r, notes = score_files(picks, store, metric="shrec")
    # found particles 1 and 2 -> tp 2; 4 picks -> fp 2; fn 0: P 1/2, R 1, F1 2/3
    assert counts(r.localization) == (2, 2, 0) and r.localization.f1 == approx(F(2, 3))
    # both classified right: a and b each tp 1 -> F1 1, macro-F1 = score = 1
    assert r.score == 1.0 and r.outside == 1 and any("outside" in n for n in notes)
    assert r.confusion.tolist() == [[1, 0, 0], [0, 1, 0], [1, 1, 0]]
    # the radius rule (czii, 0.5 * 10 Å = 5 Å) finds neither: all four picks are FPs
    rc, _ = score_files(picks, store, metric="czii")
    assert counts(rc.localization) == (0, 4, 2)
    # --classes b: particle 1 and the a-picks leave; the pick on particle 2 is a TP, the edge
    # neighbour a FP: tp 1, fp 1, fn 0
    rb, notes = score_files(picks, store, metric="shrec", classes=["b"])
    assert counts(rb.localization) == (1, 1, 0) and list(rb.classes) == ["b"]
    assert any("ignored 2 picks" in n for n in notes)


# -- a real small run against itself ----------------------------------------------------------
@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A real specimen (procedural classes and gold beads, no vesicles or filaments), its tables
    exported as our CSV and RELION STAR, and a tomogram grid (binning 2, cropped in z)."""
    from faket_dask import store as st
    from faket_dask.stages.labels import class_mask_on_tomogram, particles_on_tomogram
    from faket_dask.stages.particle_export import export_particles
    from faket_dask.stages.particles import open_particles
    from faket_dask.stages.specimen import generate_specimen, write_specimen
    from faket_dask.store.layout import labels_group, labels_particles_group

    base = tmp_path_factory.mktemp("small_run")
    store = base / "run.zarr"
    spec, parts = generate_specimen((24, 64, 64), PIX, 3, n_particles=8, n_vesicles=0, n_fiducials=2)
    write_specimen(spec, parts, store, 0, progress=None)
    b, nz_full, z0, nz_keep = 2, 32, 4, 24
    lab = particles_on_tomogram(st.open(store, "tomo_000/particles").load(), specimen_z=24, binning=b,
                                nz_full=nz_full, z0=z0, pixel_size_A=PIX)
    for v in lab.variables.values():
        v.encoding.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lab.to_zarr(str(store), group=labels_particles_group(0), mode="w", zarr_format=3, consolidated=False)
    cm = class_mask_on_tomogram(st.open(store, "tomo_000/specimen")["class_mask"], binning=b, nz_full=nz_full,
                                z0=z0, nz_keep=nz_keep, pixel_size_A=PIX)
    st.save(cm, store, labels_group(0), name="class_mask")
    p = open_particles(store, 0)
    files = {"csv": export_particles(p, base / "picks.csv"), "star": export_particles(p, base / "picks.star"),
             "txt": export_particles(p, base / "picks.txt"),
             "tomo_csv": export_particles(open_particles(store, 0, grid="tomogram"), base / "tomo_picks.csv")}
    return store, files, p.sizes["particle"]


@pytest.mark.parametrize("metric", ["shrec", "czii"])
def test_small_run_scored_against_itself(small_run, metric):
    store, files, n = small_run
    for kind in ("csv", "star", "txt"):
        r, notes = score_files(files[kind], store, metric=metric, pixel_size_A=PIX if kind == "txt" else None)
        assert counts(r.localization) == (n, 0, 0), kind
        assert r.localization.f1 == 1.0 and r.classification_macro_f1 == 1.0 and r.score == 1.0, kind
        assert all(c.fbeta == 1.0 for c in r.classes.values()) and notes == []
    # the tomogram grid: its own picks (Å from the tomogram's corner) with --tomo-grid, and the
    # specimen's STAR (centred Å) against it; SHREC's occupancy is looked up in the specimen
    for kind in ("tomo_csv", "star"):
        r, _ = score_files(files[kind], store, metric=metric, tomo_grid=True)
        assert counts(r.localization) == (n, 0, 0) and r.score == 1.0, kind
    # the tomogram's corner is not the specimen's: without --tomo-grid the same picks miss
    r, _ = score_files(files["tomo_csv"], store, metric=metric)
    assert r.localization.tp < n


# -- the command line --------------------------------------------------------------------------
def run_cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, FAKET_PROGRESS="0")
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=180,
                          check=False)


def truth_csv(path: Path, *, radius: bool = True) -> Path:
    rows = [dict(class_name=c, x_A=x, y_A=y, z_A=z, **({"radius_A": r} if radius else {}))
            for c, (x, y, z), r in TRUTH]
    return write_csv(path, rows)


def picks_csv(path: Path) -> Path:
    return write_csv(path, [dict(class_name=c, x=0, y=0, z=0, x_A=x, y_A=y, z_A=z, size=1, score=0.5)
                            for c, (x, y, z) in PICKS])


def test_cli_writes_report_and_confusion(tmp_path):
    truth, picks = truth_csv(tmp_path / "truth.csv"), picks_csv(tmp_path / "picks.csv")
    out, conf = tmp_path / "report.json", tmp_path / "confusion.csv"
    proc = run_cli("score", picks, truth, "--metric", "czii", "--weight", "a=2", "--out", out, "--confusion", conf)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(out.read_text())
    assert list(rep) == ["metric", "localization", "classes", "classification_macro_f1", "score"]
    assert list(rep["localization"]) == ["tp", "fp", "fn", "precision", "recall", "f1"]
    assert list(rep["classes"]["a"]) == ["tp", "fp", "fn", "precision", "recall", "f1", "fbeta"]
    # the numbers of test_czii_on_the_same_picks: score 103/210 with a weighted 2
    assert rep["metric"] == "czii" and rep["score"] == approx(F(103, 210))
    assert rep["classes"]["a"]["fbeta"] == approx(F(17, 35)) and rep["localization"]["tp"] == 3
    cm = pd.read_csv(conf, index_col=0)
    assert cm.index.name == "truth" and list(cm.columns) == ["a", "b", "background"]
    assert cm.values.tolist() == [[1, 1, 0], [0, 1, 1], [1, 0, 0]]
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "score (weighted F4) 0.4905" in proc.stdout          # 103/210 = 0.49048


def _main(args, capsys) -> tuple[int, str]:
    from faket_dask.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code, capsys.readouterr().err


def test_cli_bad_input_one_line_each(tmp_path, capsys):
    truth, picks = truth_csv(tmp_path / "truth.csv"), picks_csv(tmp_path / "picks.csv")
    out = tmp_path / "r.json"
    (tmp_path / "picks.json").write_text("{}")
    write_csv(tmp_path / "other.csv", [dict(class_name="zz", x_A=1, y_A=1, z_A=1),
                                       dict(class_name="yy", x_A=1, y_A=1, z_A=1)])
    write_csv(tmp_path / "vox.csv", [dict(class_name="a", x=1, y=1, z=1)])
    cases = [
        (("picks.json", truth), "cannot read particles from this file"),
        (("other.csv", truth), "has no class yy, zz of the picks"),
        (("picks.csv", truth_csv(tmp_path / "noradius.csv", radius=False), "--metric", "czii"),
         "no radius for class a, b (give one: --radius a=Å)"),
        (("vox.csv", truth), "positions only in voxels (x, y, z); give --pixel-size-A"),
        (("picks.csv", truth, "--radius", "a"), "--radius 'a': give NAME=NUMBER"),
        (("picks.csv", truth, "--weight", "a=2"), "--weight applies to --metric czii only"),
    ]
    for args, msg in cases:
        a = [tmp_path / args[0], *args[1:]]
        code, err = _main(["score", *a, "--out", out], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("faket-dask: error: "), err
        assert msg in lines[0], lines[0]
        assert not out.exists()
    # --radius fills in a missing radius
    code, _ = _main(["score", picks, tmp_path / "noradius.csv", "--metric", "czii", "--radius", "a=20",
                     "--radius", "b=30", "--out", out], capsys)
    assert code == 0 and json.loads(out.read_text())["score"] == approx(F(69, 140))
    # an existing --out without --overwrite: refused before anything is read
    code, err = _main(["score", tmp_path / "picks.json", truth, "--out", out], capsys)
    assert code == 2 and "exists; pass --overwrite" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(OutputExistsError):
        from faket_dask.stages.scoring_outputs import check_outputs

        check_outputs(out, None, overwrite=False)
    code, _ = _main(["score", picks, truth, "--out", out, "--overwrite"], capsys)
    assert code == 0 and json.loads(out.read_text())["score"] == approx(F(7, 12))


def test_tomogram_columns_and_class_ids(tmp_path):
    # truth in tomograms 0 and 1 (integers -> tomo_000, tomo_001), one particle "a" each, 20 Å
    truth = write_csv(tmp_path / "t.csv", [
        {"class_name": "a", "class_id": 7, "x_A": 100, "y_A": 100, "z_A": 100, "radius_A": 20, "tomo": 0},
        {"class_name": "a", "class_id": 7, "x_A": 100, "y_A": 100, "z_A": 100, "radius_A": 20, "tomo": 1}])
    # picks by class id: one on each particle, one at the same place in a tomogram the truth lacks
    picks = write_csv(tmp_path / "p.csv", [
        {"class_id": 7, "x_A": 101, "y_A": 100, "z_A": 100, "tomo_name": "tomo_000"},
        {"class_id": 7, "x_A": 100, "y_A": 100, "z_A": 100, "tomo_name": "tomo_001"},
        {"class_id": 7, "x_A": 100, "y_A": 100, "z_A": 100, "tomo_name": "tomo_005"}])
    r, notes = score_files(picks, truth, metric="czii")
    # tomo_005 is ignored (as the Kaggle metric keeps the solution's experiments): tp 2, fp 0, fn 0
    assert counts(r.classes["a"]) == (2, 0, 0) and r.score == 1.0
    assert notes == ["ignored 1 picks in tomograms not in the truth: tomo_005"]
    # without a tomogram column the picks cannot be placed in one of two tomograms
    nocol = write_csv(tmp_path / "n.csv", [{"class_name": "a", "x_A": 1, "y_A": 1, "z_A": 1}])
    with pytest.raises(InputError, match="no tomogram column.*2 tomograms"):
        score_files(nocol, truth)
    # class ids the truth does not have
    bad = write_csv(tmp_path / "b.csv", [{"class_id": 3, "x_A": 1, "y_A": 1, "z_A": 1, "tomo": 0}])
    with pytest.raises(InputError, match="no class id 3"):
        score_files(bad, truth)
    # a truth file refuses --tomo / --tomo-grid
    with pytest.raises(InputError, match="apply to a run store"):
        score_files(picks, truth, tomo_grid=True)
