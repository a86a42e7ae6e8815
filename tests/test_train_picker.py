"""``faket-dask train-picker``: the loss, the patch sampler, learning, the CLI and its checks.

Everything is real (no mocks): the kernel tests run on volumes built here, the end-to-end tests
on the tiny simulated run of ``conftest.reference_run`` with tiny settings (16³ patches, 2
epochs of 3 steps), so each training takes seconds on a CPU.
"""
from __future__ import annotations

import itertools
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from pipeline_helpers import cli

from faket_dask.kernels.picker_net import BACKGROUND, load_picker
from faket_dask.kernels.picker_training import (
    PatchSampler,
    Volume,
    class_weights,
    default_shift,
    fit,
    init_model,
    standardise,
    tversky_loss,
    weighted_ce_loss,
)

TINY = ["--patch", "16", "--batch", "2", "--epochs", "2", "--steps", "3", "--val-patches", "4"]


# --- kernel: loss ---------------------------------------------------------------------------

def _onehot(target: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(target, n).movedim(-1, 1).double()


def test_loss_is_zero_for_a_perfect_prediction_and_falls_as_it_improves():
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.integers(0, 3, size=(2, 8, 8, 8)))  # every channel occurs
    perfect = _onehot(target, 3)
    assert float(tversky_loss(perfect, target)) == pytest.approx(0.0, abs=1e-6)
    uniform = torch.full_like(perfect, 1 / 3)
    losses = [float(tversky_loss((1 - t) * perfect + t * uniform, target)) for t in (1.0, 0.7, 0.4, 0.1)]
    assert all(a > b for a, b in itertools.pairwise(losses)), losses
    assert losses[0] > 1.0  # uniform guessing is far from perfect
    # the loss of a wrong one-hot prediction is the worst: Ncl
    wrong = _onehot((target + 1) % 3, 3)
    assert float(tversky_loss(wrong, target)) == pytest.approx(3.0, abs=1e-6)


def test_loss_weighs_classes_equally_whatever_their_size():
    """Missing a 1-voxel class costs as much as missing a 1000-voxel one (class-balanced)."""
    target = torch.zeros(1, 16, 16, 16, dtype=torch.int64)
    target[0, :4] = 1                        # 1024 voxels of class 1
    target[0, 8, 8, 8] = 2                   # 1 voxel of class 2
    perfect = _onehot(target, 3)
    miss_big = perfect.clone()
    miss_big[0, :, :4] = _onehot(torch.zeros(1, 4, 16, 16, dtype=torch.int64), 3)[0]
    miss_small = perfect.clone()
    miss_small[0, :, 8, 8, 8] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    big, small = float(tversky_loss(miss_big, target)), float(tversky_loss(miss_small, target))
    assert 1.0 <= big < 1.3 and 1.0 <= small < 1.3


# --- kernel: patches ------------------------------------------------------------------------

def _volume(rng, shape=(64, 64, 64), per_class=(5, 5), lo=20, hi=44) -> Volume:
    centres, channels = [], []
    for c, n in enumerate(per_class, start=1):
        centres += [rng.integers(lo, hi, size=3) for _ in range(n)]
        channels += [c] * n
    data = rng.normal(size=shape).astype(np.float32)
    target = rng.integers(0, len(per_class) + 1, size=shape).astype(np.uint8)
    return Volume(data, target, np.array(centres), np.array(channels))


