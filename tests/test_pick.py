"""``faket-dask pick``: segmentation in blocks, connected components, the picks files.

* The picker's context (the halo that makes blocks exact) is measured by perturbation.
* Clustering on a constructed label volume: centroids and sizes exact, the same from blocks.
* Peaks: touching particles stay two picks (one component), plateaus give one peak, and the
  peaks from blocks are the local maxima of the whole tomogram's smoothed probability.
* The stage on a constructed MRC tomogram with a random-weights picker: two block sizes give
  the same segmentation (= the whole tomogram segmented at once) and the same picks, which are
  scipy's connected components of that segmentation.
* The CLI on the session's ``reference_run`` store: the CSV's header and Å, read back by
  ``faket-dask score`` as .csv, .star and .txt; an MRC of the same tomogram gives the same picks;
  bad input is one line and writes nothing.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from faket_dask.kernels.picker_net import PickerUNet, save_picker
from faket_dask.kernels.picking import (
    Components,
    block_components,
    face_edges,
    merge_components,
    pad_window,
    segment,
)
from faket_dask.params.picking import PICK_CONTEXT_VOXELS
from faket_dask.stages.picking import pick, plan_pick
from faket_dask.stages.picking_io import PICK_COLUMNS
from faket_dask.stages.scoring_points import read_points

from conftest import write_mrc
from pipeline_helpers import cli

FILTERS = (8, 8, 8)   # a small picker: the architecture (and its context) of DeepFinder's, cheap


def random_picker(path, class_names, *, seed=0, config=None, bias=None):
    """A random-weights picker file (background + ``class_names``)."""
    torch.manual_seed(seed)
    model = PickerUNet(len(class_names) + 1, FILTERS)
    if bias is not None:
        with torch.no_grad():
            model.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    save_picker(path, model, ["background", *class_names], FILTERS, config or {})
    return path


# -- kernels ---------------------------------------------------------------------------------------

def test_the_halo_covers_the_pickers_whole_context():
    torch.manual_seed(0)
    model = PickerUNet(3, FILTERS).eval()
    n, p = 80, 40
    x = torch.randn(1, 1, n, n, n, generator=torch.Generator().manual_seed(1))
    batch = [x]
    for k in range(4):                      # every phase of the 2³ pooling grid
        y = x.clone()
        y[0, 0, p + k, p + k, p + k] += 5.0
        batch.append(y)
    with torch.inference_mode():
        out = model(torch.cat(batch))
    reach_before = reach_after = 0
    for k in range(4):
        changed = torch.nonzero((out[k + 1] - out[0]).abs().amax(0) > 0)
        # an input at q changes outputs q - before .. q + after: output i sees inputs i - after .. i + before
        reach_before = max(reach_before, int(p + k - changed.min()))
        reach_after = max(reach_after, int(changed.max() - (p + k)))
    assert max(reach_before, reach_after) <= PICK_CONTEXT_VOXELS
    assert PICK_CONTEXT_VOXELS - max(reach_before, reach_after) < 4      # and not more than needed
    assert PICK_CONTEXT_VOXELS % 4 == 0


def sphere(shape, centre, r):
    z, y, x = np.indices(shape)
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= r * r


def labelled_volume():
    shape = (40, 44, 36)
    lab = np.zeros(shape, np.uint8)
    truth = [(1, (10, 12, 14), 5), (2, (20, 22, 18), 6), (1, (31, 30, 20), 4), (2, (9, 33, 28), 3)]
    for c, centre, r in truth:
        lab[sphere(shape, centre, r)] = c
    lab[20, 22, 25] = 1                     # touches the class-2 sphere: joins it, outvoted
    lab[2, 40, 2] = 2                       # a one-voxel speck
    score = np.full(shape, 0.5, np.float16)
    score[lab == 2] = np.float16(0.75)
    return lab, score, truth


def components_in_blocks(lab, score, block, min_size):
    """Cluster ``lab`` block by block, glue the pieces: what the stage does, without Dask."""
    edges = [list(range(0, n, block)) for n in lab.shape]
    pieces, index = {}, 0
    for i, z in enumerate(edges[0]):
        for j, y in enumerate(edges[1]):
            for k, x in enumerate(edges[2]):
                sl = (slice(z, z + block), slice(y, y + block), slice(x, x + block))
                nb = [(a > 0, a + block < n) for a, n in zip((z, y, x), lab.shape)]
                pieces[i, j, k] = block_components(lab[sl], score[sl], origin=(z, y, x), classes=[1, 2],
                                                   block_index=index, neighbours=nb, min_size=min_size)
                index += 1
    pairs = []
    for (i, j, k), p in pieces.items():
        for axis in range(3):
            nxt = [i, j, k]
            nxt[axis] += 1
            if tuple(nxt) in pieces:
                pairs.append(face_edges(p, pieces[tuple(nxt)], axis))
    merged = merge_components(Components.concat([p.partial for p in pieces.values()]),
                              np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64))
    merged = merged.select(merged.count >= min_size)
    return Components.concat([*(p.complete for p in pieces.values()), merged])


def as_rows(c: Components):
    zyx = c.centroid_zyx()
    rows = sorted(zip(c.cls.tolist(), map(tuple, zyx.tolist()), c.count.tolist(), (c.score_sum / c.count).tolist()))
    return rows


def test_components_have_exact_centroids_and_sizes_in_any_blocks():
    lab, score, truth = labelled_volume()
    whole = components_in_blocks(lab, score, max(lab.shape), min_size=2)
    rows = as_rows(whole)
    expected = []
    for c, centre, r in truth:
        n = int(sphere(lab.shape, centre, r).sum())
        s = 0.5 if c == 1 else 0.75
        if centre == (20, 22, 18):  # + the class-1 voxel at (20, 22, 25): one particle, class 2 by majority
            expected.append((2, ((20 * n + 20) / (n + 1), (22 * n + 22) / (n + 1), (18 * n + 25) / (n + 1)),
                             n + 1, (0.75 * n + 0.5) / (n + 1)))
        else:
            expected.append((c, tuple(float(v) for v in centre), n, s))
    expected = sorted(expected)                     # the one-voxel speck is under min_size
    assert len(rows) == len(expected) == 4
    for got, want in zip(rows, expected):
        assert got[0] == want[0] and got[2] == want[2] and got[3] == pytest.approx(want[3], rel=1e-12)
        assert np.allclose(got[1], want[1], atol=1e-6, rtol=0)
    for block in (8, 12, 16):
        assert as_rows(components_in_blocks(lab, score, block, min_size=2)) == rows
    assert len(as_rows(components_in_blocks(lab, score, 12, min_size=1))) == 5   # + the speck


def test_one_particle_labelled_with_two_classes_is_one_pick_of_the_majority_class():
    """DeepFinder's rule: a blob whose voxels the picker splits between classes is one particle
    (not one pick per class), of the class most of its voxels carry; in any blocks."""
    shape = (24, 24, 24)
    lab = np.zeros(shape, np.uint8)
    ball = sphere(shape, (12, 12, 12), 5)
    lab[ball] = 2
    lab[ball & (np.indices(shape)[2] >= 14)] = 1      # the minority of its voxels
    score = np.ones(shape, np.float16)
    n1, n2 = int((lab == 1).sum()), int((lab == 2).sum())
    assert 0 < n1 < n2
    for block in (24, 8, 10):
        rows = as_rows(components_in_blocks(lab, score, block, min_size=1))
        assert len(rows) == 1 and rows[0][0] == 2 and rows[0][2] == n1 + n2
        assert np.allclose(rows[0][1], np.argwhere(ball).mean(0), atol=1e-9)


# -- the stage ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tomogram(tmp_path_factory):
    """A 44 x 40 x 36 MRC volume (10 Å voxels) and a random picker whose classes all win somewhere."""
    from scipy import ndimage

    base = tmp_path_factory.mktemp("pick")
    rng = np.random.default_rng(0)
    vol = ndimage.gaussian_filter(rng.normal(size=(44, 40, 36)), 2).astype(np.float32)
    for centre in ((12, 14, 10), (30, 26, 24), (20, 32, 28)):
        vol[sphere(vol.shape, centre, 5)] += 0.5
    mrc = write_mrc(base / "tomo.mrc", vol, voxel_size=10.0, stack=False)
    names = ["ribosome", "proteasome"]
    # balance the random picker: subtract each channel's median logit over this tomogram
    torch.manual_seed(0)
    model = PickerUNet(3, FILTERS).eval()
    std = (vol - vol.mean()) / vol.std()
    with torch.inference_mode():
        logits = model(torch.from_numpy(pad_window(std, [PICK_CONTEXT_VOXELS] * 3, [PICK_CONTEXT_VOXELS] * 3))[None, None])
    bias = model.head.bias.detach().numpy() - np.median(logits[0].numpy().reshape(3, -1), axis=1)
    picker = random_picker(base / "picker.pt", names, bias=bias)
    return {"base": base, "mrc": mrc, "vol": vol, "picker": picker, "names": names}


def test_picks_do_not_depend_on_the_block_size(tomogram):
    from scipy import ndimage

    base = tomogram["base"]
    runs = {}
    for block in (24, 44):           # 2 x 2 x 2 blocks (with shorter last ones) / one block
        seg = base / f"seg{block}.zarr"
        runs[block] = (pick(tomogram["mrc"], tomogram["picker"], block=block, min_size=1, save_segmentation=seg,
                            overwrite=True, clustering="components"), zarr.open_group(str(seg), mode="r"))
    (a, seg_a), (b, seg_b) = runs[24], runs[44]
    for name in ("labels", "score"):
        assert np.array_equal(seg_a[name][...], seg_b[name][...])
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    labels = seg_a["labels"][...]
    assert len(np.unique(labels)) == 3, "the test's picker should label every class somewhere"
    assert list(a.columns) == list(PICK_COLUMNS) and len(a) > 10

    # the segmentation is the whole tomogram's, segmented at once
    from faket_dask.kernels.picker_net import load_picker

    model, _ = load_picker(tomogram["picker"])
    vol = tomogram["vol"].astype(np.float64)
    std = ((tomogram["vol"] - np.float32(vol.mean())) / np.float32(vol.std())).astype(np.float32)
    h = PICK_CONTEXT_VOXELS
    whole_labels, whole_score = segment(model, pad_window(std, [h] * 3, [h] * 3), h, std.shape)
    assert np.array_equal(whole_labels, labels) and np.array_equal(whole_score, seg_a["score"][...])

    # the picks are scipy's connected components of the voxels of any class (centroid, size, mean
    # score; class: the majority label of the component's voxels)
    score = seg_a["score"][...].astype(np.float64)
    names = tomogram["names"]

    def scipy_picks(channels, min_size=1):
        comp, n = ndimage.label(np.isin(labels, channels))
        idx = np.arange(1, n + 1)
        centres = np.asarray(ndimage.center_of_mass(np.ones_like(comp), comp, idx)).reshape(-1, 3)
        sizes = ndimage.sum_labels(np.ones_like(comp), comp, idx)
        means = ndimage.mean(score, comp, idx)
        votes = np.stack([ndimage.sum_labels(labels == k, comp, idx) for k in channels], 1).reshape(n, -1)
        cls = np.asarray(channels)[np.argmax(votes, axis=1)] if n else []
        return sorted((int(k), *c, int(s), m) for k, c, s, m in zip(cls, centres, sizes, means) if s >= min_size)

    def as_got(frame):
        return sorted((names.index(r.class_name) + 1, r.z, r.y, r.x, int(r.size), r.score) for r in frame.itertuples())

    def same(got, rows):
        assert len(got) == len(rows)
        for g, w in zip(got, rows):
            assert g[0] == w[0] and g[4] == w[4] and np.allclose(g[1:4], w[1:4], atol=1e-9) and abs(g[5] - w[5]) < 1e-12

    same(as_got(a), scipy_picks(list(range(1, len(names) + 1))))
    assert np.allclose(a["x_A"], (a["x"] + 0.5) * 10.0, rtol=0, atol=1e-9)
    # rows sorted by class, z, y, x
    keys = [(tomogram["names"].index(r.class_name), r.z, r.y, r.x) for r in a.itertuples()]
    assert keys == sorted(keys)
    # --min-size and --classes
    big = pick(tomogram["mrc"], tomogram["picker"], block=44, min_size=20, classes="proteasome",
               clustering="components")
    assert set(big["class_name"]) == {"proteasome"} and len(big) > 0
    same(as_got(big), scipy_picks([names.index("proteasome") + 1], min_size=20))


def test_peaks_do_not_depend_on_the_block_size_and_are_the_whole_tomograms(tomogram):
    """Peaks from 2 x 2 x 2 blocks (and with a larger radius and no smoothing) equal peaks from one
    block, and both equal the local maxima of the whole tomogram's smoothed particle probability."""
    from scipy import ndimage

    from faket_dask.kernels.picker_net import load_picker
    from faket_dask.kernels.picking import probabilities
    from faket_dask.kernels.picking_peaks import ball_offsets

    model, _ = load_picker(tomogram["picker"])
    vol = tomogram["vol"].astype(np.float64)
    std = ((tomogram["vol"] - np.float32(vol.mean())) / np.float32(vol.std())).astype(np.float32)
    h = PICK_CONTEXT_VOXELS
    probs = probabilities(model, pad_window(std, [h] * 3, [h] * 3), h, std.shape)
    names = tomogram["names"]
    for radius, sigma, threshold in ((3, 1.0, 0.5), (5, 0.0, 0.3)):
        # 2 x 2 x 2 blocks and one block (the first settings only: each pick costs ~10 s)
        blocks = (24, 44) if sigma else (44,)
        runs = [pick(tomogram["mrc"], tomogram["picker"], block=block, min_size=1, peak_radius_A=radius * 10.0,
                     smooth_sigma=sigma, threshold=threshold) for block in blocks]
        a, b = runs[0], runs[-1]
        # positions, classes and sizes identical; scores to float32 rounding (the convolutions'
        # summation order depends on the window's shape: ulp differences in ~1 % of probabilities)
        pd.testing.assert_frame_equal(a.drop(columns="score"), b.drop(columns="score"), check_exact=True)
        assert np.allclose(a["score"], b["score"], rtol=1e-6, atol=0)
        # reference: scipy on the whole volume
        fg = probs[1:].sum(0, dtype=np.float64)
        fg = ndimage.gaussian_filter(fg, sigma, mode="constant") if sigma else fg
        fp = np.zeros((2 * radius + 1,) * 3, bool)
        fp[tuple((ball_offsets(radius) + radius).T)] = True
        peak = (fg == ndimage.maximum_filter(fg, footprint=fp, mode="constant", cval=-np.inf)) & (fg > threshold)
        want = np.argwhere(peak)
        # size: voxels labelled with a class (argmax not background) within the ball; min_size 1
        labelled = np.pad(np.argmax(probs, 0) > 0, radius)
        size = np.array([labelled[tuple(slice(c, c + 2 * radius + 1) for c in w)][fp].sum() for w in want])
        want = want[size >= 1]
        # ties (float32 probabilities of a flat picker do tie): the first in (z, y, x) order wins
        padded = np.pad(fg, radius, constant_values=-np.inf)
        flat = np.arange(padded.size).reshape(padded.shape)

        def first_of_ties(w):
            win = tuple(slice(c, c + 2 * radius + 1) for c in w)
            return flat[win][fp & (padded[win] == fg[tuple(w)])].min() == flat[tuple(w + radius)]

        want = np.array([w for w in want if first_of_ties(w)])
        got = a[["z", "y", "x"]].to_numpy()
        assert len(want) > 3, "the test's picker should give several peaks"
        assert sorted(map(tuple, got.astype(int))) == sorted(map(tuple, want))
        assert np.array_equal(got, np.rint(got))
        assert np.allclose(a["score"], fg[tuple(got.astype(int).T)], rtol=1e-6, atol=0)
        assert set(a["class_name"]) <= set(names)
    assert np.allclose(a["x_A"], (a["x"] + 0.5) * 10.0, rtol=0, atol=1e-9)


