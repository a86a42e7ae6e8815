"""Tests of the noise kernels (docs/method.md §2 and §3): the per-tilt statistics
(``kernels.noise_moments``), the noise curves and the injection (``kernels.noise``), the noise
field (``kernels.noise_rng``) and the modality table (``params``).

The noise kernels are pure numpy (no device argument), so these tests run on the CPU only."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage, stats

from faket_dask.errors import InputError
from faket_dask.kernels import noise as nz
from faket_dask.kernels import noise_moments as nm
from faket_dask.kernels import noise_rng
from faket_dask.params import MODALITIES, Modality

GOLDEN_KEYS = {  # our curve key -> golden suffix
    "r": "rs",
    "sigma": "stds",
    "mean": "noisy_μs",
    "std": "noisy_σs",
    "clean_mean": "clean_μs",
    "clean_std": "clean_σs",
}


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def _split_rows(ny: int, cuts: list[int]) -> list[tuple[int, int]]:
    edges = [0, *sorted({c for c in cuts if 0 < c < ny}), ny]
    return list(zip(edges[:-1], edges[1:]))


def _direct_curves(measured: np.ndarray, noiseless: np.ndarray) -> dict[str, np.ndarray]:
    """Two-pass float64 computation of METHOD §2, straight from the definitions."""
    m64, c64 = measured.astype(np.float64), noiseless.astype(np.float64)
    ax = (1, 2)
    m = (m64 - m64.mean(ax, keepdims=True)) / m64.std(ax, keepdims=True)
    c = (c64 - c64.mean(ax, keepdims=True)) / c64.std(ax, keepdims=True)
    r = np.clip((m * c).mean(ax), 0.0, 1.0)
    return {
        "r": r,
        "sigma": (m - r[:, None, None] * c).std(ax),
        "mean": m64.mean(ax),
        "std": m64.std(ax),
        "clean_mean": c64.mean(ax),
        "clean_std": c64.std(ax),
    }


def _chunked_add_noise(
    p: np.ndarray, curves: dict[str, np.ndarray], seed: int, tomo: int, k: float, cuts: list[int]
) -> np.ndarray:
    """The stage's pass structure (module docstring), on y-chunks given by ``cuts``."""
    t, ny, nx = p.shape
    tilts = list(range(t))
    chunks = _split_rows(ny, cuts)
    # pass 0: statistics of P
    p_rows = np.concatenate([nm.row_moments(p[:, a:b]) for a, b in chunks], axis=1)
    p_mean, p_std = nm.mean_std(nm.reduce_rows(p_rows))

    def x_of(a: int, b: int) -> np.ndarray:
        z = noise_rng.normal_block(seed, tomo, tilts, a, b, nx)
        return nz.mix(p[:, a:b], p_mean, p_std, z, curves["r"], curves["sigma"], k)

    # pass A: statistics of x; rows concatenated in reverse order on purpose (order-free)
    x_rows = np.concatenate([nm.row_moments(x_of(a, b)) for a, b in chunks[::-1]], axis=1)
    x_mean, x_std = nm.mean_std(nm.reduce_rows(x_rows))
    # pass B: apply
    return np.concatenate(
        [nz.rescale(x_of(a, b), x_mean, x_std, curves["mean"], curves["std"]) for a, b in chunks],
        axis=1,
    )


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], s: float) -> np.ndarray:
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(0, s, s))


@pytest.fixture(scope="module")
def ref(golden):
    return golden("noise_estimation")


@pytest.fixture(scope="module")
def raw(ref):
    return nz.curves_from_arrays(ref["measured"], ref["noiseless"])


# ------------------------------------------------------------------------------------------
# estimation against the golden file
# ------------------------------------------------------------------------------------------


def test_raw_curves_match_golden(ref, raw):
    assert set(raw) == set(nz.CURVE_KEYS)
    assert np.abs(raw["r"] - ref["curve_rs"]).max() < 1e-2
    assert np.abs(raw["sigma"] - ref["curve_stds"]).max() < 1e-4
    for key in ("mean", "std", "clean_mean", "clean_std"):
        np.testing.assert_allclose(raw[key], ref[f"curve_{GOLDEN_KEYS[key]}"], rtol=1e-4)


@pytest.mark.parametrize("order", [2, 0])
def test_fitted_curves_match_golden(ref, raw, order):
    fitted = nz.fit_and_average([raw], order)
    assert np.abs(fitted["r"] - ref[f"order{order}_rs"]).max() < 2e-3
    assert np.abs(fitted["sigma"] - ref[f"order{order}_stds"]).max() < 1e-4
    for key in ("mean", "std", "clean_mean", "clean_std"):
        np.testing.assert_allclose(fitted[key], ref[f"order{order}_{GOLDEN_KEYS[key]}"], rtol=1e-4)
    if order == 0:
        assert np.ptp(fitted["r"]) < 1e-12  # a constant


