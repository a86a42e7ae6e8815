"""Reference microscope: dose, Poisson statistics, ice tilt dependence, determinism, chunk
invariance, CTF sanity, and the ``faket-dask microscope`` console script."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import faket_dask as fd
from faket_dask.datamodel import tiltseries
from faket_dask.kernels import microscope as km
from faket_dask.params import MicroscopeParams
from faket_dask.stages.microscope import simulate_microscope

EXE = str(Path(sys.executable).with_name("faket-dask"))
ANGLES = np.array([-60.0, -40.0, -20.0, 0.0, 20.0, 40.0, 60.0])


def _flat(ny=96, nx=80, angles=ANGLES):
    """A zero noiseless tilt-series (nothing in the beam but ice), chunked (1, 32, X)."""
    return tiltseries(np.zeros((angles.size, ny, nx), np.float32), angles, 10.0,
                      name="noiseless").chunk({"tilt": 1, "y": 32})


def _random_ts(seed=0, shape=(5, 64, 48)):
    rng = np.random.default_rng(seed)
    vol = fd.volume(rng.random((16, shape[1], shape[2])).astype(np.float32), 10.0)
    return fd.project(vol, np.linspace(-60, 60, shape[0]), cy=16)


# ---------------------------------------------------------------- kernel: CTF, MTF


def test_wavelength_300kv():
    assert km.wavelength_A(300) == pytest.approx(0.019687, abs=2e-6)


def test_ctf_at_zero_is_minus_amplitude_contrast():
    c = km.ctf_2d(64, 64, 2.0, -3.0, amplitude_contrast=0.07, bfactor_A2=100.0)
    assert c[0, 0] == pytest.approx(-0.07)
    assert np.all(np.abs(c) <= 1.0 + 1e-12)


@pytest.mark.parametrize("cs_mm", [0.0, 2.7])
def test_ctf_first_zero_analytical(cs_mm):
    """First zero at χ = π − arcsin A, χ = πλΔz k² − (π/2) Cs λ³ k⁴ (Δz = 3 µm underfocus)."""
    n, px, A = 1024, 1.0, 0.07
    lam, dz, cs = km.wavelength_A(300), 3e4, cs_mm * 1e7
    chi0 = math.pi - math.asin(A)
    if cs == 0:
        k2 = chi0 / (math.pi * lam * dz)
    else:
        a, b = math.pi * lam * dz, 0.5 * math.pi * cs * lam**3
        k2 = (a - math.sqrt(a * a - 4 * b * chi0)) / (2 * b)
    c = km.ctf_2d(1, n, px, -3.0, cs_mm=cs_mm, amplitude_contrast=A)[0, : n // 2]
    k = np.fft.fftfreq(n, d=px)[: n // 2]
    first = np.argmax(np.sign(c) != np.sign(c[0]))  # first sign change
    assert k[first - 1] <= math.sqrt(k2) <= k[first]
    assert c[0] < 0 and c[1] < 0  # underfocus: matter dark at low frequencies


def test_mtf_unity_at_zero_and_decreasing():
    m = km.detector_mtf(1, 256)[0, :128]
    assert m[0] == pytest.approx(1.0)
    assert np.all(np.diff(m) < 0)
    assert 0 < m[-1] < 0.5


def test_underfocus_makes_matter_dark():
    v = np.zeros((64, 64))
    v[28:36, 28:36] = 500.0  # a blob of matter: 500 V·Å, ~0.33 rad at 300 kV
    lam = km.expected_counts(v, 0.0, 10.0, dose_e_per_A2=1.0, defocus_um=-3.0,
                             absorption_ratio=0.07, ice_phase_std_rad=0.0)
    assert lam[30:34, 30:34].mean() < lam[:8, :8].mean()


def test_weak_object_limit_is_the_linear_ctf():
    """The exit-wave model reduces to ``1 + 2 CTF ⊛ φ`` with ``A = α/φ / sqrt(1 + (α/φ)²)``."""
    rng = np.random.default_rng(0)
    v = rng.standard_normal((64, 64)) * 2.0                    # ~1e-3 rad: deep in the weak limit
    ratio = 0.07 / math.sqrt(1 - 0.07**2)
    kw = dict(defocus_um=-3.0, bfactor_A2=50.0, mtf_a=1.0, mtf_b=1e9, mtf_c=1e9)
    lam = km.expected_counts(v, 0.0, 4.0, dose_e_per_A2=1.0 / 16, absorption_ratio=ratio,
                             ice_thickness_A=0.0, **kw)
    from faket_dask.kernels.potential import interaction_constant

    phi = interaction_constant(300) * v
    ctf = km.ctf_2d(64, 64, 4.0, -3.0, amplitude_contrast=0.07, bfactor_A2=50.0) / math.sqrt(1 - 0.07**2)
    lin = 1 + 2 * np.fft.ifft2(np.fft.fft2(phi) * ctf).real
    mtf = km.detector_mtf(64, 64, mtf_a=1.0, mtf_b=1e9, mtf_c=1e9)
    lin = np.fft.ifft2(np.fft.fft2(lin) * mtf).real
    # second-order terms are ~phi² ≈ 1e-6
    np.testing.assert_allclose(lam, lin, atol=2e-5)


# ---------------------------------------------------------------- stage: statistics


def test_mean_counts_match_dose_and_ice(client):
    p = MicroscopeParams()
    out = simulate_microscope(_flat(), seed=3, params=p)
    a = out.values.astype(np.float64)
    dose_px = p.total_dose_e_per_A2 / ANGLES.size * 10.0**2
    assert out.attrs["ice_thickness_A"] == 1500.0            # no specimen: the stated default
    expect = dose_px * km.attenuation(ANGLES, out.attrs["ice_thickness_A"], p.inelastic_mfp_A)
    means = a.mean(axis=(1, 2))
    # Poisson: std of the mean = sqrt(λ / N); allow 5 sigma.
    tol = 5 * np.sqrt(expect / a[0].size)
    np.testing.assert_array_less(np.abs(means - expect), tol)
    assert out.attrs["dose_per_pixel"] == pytest.approx(dose_px)
    assert out.attrs["kind"] == "reference-microscope"
    # ice grows as 1/cos θ: mean counts fall monotonically with |θ|, symmetric in ±θ
    by_abs = [means[ANGLES == 0][0]] + [means[np.abs(ANGLES) == t].mean() for t in (20, 40, 60)]
    assert np.all(np.diff(by_abs) < 0)


def test_variance_is_poisson(client):
    # No ice phase noise: the expected image is exactly flat, so pixels are iid Poisson.
    p = MicroscopeParams(ice_phase_std_rad=0.0)
    a = simulate_microscope(_flat(128, 128), seed=5, params=p).values.astype(np.float64)
    for t in range(a.shape[0]):
        dispersion = a[t].var(ddof=1) / a[t].mean()
        # std of the dispersion index of N Poisson samples ≈ sqrt(2/N) ≈ 0.011 here
        assert abs(dispersion - 1.0) < 0.05, (t, dispersion)
    assert np.all(a == np.round(a))  # integer counts


def test_kernel_poisson_large_sample():
    lam = np.full((512, 512), 37.5)
    rng = km.tilt_rng(0, 0, 0)
    n = rng.poisson(lam)
    assert n.mean() == pytest.approx(37.5, rel=0.005)
    assert n.var() / n.mean() == pytest.approx(1.0, abs=0.02)


# ---------------------------------------------------------------- determinism, chunking


def test_deterministic_for_seed_and_chunk_invariant(client):
    ts = _random_ts()
    a = simulate_microscope(ts, seed=7, tomo=1).values
    b = simulate_microscope(ts, seed=7, tomo=1).values
    assert np.array_equal(a, b)
    c = simulate_microscope(ts.chunk({"y": 64}), seed=7, tomo=1).values
    assert np.array_equal(a, c)
    d = simulate_microscope(ts.compute(), seed=7, tomo=1).values  # numpy-backed input
    assert np.array_equal(a, d)
    assert not np.array_equal(a, simulate_microscope(ts, seed=8, tomo=1).values)
    assert not np.array_equal(a, simulate_microscope(ts, seed=7, tomo=2).values)


def test_output_chunks_follow_input(client):
    ts = _random_ts()
    out = simulate_microscope(ts, seed=0)
    assert out.chunks == ts.chunks


def test_batches_of_whole_tilts_are_one_task_each_and_change_nothing(client):
    ts = _random_ts(shape=(7, 64, 48))  # (1, 16, 48) chunks
    batched = ts.chunk({"tilt": 3, "y": -1})
    out = simulate_microscope(batched, seed=4, tomo=2)
    assert out.chunks == batched.chunks
    # a batch is one microscope task (the pipeline reads small tilts so)
    assert len([k for k in out.data.__dask_graph__() if str(k[0] if isinstance(k, tuple) else k)
                .startswith("_image_block")]) == 3
    assert np.array_equal(out.values, simulate_microscope(ts, seed=4, tomo=2).values)
    assert out.dtype == np.float32 and out.name == "measured"
    assert out.dims == ("tilt", "y", "x")
    np.testing.assert_array_equal(out["tilt"].values, ts["tilt"].values)


def test_signal_correlates_with_noiseless(client):
    """Low-pass measured correlates positively with noiseless (both dark where matter is)."""
    ts = _random_ts(shape=(3, 64, 64)) * 20.0          # ~0.5 rad of phase (V: 0..20 V)
    p = MicroscopeParams(total_dose_e_per_A2=3000.0, defocus_um=-6.0)
    m = simulate_microscope(ts, seed=0, params=p).values[1].astype(np.float64)
    c = ts.values[1].astype(np.float64)

    def lowpass(x):
        f = np.fft.rfft2(x - x.mean())
        k2 = km.freq_grid(*x.shape, 1.0)[:, : x.shape[1] // 2 + 1]
        return np.fft.irfft2(f * (k2 < 0.05**2), s=x.shape)

    r = np.corrcoef(lowpass(m).ravel(), lowpass(c).ravel())[0, 1]
    assert r > 0.3, r


def test_kernel_defaults_are_the_params():
    """One owner: the kernels' instrument defaults are MicroscopeParams' (ice phase aside: the
    bare kernel adds none unless asked)."""
    import inspect

    p = MicroscopeParams()
    kw = inspect.signature(km.expected_counts).parameters
    for name in ("defocus_um", "voltage_kV", "cs_mm", "bfactor_A2",
                 "inelastic_mfp_A", "mtf_a", "mtf_b", "mtf_c"):
        assert kw[name].default == getattr(p, name), name
    from faket_dask.params import ICE_THICKNESS_A

    assert kw["ice_thickness_A"].default == ICE_THICKNESS_A and p.ice_thickness_A is None
    assert kw["ice_phase_std_rad"].default == 0.0


def test_bad_params_rejected():
    with pytest.raises(Exception):
        MicroscopeParams(bogus=1)
    with pytest.raises(fd.InputError):
        simulate_microscope(_flat(), seed=-1)


# ---------------------------------------------------------------- CLI


def run_cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, FAKET_PROGRESS="0")
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=180)


def test_cli_microscope(tmp_path):
    store = tmp_path / "run.zarr"
    ts = _random_ts(shape=(5, 32, 32))
    fd.save(ts, store, "tomo_000/tiltseries", name="noiseless")
    proc = run_cli("microscope", store, "--tomo", 0, "--seed", 4, "--dose", 60, "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    m = fd.open_var(store, "tomo_000/tiltseries/measured")
    assert m.shape == ts.shape and m.dtype == np.float32
    assert m.attrs["total_dose_e_per_A2"] == 60.0 and m.attrs["seed"] == 4
    expect = simulate_microscope(ts, seed=4, params=MicroscopeParams(total_dose_e_per_A2=60.0))
    np.testing.assert_array_equal(m.values, expect.compute(scheduler="sync").values)
    # no overwrite without --overwrite: one-line error
    proc = run_cli("microscope", store, "--workers", 1)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "exists" in proc.stderr


# ---------------------------------------------------------------- physical units


@pytest.mark.parametrize("kv, tabulated", [(100, 9.244e-4), (200, 7.288e-4), (300, 6.526e-4)])
def test_interaction_constant_against_tabulated(kv, tabulated):
    """σ_e(U) in rad/(V·Å): Kirkland (2010) Table/eq. 5.6 values, within 0.5 %."""
    from faket_dask.kernels.potential import interaction_constant

    assert interaction_constant(kv) == pytest.approx(tabulated, rel=5e-3)


def test_potential_constant_and_ice_potential():
    from faket_dask.kernels import potential as pot

    assert pot.POTENTIAL_PER_SCATTERING_V_A2 == pytest.approx(47.878, abs=1e-3)
    # independent-atom ice: linear in density; at 1 g/cm³ within 10 % of the measured mean
    # inner potential of liquid water, 4.48 ± 0.19 V (Yesibolati et al. 2020, PRL 124:065502)
    assert pot.ice_potential_V(1.0) == pytest.approx(4.48, rel=0.10)
    assert pot.ice_potential_V(0.94) == pytest.approx(0.94 * pot.ice_potential_V(1.0), rel=1e-12)
    assert pot.protein_potential_V() > pot.ice_potential_V() > 0
    assert pot.gold_potential_V() > 3 * pot.protein_potential_V()


@pytest.mark.parametrize("angle", [0.0, 60.0])
def test_homogeneous_slab_phase(client, angle):
    """A slab of V0 = 2 V and t = 200 Å gives a phase σ_e V0 t / cos θ (within 1 %)."""
    from faket_dask.kernels.potential import interaction_constant
    from faket_dask.stages.microscope import specimen_phase

    px, v0, t_vox = 10.0, 2.0, 20
    vol = np.zeros((96, 8, 160), np.float32)
    vol[38:38 + t_vox] = v0
    ts = fd.project(fd.volume(vol, px), [angle])
    ph = specimen_phase(ts).values[0]
    expect = interaction_constant(300) * v0 * t_vox * px / math.cos(math.radians(angle))
    centre = ph[:, 60:100]                       # rays that cross the whole slab
    np.testing.assert_allclose(centre, expect, rtol=0.01)


def test_ice_phase_noise_from_density_fluctuations():
    """The ice noise std follows the stated formula: ∝ sqrt(path) / pixel, ∝ σ_e."""
    from faket_dask.kernels.potential import interaction_constant

    a = km.ice_phase_std_rad(1280.0, 10.0)
    assert 0.005 < a < 0.05                      # ~0.015 rad: weak, as real ice at 10 Å pixels
    assert km.ice_phase_std_rad(4 * 1280.0, 10.0) == pytest.approx(2 * a)
    assert km.ice_phase_std_rad(1280.0, 5.0) == pytest.approx(2 * a)
    assert km.ice_phase_std_rad(1280.0, 10.0, 100.0) == pytest.approx(
        a * interaction_constant(100) / interaction_constant(300))
    assert km.ice_phase_std_rad(0.0, 10.0) == 0.0


def test_absorption_darkens_gold_like_objects():
    """A strongly absorbing object (gold) is dark in focus-independent ways: its mean counts drop
    by exp(-2 σ_e ∫W) at low frequencies."""
    from faket_dask.kernels.potential import interaction_constant

    v = np.zeros((128, 128))
    yy, xx = np.mgrid[:128, :128]
    disc = (yy - 64) ** 2 + (xx - 64) ** 2 < 20 ** 2
    v[disc] = 2500.0                              # V·Å: gold bead ~ 25 V × 100 Å
    w = 0.3 * v
    kw = dict(dose_e_per_A2=1.0, ice_phase_std_rad=0.0, defocus_um=-3.0, ice_thickness_A=0.0)
    lam = km.expected_counts(v, 0.0, 10.0, absorption_proj_VA=w, **kw)
    flat = km.expected_counts(np.zeros_like(v), 0.0, 10.0, **kw)
    inside = lam[54:74, 54:74].mean() / flat.mean()
    assert inside == pytest.approx(np.exp(-2 * interaction_constant(300) * 750.0), rel=0.1)


def test_cli_write_phase_and_specimen_absorption(tmp_path):
    """``microscope --write-phase`` writes the phase; the specimen's thickness sets the ice."""
    store = tmp_path / "run.zarr"
    ts = _random_ts(shape=(5, 32, 32))
    fd.save(ts, store, "tomo_000/tiltseries", name="noiseless")
    proc = run_cli("microscope", store, "--write-phase", "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    ph = fd.open_var(store, "tomo_000/tiltseries/phase")
    from faket_dask.kernels.potential import interaction_constant

    np.testing.assert_allclose(ph.values, -ts.values * 10.0 * interaction_constant(300), rtol=1e-5)
    assert ph.attrs["units"] == "rad"
    proc = run_cli("microscope", store, "--ice-thickness", -5, "--overwrite", "--workers", 1)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--ice-thickness" in proc.stderr
