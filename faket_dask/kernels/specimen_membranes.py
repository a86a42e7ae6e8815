"""Lipid vesicles: spherical or ellipsoidal shells with a bilayer potential profile in volts.

Pure numpy/scipy (no dask, no I/O).

The profile across the bilayer (volts relative to vitreous ice, ``u`` = signed distance from
the mid-surface, Å) is two head-group Gaussians at ``u = ±D_HH/2`` above ice and the
hydrocarbon core between them below ice::

    V(u) = A_H [G(u - D_HH/2) + G(u + D_HH/2)] + V_C · ½ [erf((D_C - u)/√2 s) + erf((D_C + u)/√2 s)]

Why not the independent-atom model: computed from the compositions with
:func:`~faket_dask.kernels.potential.formula_potential_V`, the PC head group gives 8.41 V
(+3.84 V above ice) but the hydrocarbon chains 5.91 V, +1.33 V ABOVE ice
(:func:`~faket_dask.kernels.potential.lipid_chain_potential_V` says why: free-atom hydrogens),
while the bilayer's measured electron-density profile has the core below water (the dip of
every X-ray profile; Kučerka, Nieh & Katsaras 2011, Biochim. Biophys. Acta 1808:2761). So the
profile is that measured one, POPC at 30 °C, converted to volts by
:func:`~faket_dask.kernels.potential.electron_density_potential_V` (linear in electron density
between ice and protein):

* core: the chains' 256 electrons in 925 Å³ (0.277 e/Å³) → ``V_C`` = -1.05 V, half-thickness
  ``D_C`` = 925 / 64.3 = 14.4 Å, edge ``s`` = 2.5 Å (the hydrocarbon error-function width of
  Kučerka's scattering-density profile model, Kučerka et al. 2008 Biophys. J. 95:2356);
* head groups: their excess over ice, (0.495 - 0.314) e/Å³ × 331 Å³ per 64.3 Å² of leaflet,
  → 26.1 V·Å per leaflet as one Gaussian of width :data:`HEAD_SIGMA_A` = 3.5 Å (the
  phosphate-choline and carbonyl-glycerol Gaussians of the same model, σ ≈ 2.5 Å, ≈ 4 Å apart,
  merged) at ``±D_HH/2`` with ``D_HH`` = 37 Å: peak +2.97 V.

At pixel sizes where these widths are below :data:`~.specimen_templates.MIN_SIGMA_VOXELS`
voxel they are widened, the head Gaussians keeping their area (V·Å), as atoms keep their
integral. The shell is the ellipsoid ``(x/a)² + (y/b)² + (z/c)² = 1`` in the template frame
(semi-axes ``shell_radius_A, shell_b_A, shell_c_A``, rotated by ``rot, tilt, psi``), ``u`` its
first-order distance ``(F - 1) F / |∇(F²)/2|`` with ``F = |(x/a, y/b, z/c)|`` (exact for a
sphere; for axis ratios up to 1.5, within 25 Å of a >= 20 nm vesicle's mid-surface, the error is
below 0.4 Å).
"""
from __future__ import annotations

import numpy as np
from scipy.special import erf

from .potential import (
    LIGHT_ATOM_ABSORPTION_RATIO,
    PC_HEADGROUP,
    PC_HEADGROUP_VOLUME_A3,
    POPC_AREA_A2,
    POPC_CHAIN_VOLUME_A3,
    POPC_CHAINS,
    POPC_DHH_A,
    electron_density_potential_V,
    electrons,
    ice_electron_density,
)
from .specimen_templates import CUTOFF_SIGMAS, MIN_SIGMA_VOXELS, ClassTemplate

#: Head-group Gaussian width (Å) and hydrocarbon edge width (Å), before the pixel-size floor.
HEAD_SIGMA_A = 3.5
CORE_EDGE_A = 2.5
#: Labels: a vesicle voxel is labelled within this distance (Å) of the mid-surface (the head
#: groups' centres plus one head-group width).
LABEL_HALF_A = POPC_DHH_A / 2 + HEAD_SIGMA_A
#: Half-thickness (Å) of the bilayer's envelope for placement (heads + two widths).
ENVELOPE_HALF_A = POPC_DHH_A / 2 + 2 * HEAD_SIGMA_A
#: Vesicle radius range (Å, largest semi-axis; capped at half the radius the volume holds),
#: fraction of ellipsoidal vesicles and the range of their largest-to-smallest semi-axis ratio.
VESICLE_RADIUS_A = (200.0, 600.0)
ELLIPSOID_FRACTION = 0.5
AXIS_RATIO = (1.1, 1.5)


