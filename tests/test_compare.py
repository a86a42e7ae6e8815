"""``faket-dask compare`` / ``fd.compare``: measures, chunk invariance, CLI, bad input (docs/compare.md).

Fast tests use a small synthetic store (analytic projections, noise added here); the
acceptance test ranks the modalities of the session's ``reference_run`` (one tiny simulate run
shared with the pipeline tests).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from pipeline_helpers import synthetic_tiltseries

import faket_dask as fd
from faket_dask.cli import main
from faket_dask.kernels import compare as K
from faket_dask.kernels.power_spectrum import tilt_power
from faket_dask.params.compare import COMPARE_MEASURES
from faket_dask.report.compare import FIGURE_NAMES

ANGLES = np.arange(-60.0, 61.0, 15.0)  # 9 tilts
SHAPE = (24, 40, 52)                  # z, y, x: y and x not multiples of the tile


def _modalities(seed: int = 0) -> dict[str, np.ndarray]:
    """noiseless; measured = blurred noiseless, scaled, offset, white noise; noisy = the same
    without the blur (as FakET's NOISY: the reference's mean, std and noise level); faket =
    too little noise."""
    from scipy.ndimage import gaussian_filter

    clean, _ = synthetic_tiltseries(n_particles=12, shape_zyx=SHAPE, seed=seed, angles_deg=ANGLES)
    rng = np.random.default_rng(seed + 1)
    s = float(clean.std())
    blurred = gaussian_filter(clean, (0, 1.0, 1.0))

    def noise(k: float) -> np.ndarray:
        return k * s * rng.standard_normal(clean.shape)

    return {
        "noiseless": clean,
        "measured": (3.0 * blurred + 10.0 + noise(3.0)).astype(np.float32),
        "noisy": (3.0 * clean + 10.0 + noise(3.0)).astype(np.float32),
        "faket": (3.0 * clean + 10.0 + noise(1.0)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def tomos() -> list[dict[str, np.ndarray]]:
    return [_modalities(0), _modalities(5)]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, tomos) -> Path:
    """Two tomograms' tilt-series in a run store, chunked (1, 16, X)."""
    store = tmp_path_factory.mktemp("compare") / "run.zarr"
    for k, mods in enumerate(tomos):
        for name, data in mods.items():
            arr = fd.tiltseries(da.from_array(data, chunks=(1, 16, SHAPE[2])), ANGLES, 8.0)
            fd.save(arr, store, f"tomo_{k:03d}/tiltseries", name=name)
    return store


def _arrays(tomos, chunks):
    def wrap(x):
        return fd.tiltseries(da.from_array(x, chunks=chunks) if chunks else x, ANGLES, 8.0)

    sims = {m: [wrap(t[m]) for t in tomos] for m in ("noisy", "faket", "noiseless")}
    return sims, [wrap(t["measured"]) for t in tomos], [wrap(t["noiseless"]) for t in tomos]


# -- kernels ----------------------------------------------------------------------------------
def test_tile_spectrum_of_one_tile_is_the_projects_periodogram():
    rng = np.random.default_rng(0)
    img = rng.standard_normal((2, 32, 32))
    np.testing.assert_array_equal(K.tile_ring_sums(img, 32)[:, 0], tilt_power(img))
    assert list(K.tile_origins(52, 16)) == [0, 16, 32, 36] and list(K.tile_origins(48, 16)) == [0, 16, 32]
    # white noise: every ring near σ², hence a flat normalised spectrum
    noise = rng.standard_normal((1, 64, 640)) * 2.0
    p = K.tile_ring_sums(noise, 64)[0, 0] / 10
    assert abs(p.mean() - 4.0) < 0.2
    mask = K.band_mask(32)
    assert K.log_ratio_rms(p, 7 * p, mask) < 1e-12      # the scale is normalised away
    f = np.where(np.arange(32) % 2, 10.0, 1.0)                    # every other ring 10x
    expected = np.sqrt(np.mean(np.log10((1 / mask.sum()) / (f / f[mask].sum()))[mask] ** 2))
    assert math.isclose(float(K.log_ratio_rms(np.ones(32), f, mask)), expected, rel_tol=1e-12)


