"""Helical filaments (actin, microtubules) along smooth random paths, in volts.

Pure numpy/scipy (no dask, no I/O). As PolNet (Martinez-Sanchez et al. 2024, IEEE Trans. Med.
Imaging 43:3186) models them, a filament is a helix of globular subunits along a worm-like
path; every subunit is a soft ball of protein (:data:`~.specimen_templates.PROTEIN_CONTRAST_V`
relative to ice) and the filament's potential is the maximum over its subunits (overlapping
subunits do not add up), so its interior is protein minus ice.

* actin (``actin``): two strands of 5 nm subunits (PolNet's monomer radius, 25 Å) around a
  1 nm helix radius: ~7 nm diameter; subunit ``j`` rises 2.75 nm and turns -166.6° (the
  genetic one-start helix of F-actin; Holmes et al. 1990, Nature 347:44), so each long-pitch
  strand repeats every 5.5 nm;
* microtubule (``microtubule``): 13 straight protofilaments on a 10.5 nm radius (PolNet's
  ``MT_RAD`` 100.5 Å) of 4 nm tubulin monomers (radius 20 Å): 25 nm outer and ~17 nm inner
  diameter, a hollow tube; monomers every 4 nm along a protofilament (α and β alike, so the
  8 nm dimer repeat is two monomers), neighbouring protofilaments shifted by 12/13 nm (the
  3-start lattice of a 13_3 microtubule; the seam is not modelled).

Paths: a worm-like chain (Kratky-Porod) grown from a random point in a random direction both
ways in steps of :data:`PATH_STEP_A`, each step turning by a Gaussian angle of variance
``2 step / Lp`` (so ``<t(s)·t(0)> = exp(-s/Lp)``), persistence lengths ``Lp`` 17.7 µm for actin
and 5.2 mm for microtubules (Gittes et al. 1993, J. Cell Biol. 120:923; PolNet's values),
until the path leaves the volume or would touch another object. A frame is carried along the
path by parallel transport; its normal fixes the helix phase.

The table (see :mod:`~.specimen_placement`) stores each path's points and normals
(``filament_*`` columns on their own dim), so subunit positions are a pure function of the
table (:func:`subunits`), computed the same way in every block.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import erfc

from .potential import LIGHT_ATOM_ABSORPTION_RATIO
from .specimen_templates import (
    CUTOFF_SIGMAS,
    MASK_FRACTION,
    MIN_SIGMA_VOXELS,
    PROTEIN_CONTRAST_V,
    ClassTemplate,
)

#: Path sampling step (Å) and subunit edge width (Å, before the pixel-size floor).
PATH_STEP_A = 10.0
SUBUNIT_EDGE_A = 2.0
#: Filaments shorter than this many axial repeats are redrawn (PolNet's ``HLIX_MIN_NMMER``).
MIN_REPEATS = 15


@dataclass(frozen=True)
class HelixGeometry:
    """Subunit ``(p, k)`` sits at arc length ``p * pf_shift_A + k * rise_A`` along the path,
    at angle ``p * 2π / n_pf + k * twist_deg`` and distance ``helix_radius_A`` from it; a ball of
    radius ``subunit_radius_A``."""

    subunit_radius_A: float
    helix_radius_A: float
    rise_A: float
    twist_deg: float
    n_pf: int
    pf_shift_A: float
    persistence_A: float

    @property
    def tube_radius_A(self) -> float:
        """Outer radius of the filament (Å)."""
        return self.helix_radius_A + self.subunit_radius_A

    @property
    def min_length_A(self) -> float:
        """Shortest path kept (Å)."""
        return MIN_REPEATS * self.rise_A


ACTIN = HelixGeometry(subunit_radius_A=25.0, helix_radius_A=10.0, rise_A=27.5, twist_deg=-166.6,
                      n_pf=1, pf_shift_A=0.0, persistence_A=17.7e4)
MICROTUBULE = HelixGeometry(subunit_radius_A=20.0, helix_radius_A=105.0, rise_A=40.0, twist_deg=0.0,
                            n_pf=13, pf_shift_A=120.0 / 13, persistence_A=5.2e7)


def actin_class() -> ClassTemplate:
    """F-actin (see the module docstring)."""
    return ClassTemplate(name="actin", kind="filament", amplitude=PROTEIN_CONTRAST_V,
                         threshold=MASK_FRACTION * PROTEIN_CONTRAST_V,
                         absorption_ratio=LIGHT_ATOM_ABSORPTION_RATIO, filament=ACTIN)


def microtubule_class() -> ClassTemplate:
    """A 13-protofilament microtubule (see the module docstring)."""
    return ClassTemplate(name="microtubule", kind="filament", amplitude=PROTEIN_CONTRAST_V,
                         threshold=MASK_FRACTION * PROTEIN_CONTRAST_V,
                         absorption_ratio=LIGHT_ATOM_ABSORPTION_RATIO, filament=MICROTUBULE)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _perp(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random unit vector perpendicular to the unit vector ``t``."""
    while True:
        v = rng.normal(size=3)
        v -= v.dot(t) * t
        n = np.linalg.norm(v)
        if n > 1e-6:
            return v / n


