"""The noise stage (faket_dask.stages.noise, faket_dask.noise_model, faket_dask.report) on a real
LocalCluster: golden curves, bit-identity across chunkings and workers, modalities sharing one
field, the unpaired estimate against the paired one on physics-like data."""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

import faket_dask as fd
from faket_dask.datamodel import tiltseries
from faket_dask.errors import InputError, OutputExistsError
from faket_dask.kernels import noise as nz
from faket_dask.kernels import noise_rng
from faket_dask.kernels.noise_spectral import band_bins, row_band_power
from faket_dask.noise_model import NoiseModel
from faket_dask.params import MODALITIES, NoiseParams
from faket_dask.stages import noise as sn

ANGLES = np.linspace(-60.0, 60.0, 61)
GOLDEN = {"r": "rs", "sigma": "stds", "mean": "noisy_μs", "std": "noisy_σs"}


@pytest.fixture(scope="module")
def ref(golden):
    return golden("noise_estimation")


@pytest.fixture(scope="module")
def pair(ref):
    """The golden pair as labelled tilt-series, chunked differently on purpose."""
    m = tiltseries(da.from_array(ref["measured"], chunks=(1, 32, 64)), ANGLES, 10.0, name="measured")
    c = tiltseries(da.from_array(ref["noiseless"], chunks=(1, 24, 64)), ANGLES, 10.0, name="noiseless")
    return m, c


@pytest.fixture(scope="module")
def model(client, pair):
    return fd.estimate_noise(measured=[pair[0]], noiseless=[pair[1]], order=2)


def _relmax(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) / np.asarray(b) - 1)))


# ------------------------------------------------------------------------------------------
# estimation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [2, 0])
def test_estimate_reproduces_golden(ref, model, order):
    fitted = model.with_order(order).curves
    assert fitted.attrs["order"] == order and fitted.sizes == {"tilt": 61}
    np.testing.assert_array_equal(fitted["tilt"].values, ANGLES)
    assert np.abs(fitted["r"].values - ref[f"order{order}_rs"]).max() < 2e-3
    assert np.abs(fitted["sigma"].values - ref[f"order{order}_stds"]).max() < 1e-4
    assert _relmax(fitted["mean"].values, ref[f"order{order}_noisy_μs"]) < 1e-4
    assert _relmax(fitted["std"].values, ref[f"order{order}_noisy_σs"]) < 1e-4


def test_raw_curves_match_golden(ref, model):
    raw = model.raw
    assert raw["r"].dims == ("reference", "tilt") and raw.sizes["reference"] == 1
    assert np.abs(raw["r"].values[0] - ref["curve_rs"]).max() < 1e-2
    assert np.abs(raw["sigma"].values[0] - ref["curve_stds"]).max() < 1e-4
    assert _relmax(raw["mean"].values[0], ref["curve_noisy_μs"]) < 1e-4
    assert _relmax(raw["std"].values[0], ref["curve_noisy_σs"]) < 1e-4
    assert model.method == "paired" and model.order == 2
    assert model.sources == ({"measured": "measured", "noiseless": "noiseless"},)


def test_estimate_is_chunking_invariant_and_equals_kernel(ref, model, pair):
    want = nz.curves_from_arrays(ref["measured"], ref["noiseless"])
    for key in nz.CURVE_KEYS:
        assert np.array_equal(model.raw[key].values[0], want[key]), key
    m = pair[0].chunk({"tilt": 7, "y": 64})
    c = pair[1].chunk({"tilt": 5, "y": 9})
    other = fd.estimate_noise([m], [c], order=2)
    assert other.raw.identical(model.raw)
    assert other.curves.identical(model.curves)