@pytest.mark.parametrize("order", [2, 0])
def test_fit_curve_reproduces_golden_fit_of_golden_curves(ref, order):
    for suffix in GOLDEN_KEYS.values():
        got = nz.fit_curve(ref[f"curve_{suffix}"], order)
        np.testing.assert_allclose(got, ref[f"order{order}_{suffix}"], rtol=1e-9, atol=1e-12)


def test_fit_and_average_averages_fitted_curves(raw):
    other = {key: v * 1.5 + 0.1 for key, v in raw.items()}
    avg = nz.fit_and_average([raw, other], 2)
    for key in raw:
        expect = (nz.fit_curve(raw[key], 2) + nz.fit_curve(other[key], 2)) / 2
        np.testing.assert_allclose(avg[key], expect, rtol=1e-12, atol=1e-14)
    with pytest.raises(InputError):
        nz.fit_and_average([raw, {"r": raw["r"][:-1]}], 2)


def test_fit_curve_few_tilts_lowers_order():
    np.testing.assert_allclose(nz.fit_curve(np.array([1.0, 3.0]), 2), [1.0, 3.0])
    np.testing.assert_allclose(nz.fit_curve(np.array([5.0]), 2), [5.0])


def test_r_is_the_exact_minimiser(ref, raw):
    m64, c64 = ref["measured"].astype(np.float64), ref["noiseless"].astype(np.float64)
    ax = (1, 2)
    m = (m64 - m64.mean(ax, keepdims=True)) / m64.std(ax, keepdims=True)
    c = (c64 - c64.mean(ax, keepdims=True)) / c64.std(ax, keepdims=True)
    r = raw["r"][:, None, None]
    at = (m - r * c).std(ax)
    for dr in (-1e-3, 1e-3):
        assert np.all((m - (r + dr) * c).std(ax) > at)


# ------------------------------------------------------------------------------------------
# moments
# ------------------------------------------------------------------------------------------


def test_moments_match_direct_two_pass_with_large_offset():
    rng = np.random.default_rng(1)
    c = (_smooth_field(rng, (5, 48, 40), 3) * 50 + 3e4).astype(np.float32)  # |mean| >> std
    m = (0.7 * (c - 3e4) + rng.standard_normal(c.shape) + 1e4).astype(np.float32)
    got = nz.curves_from_arrays(m, c)
    want = _direct_curves(m, c)
    for key in nz.CURVE_KEYS:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-10, atol=1e-12, err_msg=key)


def test_reduce_rows_is_chunking_and_order_invariant():
    rng = np.random.default_rng(2)
    m = rng.normal(5, 2, (3, 37, 29)).astype(np.float32)
    c = rng.normal(-1, 3, (3, 37, 29)).astype(np.float32)
    whole = nm.reduce_rows(nm.row_paired_moments(m, c))
    for cuts in ([1], [5, 6, 30], [10, 20]):
        rows = [nm.row_paired_moments(m[:, a:b], c[:, a:b]) for a, b in _split_rows(37, cuts)]
        assert np.array_equal(nm.reduce_rows(np.concatenate(rows, axis=1)), whole)
        assert np.array_equal(nm.reduce_rows(np.concatenate(rows[::-1], axis=1)), whole)
    # non-contiguous input gives the same bits
    assert np.array_equal(nm.row_moments(m[:, ::-1])[:, ::-1], nm.row_moments(m))
    single = nm.moments(m)
    mean, std = nm.mean_std(single)
    np.testing.assert_allclose(mean, m.astype(np.float64).mean((1, 2)), rtol=1e-13)
    np.testing.assert_allclose(std, m.astype(np.float64).std((1, 2)), rtol=1e-12)


def test_merge_moments_matches_whole():
    rng = np.random.default_rng(3)
    m = rng.normal(100, 2, (2, 20, 16))
    c = rng.normal(0, 1, (2, 20, 16))
    merged = nm.merge_moments(
        nm.paired_moments(m[:, :7], c[:, :7]), nm.paired_moments(m[:, 7:], c[:, 7:])
    )
    np.testing.assert_allclose(merged, nm.paired_moments(m, c), rtol=1e-12)
    merged1 = nm.merge_moments(nm.moments(m[:, :3]), nm.moments(m[:, 3:]))
    np.testing.assert_allclose(merged1, nm.moments(m), rtol=1e-12)