def grow_path(start_zyx: np.ndarray, direction: np.ndarray, geom: HelixGeometry, pixel_size_A: float,
              shape_zyx, rng: np.random.Generator, blocked) -> np.ndarray:
    """A worm-like path (voxel coordinates, (n, 3) z, y, x) through ``start_zyx``.

    Grows from the start along ``+direction`` then ``-direction`` until the next point would
    leave the volume (voxel centres ``[0, N - 1]`` per axis) or ``blocked(point)`` is true.
    """
    step = PATH_STEP_A / pixel_size_A
    kappa = np.sqrt(PATH_STEP_A / geom.persistence_A)              # per-component angle sd
    shape = np.asarray(shape_zyx, dtype=np.float64)
    max_steps = int(2 * np.sqrt((shape ** 2).sum()) / step) + 2
    halves = []
    for sign in (1.0, -1.0):
        t = sign * np.asarray(direction, dtype=np.float64)
        p = np.asarray(start_zyx, dtype=np.float64)
        pts = []
        for _ in range(max_steps):
            g = rng.normal(size=3)
            t = _unit(t + kappa * (g - g.dot(t) * t))              # two perpendicular N(0, kappa²)
            q = p + step * t
            if np.any(q < 0) or np.any(q > shape - 1) or blocked(q):
                break
            pts.append(q)
            p = q
        halves.append(pts)
    back = halves[1][::-1]
    return np.array(back + [np.asarray(start_zyx, dtype=np.float64)] + halves[0]).reshape(-1, 3)