def _blob(shape, centre, radius):
    zz, yy, xx = np.indices(shape)
    d2 = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2
    return np.exp(-d2 / (2 * radius ** 2))


def test_touching_particles_are_two_peaks_but_one_component():
    from faket_dask.kernels.picking_peaks import block_peaks

    shape = (24, 24, 32)
    # two particles 7 voxels apart whose labelled voxels touch; class 1 left, class 2 right
    left, right = _blob(shape, (12, 12, 12), 3.0), _blob(shape, (12, 12, 19), 3.0)
    probs = np.stack([1 - np.maximum(left, right), left, right]).astype(np.float32)
    probs /= probs.sum(0)
    labels = np.argmax(probs, 0).astype(np.uint8)
    comps = block_components(labels, np.ones(shape, np.float16), origin=(0, 0, 0), classes=[1, 2], block_index=0,
                             neighbours=[(False, False)] * 3, min_size=1)
    assert len(comps.complete) == 1                           # connected components: one pick
    core = [(0, n) for n in shape]
    found = block_peaks(probs, origin=(0, 0, 0), core=core, channels=[1, 2], radius=3, sigma=1.0, threshold=0.5)
    assert sorted(map(tuple, found.zyx)) == [(12, 12, 12), (12, 12, 19)]
    assert list(found.cls[np.argsort(found.zyx[:, 2])]) == [1, 2]
    # too close for the radius: one peak; above every value: none
    assert len(block_peaks(probs, origin=(0, 0, 0), core=core, channels=[1, 2], radius=8, sigma=1.0,
                           threshold=0.5)) == 1
    assert len(block_peaks(probs, origin=(0, 0, 0), core=core, channels=[1, 2], radius=3, sigma=1.0,
                           threshold=0.99)) == 0
    # picking channel 1 only: its peak alone
    only = block_peaks(probs, origin=(0, 0, 0), core=core, channels=[1], radius=3, sigma=1.0, threshold=0.5)
    assert [tuple(z) for z in only.zyx] == [(12, 12, 12)] and list(only.cls) == [1]


