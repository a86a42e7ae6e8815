"""New specimen content: ellipsoidal vesicles, actin, microtubules, gold of random size, crowding.

For each: chunk invariance (two chunkings and one piece, bit for bit), determinism (same seed,
same table and volume), no overlap (no voxel labelled by two objects, each voxel's potential
that of one object), and the filament path table against the labels; the volume fraction
reached, measured from the occupancy; the unreachable fraction; the demo's specimen placing
everything."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.spatial import cKDTree

from faket_dask.errors import InputError
from faket_dask.kernels import specimen as K
from faket_dask.kernels.specimen_filaments import PATH_STEP_A
from faket_dask.kernels.specimen_templates import GOLD_RADIUS_A
from faket_dask.stages.particles import filament_paths
from faket_dask.stages.specimen import (
    DEFAULT_VOLUME_FRACTION,
    EXTRA_CLASSES,
    build_classes,
    generate_specimen,
)
from tests.test_specimen import one_row, table_of

PIX = 10.0
SCENES = {
    "ellipsoidal_vesicles": dict(shape=(80, 160, 160), n_vesicles=3, n_fiducials=0, n_particles=0),
    "actin": dict(shape=(64, 128, 128), n_vesicles=0, n_fiducials=0, n_particles=6, n_actin=3),
    "microtubule": dict(shape=(80, 160, 160), n_vesicles=0, n_fiducials=0, n_particles=6, n_microtubules=2),
    "gold": dict(shape=(48, 96, 96), n_vesicles=0, n_fiducials=8, n_particles=0),
    "crowded_0.3": dict(shape=(96, 160, 160), n_vesicles=0, n_fiducials=0, volume_fraction=0.3),
}


def make(name: str, seed: int = 4, **chunks):
    kw = dict(SCENES[name])
    shape = kw.pop("shape")
    if kw.get("volume_fraction") is not None:
        kw.pop("n_particles", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # every object must find room
        return generate_specimen(shape, PIX, seed, **kw, **chunks)


@pytest.fixture(scope="module", params=list(SCENES))
def scene(request):
    spec, parts = make(request.param, cy=16, cz=7)
    return request.param, spec.compute(), parts


def test_scene_has_its_content(scene):
    name, spec, parts = scene
    names = list(parts["class_name"].values)
    if name == "ellipsoidal_vesicles":
        a, b, c = (parts[k].values for k in ("shell_radius_A", "shell_b_A", "shell_c_A"))
        assert names.count("vesicle") == 3
        assert np.any(a / c > 1.1 + 1e-9), "no ellipsoidal vesicle"
        assert np.all(a / c <= 1.5 + 1e-9) and np.all((b <= a) & (b >= c))
    elif name in ("actin", "microtubule"):
        assert names.count(name) == SCENES[name].get("n_actin", SCENES[name].get("n_microtubules"))
    elif name == "gold":
        r = parts["bead_radius_A"].values
        assert names.count("fiducial") == 8 and len(np.unique(r)) == 8
        assert np.all((r >= GOLD_RADIUS_A[0]) & (r <= GOLD_RADIUS_A[1]))
    else:
        assert parts.attrs["volume_fraction"] == pytest.approx(0.3, rel=0.01)


def test_scene_chunk_invariant_and_deterministic(scene):
    name, spec, parts = scene
    again, parts2 = make(name, cy=40, cz=32)
    again = again.compute()
    assert parts.equals(parts2)
    for v in spec.data_vars:
        assert np.array_equal(spec[v].values, again[v].values), (name, v)
    one = K.render_block(table_of(parts), build_classes(PIX), (0, 0, 0), spec["density"].shape, PIX)
    for v, x in zip(("density", "absorption", "class_mask", "occupancy"), one):
        assert np.array_equal(spec[v].values, x), (name, v)
    other, parts3 = make(name, seed=5)
    assert not parts.equals(parts3)


def test_scene_no_overlap(scene):
    """Each object rendered alone on its own box: no voxel is labelled by two objects, and the
    specimen's potential on each object's labels is that object's alone."""
    name, spec, parts = scene
    d, o = spec["density"].values, spec["occupancy"].values
    shape = np.array(d.shape)
    table = table_of(parts)
    classes = build_classes(PIX)
    n_labels = np.zeros(d.shape, np.int16)
    for r in range(parts.sizes["particle"]):
        t = one_row(table, r)
        if classes[int(t["class_id"][0]) - 1].kind == "filament":
            p = np.stack([t["filament_z"], t["filament_y"], t["filament_x"]], 1)
            reach = t["radius_A"][0] / PIX + 4
            lo, hi = np.floor(p.min(0) - reach), np.ceil(p.max(0) + reach)
        else:
            c = np.array([t["z"][0], t["y"][0], t["x"][0]])
            lo, hi = np.floor(c - t["radius_A"][0] / PIX), np.ceil(c + t["radius_A"][0] / PIX)
        lo, hi = np.maximum(lo, 0).astype(int), np.minimum(hi + 1, shape).astype(int)
        da, _, _, oa = K.render_block(t, classes, tuple(lo), tuple(hi - lo), PIX)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        n_labels[sl] += oa > 0
        assert np.array_equal(oa > 0, o[sl] == r + 1), (name, r)
        mine = oa > 0
        assert np.array_equal(d[sl][mine], da[mine]), (name, r)
    assert n_labels.max() <= 1


