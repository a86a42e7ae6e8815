"""Reference-microscope kernels: a physics-based stand-in for a real cryo-ET instrument.

Pure numpy: no dask, no I/O. The stage (:mod:`faket_dask.stages.microscope`) calls
:func:`image_tilt` once per *whole* tilt, because the lens transfer and the detector MTF are 2D
Fourier filters that need the full ``(Y, X)`` image.

Model (one tilt at angle θ, see ``docs/microscope.md``)
--------------------------------------------------------
The specimen is an electrostatic potential in volts relative to vitreous ice (real part ``V``,
absorption ``W``); the inputs are its projections along the tilted beam, ``∫V dl`` and
``∫W dl`` (V·Å).

1. Exit wave (projection approximation, Kirkland 2010 eq. 5.22 with an absorption potential):
   ``ψ = exp(i φ − α)`` with ``φ = σ_e(U) ∫V dl + φ_ice`` and ``α = σ_e(U) ∫W dl``. ``φ_ice``
   is the structural phase noise of the ice slab (:func:`ice_phase_std_rad`: the density
   fluctuations of ``t(θ) = t0 / cos θ`` of water); the ice's mean phase is a constant with no
   contrast and is left out.
2. Lens: ``ψ_i = IFT(H · FT(ψ))`` with ``H(k) = exp(i χ(k)) · exp(−B k²/4)``,
   ``χ(k) = π λ Δz k² − (π/2) Cs λ³ k⁴``, ``Δz = −defocus`` (Å; *underfocus is a negative*
   ``defocus`` *and a positive* ``Δz``). For a weak object this is the familiar
   ``I ≈ 1 − 2 sin χ ⊛ φ − 2 cos χ ⊛ α``: the absorption potential gives the amplitude
   contrast, so matter is dark at low frequencies, as in a real underfocused image.
3. Intensity ``I = |ψ_i|²``; ice attenuation (inelastic scattering removed by the energy filter)
   ``a(θ) = exp(−t(θ) / λ_in)``.
4. Expected counts: ``Λ = MTF ⊛ (dose_px · a(θ) · I)``, clipped at 0, where
   ``dose_px = dose_per_tilt (e/Å²) · pixel_size²``. The MTF has ``MTF(0) = 1``.
5. Counts: ``N ~ Poisson(Λ)`` per pixel (exact sampler, numpy's Generator).

Simplification: the detector MTF is applied to the *expected* image, before the shot noise,
so the recorded noise is exactly Poisson (variance = mean). A real counting detector blurs
after detection (which also colours the noise); we trade that for a cleanly testable model.
"""
from __future__ import annotations

import math

import numpy as np

from faket_dask.params import (
    BFACTOR_A2,
    CS_MM,
    DEFOCUS_UM,
    ICE_THICKNESS_A,
    INELASTIC_MFP_A,
    MTF_A,
    MTF_B,
    MTF_C,
    VOLTAGE_KV,
)

from .potential import (
    AVOGADRO,
    ICE_DENSITY_G_CM3,
    POTENTIAL_PER_SCATTERING_V_A2,
    WATER,
    interaction_constant,
    scattering_f0_A,
    wavelength_A,
)

__all__ = [
    "WATER_STRUCTURE_FACTOR_0",
    "aberration_phase",
    "attenuation",
    "ctf_2d",
    "detector_mtf",
    "expected_counts",
    "freq_grid",
    "ice_phase_std_rad",
    "ice_thickness",
    "image_tilt",
    "lens_transfer",
    "tilt_rng",
    "wavelength_A",
]

#: Stream word of the per-tilt generator key; distinct from the noise stage's streams.
MICROSCOPE_STREAM = 0x4D494352  # "MICR"
#: Structure factor of water at k → 0, ``S(0) = n k_B T κ_T`` ≈ 0.06 (number density n, the
#: isothermal compressibility κ_T = 5.1e-10 /Pa of water at 0 °C, CRC Handbook): the variance of
#: the number of molecules in a volume relative to an ideal gas's. Vitreous ice is water
#: quenched below its glass transition, so its frozen-in density fluctuations are taken as
#: those of the liquid (an upper bound; a model assumption).
WATER_STRUCTURE_FACTOR_0 = 0.06


def freq_grid(ny: int, nx: int, pixel_size_A: float) -> np.ndarray:
    """Squared spatial frequency ``k²`` (1/Å²) of a full ``(ny, nx)`` FFT grid (numpy order)."""
    ky = np.fft.fftfreq(ny, d=pixel_size_A)
    kx = np.fft.fftfreq(nx, d=pixel_size_A)
    return ky[:, None] ** 2 + kx[None, :] ** 2


