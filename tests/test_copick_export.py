"""`faket-dask export-copick`: the project read back by the real copick, and bad input.

The round trip exports the session's ``reference_run`` (2 tomograms, ≥ 3 classes; shared with
test_pipeline, so free in the full suite) and reads it with ``tests/copick_check.py`` under the
side venv ``.venv-copick`` (copick 1.31 pins zarr<3; ``make copick-venv`` builds it, ``make
test`` too). Without that venv those tests skip, loudly.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import faket_dask as fd
from faket_dask import store as st
from faket_dask.errors import InputError
from faket_dask.kernels import labels as KL
from faket_dask.kernels.specimen_placement import rotation_matrices
from faket_dask.stages import copick_export as ce
from faket_dask.stages import copick_model as cm

from pipeline_helpers import cli

REPO = Path(__file__).resolve().parents[1]
COPICK_PYTHON = Path(os.environ.get("FAKET_COPICK_PYTHON", REPO / ".venv-copick" / "bin" / "python"))
CHECK = REPO / "tests" / "copick_check.py"


def copick_read(config: Path) -> dict:
    """What copick sees in a project (tests/copick_check.py in the side venv); skip without it."""
    if not COPICK_PYTHON.exists():
        pytest.skip(f"NO COPICK ROUND TRIP: {COPICK_PYTHON} missing; build it with `make copick-venv` "
                    "(copick 1.31 needs zarr<3, so it has its own venv)")
    proc = subprocess.run([str(COPICK_PYTHON), str(CHECK), str(config)], capture_output=True, text=True, check=False,
                          timeout=300)
    if proc.returncode != 0 and "No module named 'copick'" in proc.stderr:
        pytest.skip(f"NO COPICK ROUND TRIP: copick is not installed in {COPICK_PYTHON}; `make copick-venv`")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def digest(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def exported(reference_run, tmp_path_factory):
    store = reference_run["out"] / "run.zarr"
    root = tmp_path_factory.mktemp("copick") / "project"
    proc = cli("export-copick", store, root)
    assert proc.returncode == 0, proc.stderr
    return {"store": store, "root": root, "stdout": proc.stdout, "stderr": proc.stderr}


@pytest.fixture(scope="module")
def seen(exported):
    return copick_read(exported["root"] / ce.CONFIG_NAME)


def tomogram_grid_instances(store: Path, t: int, shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """The specimen's occupancy (instance ids) on the tomogram grid, mapped as the labels stage maps
    the class mask (kernels/labels.py: centre voxel of each bin, z centred, no z_valid here)."""
    spec = fd.open(store, st.specimen_group(t))
    occ = spec["occupancy"].values
    b = int(fd.open(store, st.labels_group(t))["class_mask"].attrs["binning"])
    nz = shape_zyx[0]
    src, valid = KL.source_slices(occ.shape[0], nz, 0, nz, b)
    mapped = occ[src][:, KL.centre_voxels(occ.shape[1], b), KL.centre_voxels(occ.shape[2], b)]
    return np.where(valid[:, None, None], mapped, 0)


def test_objects_match_the_store(exported, seen):
    store = exported["store"]
    cmask = fd.open(store, st.labels_group(0))["class_mask"]
    names, pdb = cmask.attrs["class_names"], cmask.attrs["class_pdb_ids"]
    objs = {o["label"]: o for o in seen["objects"]}
    assert sorted(objs) == list(range(1, len(names) + 1))
    tables = [fd.open(store, st.labels_particles_group(t)).load() for t in range(2)]
    for k, name in enumerate(names, start=1):
        o = objs[k]
        assert o["name"] == name and o["metadata"]["faket_dask"]["class_name"] == name
        assert o["pdb_id"] == (pdb[k - 1] or None)
        radii = [float(tb["radius_A"].values[tb["class_id"].values == k].max()) for tb in tables
                 if (tb["class_id"].values == k).any()]
        assert o["radius"] == (pytest.approx(max(radii), abs=1e-4) if radii else None)
        assert o["is_particle"] == (name not in ("vesicle", "fiducial"))
        assert o["is_filament"] == (name in ("actin", "microtubule"))
    assert len({o["name"] for o in seen["objects"]}) == len(names)
    present = {str(n) for tb in tables for n in tb["class_name"].values}
    assert len(present) >= 3


def test_one_run_per_tomogram_with_the_store_volumes(exported, seen):
    store = exported["store"]
    assert sorted(seen["runs"]) == ["tomo_000", "tomo_001"]
    for t in range(2):
        run = seen["runs"][st.tomo_name(t)]
        tomo = fd.open(store, st.tomogram_group(t))
        px = tomo["faket"].attrs["pixel_size_A"]
        assert list(run["voxel_spacings"]) == [f"{px:.3f}"]
        images = run["voxel_spacings"][f"{px:.3f}"]
        assert sorted(images) == sorted(tomo.data_vars)          # default: every modality
        for mod, img in images.items():
            assert img["compressor"] == {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0}
            ms = img["multiscales"][0]
            assert ms["version"] == "0.4" and [a["unit"] for a in ms["axes"]] == ["angstrom"] * 3
            for k, lv in img["levels"].items():
                ref = fd.open(store, st.tomogram_group(t), level=int(k))[mod].values
                assert lv["shape"] == list(ref.shape) and lv["dtype"] == "float32"
                assert lv["sha256"] == digest(ref.astype(np.float32)), (t, mod, k)   # exact values
                assert ms["datasets"][int(k)]["coordinateTransformations"][0]["scale"] == [px * 2 ** int(k)] * 3
            assert img["sha256"] == img["levels"]["0"]["sha256"]              # tomogram.numpy()
        segs = run["segmentations"]
        assert len(segs) == 1 and segs[0]["name"] == ce.SEGMENTATION_NAME and segs[0]["is_multilabel"]
        mask = fd.open(store, st.labels_group(t))["class_mask"].values
        assert segs[0]["voxel_size"] == px and segs[0]["shape"] == list(mask.shape)
        assert segs[0]["sha256"] == digest(mask.astype(np.uint8))             # the class mask, exactly
        half = mask[tuple(slice(0, 2 * (n // 2), 2) for n in mask.shape)]  # nearest: voxel 2i
        assert segs[0]["levels"]["1"]["sha256"] == digest(half.astype(np.uint8))


def test_picks_land_on_the_particles_with_their_orientations(exported, seen):
    store = exported["store"]
    objs = {o["name"]: o for o in seen["objects"]}
    worst = worst_full = 0.0
    on_grid = n_picks = 0
    occ = [fd.open(store, st.specimen_group(t))["occupancy"].values for t in range(2)]
    for t in range(2):
        b = int(fd.open(store, st.labels_group(t))["class_mask"].attrs["binning"])
        run = seen["runs"][st.tomo_name(t)]
        table = fd.open(store, st.labels_particles_group(t)).load()
        px = float(table.attrs["pixel_size_A"])
        names, counts = np.unique(table["class_name"].values.astype(str), return_counts=True)
        assert {n: p["count"] for n, p in run["picks"].items()} == dict(zip(names, counts.tolist()))
        shape = tuple(fd.open(store, st.labels_group(t))["class_mask"].shape)
        inst = tomogram_grid_instances(store, t, shape)
        cls = fd.open(store, st.labels_group(t))["class_mask"].values
        ids = table["particle"].values
        lut = np.zeros(int(ids.max()) + 1, np.int64)
        lut[ids] = table["class_id"].values
        assert np.array_equal(lut[inst], cls)               # the instance mapping is the labels' mapping
        for name, p in run["picks"].items():
            assert p["user_id"] == "faket-dask" and p["session_id"] == "0" and p["from_tool"]
            rows = np.flatnonzero(table["class_name"].values.astype(str) == name)
            assert p["instance_ids"] == ids[rows].tolist()
            loc = np.asarray(p["locations"])
            xyz = np.stack([table[a].values[rows] for a in "xyz"], 1)
            np.testing.assert_allclose(loc, xyz * px, rtol=0, atol=1e-9)
            for (x, y, z), i in zip(loc / px, ids[rows]):    # Å -> tomogram voxels (index i at i * s)
                vox = np.argwhere(inst == i)
                if len(vox):                                   # a small particle may miss every bin centre
                    d = np.linalg.norm(vox.mean(0) - (z, y, x))
                    worst = max(worst, d)
                    assert d <= 1.0, (t, name, i, d)
                    on_grid += 1
                zs, ys, xs = np.argwhere(occ[t] == i).mean(0)  # full-resolution centroid, mapped
                c = KL.to_tomogram_grid(xs, ys, zs, specimen_z=occ[t].shape[0], nz_full=shape[0], z0=0, binning=b)
                d = np.linalg.norm(np.array(c) - (x, y, z))
                worst_full = max(worst_full, d)
                assert d <= 1.0, (t, name, i, d)
                n_picks += 1
            T = np.asarray(p["transforms"])
            assert np.allclose(T[:, 3], [0, 0, 0, 1]) and np.allclose(T[:, :3, 3], 0)
            if objs[name]["name"] == "fiducial":               # a ball: no orientation
                assert not p["trust_orientation"] and np.allclose(T[:, :3, :3], np.eye(3))
            else:
                M = rotation_matrices(np.stack([table[a].values[rows] for a in ("rot", "tilt", "psi")], 1))
                assert p["trust_orientation"]
                np.testing.assert_allclose(T[:, :3, :3], M, rtol=0, atol=1e-12)
    assert on_grid >= 0.75 * n_picks
    print(f"\npick to instance centroid: ≤ {worst:.2f} tomogram voxels ({on_grid} of {n_picks} particles have "
          f"voxels on the tomogram grid); to the full-resolution centroid: ≤ {worst_full:.2f}")


def test_existing_root_is_kept_without_overwrite(reference_run, tmp_path):
    store = reference_run["out"] / "run.zarr"
    root = tmp_path / "project"
    root.mkdir()
    (root / "mine.txt").write_text("keep")
    proc = cli("export-copick", store, root)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"faket-dask: error: {root}: exists; pass --overwrite")
    with pytest.raises(InputError, match="is not a copick project"):   # --overwrite: only a project is replaced
        ce.plan_copick_export(store, root, overwrite=True)
    assert [p.name for p in root.iterdir()] == ["mine.txt"] and [p.name for p in tmp_path.iterdir()] == ["project"]


def test_unknown_modality_bad_ids_and_missing_store_write_nothing(reference_run, tmp_path):
    store = reference_run["out"] / "run.zarr"
    root = tmp_path / "project"
    proc = cli("export-copick", store, root, "--modalities", "faket,bogus")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"{store}: no 'bogus' tomogram in tomo_000, tomo_001 (every tomogram has: baseline, faket" in proc.stderr
    for kwargs, words in (({"user_id": "me_you"}, "--user-id 'me_you': copick ids cannot"),
                          ({"session_id": "a b"}, "--session-id 'a b'")):
        with pytest.raises(InputError, match=words):
            ce.plan_copick_export(store, root, **kwargs)
    with pytest.raises(InputError, match="missing.zarr: no such store"):
        ce.plan_copick_export(tmp_path / "missing.zarr", root)
    with pytest.raises(InputError, match="not a faket-dask run store"):
        import zarr
        zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
        ce.plan_copick_export(tmp_path / "other.zarr", root)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.zarr"]


def _store_with_class_names(reference_run, tmp_path, rename: dict[str, str]) -> Path:
    """A copy of the reference store whose classes are renamed (labels and tables)."""
    import shutil

    import zarr

    store = tmp_path / "run.zarr"
    shutil.copytree(reference_run["out"] / "run.zarr", store)
    for t in range(2):
        arr = zarr.open_array(str(store / st.labels_group(t) / "class_mask"), mode="r+")
        arr.attrs["class_names"] = [rename.get(n, n) for n in arr.attrs["class_names"]]
        col = zarr.open_array(str(store / st.labels_particles_group(t) / "class_name"), mode="r+")
        col[...] = np.array([rename.get(str(n), str(n)) for n in col[...]], dtype=col.dtype)
    return store


def test_class_names_copick_cannot_use_are_renamed(reference_run, tmp_path):
    table = fd.open(reference_run["out"] / "run.zarr", st.labels_particles_group(0)).load()
    first = str(table["class_name"].values[-1])
    store = _store_with_class_names(reference_run, tmp_path, {first: f"my_{first}"})
    root = tmp_path / "project"
    plan = ce.plan_copick_export(store, root, modalities=["faket"])
    assert any(f"'my_{first}' is named 'my-{first}' in copick" in n for n in plan.notices)
    ce.write_copick_project(plan)
    config = json.loads((root / ce.CONFIG_NAME).read_text())
    assert f"my-{first}" in [o["name"] for o in config["pickable_objects"]]
    assert (root / "ExperimentRuns" / "tomo_000" / "Picks" / f"faket-dask_0_my-{first}.json").is_file()
    seen = copick_read(root / ce.CONFIG_NAME)          # copick warns on names it would change: none
    assert seen["runs"]["tomo_000"]["picks"][f"my-{first}"]["count"] >= 1


def test_colliding_or_empty_class_names_are_refused(reference_run, tmp_path):
    names = fd.open(reference_run["out"] / "run.zarr", st.labels_group(0))["class_mask"].attrs["class_names"]
    for rename, words in (({names[0]: "a_b", names[1]: "a-b"}, "both become 'a-b'"),
                          ({names[0]: "__"}, "no character copick allows"),
                          ({names[0]: "x-multilabel"}, "'-multilabel'")):
        sub = tmp_path / words.split()[0].strip("'")
        sub.mkdir()
        store = _store_with_class_names(reference_run, sub, rename)
        with pytest.raises(InputError, match=words):
            ce.plan_copick_export(store, sub / "project")
        assert not (sub / "project").exists()


def test_a_failure_leaves_nothing(reference_run, tmp_path, monkeypatch):
    plan = ce.plan_copick_export(reference_run["out"] / "run.zarr", tmp_path / "project", modalities=["faket"])
    calls = []

    def broken(*a, **k):
        calls.append(1)
        if len(calls) > 1:
            raise OSError("disk full")
        return real(*a, **k)

    real = cm.write_ome_zarr_v2
    monkeypatch.setattr(cm, "write_ome_zarr_v2", broken)
    with pytest.raises(OSError, match="disk full"):
        ce.write_copick_project(plan)
    assert list(tmp_path.iterdir()) == []


def test_filaments_are_copick_filaments(tmp_path):
    """Synthetic run with an actin filament: path points as picks (+Z tangent) and a centreline."""
    import xarray as xr

    path = np.stack([np.linspace(2, 10, 9), np.full(9, 5.0), np.linspace(3, 7, 9)], 1)   # x, y, z voxels
    normal = np.tile([0.0, 1.0, 0.0], (9, 1))
    table = xr.Dataset(
        {"class_id": ("particle", np.array([1, 2], np.int32)), "class_name": ("particle", np.array(["1bxn", "actin"])),
         **{a: ("particle", np.array([4.0, 6.0])) for a in "xyz"},
         **{a: ("particle", np.array([30.0, 0.0])) for a in ("rot", "tilt", "psi")},
         "radius_A": ("particle", np.array([60.0, 35.0])),
         "filament_id": ("filament_point", np.full(9, 2, np.uint32)),
         **{f"filament_{a}": ("filament_point", path[:, i]) for i, a in enumerate("xyz")},
         **{f"filament_n{a}": ("filament_point", normal[:, i]) for i, a in enumerate("xyz")}},
        coords={"particle": np.array([1, 2], np.uint32)}, attrs={"pixel_size_A": 20.0})
    classes = [cm.ClassInfo("1bxn", "1bxn", 1, "protein", None, 60.0),
               cm.ClassInfo("actin", "actin", 2, "filament", None, 35.0)]
    plan = ce.CopickPlan(tmp_path / "x.zarr", tmp_path / "project", "faket-dask", "0", [], classes,
                         [ce.RunPlan(0, {}, table)])
    ce.write_copick_project(plan)
    picks = json.loads((tmp_path / "project/ExperimentRuns/tomo_000/Picks/faket-dask_0_actin.json").read_text())
    T = np.array([p["transformation_"] for p in picks["points"]])
    tangent = (path[-1] - path[0]) / np.linalg.norm(path[-1] - path[0])
    np.testing.assert_allclose(T[:, :3, 2], np.tile(tangent, (9, 1)), atol=1e-12)       # +Z along the path
    np.testing.assert_allclose(np.linalg.det(T[:, :3, :3]), 1.0, atol=1e-12)
    assert [p["instance_id"] for p in picks["points"]] == [2] * 9
    seen = copick_read(tmp_path / "project" / ce.CONFIG_NAME)
    run = seen["runs"]["tomo_000"]
    assert run["picks"]["actin"]["count"] == 9 and run["picks"]["1bxn"]["count"] == 1
    assert run["filaments"]["actin"] == [{"instance_id": 2, "n_points": 9}]
    assert {o["name"]: o["is_filament"] for o in seen["objects"]} == {"1bxn": False, "actin": True}
    np.testing.assert_allclose(run["picks"]["actin"]["locations"], path * 20.0)