def test_a_saturated_plateau_is_one_peak_at_its_first_voxel():
    from faket_dask.kernels.picking_peaks import block_peaks

    probs = np.zeros((2, 12, 12, 12), np.float32)
    probs[0] = 1.0
    probs[:, 5:7, 5:7, 5:7] = [[[[0.0]]], [[[1.0]]]]       # a 2³ plateau of probability 1
    core = [(0, 12)] * 3
    found = block_peaks(probs, origin=(0, 0, 0), core=core, channels=[1], radius=2, sigma=0.0, threshold=0.5)
    assert [tuple(z) for z in found.zyx] == [(5, 5, 5)] and list(found.size) == [8]
    # blockwise: the core (6..12)³ with its margin sees the earlier voxel and yields nothing
    part = block_peaks(probs[:, 2:, 2:, 2:], origin=(2, 2, 2), core=[(6, 12)] * 3, channels=[1], radius=2,
                       sigma=0.0, threshold=0.5)
    assert len(part) == 0


# -- the CLI on a run store ------------------------------------------------------------------------

def _main(args, capsys):
    from faket_dask.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture(scope="module")
def store_picks(reference_run, client, tmp_path_factory):
    import faket_dask as fd

    base = tmp_path_factory.mktemp("store_picks")
    store = reference_run["out"] / "run.zarr"
    # the classes of tomo_000's particles (`score` refuses picks of a class its truth lacks)
    names = sorted(set(fd.open(store, "tomo_000/labels_particles")["class_name"].values.astype(str)))
    picker = random_picker(base / "picker.pt", names, seed=1, bias=np.r_[0.0, np.full(len(names), 0.02)])
    out = base / "picks.csv"
    proc = cli("pick", store, "--tomo", 0, "--picker", picker, "--out", out, "--min-size", 1,
               "--scheduler", client.scheduler.address)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"store": store, "picker": picker, "csv": out, "base": base, "names": names, "stdout": proc.stdout,
            "address": client.scheduler.address}