def test_constant_tilt_gives_no_correlation_and_no_warning():
    m = np.random.default_rng(4).normal(size=(2, 8, 8))
    c = np.zeros_like(m)
    with np.errstate(all="raise"):
        cur = nz.curves_from_arrays(m, c)
    np.testing.assert_array_equal(cur["r"], 0.0)
    np.testing.assert_array_equal(cur["sigma"], 1.0)


def test_shape_errors():
    with pytest.raises(InputError):
        nm.row_paired_moments(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))
    with pytest.raises(InputError):
        nm.row_moments(np.zeros((3, 4)))


# ------------------------------------------------------------------------------------------
# property tests: synthetic pairs with known r and sigma
# ------------------------------------------------------------------------------------------


def _synthetic_pair(seed: int, rho: float, a: float, b: float, shape=(3, 24, 20)):
    """C smooth random; M = a·(rho·c + sqrt(1-rho²)·n) + b with n ⟂ {1, c}, unit variance.

    Then corr(M, C) = rho exactly, so r = clip(rho, 0, 1) and sigma = sqrt(1 + r² - 2 r rho).
    """
    rng = np.random.default_rng(seed)
    cc = _smooth_field(rng, shape, 2.0) * 7.0 + 3.0
    ax = (1, 2)
    c = (cc - cc.mean(ax, keepdims=True)) / cc.std(ax, keepdims=True)
    n = rng.standard_normal(shape)
    n -= n.mean(ax, keepdims=True)
    n -= (n * c).mean(ax, keepdims=True) * c  # orthogonal to c (c has unit population var)
    n /= n.std(ax, keepdims=True)
    m = a * (rho * c + np.sqrt(1 - rho**2) * n) + b
    return m, cc


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    rho=st.floats(-0.99, 0.999),
    a=st.floats(1e-3, 1e3),
    b=st.floats(-1e4, 1e4),
)
def test_recovers_known_r_and_sigma(seed, rho, a, b):
    m, c = _synthetic_pair(seed, rho, a, b)
    cur = nz.curves_from_arrays(m, c)
    r = min(max(rho, 0.0), 1.0)
    sigma = np.sqrt(1 + r * r - 2 * r * rho)
    np.testing.assert_allclose(cur["r"], r, atol=1e-9)
    np.testing.assert_allclose(cur["sigma"], sigma, atol=1e-8)
    np.testing.assert_allclose(cur["mean"], b, atol=1e-9 * (abs(b) + a))
    np.testing.assert_allclose(cur["std"], a, rtol=1e-9)
    np.testing.assert_allclose(cur["clean_mean"], c.mean((1, 2)), rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(1, 31), max_size=6), seed=st.integers(0, 1000))
def test_curves_invariant_to_row_chunking(cuts, seed):
    m, c = _synthetic_pair(seed, 0.4, 2.0, 5.0, shape=(2, 32, 12))
    rows = [nm.row_paired_moments(m[:, a:b], c[:, a:b]) for a, b in _split_rows(32, cuts)]
    got = nz.curves_from_moments(nm.reduce_rows(np.concatenate(rows, axis=1)))
    want = nz.curves_from_arrays(m, c)
    for key in nz.CURVE_KEYS:
        assert np.array_equal(got[key], want[key])


# ------------------------------------------------------------------------------------------
# counter-based RNG
# ------------------------------------------------------------------------------------------

KAT = [  # Random123 known-answer tests for philox4x32_10: counter, key, expected output
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KAT)
def test_philox_known_answers(counter, key, expected):
    out = noise_rng.philox4x32_10(counter, key)
    assert tuple(int(w) for w in out) == expected
    # vectorised: the same counter inside an array of others
    c = [np.array([1, v, 7], dtype=np.uint64) for v in counter]
    out = noise_rng.philox4x32_10(c, key)
    assert tuple(int(w[1]) for w in out) == expected


FIELD_CASES = [  # seed, tomo, tilts, y0, y1, nx, x0, stream: whole tilts, offsets, extreme keys
    (1, 0, [3], 0, 1024, 1024, 0, 0),
    (7, 2, [0, 5], 3, 77, 131, 5, 0),
    (2**32 - 1, 2**32 - 1, [60], 0, 300, 1023, 1, 3),
    (12345, 9, [2**32 - 1], 2**32 - 9, 2**32, 6, 4 * 2**32 - 6, 2**32 - 1),
]


