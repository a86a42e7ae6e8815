"""Parameters of the reference microscope (``docs/microscope.md``), the one owner of their defaults.

The defaults describe a 300 kV Krios-like instrument with a counting detector, ~1500 Å of
amorphous ice and 120 e/Å² over the whole series (typical cryo-ET settings; the method itself,
``docs/method.md §1``, only needs *some* measured-like style data). The kernels
(:mod:`faket_dask.kernels.microscope`) take the same constants as their keyword defaults, the
stage and the ``microscope`` command take them from :class:`MicroscopeParams`.

Torch-free (pydantic only), so :mod:`faket_dask.config` can compose it without importing any
stage or kernel.
"""
from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AMPLITUDE_CONTRAST",
    "BFACTOR_A2",
    "CS_MM",
    "DEFOCUS_UM",
    "ICE_PHASE_STD_RAD",
    "ICE_THICKNESS_A",
    "INELASTIC_MFP_A",
    "MAX_PHASE_RAD",
    "MTF_A",
    "MTF_B",
    "MTF_C",
    "MicroscopeParams",
    "TOTAL_DOSE_E_PER_A2",
    "VOLTAGE_KV",
]

#: Accelerating voltage (kV): the usual cryo-ET instrument (Titan Krios).
VOLTAGE_KV: Final = 300.0
#: Spherical aberration (mm) of the Krios objective lens.
CS_MM: Final = 2.7
#: Defocus (µm); negative = underfocus, a typical tomography setting.
DEFOCUS_UM: Final = -3.0
#: Amplitude-contrast fraction A (0..1) usual for vitreous ice samples.
AMPLITUDE_CONTRAST: Final = 0.07
#: B-factor of the CTF envelope ``exp(−B k²/4)`` (Å²).
BFACTOR_A2: Final = 100.0
#: Total dose of the series (e/Å²), spread evenly over the tilts.
TOTAL_DOSE_E_PER_A2: Final = 120.0
#: Ice thickness at 0° (Å); grows as 1/cos θ.
ICE_THICKNESS_A: Final = 1500.0
#: Inelastic mean free path of 300 kV electrons in ice (Å), ~350 nm.
INELASTIC_MFP_A: Final = 3500.0
#: Std of the white ice phase per pixel at 0° (rad).
ICE_PHASE_STD_RAD: Final = 0.02
#: Phase of the densest pixel (rad) when the phase scale is derived from the data.
MAX_PHASE_RAD: Final = 0.2
#: Detector MTF ``sinc(f/2)·[a/(1+(f/b)²) + (1−a)/(1+(f/c)²)]``, f in Nyquist: a counting
#: detector-like curve (``docs/microscope.md``).
MTF_A: Final = 0.7
MTF_B: Final = 0.2
MTF_C: Final = 0.8


class MicroscopeParams(BaseModel):
    """Parameters of the reference microscope (units in the names; defaults above).

    Unknown keys are rejected (``extra="forbid"``); the model is frozen, so one instance can be
    shared by the config and the stage.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    voltage_kV: float = Field(VOLTAGE_KV, gt=0)
    cs_mm: float = Field(CS_MM, ge=0)
    defocus_um: float = Field(DEFOCUS_UM, description="negative = underfocus")
    amplitude_contrast: float = Field(AMPLITUDE_CONTRAST, ge=0, le=1)
    bfactor_A2: float = Field(BFACTOR_A2, ge=0)
    total_dose_e_per_A2: float = Field(TOTAL_DOSE_E_PER_A2, gt=0, description="spread evenly over the tilts")
    ice_thickness_A: float = Field(ICE_THICKNESS_A, ge=0, description="at 0°; grows as 1/cos θ")
    inelastic_mfp_A: float = Field(INELASTIC_MFP_A, gt=0)
    ice_phase_std_rad: float = Field(ICE_PHASE_STD_RAD, ge=0, description="white ice phase per pixel at 0°")
    phase_per_unit: float | None = Field(
        None, description="rad per unit projected density; None: max_phase_rad / max|V|"
    )
    max_phase_rad: float = Field(MAX_PHASE_RAD, gt=0, description="phase of the densest pixel when phase_per_unit is None")
    mtf_a: float = Field(MTF_A, ge=0, le=1)
    mtf_b: float = Field(MTF_B, gt=0)
    mtf_c: float = Field(MTF_C, gt=0)