def aberration_phase(ny: int, nx: int, pixel_size_A: float, defocus_um: float, *,
                     voltage_kV: float = VOLTAGE_KV, cs_mm: float = CS_MM) -> tuple[np.ndarray, np.ndarray]:
    """``(χ, k²)`` on the full FFT grid: ``χ(k) = π λ Δz k² − (π/2) Cs λ³ k⁴`` (rad), ``k²`` (1/Å²).

    ``Δz = −defocus`` (Å): positive in underfocus (Kirkland 2010, eq. 3.42, our sign).
    """
    lam = wavelength_A(voltage_kV)
    dz = -float(defocus_um) * 1e4  # Å, positive for underfocus
    cs = float(cs_mm) * 1e7  # Å
    k2 = freq_grid(ny, nx, pixel_size_A)
    return math.pi * lam * dz * k2 - 0.5 * math.pi * cs * lam**3 * k2**2, k2


def ctf_2d(
    ny: int,
    nx: int,
    pixel_size_A: float,
    defocus_um: float,
    *,
    voltage_kV: float = VOLTAGE_KV,
    cs_mm: float = CS_MM,
    amplitude_contrast: float = 0.07,
    bfactor_A2: float = 0.0,
) -> np.ndarray:
    """Isotropic contrast transfer function of the weak-object approximation (full FFT grid).

    The microscope itself uses the exact :func:`lens_transfer` on the exit wave; this is the
    linearised picture (for figures, docs and tests), with the amplitude contrast A as a number.

    Parameters
    ----------
    ny, nx : int
        Image size (pixels).
    pixel_size_A : float
        Pixel size (Å).
    defocus_um : float
        Defocus (µm); **negative = underfocus** (the usual cryo-ET setting, e.g. −3).
    voltage_kV, cs_mm, amplitude_contrast, bfactor_A2 : float
        Accelerating voltage (kV), spherical aberration (mm), amplitude-contrast fraction A
        (0..1; default 0.07, the usual value for proteins in ice) and B-factor of the envelope
        ``exp(−B k²/4)`` (Å²). Defaults: the reference microscope's
        (:mod:`faket_dask.params.microscope`), except ``bfactor_A2 = 0``: the bare CTF.

    Returns
    -------
    ndarray, float64, shape (ny, nx)
        ``CTF(k) = −[√(1−A²) sin χ + A cos χ] · exp(−B k²/4)`` with
        ``χ = π λ Δz k² − (π/2) Cs λ³ k⁴``, ``Δz = −defocus`` (Å). ``CTF(0) = −A``. The image of
        a weak phase φ is ``I = 1 + 2 · IFT(CTF · FT(φ))``.
    """
    chi, k2 = aberration_phase(ny, nx, pixel_size_A, defocus_um, voltage_kV=voltage_kV, cs_mm=cs_mm)
    a = float(amplitude_contrast)
    ctf = -(math.sqrt(1.0 - a * a) * np.sin(chi) + a * np.cos(chi))
    return ctf * np.exp(-float(bfactor_A2) * k2 / 4.0)


def lens_transfer(
    ny: int,
    nx: int,
    pixel_size_A: float,
    defocus_um: float,
    *,
    voltage_kV: float = VOLTAGE_KV,
    cs_mm: float = CS_MM,
    bfactor_A2: float = BFACTOR_A2,
) -> np.ndarray:
    """Transfer function of the objective lens for the exit wave, on the full FFT grid.

    Returns
    -------
    ndarray, complex128, shape (ny, nx)
        ``H(k) = exp(i χ(k)) · exp(−B k²/4)`` with ``χ`` as in :func:`ctf_2d` (Kirkland 2010,
        eq. 3.42, with our sign: ``Δz = −defocus`` > 0 in underfocus). ``H(0) = 1``. For a
        weak object, ``|IFT(H · FT(exp(iφ − α)))|² ≈ 1 − 2 sin χ ⊛ φ − 2 cos χ ⊛ α``
        (envelope aside), i.e. :func:`ctf_2d` with ``α/φ = A / sqrt(1 − A²)``.
    """
    chi, k2 = aberration_phase(ny, nx, pixel_size_A, defocus_um, voltage_kV=voltage_kV, cs_mm=cs_mm)
    return np.exp(1j * chi) * np.exp(-float(bfactor_A2) * k2 / 4.0)


