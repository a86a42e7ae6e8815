"""Reference-microscope kernels: a physics-based stand-in for a real cryo-ET instrument.

Pure numpy: no dask, no I/O. The stage (:mod:`faket_dask.stages.microscope`) calls
:func:`image_tilt` once per *whole* tilt, because the CTF and the detector MTF are 2D Fourier
filters that need the full ``(Y, X)`` image.

Model (one tilt at angle θ, see ``docs/microscope.md``)
--------------------------------------------------------
1. Phase: ``φ = phase_per_unit · V`` (rad), ``V`` the projected density (positive where there
   is matter). Amorphous ice adds a zero-mean white Gaussian phase ``φ_ice`` whose variance
   grows with the ice thickness ``t(θ) = t0 / cos θ``.
2. Weak-phase-object image (unit incident intensity)::

       I(k) = δ(k) + 2 · CTF(k) · Φ(k),     Φ = FT(φ + φ_ice)

   with ``CTF(k) = −[√(1−A²) sin χ(k) + A cos χ(k)] · exp(−B k²/4)`` and
   ``χ(k) = π λ Δz k² − (π/2) Cs λ³ k⁴``, ``Δz = −defocus`` (Å; *underfocus is a negative*
   ``defocus`` *and a positive* ``Δz``). Hence ``CTF(0) = −A``: at low frequencies matter is
   dark, as in a real underfocused bright-field image.
3. Ice attenuation (inelastic scattering removed by the energy filter / lost):
   ``a(θ) = exp(−t(θ) / λ_in)``.
4. Expected counts: ``Λ = MTF ⊛ (dose_px · a(θ) · max(I, 0))``, clipped at 0, where
   ``dose_px = dose_per_tilt (e/Å²) · pixel_size²``. The MTF has ``MTF(0) = 1`` so the mean is
   kept.
5. Counts: ``N ~ Poisson(Λ)`` per pixel (exact sampler, numpy's Generator).

Simplification: the detector MTF is applied to the *expected* image, before the shot noise,
so the recorded noise is exactly Poisson (variance = mean). A real counting detector blurs
after detection (which also colours the noise); we trade that for a cleanly testable model.
"""
from __future__ import annotations

import math

import numpy as np