def bilayer_parameters() -> dict[str, float]:
    """The profile's parameters (V, Å): head area ``head_V_A`` (V·Å per leaflet), core
    potential ``core_V`` and half-thickness ``core_half_A``, ``dhh_A``."""
    rho_i = ice_electron_density()
    head_excess = (electrons(PC_HEADGROUP) / PC_HEADGROUP_VOLUME_A3 - rho_i) * PC_HEADGROUP_VOLUME_A3 / POPC_AREA_A2
    per_e = electron_density_potential_V(rho_i + 1.0)            # V per e/Å³
    return {"head_V_A": head_excess * per_e,
            "core_V": electron_density_potential_V(electrons(POPC_CHAINS) / POPC_CHAIN_VOLUME_A3),
            "core_half_A": POPC_CHAIN_VOLUME_A3 / POPC_AREA_A2, "dhh_A": POPC_DHH_A}


_PARAMS: dict[str, float] = {}


def bilayer_profile_V(u_A: np.ndarray, pixel_size_A: float) -> np.ndarray:
    """The bilayer potential (V relative to ice) at signed distances ``u_A`` (Å) from the
    mid-surface, with the widths floored at :data:`MIN_SIGMA_VOXELS` voxel."""
    if not _PARAMS:
        _PARAMS.update(bilayer_parameters())
    p = _PARAMS
    sh = max(HEAD_SIGMA_A, MIN_SIGMA_VOXELS * pixel_size_A)
    se = max(CORE_EDGE_A, MIN_SIGMA_VOXELS * pixel_size_A)
    a_h = p["head_V_A"] / (sh * np.sqrt(2 * np.pi))
    d = p["dhh_A"] / 2
    g = 1.0 / (2 * sh * sh)
    u = np.asarray(u_A, dtype=np.float64)
    heads = a_h * (np.exp(-((u - d) ** 2) * g) + np.exp(-((u + d) ** 2) * g))
    core = p["core_V"] * 0.5 * (erf((p["core_half_A"] - u) / (np.sqrt(2) * se))
                                + erf((p["core_half_A"] + u) / (np.sqrt(2) * se)))
    return heads + core


def support_half_A(pixel_size_A: float) -> float:
    """Distance (Å) from the mid-surface beyond which the profile is taken as 0."""
    sh = max(HEAD_SIGMA_A, MIN_SIGMA_VOXELS * pixel_size_A)
    return float(POPC_DHH_A / 2 + CUTOFF_SIGMAS * sh)


def vesicle_class() -> ClassTemplate:
    """Lipid vesicle: an ellipsoidal (or spherical) shell with the POPC bilayer profile."""
    return ClassTemplate(name="vesicle", kind="shell", amplitude=1.0, threshold=0.0,
                         absorption_ratio=LIGHT_ATOM_ABSORPTION_RATIO)


def draw_axes(rng: np.random.Generator, radius_A: float) -> tuple[float, float, float]:
    """Semi-axes ``(a, b, c)`` (Å) of a vesicle of largest semi-axis ``radius_A``: a sphere,
    or with probability :data:`ELLIPSOID_FRACTION` an ellipsoid with ``a / c`` uniform in
    :data:`AXIS_RATIO` and ``b`` uniform in ``[c, a]``."""
    u = rng.random(3)
    if u[0] >= ELLIPSOID_FRACTION:
        return radius_A, radius_A, radius_A
    c = radius_A / (AXIS_RATIO[0] + u[1] * (AXIS_RATIO[1] - AXIS_RATIO[0]))
    return radius_A, float(c + u[2] * (radius_A - c)), float(c)


def render_vesicle(rot: np.ndarray, centre_zyx: np.ndarray, axes_A, zz, yy, xx,
                   pixel_size_A: float) -> tuple[np.ndarray, np.ndarray]:
    """Potential (V) and label (bool) of one vesicle on the absolute voxel axes ``zz x yy x xx``.

    ``rot`` is the active rotation (x, y, z) of the table's Euler angles; every value is an
    element-wise function of the voxel's absolute coordinates (chunk invariant).
    """
    a = np.asarray(axes_A, dtype=np.float64)
    dz = ((zz - centre_zyx[0]) * pixel_size_A)[:, None, None]
    dy = ((yy - centre_zyx[1]) * pixel_size_A)[None, :, None]
    dx = ((xx - centre_zyx[2]) * pixel_size_A)[None, None, :]
    # template-frame coordinates q = rot^T d, element by element (no BLAS: exact same bits)
    q = [rot[0, i] * dx + rot[1, i] * dy + rot[2, i] * dz for i in range(3)]
    f2 = (q[0] / a[0]) ** 2 + (q[1] / a[1]) ** 2 + (q[2] / a[2]) ** 2
    grad = np.sqrt((q[0] / a[0] ** 2) ** 2 + (q[1] / a[1] ** 2) ** 2 + (q[2] / a[2] ** 2) ** 2)
    f = np.sqrt(f2)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.where(grad > 0, (f - 1) * f / grad, -a.min())
    part = np.where(np.abs(u) <= support_half_A(pixel_size_A), bilayer_profile_V(u, pixel_size_A), 0.0)
    return part, np.abs(u) <= LABEL_HALF_A