def ice_phase_std_rad(path_A: float, pixel_size_A: float, voltage_kV: float = VOLTAGE_KV,
                      density_g_cm3: float = ICE_DENSITY_G_CM3) -> float:
    """Std (rad) of the ice's structural phase noise per pixel for an ice path of ``path_A`` Å.

    A pixel of area ``a = pixel_size²`` sees ``N`` water molecules along the path, mean
    ``n · path · a`` and variance ``S(0) · n · path · a`` (:data:`WATER_STRUCTURE_FACTOR_0`);
    each adds ``47.878 V·Å² · f_w(0)`` (V·Å³) of potential (:mod:`faket_dask.kernels.potential`).
    So the projected potential per pixel has std ``47.878 f_w sqrt(S(0) n path / a)`` (V·Å) and
    the phase ``σ_e(U)`` times that: ≈ 0.015 rad for 1280 Å of ice at 10 Å pixels, 300 kV.
    White at the pixel scale (a molecule is ~3 Å across).
    """
    if path_A <= 0:
        return 0.0
    n_per_A3 = density_g_cm3 * AVOGADRO / 18.015 * 1e-24
    f_w = sum(k * scattering_f0_A(el) for el, k in WATER.items())
    var = WATER_STRUCTURE_FACTOR_0 * n_per_A3 * path_A / pixel_size_A**2
    return interaction_constant(voltage_kV) * POTENTIAL_PER_SCATTERING_V_A2 * f_w * math.sqrt(var)


def detector_mtf(
    ny: int, nx: int, *, mtf_a: float = MTF_A, mtf_b: float = MTF_B, mtf_c: float = MTF_C
) -> np.ndarray:
    """Parametric detector MTF on the full FFT grid (counting-detector-like curve).

    ``MTF(f) = sinc(f/2) · [a / (1 + (f/b)²) + (1 − a) / (1 + (f/c)²)]`` with ``f`` the spatial
    frequency as a fraction of Nyquist (0..√2 in the corners) and ``sinc(x) = sin(πx)/(πx)``
    (the pixel aperture). ``MTF(0) = 1``; at Nyquist ≈ 0.64·(a/(1+1/b²) + (1−a)/(1+1/c²)).

    Returns
    -------
    ndarray, float64, shape (ny, nx)
    """
    f2 = freq_grid(ny, nx, 0.5)  # pixel 0.5 → Nyquist (1/(2·0.5)) = 1
    f = np.sqrt(f2)
    lor = mtf_a / (1.0 + f2 / mtf_b**2) + (1.0 - mtf_a) / (1.0 + f2 / mtf_c**2)
    return np.sinc(f / 2.0) * lor


def ice_thickness(angle_deg: float | np.ndarray, thickness0_A: float) -> np.ndarray:
    """Ice thickness along the beam (Å) at tilt θ: ``t0 / cos θ`` (a flat slab)."""
    return thickness0_A / np.cos(np.deg2rad(angle_deg))


def attenuation(angle_deg: float | np.ndarray, thickness0_A: float, mfp_A: float) -> np.ndarray:
    """Fraction of electrons kept after inelastic scattering: ``exp(−t(θ) / λ_in)``."""
    return np.exp(-ice_thickness(angle_deg, thickness0_A) / mfp_A)


def tilt_rng(seed: int, tomo: int, tilt: int) -> np.random.Generator:
    """numpy Generator for one tilt, keyed by ``(seed, tomo, tilt, stream)``.

    ``Philox(key=seed | tomo<<32 | tilt<<64 | MICROSCOPE_STREAM<<96)``: a counter-based
    generator whose draws depend only on these four words. Tasks hold whole tilts, so the
    result does not depend on the chunking or on the worker that runs the task.
    """
    for name, v in (("seed", seed), ("tomo", tomo), ("tilt", tilt)):
        if not 0 <= int(v) < 2**32:
            raise ValueError(f"{name} must be in [0, 2**32), got {v}")
    key = int(seed) | (int(tomo) << 32) | (int(tilt) << 64) | (MICROSCOPE_STREAM << 96)
    return np.random.Generator(np.random.Philox(key=key))