def test_wasserstein_from_histograms_matches_scipy_within_a_bin():
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(1)
    a = rng.standard_normal((1, 50, 60))
    b = rng.gamma(3.0, size=(1, 50, 60))
    bins = K.HistogramBins(-10, 10, 0.01)
    za, zb = [(x - x.mean()) / x.std() for x in (a, b)]
    ha = K.standardised_histogram(a, a.mean(), a.std(), bins)[:, 0]
    hb = K.standardised_histogram(b, b.mean(), b.std(), bins)[:, 0]
    assert ha.sum() == a.size and ha[0, 0] == ha[0, -1] == 0       # nothing clipped
    w = float(K.wasserstein1_binned(K.fold_clipped(ha), K.fold_clipped(hb), bins.width)[0])
    assert abs(w - wasserstein_distance(za.ravel(), zb.ravel())) <= bins.width
    # mass at the bin centres: the binned formula is the exact W1
    c = bins.centres()
    fa, fb = K.fold_clipped(ha)[0], K.fold_clipped(hb)[0]
    exact = wasserstein_distance(c, c, u_weights=fa, v_weights=fb)
    assert math.isclose(w, exact, rel_tol=1e-9, abs_tol=1e-12)
    # out-of-range values land in the under/overflow bins
    h = K.standardised_histogram(np.array([[[-50.0, 0.0, 50.0]]]), np.zeros((1, 1, 1)), np.ones((1, 1, 1)), bins)
    assert h[0, 0, 0] == 1 and h[0, 0, -1] == 1 and h.sum() == 3


def test_pearson_from_paired_moments():
    from faket_dask.kernels.noise_moments import paired_moments

    rng = np.random.default_rng(2)
    c = rng.standard_normal((3, 20, 30))
    m = 0.5 * c + rng.standard_normal(c.shape)
    rho = K.pearson(paired_moments(m, c))
    for t in range(3):
        assert math.isclose(rho[t], np.corrcoef(m[t].ravel(), c[t].ravel())[0, 1], rel_tol=1e-12)


# -- the stage ----------------------------------------------------------------------------------
def test_same_numbers_for_any_chunking(tomos):
    """Bit-identical results: numpy-backed, one tilt per chunk, odd chunks across tilts and rows."""
    runs = []
    for chunks in (None, (1, SHAPE[1], SHAPE[2]), (2, 7, SHAPE[2]), (4, 13, SHAPE[2])):
        sims, ref, nl = _arrays(tomos, chunks)
        runs.append(fd.compare(sims, ref, noiseless=nl, reference_name="measured", tile=16))
    first = json.dumps(runs[0], sort_keys=True)
    for r in runs[1:]:
        assert json.dumps(r, sort_keys=True) == first
    r = runs[0]
    assert r["settings"]["spectrum"]["tile_px"] == 16 and r["format"] == "faket-dask-compare/1"
    assert set(r["pooled"]["noisy"]) == set(COMPARE_MEASURES)