def test_cli_csv_is_read_by_score(store_picks):
    import faket_dask as fd

    csv = store_picks["csv"]
    assert csv.read_text().splitlines()[0] == "class_name,x,y,z,x_A,y_A,z_A,size,score"
    df = pd.read_csv(csv)
    assert len(df) > 0, store_picks["stdout"]
    px = fd.open(store_picks["store"], "tomo_000/tomogram")["measured"].attrs["pixel_size_A"]
    for a in "xyz":
        assert np.allclose(df[f"{a}_A"], (df[a] + 0.5) * px, rtol=0, atol=1e-9)
    assert set(df["class_name"]) <= set(store_picks["names"])
    proc = cli("score", csv, store_picks["store"], "--tomo", 0, "--tomo-grid")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{len(df)} picks" in proc.stdout


def test_cli_star_txt_and_mrc_give_the_same_picks(store_picks, capsys):
    import faket_dask as fd

    store, base, picker = store_picks["store"], store_picks["base"], store_picks["picker"]
    df = pd.read_csv(store_picks["csv"])
    tomo = fd.open(store, "tomo_000/tomogram")["measured"]
    px = float(tomo.attrs["pixel_size_A"])
    shape = np.array(tomo.shape[::-1], np.float64)          # x, y, z
    summary = None
    for suffix in (".star", ".txt"):
        out = base / f"picks{suffix}"
        code, _, err = _main(["pick", store, "--picker", picker, "--out", out, "--min-size", 1,
                              "--scheduler", store_picks["address"]], capsys)
        assert code in (0, None), err
        got = read_points(out, pixel_size_A=px)
        assert list(got.class_name) == list(df["class_name"])
        xyz = df[["x", "y", "z"]].to_numpy()
        if suffix == ".star":
            assert np.allclose(got.frames["centred"], (xyz - (shape - 1) / 2) * px, atol=1e-4)
        else:
            assert np.allclose(got.frames["corner"], df[["x_A", "y_A", "z_A"]].to_numpy(), atol=1e-3 * px)
        extra = ["--pixel-size-A", px] if suffix == ".txt" else []
        code, text, err = _main(["score", out, store, "--tomo", 0, "--tomo-grid", *extra], capsys)
        assert code in (0, None), err
        loc = [line for line in text.splitlines() if line.startswith("localization")]
        summary = summary or loc
        assert loc == summary
    # a coarser level: voxels of that level, Å from the same corner
    coarse = pick(store, picker, level=1, min_size=1)
    for a in "xyz":
        assert np.allclose(coarse[f"{a}_A"], (coarse[a] + 0.5) * 2 * px, rtol=0, atol=1e-9)
    # the same tomogram as an MRC file: the same picks
    mrc = write_mrc(base / "tomo.mrc", np.asarray(tomo.values), voxel_size=px, stack=False)
    out = base / "mrc_picks.csv"
    code, _, err = _main(["pick", mrc, "--picker", picker, "--out", out, "--min-size", 1,
                          "--scheduler", store_picks["address"]], capsys)
    assert code in (0, None), err
    pd.testing.assert_frame_equal(pd.read_csv(out), df)