@pytest.mark.parametrize("case", FIELD_CASES)
def test_compiled_field_is_the_numpy_reference(case):
    """The compiled Philox (numba) gives the bits of the pure-numpy Philox + Box–Muller."""
    seed, tomo, tilts, y0, y1, nx, x0, stream = case
    kw = {"x0": x0, "stream": stream}
    got = noise_rng.normal_block(seed, tomo, tilts, y0, y1, nx, **kw)
    want = noise_rng.normal_block(seed, tomo, tilts, y0, y1, nx, impl="numpy", **kw)
    assert got.shape == (len(tilts), y1 - y0, nx) and got.dtype == np.float32
    assert np.array_equal(got, want)


def test_compiled_box_muller_sincos_is_numpys_cos_and_sin():
    """The compiled Box–Muller (one ``sincos`` call per angle) gives numpy's separate ``cos``
    and ``sin`` bits, on 2²⁴ angles drawn as the field draws them (``w · 2π · 2⁻³²``)."""
    from faket_dask.kernels.philox_compiled import box_muller_rows

    rng = np.random.default_rng(5)
    r, nb = 2048, 2048  # 2 × r × nb = 2²³ angles per array pair; two rounds
    for _ in range(2):
        w = rng.integers(0, 2**32, size=(4, r, nb), dtype=np.uint64)
        log_rad = np.log((w[0::2].astype(np.float64) + 1.0) * 2.0**-32)
        ang = w[1::2].astype(np.float64) * (2.0 * np.pi * 2.0**-32)
        got = np.empty((r, 4 * nb), np.float32)
        box_muller_rows(log_rad, ang, got, 0)
        rr = np.sqrt(log_rad * -2.0)
        want = np.empty((r, nb, 4), np.float64)
        for j in (0, 1):
            want[:, :, 2 * j] = rr[j] * np.cos(ang[j])
            want[:, :, 2 * j + 1] = rr[j] * np.sin(ang[j])
        assert np.array_equal(got, want.reshape(r, 4 * nb).astype(np.float32))


def test_field_values_are_pinned():
    """Values of the field as the noise stage has drawn them since issue 4 (a change would
    change every NOISY/CONTENT/BASELINE output)."""
    z = noise_rng.normal_block(1, 0, [3], 0, 1024, 1024)
    want = [0.7245374321937561, -0.8440951704978943, 0.39367419481277466, 0.020458299666643143,
            -0.21138423681259155]
    assert z[0, 0, :5].tolist() == want
    z = noise_rng.normal_block(2**32 - 1, 2**32 - 1, [60], 0, 300, 1023, x0=1, stream=3)
    assert z[0, 299, -3:].tolist() == [1.6530383825302124, -1.1151437759399414, -0.9783914089202881]
    with pytest.raises(InputError, match="impl"):
        noise_rng.normal_block(1, 0, [3], 0, 4, 4, impl="fortran")


def test_normal_field_chunk_invariance():
    seed, tomo, tilt, ny, nx = 7, 3, 11, 67, 50
    whole = noise_rng.normal_field(seed, tomo, tilt, 0, ny, nx)
    assert whole.dtype == np.float32 and whole.shape == (ny, nx)
    for cuts in ([1, 2, 40], [33]):
        parts = [noise_rng.normal_field(seed, tomo, tilt, a, b, nx) for a, b in _split_rows(ny, cuts)]
        assert np.array_equal(np.concatenate(parts), whole)
    # columns and tilts can be cut too
    assert np.array_equal(noise_rng.normal_field(seed, tomo, tilt, 5, 9, 13, x0=3), whole[5:9, 3:16])
    block = noise_rng.normal_block(seed, tomo, [tilt - 1, tilt], 10, 20, nx)
    assert np.array_equal(block[1], whole[10:20])
    assert np.array_equal(block[0], noise_rng.normal_field(seed, tomo, tilt - 1, 10, 20, nx))
    # a pure function: call again, same bits
    assert np.array_equal(noise_rng.normal_field(seed, tomo, tilt, 0, ny, nx), whole)


def test_normal_field_statistics():
    t, ny, nx = 4, 128, 256
    z = noise_rng.normal_block(12345, 0, range(t), 0, ny, nx).astype(np.float64)
    n = z.size
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.std() - 1) < 5 * np.sqrt(0.5 / n)
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    assert np.isfinite(z).all() and np.abs(z).max() < 6.7

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    lim = 5 / np.sqrt(z[..., 1:].size)
    for dx in (1, 2, 3, 4):  # within and across the four values of one counter
        assert abs(corr(z[..., dx:], z[..., :-dx])) < lim
        assert abs(corr(z[..., dx:] ** 2, z[..., :-dx] ** 2)) < 2 * lim  # no radius sharing
    assert abs(corr(z[:, 1:], z[:, :-1])) < lim  # y neighbours
    assert abs(corr(z[1:], z[:-1])) < lim  # tilt neighbours
    others = {
        "seed": noise_rng.normal_block(12346, 0, range(t), 0, ny, nx),
        "tomo": noise_rng.normal_block(12345, 1, range(t), 0, ny, nx),
        "stream": noise_rng.normal_block(12345, 0, range(t), 0, ny, nx, stream=1),
    }
    for name, other in others.items():
        assert abs(corr(z, other)) < lim, name


