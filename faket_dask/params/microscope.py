"""Parameters of the reference microscope (``docs/microscope.md``), the one owner of their defaults.

The defaults describe a 300 kV Krios-like instrument with a counting detector, 3 µm underfocus,
ice as thick as the specimen and 120 e/Å² over the whole series (typical cryo-ET settings; the method itself,
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
    "BFACTOR_A2",
    "CS_MM",
    "DEFOCUS_UM",
    "ICE_THICKNESS_A",
    "INELASTIC_MFP_A",
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
#: B-factor of the envelope ``exp(−B k²/4)`` (Å²): partial coherence, drift and the like.
BFACTOR_A2: Final = 100.0
#: Total dose of the series (e/Å²), spread evenly over the tilts.
TOTAL_DOSE_E_PER_A2: Final = 120.0
#: Ice thickness at 0° (Å) when neither the parameters nor a specimen give one.
ICE_THICKNESS_A: Final = 1500.0
#: Inelastic mean free path of 300 kV electrons in ice (Å), ~350 nm (Rice et al. 2018,
#: "Routine determination of ice thickness for cryo-EM grids", J. Struct. Biol. 204:38).
INELASTIC_MFP_A: Final = 3500.0
#: Detector MTF ``sinc(f/2)·[a/(1+(f/b)²) + (1−a)/(1+(f/c)²)]``, f in Nyquist: a counting
#: detector-like curve (``docs/microscope.md``).
MTF_A: Final = 0.7
MTF_B: Final = 0.2
MTF_C: Final = 0.8


class MicroscopeParams(BaseModel):
    """Parameters of the reference microscope (units in the names; defaults above).

    The specimen is an electrostatic potential in volts, so no parameter scales it: the phase is
    the interaction constant σ_e(U) times the projected potential (``docs/microscope.md``).
    Unknown keys are rejected (``extra="forbid"``); the model is frozen, so one instance can be
    shared by the config and the stage.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    voltage_kV: float = Field(VOLTAGE_KV, gt=0)
    cs_mm: float = Field(CS_MM, ge=0)
    defocus_um: float = Field(DEFOCUS_UM, description="negative = underfocus")
    bfactor_A2: float = Field(BFACTOR_A2, ge=0)
    total_dose_e_per_A2: float = Field(TOTAL_DOSE_E_PER_A2, gt=0, description="spread evenly over the tilts")
    ice_thickness_A: float | None = Field(
        None, ge=0, description="at 0°, path 1/cos θ; None: the specimen's z extent "
                                f"(or {ICE_THICKNESS_A:g} Å when there is no specimen)")
    inelastic_mfp_A: float = Field(INELASTIC_MFP_A, gt=0)
    ice_phase_std_rad: float | None = Field(
        None, ge=0, description="ice structural phase noise per pixel at 0°; None: from the "
                                "ice's density fluctuations (docs/microscope.md)")
    absorption_ratio: float | None = Field(
        None, ge=0, description="imaginary/real potential when the specimen has no absorption "
                                "potential; None: light atoms' 0.07")
    mtf_a: float = Field(MTF_A, ge=0, le=1)
    mtf_b: float = Field(MTF_B, gt=0)
    mtf_c: float = Field(MTF_C, gt=0)