def test_several_references_average_fitted_curves(model, pair):
    m, c = pair
    m2 = (m * 2.0 + 1.0).rename("m2")
    both = fd.estimate_noise([m, m2], [c, c], order=2)
    assert both.n_references == 2
    want = nz.fit_and_average([{k: both.raw[k].values[i] for k in both.raw.data_vars} for i in range(2)], 2)
    for key, v in want.items():
        np.testing.assert_array_equal(both.curves[key].values, v)
    # an affine change of the measured data leaves r and sigma alone
    np.testing.assert_allclose(both.raw["r"].values[1], both.raw["r"].values[0], atol=1e-12)
    np.testing.assert_allclose(both.raw["std"].values[1], 2 * both.raw["std"].values[0], rtol=1e-6)


def _synthetic_pair(seed: int, rho: np.ndarray, shape=(5, 24, 20)):
    """C smooth random; M_t = rho_t·ĉ + sqrt(1 − rho_t²)·n̂ with n̂ ⟂ {1, ĉ}: corr(M_t, C_t) = rho_t."""
    rng = np.random.default_rng(seed)
    cc = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(0, 2, 2)) * 7.0 + 3.0
    ax = (1, 2)
    c = (cc - cc.mean(ax, keepdims=True)) / cc.std(ax, keepdims=True)
    n = rng.standard_normal(shape)
    n -= n.mean(ax, keepdims=True)
    n -= (n * c).mean(ax, keepdims=True) * c
    n /= n.std(ax, keepdims=True)
    r = rho[:, None, None]
    return r * c + np.sqrt(1 - r * r) * n, cc


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    rho=st.lists(st.floats(0.0, 0.99), min_size=5, max_size=5),
    cy=st.integers(1, 24),
    ct=st.integers(1, 5),
    scale=st.floats(1e-2, 1e3),
)
def test_estimator_recovers_known_r_and_sigma(client, seed, rho, cy, ct, scale):
    rho = np.asarray(rho)
    m, c = _synthetic_pair(seed, rho)
    mm = xr.DataArray(da.from_array(m * scale + 5.0, chunks=(ct, cy, 20)), dims=("tilt", "y", "x"))
    cc = xr.DataArray(da.from_array(c, chunks=(1, 24 - cy + 1, 20)), dims=("tilt", "y", "x"))
    model = fd.estimate_noise([mm], [cc], order=2)
    np.testing.assert_allclose(model.raw["r"].values[0], rho, atol=1e-9)
    np.testing.assert_allclose(model.raw["sigma"].values[0], np.sqrt(1 - rho**2), atol=1e-8)
    np.testing.assert_allclose(model.raw["std"].values[0], scale, rtol=1e-9)
    # r² + σ² = 1 whenever the residual is uncorrelated with the noiseless image
    np.testing.assert_allclose(model.raw["r"].values[0] ** 2 + model.raw["sigma"].values[0] ** 2, 1, atol=1e-8)


def test_fit_of_a_quadratic_r_curve_is_the_curve(client):
    q = np.polyval([1e-3, -2e-2, 0.5], np.arange(5.0))
    m, c = _synthetic_pair(0, q)
    model = fd.estimate_noise([m], [c], order=2)
    np.testing.assert_allclose(model.curves["r"].values, q, atol=1e-8)
    np.testing.assert_allclose(model.with_order(0).curves["r"].values, q.mean(), atol=1e-8)


def test_estimate_rejects_bad_references(pair):
    m, c = pair
    with pytest.raises(InputError, match="shape"):
        fd.estimate_noise([m], [c[:, :32]])
    with pytest.raises(InputError, match="paired by angle"):
        fd.estimate_noise([m, m[:40]], [c, c[:40]])
    with pytest.raises(InputError, match="2 measured but 1 noiseless"):
        fd.estimate_noise([m, m], [c])
    with pytest.raises(InputError, match="dims"):
        fd.estimate_noise([m.transpose("y", "tilt", "x")], [c])