def test_filament_table_matches_labels():
    """One row per filament (class, centre, tube radius, length) and its path on dim
    ``filament_point``: the labels lie around the path, within the tube's wall, and cover it."""
    for name in ("actin", "microtubule"):
        spec, parts = make(name)
        o = spec["occupancy"].values
        paths = filament_paths(parts)
        rows = [i for i, n in enumerate(parts["class_name"].values) if n == name]
        assert sorted(paths) == [i + 1 for i in rows]
        geom = build_classes(PIX)[int(parts["class_id"].values[rows[0]]) - 1].filament
        for i in rows:
            p = paths[i + 1]                                   # (x, y, z) voxels
            assert len(p) >= 2 and np.all(p >= 0) and np.all(p <= np.array(o.shape[::-1]) - 1)
            assert parts["radius_A"].values[i] == geom.tube_radius_A
            assert parts["length_A"].values[i] == pytest.approx((len(p) - 1) * PATH_STEP_A)
            seg = np.sqrt((np.diff(p, axis=0) ** 2).sum(1)) * PIX
            assert np.allclose(seg, PATH_STEP_A)
            centre = np.array([parts[k].values[i] for k in "xyz"])
            assert np.allclose(centre, (p[(len(p) - 1) // 2] + p[len(p) // 2]) / 2)
            fine = np.concatenate([p[:-1] + f * np.diff(p, axis=0) for f in np.linspace(0, 1, 10, endpoint=False)])
            vox = np.argwhere(o == i + 1)[:, ::-1]              # (x, y, z)
            dist = cKDTree(fine).query(vox)[0] * PIX
            inner = max(geom.helix_radius_A - geom.subunit_radius_A, 0.0)
            assert dist.max() <= geom.tube_radius_A + PIX and dist.min() >= inner - PIX, (name, i)
            covered = cKDTree(vox).query(p[2:-2])[0] * PIX <= geom.tube_radius_A + PIX
            assert covered.mean() > 0.95, (name, i)
            if name == "microtubule":                          # hollow: nothing on the axis
                assert np.all(dist >= 60.0)


@pytest.mark.parametrize("fraction, vesicles", [(0.1, 1), (0.3, 0)])
def test_volume_fraction_reached(fraction, vesicles):
    """Measured from the occupancy: the fraction of voxels labelled by proteins is the target
    within 5 % (the labels are the envelopes, whose voxel count is their volume on average)."""
    shape = (96, 160, 160)
    spec, parts = generate_specimen(shape, PIX, 2, volume_fraction=fraction, n_vesicles=vesicles,
                                    n_fiducials=3, n_actin=1)
    m = spec["class_mask"].compute().values
    names = spec["class_mask"].attrs["class_names"]
    protein = np.array([n not in EXTRA_CLASSES for n in names])
    measured = protein[np.maximum(m.astype(int) - 1, 0)][m > 0].sum() / m.size
    assert measured == pytest.approx(fraction, rel=0.05)
    assert parts.attrs["volume_fraction"] == pytest.approx(fraction, rel=0.02)
    assert parts.attrs["volume_fraction_target"] == fraction


def test_unreachable_fraction_names_what_was_reached():
    with pytest.raises(InputError, match=r"--volume-fraction 0.5 does not fit .* reached 0\.\d+ \(\d+ of \d+ particles"):
        generate_specimen((48, 64, 64), PIX, 0, volume_fraction=0.5, n_vesicles=0, n_fiducials=0)


def test_bad_counts_and_fractions():
    for kw, msg in ((dict(n_particles=3, volume_fraction=0.1), "not both"),
                    (dict(volume_fraction=0.0), "--volume-fraction"),
                    (dict(volume_fraction=0.51), "--volume-fraction"),
                    (dict(volume_fraction=float("nan")), "--volume-fraction"),
                    (dict(n_particles=-1), "--particles"), (dict(n_actin=-1), "--actin"),
                    (dict(n_microtubules=2.5), "--microtubules"), (dict(n_vesicles=-3), "--vesicles")):
        with pytest.raises(InputError, match=msg):
            generate_specimen((16, 32, 32), PIX, 0, **kw)
    with pytest.raises(InputError, match="--shape"):
        generate_specimen((-16, 32, 32), PIX, 0)
    with pytest.raises(InputError, match="--pixel-size-A"):
        generate_specimen((16, 32, 32), -1.0, 0)


def test_default_fraction_is_shrec_like():
    classes = build_classes(PIX)
    mean_volume = np.mean([c.volume_A3 for c in classes if c.name not in EXTRA_CLASSES])
    shrec = 300 * mean_volume / (512 * 512 * 200 * PIX ** 3)       # a few hundred particles
    assert DEFAULT_VOLUME_FRACTION == pytest.approx(shrec, rel=0.1)
    _, parts = generate_specimen((100, 256, 256), PIX, 0, n_vesicles=0, n_fiducials=0)
    assert parts.attrs["volume_fraction_target"] == DEFAULT_VOLUME_FRACTION
    assert 10 < parts.sizes["particle"] < 40                        # 300 / 16, give or take


def test_demo_specimen_places_everything():
    """The demo's specimen (128³ at 10 Å, 1 vesicle, 3 fiducials, a filament or two, 32 particles
    or the default fraction) places every object: no warning."""
    from faket_dask.pipeline.plan import derived_seed

    seeds = [derived_seed(0, "specimen", i) for i in range(3)] + list(range(6))
    for seed in seeds:
        for kw in (dict(n_particles=32), dict()):
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                _, parts = generate_specimen((128, 128, 128), PIX, seed, n_vesicles=1, n_fiducials=3,
                                             n_actin=1, n_microtubules=1, **kw)
            names = list(parts["class_name"].values)
            assert {"vesicle", "actin", "microtubule"} <= set(names) and names.count("fiducial") == 3


def test_large_crowded_volume_reaches_0_3():
    """256 x 512 x 512 voxels with vesicles, gold and filaments reaches a volume fraction of 0.3
    (the placement's time is measured in benchmarks/bench_specimen.py, not asserted here)."""
    _, parts = generate_specimen((256, 512, 512), PIX, 0, volume_fraction=0.3, n_vesicles=2,
                                 n_fiducials=5, n_actin=5, n_microtubules=2)
    assert parts.attrs["volume_fraction"] == pytest.approx(0.3, rel=0.01)