def test_cli_bad_input_is_one_line_and_writes_nothing(store_picks, tmp_path, capsys):
    import faket_dask as fd

    store, picker = store_picks["store"], store_picks["picker"]
    other = random_picker(tmp_path / "other.pt", ["not_a_class", store_picks["names"][0]])
    notpicker = tmp_path / "notes.pt"
    notpicker.write_text("hello")
    exists = tmp_path / "exists.csv"
    exists.write_text("keep me\n")
    out = tmp_path / "picks.csv"
    ntomo = len([k for k in zarr.open_group(str(store), mode="r").group_keys() if k.startswith("tomo_")])
    cases = [
        ([store, "--picker", other, "--out", out], ["other.pt", "not_a_class", "--any-classes"]),
        ([store, "--picker", picker, "--modality", "nope", "--out", out], ["run.zarr", "no tomogram 'nope'"]),
        ([store, "--picker", picker, "--tomo", ntomo + 3, "--out", out], ["run.zarr", f"no tomogram {ntomo + 3}"]),
        ([store, "--picker", notpicker, "--out", out], ["notes.pt", "not a picker checkpoint"]),
        ([tmp_path / "none.zarr", "--picker", picker, "--out", out], ["none.zarr", "no such store"]),
        ([tmp_path / "none.mrc", "--picker", picker, "--out", out], ["none.mrc", "no such file"]),
        ([store, "--picker", tmp_path / "none.pt", "--out", out], ["none.pt", "no such picker file"]),
        ([store, "--picker", picker, "--out", tmp_path / "picks.json"], ["picks.json", "unknown particle-list format"]),
        ([store, "--picker", picker, "--out", exists], ["exists.csv", "--overwrite"]),
        ([store, "--picker", picker, "--classes", "zzz", "--out", out], ["--classes zzz", "picker.pt"]),
        ([store, "--picker", picker, "--block", 30, "--out", out], ["--block", "multiple of 4"]),
        ([store, "--picker", picker, "--clustering", "meanshift", "--out", out], ["--clustering", "meanshift"]),
        ([store, "--picker", picker, "--threshold", 1.5, "--out", out], ["--threshold", "1.5"]),
        ([store, "--picker", picker, "--peak-radius-A", -5, "--out", out], ["--peak-radius-A", "-5"]),
        ([store, "--picker", picker, "--peak-radius-A", 1e5, "--out", out], ["--peak-radius-A", "voxels", "at most 32"]),
    ]
    for args, needles in cases:
        code, _, err = _main(["pick", *args], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("faket-dask: error: "), err
        for n in needles:
            assert n in lines[0], lines[0]
        assert not out.exists() and not (tmp_path / "picks.json").exists()
        assert exists.read_text() == "keep me\n"
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # --any-classes picks anyway; a picker trained at another voxel size warns (one line)
    px = fd.open(store, "tomo_000/tomogram")["measured"].attrs["pixel_size_A"]
    coarse = random_picker(tmp_path / "coarse.pt", store_picks["names"], config={"pixel_size_A": 2 * px})
    with pytest.warns(UserWarning, match="trained on"):
        plan_pick(store, coarse, out)
    plan = plan_pick(store, other, out, any_classes=True)
    assert plan.channels == [1, 2] and not out.exists()