def test_estimate_rejects_constant_and_nan_tilts(client, ref):
    c = ref["noiseless"][:4].copy()
    m = ref["measured"][:4].copy()
    c[2] = 1.5
    with pytest.raises(InputError, match="noiseless.*tilt 3 of 4 is constant"):
        fd.estimate_noise([xr.DataArray(m, dims=("tilt", "y", "x"), name="measured")], [xr.DataArray(c, dims=("tilt", "y", "x"), name="noiseless")])
    m[1, 3, 3] = np.nan
    with pytest.raises(InputError, match="measured: tilt 2 of 4 has NaN"):
        fd.estimate_noise([xr.DataArray(m, dims=("tilt", "y", "x"), name="measured")], [xr.DataArray(ref["noiseless"][:4], dims=("tilt", "y", "x"))])


# ------------------------------------------------------------------------------------------
# the model: JSON, store, orders
# ------------------------------------------------------------------------------------------


def test_model_json_roundtrip_is_exact(model, tmp_path):
    path = tmp_path / "model.json"
    text = model.to_json(path)
    assert path.read_text().strip() == text
    back = NoiseModel.from_json(path)
    assert back.raw.identical(model.raw) and back.curves.identical(model.curves)
    assert back.order == 2 and back.method == "paired" and back.sources == model.sources
    zero = NoiseModel.from_json(text, order=0)
    assert zero.curves.identical(model.with_order(0).curves)
    one = NoiseModel.from_json(text, order=1)  # not stored: refitted from the raw curves
    assert one.curves.identical(model.with_order(1).curves)
    with pytest.raises(InputError, match="not a faket-dask noise model"):
        NoiseModel.from_json('{"format": "other"}')
    with pytest.raises(InputError, match="no such"):
        NoiseModel.from_json(tmp_path / "missing.json")


def test_model_store_roundtrip_and_layout(model, tmp_path):
    run = tmp_path / "run.zarr"
    assert model.save(run) == "noise_model"
    ds = xr.open_zarr(run, group="noise_model", consolidated=False, zarr_format=3)
    assert ds["order"].values.tolist() == [2, 0]
    assert ds["r"].dims == ("order", "tilt") and ds["raw_r"].dims == ("reference", "tilt")
    np.testing.assert_array_equal(ds["r"].sel(order=0).values, model.with_order(0).curve("r"))
    for order in (2, 0, 3):
        back = NoiseModel.load(run, order=order)
        assert back.curves.identical(model.with_order(order).curves), order
        assert back.raw.identical(model.raw)
    assert NoiseModel.load(run).order == 2
    assert fd.store.stage_status(run)["noise_model"]["status"] == "complete"
    with pytest.raises(OutputExistsError):
        model.save(run)
    model.with_order(0).save(run, overwrite=True, orders=[0])
    assert NoiseModel.load(run).order == 0
    with pytest.raises(InputError, match="no noise model"):
        NoiseModel.load(run, "elsewhere")


def test_model_validation():
    good = {"r": np.ones(3) * 0.3, "sigma": np.ones(3) * 0.9, "mean": np.zeros(3), "std": np.ones(3)}
    NoiseModel.from_raw([good])
    with pytest.raises(InputError, match="missing"):
        NoiseModel.from_raw([{k: v for k, v in good.items() if k != "sigma"}])
    with pytest.raises(InputError, match="NaN"):
        NoiseModel.from_raw([{**good, "r": np.array([0.3, np.nan, 0.3])}])
    with pytest.raises(InputError, match="order"):
        NoiseModel.from_raw([good], order=-1)


# ------------------------------------------------------------------------------------------
# injection
# ------------------------------------------------------------------------------------------


# Injection tests use the first NT tilts (a model estimated from them): the same code paths
# with a quarter of the tasks.
NT = 16


@pytest.fixture(scope="module")
def small_model(client, pair):
    return fd.estimate_noise([pair[0][:NT]], [pair[1][:NT]], order=2)


@pytest.fixture(scope="module")
def noiseless(ref):
    return tiltseries(da.from_array(ref["noiseless"][:NT], chunks=(1, 32, 64)), ANGLES[:NT], 10.0, name="noiseless")


@pytest.fixture(scope="module")
def noisy(client, noiseless, small_model):
    out = fd.add_noise(noiseless, small_model, seed=11)
    return out, client.compute(out.data).result()


