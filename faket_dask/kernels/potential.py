"""Electrostatic potential in volts: the physical constants and the mean potential of materials.

The one owner of the physics that turns matter into the potential a microscope sees. Pure
numpy plus gemmi's tables of electron scattering factors (no dask, no I/O).

Constants and formulas, with their sources
------------------------------------------
* Relativistic electron wavelength ``λ = h / sqrt(2 m0 e U (1 + e U / (2 m0 c²)))``
  = ``12.2643 / sqrt(U (1 + 0.97848e-6 U))`` Å with U in volts (Kirkland, *Advanced Computing in
  Electron Microscopy*, 2nd ed. 2010, eq. 2.5); 0.019687 Å at 300 kV.
* Interaction constant ``σ_e(U) = (2π / (λ U)) · (m0 c² + e U) / (2 m0 c² + e U)`` rad/(V·Å)
  (Kirkland 2010, eq. 5.6): the phase shift per volt and Å of projected potential;
  9.24e-4 at 100 kV, 7.29e-4 at 200 kV, 6.53e-4 at 300 kV.
* ``h² / (2π m0 e) = 47.878 V·Å²`` (Kirkland 2010, eq. 5.9): the potential of an atom is this
  constant times the inverse Fourier transform of its electron scattering factor ``f_e(s)``
  (Å), so its integral is ``∫V d³r = 47.878 V·Å² · f_e(0)``.
* ``f_e``: the 5-Gaussian fits of International Tables for Crystallography Vol. C, Table
  4.3.2.2 (Peng et al. 1996, neutral atoms), as shipped by gemmi (``gemmi.Element(...).c4322``);
  ``f_e(0) = Σ a_i``.
* Densities: vitreous (low-density amorphous) ice 0.94 g/cm³ (Dubochet et al. 1988, Q. Rev.
  Biophys. 21:129); protein 1.35 g/cm³ (Fischer, Polikarpov & Craievich 2004, Protein Sci.
  13:2825); gold 19.32 g/cm³ (CRC Handbook of Chemistry and Physics).
* Average protein composition: the "averagine" residue C4.9384 H7.7583 N1.3577 O1.4773
  S0.0417, 111.1254 Da (Senko, Beu & McLafferty 1995, J. Am. Soc. Mass Spectrom. 6:229).

The mean potential of a material of mass density ρ (g/cm³) made of a formula unit of mass M
(Da) with ``n_i`` atoms of element ``i`` is ``47.878 · (ρ N_A / M) · Σ n_i f_i(0)`` (V; number
density in 1/Å³). Atoms are neutral (no ionic or bonding redistribution), the usual
independent-atom approximation of simulators (TEM-simulator, Parakeet, PolNet); it gives 4.58
V for vitreous ice (measured mean inner potentials of amorphous ice: 3.5-4.9 V), 7.9 V for
protein and 29.9 V for gold.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping

__all__ = [
    "AVOGADRO",
    "GOLD_ABSORPTION_RATIO",
    "LIGHT_ATOM_ABSORPTION_RATIO",
    "GOLD_DENSITY_G_CM3",
    "ICE_DENSITY_G_CM3",
    "POTENTIAL_PER_SCATTERING_V_A2",
    "PROTEIN_DENSITY_G_CM3",
    "PROTEIN_RESIDUE",
    "PROTEIN_RESIDUE_DA",
    "WATER",
    "gold_potential_V",
    "ice_potential_V",
    "interaction_constant",
    "mean_potential_V",
    "protein_potential_V",
    "scattering_f0_A",
    "wavelength_A",
]

#: Physical constants (CODATA 2018, exact where defined).
PLANCK_J_S = 6.62607015e-34
ELECTRON_MASS_KG = 9.1093837015e-31
ELEMENTARY_CHARGE_C = 1.602176634e-19
LIGHT_SPEED_M_S = 299792458.0
AVOGADRO = 6.02214076e23
#: Electron rest energy m0 c² (eV).
ELECTRON_REST_ENERGY_EV = ELECTRON_MASS_KG * LIGHT_SPEED_M_S ** 2 / ELEMENTARY_CHARGE_C

#: h² / (2π m0 e) in V·Å² (Kirkland 2010, eq. 5.9): 47.878.
POTENTIAL_PER_SCATTERING_V_A2 = (
    PLANCK_J_S ** 2 / (2 * math.pi * ELECTRON_MASS_KG * ELEMENTARY_CHARGE_C) * 1e20
)

#: Vitreous ice, g/cm³ (Dubochet et al. 1988).
ICE_DENSITY_G_CM3 = 0.94
#: Protein, g/cm³ (Fischer et al. 2004).
PROTEIN_DENSITY_G_CM3 = 1.35
#: Gold, g/cm³ (CRC Handbook).
GOLD_DENSITY_G_CM3 = 19.32

#: Absorption (imaginary) potential as a fraction of the real potential for biological matter
#: (light atoms): 0.07, the amplitude-contrast fraction ``A`` usually assumed for proteins in ice
#: (Toyoshima & Unwin 1988, Ultramicroscopy 25:279 measured 0.07 ± 0.02; ``W/V = A/sqrt(1-A²)``
#: ≈ 0.0702).
LIGHT_ATOM_ABSORPTION_RATIO = 0.07 / math.sqrt(1 - 0.07 ** 2)
#: The same for gold: heavy atoms scatter a large part of the beam outside the objective
#: aperture; TEM-simulator and Parakeet model it as a large imaginary potential. With 0.3 the
#: centre of a 10 nm bead transmits ``exp(-2 σ_e W t)`` ≈ 37 % of the beam at 300 kV: gold is
#: the darkest object of a tomogram, as in real data (a model choice, ``docs/microscope.md``).
GOLD_ABSORPTION_RATIO = 0.3

#: One water molecule.
WATER: Mapping[str, float] = {"O": 1.0, "H": 2.0}
#: The averagine residue (Senko et al. 1995) and its mass (Da).
PROTEIN_RESIDUE: Mapping[str, float] = {"C": 4.9384, "H": 7.7583, "N": 1.3577, "O": 1.4773,
                                        "S": 0.0417}
PROTEIN_RESIDUE_DA = 111.1254


def wavelength_A(voltage_kV: float) -> float:
    """Relativistic electron wavelength (Å) at an accelerating voltage (kV).

    ``λ = h / sqrt(2 m0 e U (1 + e U / (2 m0 c²)))`` (Kirkland 2010, eq. 2.5); 0.019687 Å at
    300 kV.

    Raises
    ------
    ValueError
        ``voltage_kV <= 0``.
    """
    u = float(voltage_kV) * 1e3
    if not u > 0:
        raise ValueError(f"voltage must be positive, got {voltage_kV} kV")
    p = 2 * ELECTRON_MASS_KG * ELEMENTARY_CHARGE_C * u * (1 + u / (2 * ELECTRON_REST_ENERGY_EV))
    return PLANCK_J_S / math.sqrt(p) * 1e10


def interaction_constant(voltage_kV: float) -> float:
    """σ_e(U) in rad/(V·Å): phase shift per volt·Å of projected potential.

    ``σ_e = (2π / (λ U)) · (m0 c² + e U) / (2 m0 c² + e U)`` (Kirkland 2010, eq. 5.6):
    9.24e-4 at 100 kV, 7.29e-4 at 200 kV, 6.53e-4 at 300 kV.

    Raises
    ------
    ValueError
        ``voltage_kV <= 0``.
    """
    u = float(voltage_kV) * 1e3
    lam = wavelength_A(voltage_kV)
    e0 = ELECTRON_REST_ENERGY_EV
    return 2 * math.pi / (lam * u) * (e0 + u) / (2 * e0 + u)


@functools.lru_cache(maxsize=None)
def scattering_f0_A(element: str) -> float:
    """Electron scattering factor at zero angle, ``f_e(0) = Σ a_i`` (Å), of a neutral atom.

    ITC Vol. C Table 4.3.2.2 (Peng et al. 1996) via gemmi (``Element.c4322``); e.g. 0.529 for H,
    2.509 for C, 1.983 for O, 10.57 for Au.

    Raises
    ------
    ValueError
        Unknown element symbol.
    """
    import gemmi

    el = gemmi.Element(element)
    if el.atomic_number == 0 and element.strip().upper() not in ("X", ""):
        raise ValueError(f"unknown element {element!r}")
    coefs = el.c4322.get_coefs()
    return float(sum(coefs[:5]))


def mean_potential_V(density_g_cm3: float, formula: Mapping[str, float], mass_Da: float) -> float:
    """Mean potential (V) of a homogeneous material of independent neutral atoms.

    ``47.878 V·Å² · (ρ N_A / M) · Σ n_i f_i(0)``, with the number density of formula units
    ``ρ N_A / M`` in 1/Å³ (ρ in g/cm³, M in Da; 1 cm³ = 1e24 Å³).

    Parameters
    ----------
    density_g_cm3 : float
        Mass density (g/cm³).
    formula : mapping of str to float
        Atoms of each element per formula unit.
    mass_Da : float
        Mass of one formula unit (Da = g/mol).
    """
    n_per_A3 = density_g_cm3 * AVOGADRO / mass_Da * 1e-24
    f0 = sum(n * scattering_f0_A(el) for el, n in formula.items())
    return POTENTIAL_PER_SCATTERING_V_A2 * n_per_A3 * f0


def _formula_mass(formula: Mapping[str, float]) -> float:
    import gemmi

    return float(sum(n * gemmi.Element(el).weight for el, n in formula.items()))


def ice_potential_V(density_g_cm3: float = ICE_DENSITY_G_CM3) -> float:
    """Mean potential of vitreous ice (V): water at ``density_g_cm3`` (≈ 4.58 V at 0.94)."""
    return mean_potential_V(density_g_cm3, WATER, _formula_mass(WATER))


def protein_potential_V(density_g_cm3: float = PROTEIN_DENSITY_G_CM3) -> float:
    """Mean potential of protein (V, absolute, not relative to ice): averagine residues at
    ``density_g_cm3`` (≈ 7.9 V at 1.35), hydrogens included."""
    return mean_potential_V(density_g_cm3, PROTEIN_RESIDUE, PROTEIN_RESIDUE_DA)


def gold_potential_V(density_g_cm3: float = GOLD_DENSITY_G_CM3) -> float:
    """Mean potential of gold (V, absolute): Au at ``density_g_cm3`` (≈ 29.9 V at 19.32)."""
    return mean_potential_V(density_g_cm3, {"Au": 1.0}, _formula_mass({"Au": 1.0}))


# -- lipid bilayers ------------------------------------------------------------------------------
# A POPC bilayer (the usual model membrane; Kučerka, Nieh & Katsaras 2011, Biochim. Biophys.
# Acta 1808:2761, fluid phase at 30 °C, X-ray + neutron scattering): area per lipid 64.3 Å²,
# lipid volume 1256 Å³, head-group (phosphate-phosphate) distance D_HH ≈ 37 Å. Component
# volumes: the PC head group (phosphocholine, glycerol and the two carbonyls, C10H18NO8P; Nagle
# & Tristram-Nagle 2000, Biochim. Biophys. Acta 1469:159) takes 331 Å³ (the V_HL Kučerka et al.
# use for PC lipids); the two hydrocarbon chains (C32H64) take the rest, 925 Å³, so the
# hydrocarbon core is 2 · 925 / 64.3 = 28.8 Å thick.
__all__ += [
    "PC_HEADGROUP",
    "PC_HEADGROUP_VOLUME_A3",
    "POPC_AREA_A2",
    "POPC_CHAINS",
    "POPC_CHAIN_VOLUME_A3",
    "POPC_DHH_A",
    "electron_density_potential_V",
    "electrons",
    "formula_potential_V",
    "ice_electron_density",
    "lipid_chain_potential_V",
    "lipid_headgroup_potential_V",
    "protein_electron_density",
]

#: POPC area per lipid (Å²) and head-group distance D_HH (Å), fluid phase at 30 °C (Kučerka et
#: al. 2011).
POPC_AREA_A2 = 64.3
POPC_DHH_A = 37.0
#: PC head group including glycerol and carbonyls (Nagle & Tristram-Nagle 2000) and its volume
#: (Å³, Kučerka et al. 2011).
PC_HEADGROUP: Mapping[str, float] = {"C": 10.0, "H": 18.0, "N": 1.0, "O": 8.0, "P": 1.0}
PC_HEADGROUP_VOLUME_A3 = 331.0
#: The two POPC chains (palmitoyl + oleoyl without their carbonyls) and their volume (Å³):
#: lipid volume 1256 Å³ minus the head group.
POPC_CHAINS: Mapping[str, float] = {"C": 32.0, "H": 64.0}
POPC_CHAIN_VOLUME_A3 = 1256.0 - PC_HEADGROUP_VOLUME_A3


def electrons(formula: Mapping[str, float]) -> float:
    """Electrons of a neutral formula unit (sum of atomic numbers)."""
    import gemmi

    return float(sum(n * gemmi.Element(el).atomic_number for el, n in formula.items()))


def formula_potential_V(formula: Mapping[str, float], volume_A3: float) -> float:
    """Mean potential (V, absolute) of independent neutral atoms ``formula`` in ``volume_A3``:
    ``47.878 V·Å² · Σ n_i f_i(0) / volume`` (the formula of :func:`mean_potential_V` with the
    volume given instead of the density)."""
    f0 = sum(n * scattering_f0_A(el) for el, n in formula.items())
    return POTENTIAL_PER_SCATTERING_V_A2 * f0 / float(volume_A3)


def lipid_headgroup_potential_V() -> float:
    """Independent-atom mean potential (V, absolute) of the PC head group in its volume
    (≈ 8.41 V, 3.84 V above ice)."""
    return formula_potential_V(PC_HEADGROUP, PC_HEADGROUP_VOLUME_A3)


def lipid_chain_potential_V() -> float:
    """Independent-atom mean potential (V, absolute) of the POPC chains in their volume
    (≈ 5.91 V: 1.33 V ABOVE ice, although the hydrocarbon core scatters less than water: the
    independent-atom model gives each H its free-atom scattering factor, 0.53 Å, the largest
    per electron of all elements, while a bonded H's electron sits in the C-H bond; the error
    grows with the H content, which is why :func:`electron_density_potential_V` is used for
    bilayers)."""
    return formula_potential_V(POPC_CHAINS, POPC_CHAIN_VOLUME_A3)


def ice_electron_density() -> float:
    """Electrons per Å³ of vitreous ice at :data:`ICE_DENSITY_G_CM3` (≈ 0.314)."""
    return electrons(WATER) * ICE_DENSITY_G_CM3 * AVOGADRO / _formula_mass(WATER) * 1e-24


def protein_electron_density() -> float:
    """Electrons per Å³ of protein (averagine at :data:`PROTEIN_DENSITY_G_CM3`, ≈ 0.434)."""
    return electrons(PROTEIN_RESIDUE) * PROTEIN_DENSITY_G_CM3 * AVOGADRO / PROTEIN_RESIDUE_DA * 1e-24


def electron_density_potential_V(rho_e: float) -> float:
    """Potential relative to ice (V) of light-atom matter of electron density ``rho_e`` (e/Å³).

    Linear in the electron density between the two anchors of this module, vitreous ice (0 V
    at :func:`ice_electron_density`) and protein (``protein_potential_V() - ice_potential_V()``
    ≈ 3.36 V at :func:`protein_electron_density`): 27.9 V per e/Å³. Used for lipid bilayers,
    whose X-ray electron-density profiles are measured (Kučerka et al. 2011) and whose
    hydrocarbon core the independent-atom model puts above water
    (:func:`lipid_chain_potential_V`), against the measured density (0.277 e/Å³ for POPC
    chains, below ice's 0.314). Bilayer and protein keep the contrast ratio of their electron
    densities: head groups (0.495 e/Å³) +5.1 V, chains -1.05 V.
    """
    rho_i, rho_p = ice_electron_density(), protein_electron_density()
    return (float(rho_e) - rho_i) / (rho_p - rho_i) * (protein_potential_V() - ice_potential_V())