def test_sampler_shapes_centres_and_determinism():
    rng = np.random.default_rng(1)
    vols = [_volume(rng), _volume(rng)]
    patch, shift = 16, 4
    sampler = PatchSampler(vols, patch, shift, particle_fraction=0.5)
    draw = sampler.draw(np.random.default_rng(7), 10)
    x, y = sampler.extract(draw)
    assert x.shape == (10, 1, 16, 16, 16) and x.dtype == np.float32
    assert y.shape == (10, 16, 16, 16)
    assert (draw.classes[:5] > 0).all() and (draw.classes[5:] == 0).all()
    for i in range(10):
        t, (z0, y0, x0) = draw.tomo[i], draw.corners[i]
        assert ((draw.corners[i] >= 0) & (draw.corners[i] + patch <= 64)).all()
        np.testing.assert_array_equal(x[i, 0], vols[t].data[z0:z0 + patch, y0:y0 + patch, x0:x0 + patch])
        np.testing.assert_array_equal(y[i], vols[t].target[z0:z0 + patch, y0:y0 + patch, x0:x0 + patch])
    for i in range(5):  # particle-centred: the patch centre is within ±shift of a particle of its class
        v = vols[draw.tomo[i]]
        mine = v.centres[v.channels == draw.classes[i]]
        off = np.abs(mine - (draw.corners[i] + patch // 2)).max(axis=1)
        assert off.min() <= shift
    again = sampler.draw(np.random.default_rng(7), 10)
    for a, b in ((draw.corners, again.corners), (draw.tomo, again.tomo), (draw.classes, again.classes)):
        np.testing.assert_array_equal(a, b)
    other = sampler.draw(np.random.default_rng(8), 10)
    assert not np.array_equal(draw.corners, other.corners)


def test_sampler_clamps_patches_near_the_border():
    rng = np.random.default_rng(2)
    vol = _volume(rng, shape=(20, 24, 28), lo=0, hi=2)   # particles in a corner
    draw = PatchSampler([vol], 16, 6, particle_fraction=1.0).draw(np.random.default_rng(0), 50)
    assert (draw.corners >= 0).all() and (draw.corners + 16 <= np.array([20, 24, 28])).all()
    assert (draw.centres - 8 < 0).any()  # some requested centres did need clamping


def test_sampler_is_class_balanced():
    rng = np.random.default_rng(3)
    vol = _volume(rng, per_class=(200, 3))             # class 1 has 200 particles, class 2 only 3
    draw = PatchSampler([vol], 16, 4, particle_fraction=1.0).draw(np.random.default_rng(0), 4000)
    share = np.mean(draw.classes == 2)
    assert 0.45 < share < 0.55, share


def test_default_shift_is_deepfinders_scaled():
    assert default_shift(56) == 13 and default_shift(48) == 11 and default_shift(16) == 4


# --- kernel: learning -----------------------------------------------------------------------

def _spheres(seed: int, shape=(32, 32, 32), n=8) -> Volume:
    """Bright spheres of radius 3 (class 1) and 5 (class 2) in unit Gaussian noise."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape)
    vol = rng.normal(size=shape).astype(np.float32)
    target = np.zeros(shape, np.uint8)
    centres, channels = [], []
    for i in range(n):
        c = 1 + i % 2
        p = rng.integers(5, np.array(shape) - 5)
        inside = (zz - p[0]) ** 2 + (yy - p[1]) ** 2 + (xx - p[2]) ** 2 <= (3.0 if c == 1 else 5.0) ** 2
        vol[inside] += 4.0
        target[inside] = c
        centres.append(p)
        channels.append(c)
    return Volume(standardise(vol), target, np.array(centres), np.array(channels))


@pytest.fixture
def one_thread():
    """Torch on one thread while the test runs (small convolutions gain nothing from more)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_training_learns_the_classes_of_a_synthetic_volume(one_thread):
    """50 steps: the validation loss falls from ~2.3 to well below 2, the loss of predicting
    background everywhere (Ncl − 1 = 2): the classes themselves are being segmented."""
    model = init_model(3, (8, 12, 16), seed=0)
    result = fit(model, [_spheres(1)], [_spheres(2)], epochs=5, steps=10, batch=4, lr=1e-3, patch=16,
                 val_patches=8, seed=0, loss="tversky")
    assert result.initial_val_loss > 2.1
    assert result.best_val_loss < 1.7, result.history
    assert result.best_val_loss == min(h["val_loss"] for h in result.history)
    assert result.history[result.best_epoch - 1]["val_loss"] == result.best_val_loss


def test_weighted_ce_learns_both_classes_of_a_synthetic_volume(one_thread):
    """The default loss: after 100 steps both classes of a held-out volume are found (most voxels
    of the big spheres, some of the small ones, which a tiny net learns last): an all-background
    or one-class picker fails; the best validation loss is well below the untrained one."""
    from faket_dask.kernels.picker_net import class_probabilities

    model = init_model(3, (8, 12, 16), seed=0)
    result = fit(model, [_spheres(1)], [_spheres(2)], epochs=5, steps=20, batch=4, lr=1e-3, patch=16,
                 val_patches=8, seed=0)
    assert result.class_weights is not None and result.class_weights[0] < min(result.class_weights[1:])
    assert result.best_val_loss < 0.5 * result.initial_val_loss, result.history
    model.load_state_dict(result.state_dict)
    model.eval()
    held_out = _spheres(2)
    labels = class_probabilities(model, torch.from_numpy(held_out.data)).argmax(0).numpy()
    recall = [float((labels[held_out.target == c] == c).mean()) for c in (1, 2)]
    assert recall[0] > 0.1 and recall[1] > 0.5, recall


def test_class_weights_are_square_root_inverse_frequencies():
    """Hand-computed: voxel counts 90 / 9 / 1 (and an absent class) → (1/f)^½ ∝ 1, √10, √90,
    normalised to mean 1 over the present classes; the absent class weighs 0."""
    target = np.zeros((1, 10, 10), np.uint8)
    target.flat[90:99] = 1
    target.flat[99] = 2
    vol = Volume(np.zeros(target.shape, np.float32), target)
    w = class_weights([vol], 4)
    raw = np.sqrt(100 / np.array([90.0, 9.0, 1.0]))
    np.testing.assert_allclose(w[:3], raw / raw.mean(), rtol=1e-12)
    assert w[3] == 0.0
    logits = torch.zeros(1, 4, 1, 10, 10)
    # uniform prediction: every voxel's loss is log 4, whatever the weights
    assert float(weighted_ce_loss(logits, torch.from_numpy(target.astype(np.int64))[None],
                                  torch.tensor(w, dtype=torch.float32))) == pytest.approx(np.log(4), rel=1e-6)


# --- end to end: the CLI on the reference run ---------------------------------------------

def _classes_by_id(store, tomo):
    from faket_dask.store import open as open_group

    t = open_group(store, f"tomo_{tomo:03d}/labels_particles")
    pairs = sorted({(int(i), str(n)) for i, n in zip(t["class_id"].values, t["class_name"].values)})
    return [n for _, n in pairs]


@pytest.fixture(scope="module")
def picker_runs(reference_run, tmp_path_factory):
    """Two CLI runs with seed 0 and one API run with seed 1 (tiny settings)."""
    store = reference_run["out"] / "run.zarr"
    base = tmp_path_factory.mktemp("picker")
    import faket_dask

    def run(k):
        return cli("train-picker", store, "--modality", "noiseless", "--train", "0", "--validate", "1",
                   "--out", base / f"seed0_{k}.pt", "--seed", "0", *TINY, extra_env={"OMP_NUM_THREADS": "1"})

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(2) as pool:  # one thread each: the runs go side by side
            futures = [pool.submit(run, k) for k in (0, 1)]
            api = faket_dask.train_picker(store, [0], [1], base / "seed1.pt", modality="noiseless", patch=16,
                                          batch=2, epochs=2, steps=3, val_patches=4, seed=1, progress=False)
            procs = [f.result() for f in futures]
    finally:
        torch.set_num_threads(before)
    return {"store": store, "base": base, "procs": procs, "api": api}


@pytest.mark.slow
def test_cli_trains_and_writes_a_loadable_checkpoint(picker_runs):
    proc = picker_runs["procs"][0]
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = picker_runs["base"] / "seed0_0.pt"
    assert f"wrote {path}" in proc.stdout and "best epoch" in proc.stdout
    assert [ln.split(":")[0] for ln in proc.stdout.splitlines() if ln.startswith("epoch ")] == ["epoch 1/2",
                                                                                              "epoch 2/2"]
    model, meta = load_picker(path)
    names = meta["class_names"]
    assert names[0] == BACKGROUND
    assert names[1:] == _classes_by_id(picker_runs["store"], 0)
    cfg = meta["config"]
    assert list(cfg["class_ids"]) == names[1:]
    assert [h["epoch"] for h in cfg["history"]] == [1, 2]
    assert cfg["best_epoch"] in (1, 2)
    assert cfg["best_val_loss"] == min(h["val_loss"] for h in cfg["history"])
    assert cfg["modality"] == "noiseless" and cfg["train"] == [0] and cfg["validate"] == [1]
    assert cfg["patch"] == 16 and cfg["batch"] == 2 and cfg["seed"] == 0 and cfg["shift"] == 4
    assert cfg["normalisation"] == "per-tomogram standardisation"
    assert cfg["pixel_size_A"] > 0 and cfg["device"] == "cpu"
    out = model(torch.zeros(1, 1, 16, 16, 16))
    assert out.shape == (1, len(names), 16, 16, 16)
    assert not list(picker_runs["base"].glob("*.partial"))


def test_same_seed_same_weights_other_seed_other_weights(picker_runs):
    for proc in picker_runs["procs"]:
        assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(picker_runs["base"] / "seed0_0.pt", weights_only=True)["state_dict"]
    b = torch.load(picker_runs["base"] / "seed0_1.pt", weights_only=True)["state_dict"]
    c = torch.load(picker_runs["base"] / "seed1.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if k.endswith("weight"))
    assert picker_runs["api"]["seed"] == 1 and picker_runs["api"]["out"] == str(picker_runs["base"] / "seed1.pt")


def test_classes_option_trains_on_a_subset(picker_runs, tmp_path):
    from faket_dask.stages.picker_training import check_training

    names = _classes_by_id(picker_runs["store"], 0)
    plan = check_training(picker_runs["store"], "0", "1", tmp_path / "p.pt", modality="noiseless", patch=16,
                          classes=",".join(names[:2][::-1]))
    assert plan.class_names == [BACKGROUND, *names[:2]]   # class-id order, whatever the option's order
    assert not (tmp_path / "p.pt").exists()


# --- bad input: one line, exit 2, nothing written -----------------------------------------

BAD = {
    "no store": (["{tmp}/nosuch.zarr", "--train", "0", "--validate", "1"], "nosuch.zarr: no such store"),
    "modality": (["{store}", "--modality", "nosuch", "--train", "0", "--validate", "1"],
                 "{store}: tomo_000 has no tomogram 'nosuch'"),
    "modality of one": (["{partial}", "--modality", "faket", "--train", "0", "--validate", "1"],
                        "{partial}: tomo_001 has no tomogram 'faket'"),
    "tomo index": (["{store}", "--train", "0,7", "--validate", "1"], "--train 7: out of range; {store}"),
    "overlap": (["{store}", "--train", "0,1", "--validate", "1"], "{store}: --train and --validate share tomo_001"),
    "empty": (["{store}", "--train", "0", "--validate", ","], "--validate: no tomogram given; {store}"),
    "patch multiple": (["{store}", "--train", "0", "--validate", "1", "--patch", "18"],
                       "--patch 18: must be a multiple"),
    "patch small": (["{store}", "--train", "0", "--validate", "1", "--patch", "4"], "at least 8"),
    "patch large": (["{store}", "--train", "0", "--validate", "1", "--patch", "48"],
                    "{store}: --patch 48 is larger than tomo_000's smallest edge"),
    "no labels": (["{partial}", "--modality", "noiseless", "--train", "0", "--validate", "1"],
                  "{partial}: tomo_001 has no labels"),
    "classes": (["{store}", "--train", "0", "--validate", "1", "--classes", "nosuch"],
                "{store}: --classes 'nosuch' is not a class of the --train tomograms"),
    "out exists": (["{store}", "--train", "0", "--validate", "1", "--out", "{tmp}/exists.pt"],
                   "{tmp}/exists.pt: exists; pass --overwrite"),
    "out folder": (["{store}", "--train", "0", "--validate", "1", "--out", "{tmp}/nodir/p.pt"],
                   "{tmp}/nodir: no such folder"),
}
if not torch.cuda.is_available():
    BAD["no gpu"] = (["{store}", "--train", "0", "--validate", "1", "--gpus"], "--gpus: no CUDA GPU here")


@pytest.fixture(scope="module")
def bad_setup(reference_run, tmp_path_factory):
    """A folder with a damaged copy of the store and an existing output file."""
    tmp = tmp_path_factory.mktemp("bad_picker")
    store = reference_run["out"] / "run.zarr"
    partial = tmp / "partial.zarr"               # tomo_001 without labels and without its faket tomogram
    shutil.copytree(store, partial)
    shutil.rmtree(partial / "tomo_001" / "labels")
    shutil.rmtree(partial / "tomo_001" / "tomogram" / "faket")
    (tmp / "exists.pt").write_bytes(b"keep me")
    return {"tmp": tmp, "store": store, "partial": partial}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_writes_nothing(bad_setup, case, capsys):
    """Through the CLI's entry point (in-process, as ``faket-dask``), to keep 14 interpreter starts out."""
    from faket_dask.cli import main

    args = [a.format(**bad_setup) for a in BAD[case][0]]
    if "--out" not in args:
        args += ["--out", f"{bad_setup['tmp']}/{case.replace(' ', '_')}.pt"]
    if "--patch" not in args:
        args += ["--patch", "16"]
    with pytest.raises(SystemExit) as exit_:
        main(["train-picker", *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faket-dask: error: "), err
    assert BAD[case][1].format(**bad_setup) in lines[0], lines[0]
    tmp = bad_setup["tmp"]
    assert sorted(p.name for p in tmp.iterdir()) == ["exists.pt", "partial.zarr"]
    assert (tmp / "exists.pt").read_bytes() == b"keep me"