def test_add_noise_is_lazy_with_input_chunks(noiseless, small_model, noisy):
    out, _ = noisy
    assert isinstance(out.data, da.Array) and out.dtype == np.float32
    assert out.data.chunks == noiseless.data.chunks
    assert out.dims == ("tilt", "y", "x") and out.name == "noisy"
    np.testing.assert_array_equal(out["tilt"].values, ANGLES[:NT])
    assert out.attrs["pixel_size_A"] == 10.0 and out.attrs["noise_seed"] == 11

    def boom(block):
        raise RuntimeError("computed while building the graph")

    poisoned = noiseless.copy(data=noiseless.data.map_blocks(boom, dtype=np.float32))
    lazy = fd.add_noise(poisoned, small_model, seed=0)  # must not compute anything
    assert lazy.data.chunks == noiseless.data.chunks


def test_noisy_matches_model_and_reference(ref, small_model, noisy):
    _, got = noisy
    g = got.astype(np.float64)
    assert _relmax(g.mean((1, 2)), small_model.curve("mean")) < 1e-4
    assert _relmax(g.std((1, 2)), small_model.curve("std")) < 1e-4
    z = noise_rng.normal_block(11, 0, range(NT), 0, 64, 64)
    want = nz.add_noise_reference(ref["noiseless"][:NT], *(small_model.curve(k) for k in ("r", "sigma", "mean", "std")), z, 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_add_noise_bit_identical_for_other_chunkings(client, noiseless, small_model, noisy):
    _, got = noisy
    for chunks in ({"tilt": NT, "y": 64}, {"tilt": 3, "y": 5}):
        other = fd.add_noise(noiseless.chunk(chunks), small_model, seed=11)
        assert other.data.chunks == noiseless.chunk(chunks).data.chunks
        assert np.array_equal(client.compute(other.data).result(), got), chunks
    # numpy-backed input (chunked by the project's rule) too
    in_memory = noiseless.copy(data=noiseless.values)
    assert np.array_equal(fd.add_noise(in_memory, small_model, seed=11).values, got)


def test_add_noise_bit_identical_on_one_worker(noiseless, small_model, noisy):
    _, got = noisy
    with fd.connect(workers=1, dashboard=":0", quiet=True) as c1:
        assert len(c1.scheduler_info()["workers"]) == 1
        one = c1.compute(fd.add_noise(noiseless.chunk({"y": 32}), small_model, seed=11).data).result()
    assert np.array_equal(one, got)


def test_open_input_reads_whole_tilts_without_merge_tasks(client, tmp_path, noiseless, small_model, noisy):
    """A tilt-series stored in row slabs (as the projection stores 1024² tilts) is read in
    whole tilts: no merge tasks, one fused task per chunk, the same bits. Small tilts go several
    to a task (~1 MiB of input, at least 4 tasks); a 1 MiB tilt goes alone."""
    _, got = noisy
    fd.save(noiseless.chunk({"tilt": 1, "y": 24}), tmp_path / "s.zarr", "tomo_000/tiltseries")
    stored = fd.open_var(tmp_path / "s.zarr", "tomo_000/tiltseries/noiseless")
    assert stored.data.chunks[1] == (24, 24, 16)
    opened = sn.open_input(tmp_path / "s.zarr", "tomo_000/tiltseries/noiseless")
    k = -(-NT // 4)  # 64² tilts: 16 kB each, so the four-task floor decides
    assert opened.data.chunks == ((k,) * (NT // k) + ((NT % k,) if NT % k else ()), (64,), (64,))
    big = fd.tiltseries(np.ones((6, 512, 512), np.float32), np.arange(6.0), 10.0, name="big")
    fd.save(big.chunk({"tilt": 1}), tmp_path / "s.zarr", "tomo_001/tiltseries")
    assert sn.open_input(tmp_path / "s.zarr", "tomo_001/tiltseries/big").data.chunks[0] == (1,) * 6
    out = fd.add_noise(opened, small_model, seed=11)
    assert out.data.chunks == opened.data.chunks
    def layers(arr):
        return list(arr.data.__dask_graph__().layers)

    assert not any(n.startswith("rechunk") for n in layers(out))
    assert any(n.startswith("rechunk") for n in layers(fd.add_noise(stored, small_model, seed=11)))
    assert np.array_equal(client.compute(out.data).result(), got)
    # a tilt too large for one task keeps the stored chunks (the three-pass graph reads them)
    assert not sn.whole_tilts_fit((1, 8192, 8192), 4) and sn.whole_tilts_fit((1, 1024, 1024), 4)


def test_seed_and_tomogram_change_the_field(client, noiseless, small_model, noisy):
    _, got = noisy
    others = client.compute([fd.add_noise(noiseless, small_model, **kw).data for kw in ({"seed": 12}, {"seed": 11, "tomo": 1})], sync=True)
    for other in others:
        assert not np.array_equal(other, got)
        corr = np.corrcoef((other - got).ravel(), got.ravel())[0, 1]
        assert abs(corr) < 0.9  # a different field, not a rounding difference


def _fit_signal_and_field(out: np.ndarray, p: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Per tilt, least squares out ≈ a·p̂ + b·z + c; returns (T, 3) [a, b, c] and the residual."""
    coefs, resid = [], []
    for t in range(out.shape[0]):
        ph = (p[t] - p[t].mean()) / p[t].std()
        A = np.stack([ph.ravel(), z[t].ravel().astype(np.float64), np.ones(ph.size)], axis=1)
        sol, *_ = np.linalg.lstsq(A, out[t].ravel().astype(np.float64), rcond=None)
        coefs.append(sol)
        resid.append(np.std(out[t].ravel() - A @ sol) / np.std(out[t]))
    return np.array(coefs), np.array(resid)


def test_modalities_share_one_field(client, ref, noiseless, small_model, noisy):
    _, got_noisy = noisy
    p = ref["noiseless"][:NT].astype(np.float64)
    z = noise_rng.normal_block(11, 0, range(NT), 0, 64, 64)
    content = fd.add_noise(noiseless, small_model, seed=11, scale=0.25)
    baseline = sn.add_noise_modality(noiseless, small_model, "baseline", seed=11)
    assert baseline.attrs["noise_order"] == 0 and baseline.name == "baseline"
    noisy_mod = sn.add_noise_modality(noiseless, small_model, "noisy", seed=11)
    got_content, got_baseline, got_noisy2 = client.compute([content.data, baseline.data, noisy_mod.data], sync=True)
    assert np.array_equal(got_noisy2, got_noisy)
    kn, rn = _fit_signal_and_field(got_noisy, p, z)
    kc, rc = _fit_signal_and_field(got_content, p, z)
    kb, rb = _fit_signal_and_field(got_baseline, p, z)
    # each output is exactly signal + field (up to float32 rounding)
    assert max(rn.max(), rc.max(), rb.max()) < 1e-5
    # noise-to-signal weight b/a is σ/r for NOISY and a quarter of it for CONTENT
    ratio_n, ratio_c = kn[:, 1] / kn[:, 0], kc[:, 1] / kc[:, 0]
    np.testing.assert_allclose(ratio_n, small_model.curve("sigma") / small_model.curve("r"), rtol=1e-5)
    np.testing.assert_allclose(ratio_c, ratio_n / 4, rtol=1e-5)
    zero = small_model.with_order(0)
    np.testing.assert_allclose(kb[:, 1] / kb[:, 0], zero.curve("sigma") / zero.curve("r"), rtol=1e-5)
    assert _relmax(got_baseline.astype(np.float64).std((1, 2)), zero.curve("std")) < 1e-4


def test_add_noise_errors(client, noiseless, small_model):
    with pytest.raises(InputError, match=r"but tilt-series 'noiseless' has .*\(10 tilts"):
        fd.add_noise(noiseless[:10], small_model, seed=0)
    with pytest.raises(InputError, match="seed"):
        fd.add_noise(noiseless, small_model, seed=-1)
    with pytest.raises(InputError, match="modality"):
        sn.add_noise_modality(noiseless, small_model, "loud", seed=0)
    with pytest.raises(InputError, match="dims"):
        fd.add_noise(noiseless.transpose("x", "y", "tilt"), small_model, seed=0)
    flat = noiseless.copy(data=da.where(da.arange(NT)[:, None, None] == 7, 2.0, noiseless.data).astype(np.float32))
    with pytest.raises(InputError, match="tilt 8 of .* is constant"):
        client.compute(fd.add_noise(flat, small_model, seed=0).data).result()


def test_modality_from_order_and_scale(client, noiseless, small_model):
    """add_noise_modality is add_noise at the modality's (order, scale): the paper's table by
    default, the given NoiseParams otherwise (what `noise apply` and `simulate` both pass)."""
    assert NoiseParams().modalities() == dict(MODALITIES)
    params = NoiseParams(order=1, content_scale=0.5)
    assert params.modality("content").order == 1 and params.modality("content").scale == 0.5
    got = sn.add_noise_modality(noiseless, small_model, "content", seed=11, tomo=2, params=params)
    assert got.name == "content" and got.attrs["noise_scale"] == 0.5 and got.attrs["noise_order"] == 1
    want = fd.add_noise(noiseless, small_model.with_order(1), 11, 0.5, tomo=2, name="content")
    default = sn.add_noise_modality(noiseless, small_model, "content", seed=11, tomo=2)
    paper = fd.add_noise(noiseless, small_model.with_order(2), 11, 0.25, tomo=2, name="content")
    a, b, c, d = client.compute([got.data, want.data, default.data, paper.data], sync=True)
    assert np.array_equal(a, b) and np.array_equal(c, d)
    with pytest.raises(InputError, match="unknown noise modality 'loud'"):
        params.modality("loud")


def test_modality_specs():
    assert sn.modality_specs("noisy, content,baseline") == ["noisy", "content", "baseline"]
    assert sn.modality_specs(["content", "content"]) == ["content"]
    with pytest.raises(InputError, match="unknown"):
        sn.modality_specs("noisy,fancy")


# ------------------------------------------------------------------------------------------
# unpaired estimate
# ------------------------------------------------------------------------------------------


def _microscope(c: np.ndarray, dose: float, *, contrast: float, ctf: bool, seed: int = 0):
    """A physics-like measurement of projections ``c`` (≤ 0, dark particles).

    Phase-contrast-like transfer (CTF oscillation optional) under a Gaussian envelope
    (partial coherence + detector MTF) that removes the signal beyond ~0.25 cycles/pixel,
    weak contrast, then Poisson counting noise at ``dose`` electrons/pixel.
    Returns the counts and the expected counts (the noise variance per pixel).
    """
    t, ny, nx = c.shape
    k2 = np.fft.fftfreq(ny)[:, None] ** 2 + np.fft.rfftfreq(nx)[None, :] ** 2
    h = np.exp(-k2 / (2 * 0.1**2))
    if ctf:
        h = h * np.sin(np.pi * k2 / 0.04 + 0.3)
    blurred = np.fft.irfft2(np.fft.rfft2(c) * h, s=(ny, nx))
    expected = dose * (1.0 + contrast * blurred)
    counts = np.random.default_rng(seed).poisson(expected).astype(np.float32)
    return counts, expected


@pytest.fixture(scope="module")
def blobs():
    from pipeline_helpers import synthetic_tiltseries

    angles = np.linspace(-60.0, 60.0, 21)
    c, _ = synthetic_tiltseries(n_particles=120, shape_zyx=(64, 128, 128), seed=1, angles_deg=angles)
    return c, angles


@pytest.mark.parametrize(("dose", "contrast", "ctf"), [(800.0, 0.02, False), (200.0, 0.05, True)])
def test_unpaired_sigma_within_10_percent_of_paired(client, blobs, dose, contrast, ctf):
    c, angles = blobs
    counts, expected = _microscope(c, dose, contrast=contrast, ctf=ctf)
    m = tiltseries(da.from_array(counts, chunks=(1, 64, 128)), angles, 10.0, name="measured")
    cl = tiltseries(c, angles, 10.0, name="noiseless")
    paired = fd.estimate_noise([m], [cl], order=2)
    unpaired = fd.estimate_noise([m], order=2)
    assert unpaired.method == "unpaired" and unpaired.params["band_nyquist"] == [0.6, 1.0]
    ps, us = paired.raw["sigma"].values[0], unpaired.raw["sigma"].values[0]
    # noise-dominated like SHREC (golden: r ≈ 0.33); here r ≈ 0.38 (MTF only), 0.20 (with CTF)
    assert 0.15 < paired.raw["r"].values[0].mean() < 0.5
    assert _relmax(us, ps) < 0.10, (us / ps).round(3)
    assert _relmax(unpaired.curve("sigma"), paired.curve("sigma")) < 0.10
    assert np.abs(unpaired.curve("r") - paired.curve("r")).max() < 0.1
    # and against the truth: the Poisson variance is the expected count
    truth = np.sqrt(expected.mean((1, 2))) / counts.astype(np.float64).std((1, 2))
    assert _relmax(us, truth) < 0.10
    # mean and std are the same statistics in both estimates
    np.testing.assert_allclose(unpaired.raw["std"].values, paired.raw["std"].values, rtol=1e-12)
    assert np.all(np.abs(unpaired.raw["band_ratio"].values - 1) < 0.2)


def test_unpaired_on_shrec_reference(client, ref, model):
    """The golden measured tilt-series is the SHREC physics simulator's output (the truth is
    the paired estimate against its noiseless projection)."""
    m = tiltseries(ref["measured"], ANGLES, 10.0, name="measured")
    unpaired = fd.estimate_noise([m], order=2)
    assert _relmax(unpaired.raw["sigma"].values[0], model.raw["sigma"].values[0]) < 0.10
    assert _relmax(unpaired.curve("sigma"), model.curve("sigma")) < 0.03


def test_unpaired_white_noise_and_chunking(client):
    rng = np.random.default_rng(3)
    a = rng.normal(7.0, 2.0, (4, 96, 128)).astype(np.float32)
    arr = xr.DataArray(da.from_array(a, chunks=(1, 96, 128)), dims=("tilt", "y", "x"))
    model = fd.estimate_noise([arr])
    np.testing.assert_allclose(model.raw["sigma"].values[0], 1.0, atol=0.03)
    np.testing.assert_allclose(model.raw["noise_std"].values[0], 2.0, rtol=0.03)
    np.testing.assert_allclose(model.raw["band_ratio"].values[0], 1.0, atol=0.1)
    other = fd.estimate_noise([arr.chunk({"tilt": 2, "y": 13})])
    np.testing.assert_allclose(other.raw["sigma"].values, model.raw["sigma"].values, rtol=1e-12)
    with pytest.raises(InputError, match="widen"):
        fd.estimate_noise([arr[:, :, :8]], band=(0.9, 1.0))
    with pytest.raises(InputError, match="band"):
        fd.estimate_noise([arr], band=(0.7, 0.6))


def test_row_band_power_is_unbiased_for_white_noise():
    rng = np.random.default_rng(4)
    a = rng.normal(0.0, 3.0, (2, 400, 256))
    lower, upper = band_bins(256)
    p = row_band_power(a)
    v = p.sum(axis=(1, 2)) / (400 * (lower.size + upper.size))
    np.testing.assert_allclose(v, 9.0, rtol=0.02)
    # rows are independent of how the chunk is cut
    np.testing.assert_allclose(row_band_power(a[:, 7:9]), p[:, 7:9], rtol=1e-12)


# ------------------------------------------------------------------------------------------
# figure
# ------------------------------------------------------------------------------------------


def test_plot_noise_curves(model, tmp_path):
    from faket_dask.report import plot_noise_curves

    out = plot_noise_curves(model, tmp_path / "fig" / "curves.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