def expected_counts(
    potential_proj_VA: np.ndarray,
    angle_deg: float,
    pixel_size_A: float,
    *,
    dose_e_per_A2: float,
    absorption_proj_VA: np.ndarray | None = None,
    absorption_ratio: float = 0.0,
    defocus_um: float = DEFOCUS_UM,
    voltage_kV: float = VOLTAGE_KV,
    cs_mm: float = CS_MM,
    bfactor_A2: float = BFACTOR_A2,
    ice_thickness_A: float = ICE_THICKNESS_A,
    inelastic_mfp_A: float = INELASTIC_MFP_A,
    ice_phase_std_rad: float = 0.0,
    mtf_a: float = MTF_A,
    mtf_b: float = MTF_B,
    mtf_c: float = MTF_C,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Expected electron counts per pixel of one tilt (before shot noise).

    Parameters
    ----------
    potential_proj_VA : ndarray, shape (Y, X)
        Projected potential ``∫V dl`` of the whole tilt (V·Å, relative to ice; positive where
        there is matter, i.e. ``−noiseless · pixel_size_A``).
    angle_deg : float
        Tilt angle θ (degrees).
    pixel_size_A : float
        Pixel size (Å).
    dose_e_per_A2 : float
        Dose of this tilt (electrons / Å²).
    absorption_proj_VA : ndarray, shape (Y, X), optional
        Projected absorption potential ``∫W dl`` (V·Å). Default: ``absorption_ratio`` times
        ``potential_proj_VA``.
    absorption_ratio : float
        ``W / V`` when ``absorption_proj_VA`` is not given (default 0: a pure phase object).
    ice_phase_std_rad : float
        Std (rad) of the white ice phase per pixel at this tilt (see :func:`ice_phase_std_rad`;
        the stage passes the value for ``ice_thickness_A / cos θ``). Needs ``rng`` when > 0.
        Default 0 (no ice noise, no ``rng`` needed).
    other keywords
        See :func:`lens_transfer`, :func:`detector_mtf`, :func:`attenuation`; defaults are the
        reference microscope's (:mod:`faket_dask.params.microscope`).

    Returns
    -------
    ndarray, float64, shape (Y, X)
        Λ ≥ 0 (electrons per pixel). For a pure weak-phase object its mean is
        ``dose_px · a(θ)``; absorption and the envelope take some electrons away.

    Raises
    ------
    ValueError
        ``ice_phase_std_rad > 0`` without ``rng``, or shapes that differ.
    """
    v = np.asarray(potential_proj_VA, dtype=np.float64)
    ny, nx = v.shape
    sigma = interaction_constant(voltage_kV)
    phase = sigma * v
    if absorption_proj_VA is None:
        alpha = absorption_ratio * phase
    else:
        w = np.asarray(absorption_proj_VA, dtype=np.float64)
        if w.shape != v.shape:
            raise ValueError(f"absorption {w.shape} and potential {v.shape} differ in shape")
        alpha = sigma * w
    if ice_phase_std_rad > 0:
        if rng is None:
            raise ValueError("expected_counts: ice_phase_std_rad > 0 needs an rng")
        phase = phase + rng.standard_normal((ny, nx)) * ice_phase_std_rad
    wave = np.exp(1j * phase - alpha)
    h = lens_transfer(ny, nx, pixel_size_A, defocus_um, voltage_kV=voltage_kV, cs_mm=cs_mm,
                      bfactor_A2=bfactor_A2)
    image = np.fft.ifft2(np.fft.fft2(wave) * h)
    intensity = image.real ** 2 + image.imag ** 2
    dose_px = dose_e_per_A2 * pixel_size_A**2
    lam = dose_px * float(attenuation(angle_deg, ice_thickness_A, inelastic_mfp_A)) * intensity
    mtf = detector_mtf(ny, nx, mtf_a=mtf_a, mtf_b=mtf_b, mtf_c=mtf_c)
    lam = np.fft.irfft2(np.fft.rfft2(lam) * mtf[:, : nx // 2 + 1], s=(ny, nx))
    return np.maximum(lam, 0.0)


def image_tilt(
    potential_proj_VA: np.ndarray,
    angle_deg: float,
    pixel_size_A: float,
    *,
    seed: int,
    tomo: int,
    tilt: int,
    **params: float,
) -> np.ndarray:
    """Measured counts of one whole tilt: Poisson shot noise on :func:`expected_counts`.

    Parameters
    ----------
    potential_proj_VA : ndarray, shape (Y, X)
        Projected potential (V·Å, positive = matter).
    angle_deg, pixel_size_A : float
        Tilt angle (degrees), pixel size (Å).
    seed, tomo, tilt : int
        Key of the per-tilt generator (:func:`tilt_rng`); ``tilt`` is the tilt's index.
    **params
        Keywords of :func:`expected_counts` (dose, absorption, optics, ice, MTF).

    Returns
    -------
    ndarray, float32, shape (Y, X)
        Integer electron counts. Deterministic in ``(seed, tomo, tilt)`` and the inputs.
    """
    rng = tilt_rng(seed, tomo, tilt)
    lam = expected_counts(potential_proj_VA, angle_deg, pixel_size_A, rng=rng, **params)
    return rng.poisson(lam).astype(np.float32)