from faket_dask.params import (
    AMPLITUDE_CONTRAST,
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

__all__ = [
    "attenuation",
    "ctf_2d",
    "detector_mtf",
    "expected_counts",
    "freq_grid",
    "image_tilt",
    "ice_thickness",
    "tilt_rng",
    "wavelength_A",
]

#: Stream word of the per-tilt generator key; distinct from the noise stage's streams.
MICROSCOPE_STREAM = 0x4D494352  # "MICR"


def wavelength_A(voltage_kV: float) -> float:
    """Relativistic electron wavelength (Å) at an accelerating voltage (kV).

    ``λ = h / sqrt(2 m e V (1 + e V / (2 m c²)))`` = ``12.2643 / sqrt(V (1 + 0.978466e-6 V))``
    with V in volts; 0.019687 Å at 300 kV.
    """
    v = float(voltage_kV) * 1e3
    return 12.264259 / math.sqrt(v * (1.0 + 0.97846e-6 * v))


def freq_grid(ny: int, nx: int, pixel_size_A: float) -> np.ndarray:
    """Squared spatial frequency ``k²`` (1/Å²) of a full ``(ny, nx)`` FFT grid (numpy order)."""
    ky = np.fft.fftfreq(ny, d=pixel_size_A)
    kx = np.fft.fftfreq(nx, d=pixel_size_A)
    return ky[:, None] ** 2 + kx[None, :] ** 2


def ctf_2d(
    ny: int,
    nx: int,
    pixel_size_A: float,
    defocus_um: float,
    *,
    voltage_kV: float = VOLTAGE_KV,
    cs_mm: float = CS_MM,
    amplitude_contrast: float = AMPLITUDE_CONTRAST,
    bfactor_A2: float = 0.0,
) -> np.ndarray:
    """Isotropic contrast transfer function on the full FFT grid.

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
        (0..1) and B-factor of the envelope ``exp(−B k²/4)`` (Å²). Defaults: the reference
        microscope's (:mod:`faket_dask.params.microscope`), except ``bfactor_A2 = 0``: the
        bare CTF, without envelope.

    Returns
    -------
    ndarray, float64, shape (ny, nx)
        ``CTF(k) = −[√(1−A²) sin χ + A cos χ] · exp(−B k²/4)`` with
        ``χ = π λ Δz k² − (π/2) Cs λ³ k⁴``, ``Δz = −defocus`` (Å). ``CTF(0) = −A``. The image of
        a weak phase φ is ``I = 1 + 2 · IFT(CTF · FT(φ))``.
    """
    lam = wavelength_A(voltage_kV)
    dz = -float(defocus_um) * 1e4  # Å, positive for underfocus
    cs = float(cs_mm) * 1e7  # Å
    k2 = freq_grid(ny, nx, pixel_size_A)
    chi = math.pi * lam * dz * k2 - 0.5 * math.pi * cs * lam**3 * k2**2
    a = float(amplitude_contrast)
    ctf = -(math.sqrt(1.0 - a * a) * np.sin(chi) + a * np.cos(chi))
    return ctf * np.exp(-float(bfactor_A2) * k2 / 4.0)


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
    density_proj: np.ndarray,
    angle_deg: float,
    pixel_size_A: float,
    *,
    dose_e_per_A2: float,
    phase_per_unit: float,
    defocus_um: float = DEFOCUS_UM,
    voltage_kV: float = VOLTAGE_KV,
    cs_mm: float = CS_MM,
    amplitude_contrast: float = AMPLITUDE_CONTRAST,
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
    density_proj : ndarray, shape (Y, X)
        Projected density V of the whole tilt (positive = matter; i.e. ``−noiseless``).
    angle_deg : float
        Tilt angle θ (degrees).
    pixel_size_A : float
        Pixel size (Å).
    dose_e_per_A2 : float
        Dose of this tilt (electrons / Å²).
    phase_per_unit : float
        Phase shift (rad) per unit of ``density_proj``.
    ice_phase_std_rad : float
        Std (rad) of the white ice phase per pixel at θ = 0; scaled by ``sqrt(1/cos θ)``
        (variance ∝ thickness). Needs ``rng`` when > 0. Default 0 (no ice phase, no ``rng``
        needed); the stage passes :data:`faket_dask.params.ICE_PHASE_STD_RAD`.
    other keywords
        See :func:`ctf_2d`, :func:`detector_mtf`, :func:`attenuation`; defaults are the
        reference microscope's (:mod:`faket_dask.params.microscope`).

    Returns
    -------
    ndarray, float64, shape (Y, X)
        Λ ≥ 0 (electrons per pixel). Its mean is ``dose_px · a(θ)`` up to the clipping at 0
        (only reached for strong phases).
    """
    v = np.asarray(density_proj, dtype=np.float64)
    ny, nx = v.shape
    phase = phase_per_unit * v
    if ice_phase_std_rad > 0:
        if rng is None:
            raise ValueError("expected_counts: ice_phase_std_rad > 0 needs an rng")
        std = ice_phase_std_rad * math.sqrt(1.0 / math.cos(math.radians(angle_deg)))
        ice = rng.standard_normal((ny, nx)) * std
        # The ice's mean phase is a constant shift with no contrast; its mean effect on the
        # dose is the attenuation below. Removing it keeps the mean count exact.
        phase = phase + (ice - ice.mean())
    ctf = ctf_2d(
        ny, nx, pixel_size_A, defocus_um, voltage_kV=voltage_kV, cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast, bfactor_A2=bfactor_A2,
    )
    intensity = 1.0 + 2.0 * np.fft.irfft2(np.fft.rfft2(phase) * ctf[:, : nx // 2 + 1], s=(ny, nx))
    dose_px = dose_e_per_A2 * pixel_size_A**2
    lam = dose_px * float(attenuation(angle_deg, ice_thickness_A, inelastic_mfp_A)) * np.maximum(intensity, 0.0)
    mtf = detector_mtf(ny, nx, mtf_a=mtf_a, mtf_b=mtf_b, mtf_c=mtf_c)
    lam = np.fft.irfft2(np.fft.rfft2(lam) * mtf[:, : nx // 2 + 1], s=(ny, nx))
    return np.maximum(lam, 0.0)


def image_tilt(
    density_proj: np.ndarray,
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
    density_proj : ndarray, shape (Y, X)
        Projected density (positive = matter).
    angle_deg, pixel_size_A : float
        Tilt angle (degrees), pixel size (Å).
    seed, tomo, tilt : int
        Key of the per-tilt generator (:func:`tilt_rng`); ``tilt`` is the tilt's index.
    **params
        Keywords of :func:`expected_counts` (dose, phase scale, optics, ice, MTF).

    Returns
    -------
    ndarray, float32, shape (Y, X)
        Integer electron counts. Deterministic in ``(seed, tomo, tilt)`` and the inputs.
    """
    rng = tilt_rng(seed, tomo, tilt)
    lam = expected_counts(density_proj, angle_deg, pixel_size_A, rng=rng, **params)
    return rng.poisson(lam).astype(np.float32)