def _lazy_noise(seed: int, ny: int, nx: int = 512, t: int = 3, cy: int = 64):
    """A lazy (t, ny, nx) tilt-series of white noise, each chunk drawn when computed."""
    def draw(block_id=None, block_info=None):
        return np.random.default_rng([seed, *block_id]).standard_normal(block_info[None]["chunk-shape"], dtype=np.float32)

    d = da.map_blocks(draw, chunks=((1,) * t, (cy,) * (ny // cy), (nx,)), dtype=np.float32)
    return fd.tiltseries(d, np.arange(float(t)), 5.0)


def test_memory_is_flat_in_the_detector_size():
    """8x the rows: the peak of numpy allocations grows by the per-row numbers only (a few
    float64 per row), and stays below one tilt-series (sync scheduler, so one task at a time)."""
    import tracemalloc

    import dask

    from faket_dask.stages.compare import plan, run

    def peak(ny: int) -> int:
        p = plan({"faket": [_lazy_noise(1, ny)]}, [_lazy_noise(2, ny)], noiseless=[_lazy_noise(3, ny)],
                 reference_name="measured", tile=64)
        with dask.config.set(scheduler="sync"):
            tracemalloc.start()
            try:
                run(p)
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

    peak(128)                                     # imports, FFT plans, windows
    # tracemalloc sees every thread of the process: a live Client of an earlier test (session
    # fixture) allocates in the background, more so on a loaded machine; the least of three
    # runs is the graph's own peak.
    small, large = min(peak(128) for _ in range(3)), min(peak(1024) for _ in range(3))
    assert large < small + 1.5 * 2**20, (small, large)
    assert large < 3 * 1024 * 512 * 4, large      # one (3, 1024, 512) float32 tilt-series


def test_noise_sigma_is_the_unpaired_estimators(tomos):
    """One owner: the σ curve is estimate_noise_unpaired's raw σ, bit for bit."""
    sims, ref, _ = _arrays(tomos[:1], (1, 16, SHAPE[2]))
    r = fd.compare({"noisy": sims["noisy"]}, ref, reference_name="measured", tile=16)
    for name, arr in (("measured", ref[0]), ("noisy", sims["noisy"][0])):
        model = fd.estimate_noise(arr)
        assert r["per_tomogram"]["tomo_000"]["curves"][name]["noise_sigma"] == list(model.raw["sigma"].values[0])


def test_measures_see_the_noise(tomos):
    sims, ref, nl = _arrays(tomos, (1, 16, SHAPE[2]))
    r = fd.compare(sims, ref, noiseless=nl, reference_name="measured", tile=16)
    for measure in COMPARE_MEASURES:
        order = r["ranking"][measure]
        assert order[-1] == "noiseless", (measure, r["pooled"])
        # faket has the reference's mean but a third of its noise: every other measure sees it
        assert measure == "mean" or order[0] == "noisy", (measure, r["pooled"])
    curves = r["per_tomogram"]["tomo_001"]["curves"]
    assert np.allclose(curves["noiseless"]["correlation"], 1.0, rtol=0, atol=1e-12)
    assert r["histogram"]["clipped_fraction"]["measured"] == 0.0


def test_a_constant_tilt_is_named(tomos):
    sims, ref, _ = _arrays(tomos[:1], None)
    data = ref[0].values.copy()
    data[2] = 7.0
    with pytest.raises(fd.InputError, match=r"tomo_000 measured: tilt 3 of 9 \(-30°\) is constant"):
        fd.compare({"noisy": sims["noisy"]}, ref[0].copy(data=data), reference_name="measured", tile=16)


# -- acceptance on the simulated run ---------------------------------------------------------
@pytest.mark.slow
def test_noisy_is_closer_to_measured_than_noiseless_on_every_measure(reference_run):
    store = reference_run["out"] / "run.zarr"
    r = fd.compare_store(store, ["faket", "baseline", "noisy", "noiseless"], "measured")
    assert r["tomograms"] == ["tomo_000", "tomo_001"] and r["correlation_partner"] == "noiseless"
    for measure in COMPARE_MEASURES:
        assert r["pooled"]["noisy"][measure] < r["pooled"]["noiseless"][measure], (measure, r["pooled"])
        assert r["ranking"][measure].index("noisy") < r["ranking"][measure].index("noiseless")
    # (per tomogram the histogram distance of tomo_000 is a tie: its measured tilts correlate
    # 0.86 with noiseless, so their standardised shape is nearly noiseless's; pooled it is not)


# -- CLI --------------------------------------------------------------------------------------
def _cli(args, capsys) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_writes_json_and_figures(small_store, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, stdout, err = _cli(["compare", small_store, "--modalities", "faket,noisy", "--reference", "measured",
                              "--tomos", "0,1", "--out", out, "--tile", 16], capsys)
    assert code == 0, err
    result = json.loads((out / "compare.json").read_text())
    assert result["modalities"] == ["faket", "noisy"] and result["tomograms"] == ["tomo_000", "tomo_001"]
    assert result["store"] == str(small_store)
    for name in FIGURE_NAMES.values():
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, name
    assert "spectrum" in stdout and "wrote" in stdout
    # existing output: refused, then replaced with --overwrite
    code, _, err = _cli(["compare", small_store, "--modalities", "noisy", "--out", out], capsys)
    assert code == 2 and err.strip() == f"faket-dask: error: {out}: exists; pass --overwrite to replace its comparison files"
    code, _, err = _cli(["compare", small_store, "--modalities", "noisy", "--out", out, "--tomos", "1",
                         "--tile", 16, "--overwrite"], capsys)
    assert code == 0, err
    assert json.loads((out / "compare.json").read_text())["tomograms"] == ["tomo_001"]


@pytest.mark.parametrize("args, message", [
    (["--modalities", "faket,content"], "tomo_000 has no tilt-series 'content' (has: faket, measured, noiseless, noisy)"),
    (["--modalities", "noisy", "--reference", "style"], "tomo_000 has no tilt-series 'style'"),
    (["--tomos", "0,2"], "--tomos 2: out of range; {store} has tomograms 0, 1"),
    (["--tomos", "a"], "--tomos must be comma-separated tomogram indices"),
    (["--modalities", "measured"], "'measured' is the reference and cannot also be compared with itself"),
    (["--modalities", "noisy", "--tile", "16", "--band", "0.95", "1"], "spectrum band 0.95-1 of Nyquist holds 1 rings of a 16-pixel tile"),
    (["--modalities", "noisy", "--noise-band", "0.99", "1"], "band 0.99-1.0 of Nyquist holds 1 frequencies for rows of 52 pixels"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(small_store, tmp_path, capsys, args, message):
    out = tmp_path / "never"
    before = sorted(p.name for p in small_store.rglob("*"))
    code, _, err = _cli(["compare", small_store, "--out", out, *args], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faket-dask: error: ")
    assert message.format(store=small_store) in lines[0]
    assert not out.exists() and sorted(p.name for p in small_store.rglob("*")) == before


def test_cli_no_such_store(tmp_path, capsys):
    code, _, err = _cli(["compare", tmp_path / "missing.zarr", "--out", tmp_path / "o"], capsys)
    assert code == 2 and err.strip() == f"faket-dask: error: {tmp_path / 'missing.zarr'}: no such store"
    assert not (tmp_path / "o").exists()