def transport_normals(path_zyx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit normals (n, 3) (z, y, x) carried along the path by parallel transport from a random
    first normal (the rotation-minimising frame)."""
    n = len(path_zyx)
    t = _unit(np.diff(path_zyx, axis=0)) if n > 1 else np.array([[1.0, 0.0, 0.0]])
    t = np.vstack([t, t[-1:]])
    out = np.zeros((n, 3))
    nv = _perp(t[0], rng)
    for i in range(n):
        if i:
            a, b = t[i - 1], t[i]
            v = np.cross(a, b)
            c = float(a.dot(b))
            if np.linalg.norm(v) > 1e-12:                           # Rodrigues: rotate a -> b
                k = v / np.linalg.norm(v)
                s = np.linalg.norm(v)
                nv = nv * c + np.cross(k, nv) * s + k * k.dot(nv) * (1 - c)
            nv = _unit(nv - nv.dot(b) * b)
        out[i] = nv
    return out


def subunits(table: dict, classes: list[ClassTemplate], pixel_size_A: float):
    """Every filament subunit of the table: centres (S, 3) voxels (z, y, x), ball radius (S,)
    in Å and table row (S,). A pure function of the table (same bits in every block)."""
    fid = np.asarray(table.get("filament_id", np.zeros(0)), dtype=np.int64)
    cen, rad, row = [np.zeros((0, 3))], [np.zeros(0)], [np.zeros(0, np.int64)]
    if not len(fid):
        return cen[0], rad[0], row[0]
    pts_all = np.stack([table["filament_z"], table["filament_y"], table["filament_x"]], 1).astype(np.float64)
    nrm_all = np.stack([table["filament_nz"], table["filament_ny"], table["filament_nx"]], 1).astype(np.float64)
    for r in np.unique(fid) - 1:
        geom = classes[int(table["class_id"][r]) - 1].filament
        sel = np.flatnonzero(fid == r + 1)
        P, N = pts_all[sel] * pixel_size_A, nrm_all[sel]            # Å, (z, y, x)
        if len(P) < 2:
            continue
        seg = np.diff(P, axis=0)
        s = np.concatenate([[0.0], np.cumsum(np.sqrt((seg ** 2).sum(1)))])
        k = np.arange(int(np.floor(s[-1] / geom.rise_A)) + 1)
        pf = np.arange(geom.n_pf)
        arc = (pf[:, None] * geom.pf_shift_A + k[None, :] * geom.rise_A).ravel()
        phi = np.radians(pf[:, None] * 360.0 / geom.n_pf + k[None, :] * geom.twist_deg).ravel()
        keep = arc <= s[-1]
        arc, phi = arc[keep], phi[keep]
        i = np.clip(np.searchsorted(s, arc, side="right") - 1, 0, len(s) - 2)
        f = ((arc - s[i]) / (s[i + 1] - s[i]))[:, None]
        pos = P[i] + f * seg[i]
        t = _unit(seg[i])
        nv = N[i] + f * (N[i + 1] - N[i])
        nv = _unit(nv - (nv * t).sum(1, keepdims=True) * t)
        b = np.cross(t[:, ::-1], nv[:, ::-1])[:, ::-1]              # t x n in (x, y, z), back to zyx
        off = geom.helix_radius_A * (np.cos(phi)[:, None] * nv + np.sin(phi)[:, None] * b)
        cen.append((pos + off) / pixel_size_A)
        rad.append(np.full(len(arc), geom.subunit_radius_A))
        row.append(np.full(len(arc), r, dtype=np.int64))
    return np.concatenate(cen), np.concatenate(rad), np.concatenate(row)


def subunit_support_A(radius_A: float, pixel_size_A: float) -> float:
    """Distance (Å) from a subunit centre beyond which its ball is taken as 0."""
    return float(radius_A + CUTOFF_SIGMAS * max(SUBUNIT_EDGE_A, MIN_SIGMA_VOXELS * pixel_size_A))


def render_filament(cls: ClassTemplate, centres: np.ndarray, radii: np.ndarray, a: np.ndarray,
                    b: np.ndarray, pixel_size_A: float) -> np.ndarray:
    """Potential (V) of one filament on the absolute box ``[a, b)``: the maximum over its
    subunits ``centres`` (voxels) of ``V ½ erfc((d - R) / √2 s)`` within each one's support."""
    out = np.zeros(tuple(b - a), dtype=np.float64)
    s = max(SUBUNIT_EDGE_A, MIN_SIGMA_VOXELS * pixel_size_A)
    for c, R in zip(centres, radii):
        sup = subunit_support_A(R, pixel_size_A) / pixel_size_A
        lo = np.maximum(np.ceil(c - sup).astype(np.int64), a)
        hi = np.minimum(np.floor(c + sup).astype(np.int64) + 1, b)
        if np.any(hi <= lo):
            continue
        dz2 = ((np.arange(lo[0], hi[0]) - c[0]) ** 2)[:, None, None]
        dy2 = ((np.arange(lo[1], hi[1]) - c[1]) ** 2)[None, :, None]
        dx2 = ((np.arange(lo[2], hi[2]) - c[2]) ** 2)[None, None, :]
        d = np.sqrt(dz2 + dy2 + dx2) * pixel_size_A
        v = np.where(d <= sup * pixel_size_A, cls.amplitude * 0.5 * erfc((d - R) / (np.sqrt(2) * s)), 0.0)
        sl = tuple(slice(lo[i] - a[i], hi[i] - a[i]) for i in range(3))
        np.maximum(out[sl], v, out=out[sl])
    return out