def test_normal_field_rejects_bad_arguments():
    with pytest.raises(InputError):
        noise_rng.normal_field(-1, 0, 0, 0, 4, 4)
    with pytest.raises(InputError):
        noise_rng.normal_field(0, 2**32, 0, 0, 4, 4)
    with pytest.raises(InputError):
        noise_rng.normal_field(0, 0, 0, 5, 4, 4)


# ------------------------------------------------------------------------------------------
# noise injection
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def injection_case(raw):
    rng = np.random.default_rng(5)
    t, ny, nx = 6, 40, 36
    p = (_smooth_field(rng, (t, ny, nx), 2.5) * 3 - 20).astype(np.float32)
    model = nz.fit_and_average([raw], 2)
    curves = {key: v[:t] for key, v in model.items()}
    return p, curves


@pytest.mark.parametrize("name", ["noisy", "content", "baseline"])
def test_chunked_two_pass_equals_reference(injection_case, name):
    p, curves = injection_case
    k = MODALITIES[name].scale
    seed, tomo = 42, 1
    z = noise_rng.normal_block(seed, tomo, range(p.shape[0]), 0, p.shape[1], p.shape[2])
    want = nz.add_noise_reference(
        p, curves["r"], curves["sigma"], curves["mean"], curves["std"], z, k
    )
    got = _chunked_add_noise(p, curves, seed, tomo, k, [8, 16, 24, 32])
    assert got.dtype == np.float32 and got.shape == p.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # final per-tilt statistics are the targets
    g = got.astype(np.float64)
    np.testing.assert_allclose(g.mean((1, 2)), curves["mean"], rtol=1e-4)
    np.testing.assert_allclose(g.std((1, 2)), curves["std"], rtol=1e-4)
    # bit-identical for other chunkings
    for cuts in ([1], [13, 14, 39], []):
        assert np.array_equal(_chunked_add_noise(p, curves, seed, tomo, k, cuts), got)


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 39), max_size=5))
def test_chunked_injection_bit_identical_for_any_split(injection_case, cuts):
    p, curves = injection_case
    assert np.array_equal(
        _chunked_add_noise(p, curves, 3, 0, 1.0, cuts), _chunked_add_noise(p, curves, 3, 0, 1.0, [])
    )


def test_content_noise_is_quarter_of_noisy(injection_case):
    p, curves = injection_case
    t, ny, nx = p.shape
    pm, ps = nm.mean_std(nm.moments(p))
    z = noise_rng.normal_block(9, 2, range(t), 0, ny, nx)
    mix = lambda k: nz.mix(p, pm, ps, z, curves["r"], curves["sigma"], k)  # noqa: E731
    signal = mix(0.0)
    noisy = mix(MODALITIES["noisy"].scale) - signal
    content = mix(MODALITIES["content"].scale) - signal
    np.testing.assert_allclose(content, 0.25 * noisy, rtol=0, atol=1e-12 * np.abs(signal).max())
    np.testing.assert_allclose(noisy, z * curves["sigma"][:, None, None], rtol=1e-12, atol=1e-12)


def test_modalities():
    assert list(MODALITIES) == ["noisy", "content", "baseline"]
    assert MODALITIES["noisy"] == Modality(order=2, scale=1.0)
    assert MODALITIES["content"] == Modality(order=2, scale=0.25)
    assert MODALITIES["baseline"] == Modality(order=0, scale=1.0)


def test_rescale_large_offset_targets():
    rng = np.random.default_rng(6)
    x = rng.normal(3, 2, (2, 16, 16))
    xm, xs = nm.mean_std(nm.moments(x))
    out = nz.rescale(x, xm, xs, np.array([1e3, -50.0]), np.array([0.5, 4.0]))
    np.testing.assert_allclose(out.astype(np.float64).mean((1, 2)), [1e3, -50.0], rtol=1e-6)
    np.testing.assert_allclose(out.astype(np.float64).std((1, 2)), [0.5, 4.0], rtol=1e-4)
