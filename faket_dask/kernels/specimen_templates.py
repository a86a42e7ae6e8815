"""Specimen class templates: procedural proteins, gold beads and density maps, in volts.

Pure numpy/scipy (no dask, no I/O). A :class:`ClassTemplate` says what one class of object looks
like; :mod:`faket_dask.kernels.specimen_placement` places objects of these classes and
:func:`faket_dask.kernels.specimen.render_block` renders them. Vesicles are
:mod:`~faket_dask.kernels.specimen_membranes`, actin and microtubules
:mod:`~faket_dask.kernels.specimen_filaments`.

Units: the electrostatic potential in volts RELATIVE TO VITREOUS ICE (:mod:`.potential`): 0
where there is only ice, matter minus the ice it displaces elsewhere. Protein interiors are
``protein_potential_V() - ice_potential_V()`` (:data:`PROTEIN_CONTRAST_V`, ≈ 3.36 V), gold
``gold_potential_V() - ice_potential_V()`` (:data:`GOLD_CONTRAST_V`, ≈ 25.3 V).

The 12 protein classes stand in for SHREC 2021's (``docs/method.md §6``); this generator is the
project's own, not part of the paper's method (``docs/method.md §1.1``). Each is a cluster of
Gaussian pseudo-atoms drawn inside 1-6 overlapping spherical lobes, its molecular *envelope*:

* amplitude: the mean potential over the envelope's interior (the lobes shrunk by one atom
  sigma) is :data:`PROTEIN_CONTRAST_V` (:func:`procedural_class`);
* molecular volume ``volume_A3``: the envelope's volume (the volume fractions of
  :mod:`.specimen_placement` count it);
* labels: the voxels whose centre lies in the envelope, so a class mask holds the particles'
  molecular volumes (unbiased at any pixel size), whatever the blur of the potential.
"""
from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .potential import (
    GOLD_ABSORPTION_RATIO,
    LIGHT_ATOM_ABSORPTION_RATIO,
    gold_potential_V,
    ice_potential_V,
    protein_potential_V,
)

#: SHREC 2021 protein classes (PDB ids) and the nominal diameters (nm) of their procedural
#: stand-ins, spread over SHREC's size range (≈ 4-25 nm), roughly in order of molecular mass.
SHREC_CLASSES: dict[str, float] = {
    "1s3x": 4.0, "3qm1": 5.0, "3gl1": 6.0, "3h84": 7.0, "2cg9": 8.5, "3d2f": 10.0,
    "1u6g": 11.5, "3cf3": 13.0, "1bxn": 14.5, "1qvr": 17.0, "4cr2": 21.0, "5mrc": 25.0,
}
#: Potential of protein / gold relative to vitreous ice (V).
PROTEIN_CONTRAST_V = protein_potential_V() - ice_potential_V()
GOLD_CONTRAST_V = gold_potential_V() - ice_potential_V()
#: Labels of gold beads and filaments: at or above this fraction of their interior potential
#: (the half-height surface of a blurred solid encloses the solid's volume).
MASK_FRACTION = 0.5
#: Gaussians are cut at this many sigmas (the tail beyond is < 3.4e-4 of the peak).
CUTOFF_SIGMAS = 4.0
#: Rendered Gaussian widths and soft edges are never below this many voxels, so nothing is lost
#: between voxel centres at coarse pixel sizes (widened atoms keep their integral).
MIN_SIGMA_VOXELS = 0.75
#: Gold bead radius range (Å; 5-10 nm diameter, drawn per bead) and edge width (Å).
GOLD_RADIUS_A = (25.0, 50.0)
GOLD_EDGE_A = 3.0
#: Pseudo-atom sums are rounded to multiples of 2**-QUANT_BITS before they are multiplied and
#: summed, so every sum is exact and any order (any BLAS kernel, any block) gives the same bits.
QUANT_BITS = 21
_EXACT_TERMS = 2 ** (53 - 2 * QUANT_BITS)       # a sum of this many terms <= 1 stays exact


@dataclass
class ClassTemplate:
    """One specimen class.

    Attributes
    ----------
    name : str
        Class name (PDB id, ``"vesicle"``, ``"fiducial"``, ``"actin"``, ``"microtubule"`` or
        the template file stem).
    kind : {"atoms", "map", "shell", "ball", "filament"}
        Pseudo-atom cluster, density map, lipid vesicle, gold bead, helical filament.
    atoms_A : ndarray, shape (N, 3)
        ``"atoms"``: pseudo-atom positions (Å, ``(x, y, z)``) relative to the centroid.
    sigma_A : float
        ``"atoms"``: Gaussian width of a pseudo-atom (Å), before the pixel-size floor.
    amplitude : float
        Volts: peak of one atom (``"atoms"``), interior potential (``"ball"``,
        ``"filament"``), 1 for maps (already in volts) and vesicles (profile in volts).
    map_zyx : ndarray, shape (D, H, W), optional
        ``"map"``: potential (V relative to ice) at the rendering pixel size, centred on its
        centre of mass at voxel ``map_centre``.
    map_centre : ndarray, shape (3,)
        ``"map"``: ``(z, y, x)`` voxel coordinate of the template centre in ``map_zyx``.
    threshold : float
        Potential (V) at or above which a voxel of a particle of this class is labelled
        (unused with ``label_envelope`` and for vesicles, whose labels are the bilayer slab).
    absorption_ratio : float
        Imaginary (absorption) potential as a fraction of the real potential of this class
        (:data:`~faket_dask.kernels.potential.LIGHT_ATOM_ABSORPTION_RATIO` for biological
        matter, :data:`~faket_dask.kernels.potential.GOLD_ABSORPTION_RATIO` for gold).
    pdb_id : str
        PDB/EMDB id of the structure the class was built from ("" for procedural classes).
    envelope_A : ndarray, shape (L, 4)
        ``(x, y, z, r)`` spheres (Å, template frame) whose union is the molecular envelope and
        holds the labelled region; placement keeps envelopes apart, so labels never overlap.
        Empty: one sphere, see :meth:`envelope_spheres_A`.
    volume_A3 : float
        Molecular volume of a protein class (Å³): the envelope's volume; 0 when unknown (then
        derived from a map by :meth:`molecular_volume_A3`).
    filament : object
        ``"filament"``: its :class:`~faket_dask.kernels.specimen_filaments.HelixGeometry`.
    label_envelope : bool
        Label the voxels whose centre lies in the (rotated) envelope instead of thresholding
        the potential (procedural proteins: the lobes their atoms fill).
    """

    name: str
    kind: str
    atoms_A: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    sigma_A: float = 0.0
    amplitude: float = 1.0
    map_zyx: np.ndarray | None = None
    map_centre: np.ndarray | None = None
    threshold: float = 0.5
    absorption_ratio: float = 0.07
    pdb_id: str = ""
    envelope_A: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    volume_A3: float = 0.0
    filament: Any = None
    label_envelope: bool = False

    def atom_sigma_A(self, pixel_size_A: float) -> float:
        """Rendered atom width (Å): never below :data:`MIN_SIGMA_VOXELS` voxel."""
        return max(self.sigma_A, MIN_SIGMA_VOXELS * pixel_size_A)

    def bounding_radius_A(self, pixel_size_A: float, size_A: float = 0.0) -> float:
        """Radius (Å) of the sphere around the centre outside which the class has no potential
        (``"atoms"``, ``"map"``, ``"ball"`` with bead radius ``size_A``)."""
        if self.kind == "atoms":
            r = np.sqrt((self.atoms_A ** 2).sum(1)).max() if len(self.atoms_A) else 0.0
            return float(r + CUTOFF_SIGMAS * self.atom_sigma_A(pixel_size_A))
        if self.kind == "ball":
            return float(size_A + CUTOFF_SIGMAS * max(GOLD_EDGE_A, MIN_SIGMA_VOXELS * pixel_size_A))
        if self.kind == "map":    # half-diagonal of the box seen from the centre (voxels -> Å)
            shape = np.asarray(self.map_zyx.shape, dtype=np.float64)
            far = np.maximum(self.map_centre + 0.5, shape - 0.5 - self.map_centre)
            return float(np.sqrt((far ** 2).sum()) * pixel_size_A)
        raise ValueError(f"{self.name}: a {self.kind} has no single bounding radius")

    def envelope_spheres_A(self, pixel_size_A: float) -> np.ndarray:
        """``(x, y, z, r)`` envelope spheres (Å): :attr:`envelope_A`, or for a map the sphere
        around its centre holding its labelled voxels (``>= threshold``) plus half a voxel."""
        if len(self.envelope_A):
            return np.asarray(self.envelope_A, dtype=np.float64)
        if self.kind == "map":
            idx = np.argwhere(np.asarray(self.map_zyx) >= self.threshold)
            if not len(idx):
                idx = np.argwhere(np.asarray(self.map_zyx) > 0)
            r = np.sqrt(((idx - self.map_centre) ** 2).sum(1)).max() + 0.5 if len(idx) else 0.5
            return np.array([[0.0, 0.0, 0.0, r * pixel_size_A]])
        return np.array([[0.0, 0.0, 0.0, self.bounding_radius_A(pixel_size_A)]])

    def molecular_volume_A3(self, pixel_size_A: float) -> float:
        """Protein volume (Å³) the class's potential holds: :attr:`volume_A3`, or for a map
        ``Σ map · voxel volume / PROTEIN_CONTRAST_V``."""
        if self.volume_A3 > 0:
            return float(self.volume_A3)
        if self.kind == "map":
            return float(np.asarray(self.map_zyx, np.float64).sum() * pixel_size_A ** 3 / PROTEIN_CONTRAST_V)
        return 0.0

    def diameter_A(self) -> float:
        """Nominal diameter (Å) of an ``"atoms"`` class: atom extent plus one sigma each side."""
        r = np.sqrt((self.atoms_A ** 2).sum(1)).max()
        return float(2 * (r + self.sigma_A))


# -- exact sums of Gaussians ---------------------------------------------------------------------
def gaussian_sum(pos: np.ndarray, sigma: float, origin, shape) -> np.ndarray:
    """``Σ_a exp(-|v - p_a|² / 2σ²)`` on the integer grid ``origin + [0, shape)`` (float64).

    ``pos`` (A, 3) and ``sigma`` are in grid units; atom ``a`` reaches the grid points ``v``
    with ``|v - p_a| <= CUTOFF_SIGMAS σ`` on every axis (a cube, decided by ``v`` and ``p_a``
    alone). The separable factors are computed over each atom's whole window whatever the
    region, rounded to :data:`QUANT_BITS` bits, and multiplied and summed exactly (a matrix
    product of exact terms), so a value is the same bits in any region that holds it.
    """
    origin = np.asarray(origin, dtype=np.int64)
    shape = tuple(int(s) for s in shape)
    out = np.zeros(shape, dtype=np.float64)
    pos = np.asarray(pos, dtype=np.float64).reshape(-1, 3)
    if not len(pos) or min(shape) < 1:
        return out
    cut = CUTOFF_SIGMAS * sigma
    g = 1.0 / (2.0 * sigma * sigma)
    lo = np.ceil(pos - cut).astype(np.int64)                       # first grid point per axis
    w = int(np.floor(2 * cut)) + 2
    k = np.arange(w)
    q = float(2 ** QUANT_BITS)
    win = []
    for ax in range(3):                                             # (A, w): all atoms, always
        d = lo[:, ax, None] + k[None, :] - pos[:, ax, None]
        win.append(np.where(np.abs(d) <= cut, np.exp(-d * d * g), 0.0))
    hi = origin + np.asarray(shape) - 1
    touch = np.flatnonzero(np.all((lo <= hi) & (lo + w - 1 >= origin), axis=1))
    if not len(touch):
        return out

    def dense(ax: int, sel: np.ndarray) -> np.ndarray:
        kk = origin[ax] + np.arange(shape[ax])[None, :] - lo[sel, ax, None]
        ok = (kk >= 0) & (kk < w)
        return np.where(ok, np.take_along_axis(win[ax][sel], np.clip(kk, 0, w - 1), axis=1), 0.0)

    nz, ny, nx = shape
    for a0 in range(0, len(touch), _EXACT_TERMS):                   # groups of exact sums, in order
        sel = touch[a0:a0 + _EXACT_TERMS]
        dz, dy = dense(0, sel), dense(1, sel)
        dx = np.rint(dense(2, sel) * q) / q
        step = max(1, (1 << 22) // max(1, len(sel) * ny))           # bound the temporary
        for z0 in range(0, nz, step):
            c = dz[:, z0:z0 + step, None] * dy[:, None, :]
            c = np.rint(c * q) / q
            part = c.reshape(len(sel), -1).T @ dx
            out[z0:z0 + step] += part.reshape(-1, ny, nx)
    return out


# -- procedural proteins -------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _procedural(name: str, diameter_nm: float):
    """Atoms, sigma, lobe centres and radii (Å) of a procedural class (cached)."""
    seed = zlib.crc32(name.encode())
    rng = np.random.default_rng(seed)
    radius = diameter_nm * 10.0 / 2.0                       # Å
    sigma = diameter_nm * 10.0 / 16.0                       # bigger classes: coarser atoms
    n_lobes = 1 + seed % 6
    ring = seed % 4 == 0 and n_lobes > 2                    # some classes are rings (chaperonin-like)
    lobe_r = radius * rng.uniform(0.35, 0.6, n_lobes)
    if ring:
        phi = np.linspace(0, 2 * np.pi, n_lobes, endpoint=False)
        dirs = np.stack([np.cos(phi), np.sin(phi), np.zeros_like(phi)], 1)
    else:
        dirs = rng.normal(size=(n_lobes, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    centres = dirs * (radius - lobe_r)[:, None] * rng.uniform(0.5, 1.0, (n_lobes, 1))
    # atoms per lobe ~ lobe volume / (1.5 sigma)^3, so density is similar across classes
    atoms = []
    for c, r in zip(centres, lobe_r):
        n = int(np.clip((4 / 3) * np.pi * r ** 3 / (1.5 * sigma) ** 3, 8, 120))
        d = rng.normal(size=(n, 3))
        d *= (r * rng.uniform(0, 1, n) ** (1 / 3) / np.linalg.norm(d, axis=1))[:, None]
        atoms.append(c + d)
    a = np.concatenate(atoms)
    mean = a.mean(0)
    a -= mean                                                # centre = centroid of the atoms
    # scale so that the nominal diameter is exactly the requested one
    scale = (radius - sigma) / np.sqrt((a ** 2).sum(1)).max()
    a *= scale
    lobes = np.concatenate([(centres - mean) * scale, (lobe_r * scale)[:, None]], 1)
    return a, sigma, lobes


def _unit_field(atoms_A: np.ndarray, sigma_A: float, h_A: float, pad_A: float):
    """Unit-amplitude atom sum on a grid of spacing ``h_A`` around the atoms; grid points (Å)."""
    lo = atoms_A.min(0) - pad_A
    n = np.ceil((atoms_A.max(0) + pad_A - lo) / h_A).astype(int) + 1
    pos = ((atoms_A - lo) / h_A)[:, ::-1]                    # (z, y, x) grid units
    f = gaussian_sum(pos, sigma_A / h_A, (0, 0, 0), tuple(n[::-1]))
    axes = [lo[i] + h_A * np.arange(n[i]) for i in (2, 1, 0)]   # z, y, x coordinates (Å)
    return f, axes


def _interior_mean(atoms_A, sigma_A, lobes) -> float:
    """Mean unit-amplitude atom sum over the lobes shrunk by one sigma (grid spacing σ/2)."""
    f, (zz, yy, xx) = _unit_field(atoms_A, sigma_A, sigma_A / 2, sigma_A)
    Z, Y, X = np.meshgrid(zz, yy, xx, indexing="ij")
    inside = np.zeros(f.shape, bool)
    for cx, cy, cz, r in lobes:
        inside |= (X - cx) ** 2 + (Y - cy) ** 2 + (Z - cz) ** 2 <= (r - sigma_A) ** 2
    return float(f[inside].mean())


def _union_volume(lobes: np.ndarray, h_A: float) -> float:
    """Volume (Å³) of the union of the ``(x, y, z, r)`` spheres, counted on a grid of ``h_A``."""
    lo = (lobes[:, :3] - lobes[:, 3:]).min(0)
    hi = (lobes[:, :3] + lobes[:, 3:]).max(0)
    zz, yy, xx = (lo[i] + h_A * (np.arange(int(np.ceil((hi[i] - lo[i]) / h_A)) + 1) + 0.5) for i in (2, 1, 0))
    inside = np.zeros((len(zz), len(yy), len(xx)), bool)
    for cx, cy, cz, r in lobes:
        inside |= ((zz[:, None, None] - cz) ** 2 + (yy[None, :, None] - cy) ** 2
                   + (xx[None, None, :] - cx) ** 2) <= r * r
    return float(inside.sum() * h_A ** 3)


@functools.lru_cache(maxsize=64)
def _calibrated(name: str, diameter_nm: float):
    """Atoms, sigma, lobes, atom amplitude (V) and envelope volume (Å³) of a procedural class."""
    atoms, sigma, lobes = _procedural(name, diameter_nm)
    amp = PROTEIN_CONTRAST_V / _interior_mean(atoms, sigma, lobes)
    return atoms, sigma, lobes, float(amp), _union_volume(lobes, sigma / 4)


def procedural_class(name: str, diameter_nm: float) -> ClassTemplate:
    """A fixed pseudo-atom cluster of nominal diameter ``diameter_nm`` (nm), in volts.

    The shape (1-6 overlapping lobes, or a ring of lobes) is drawn from a generator seeded by
    the class name only, so a class is the same in every run and differs from the others.
    The atom amplitude makes the mean over the interior of the lobes (shrunk by one sigma)
    :data:`PROTEIN_CONTRAST_V`. The lobes are the molecular envelope: ``envelope_A``, the
    labels (:attr:`ClassTemplate.label_envelope`) and ``volume_A3`` (their union's volume).
    """
    atoms, sigma, lobes, amp, volume = _calibrated(name, float(diameter_nm))
    return ClassTemplate(name=name, kind="atoms", atoms_A=atoms.copy(), sigma_A=sigma, amplitude=amp,
                         threshold=0.0, absorption_ratio=LIGHT_ATOM_ABSORPTION_RATIO,
                         envelope_A=lobes.copy(), volume_A3=volume, label_envelope=True)


def builtin_classes() -> list[ClassTemplate]:
    """The 12 procedural protein classes of :data:`SHREC_CLASSES` (4-25 nm)."""
    return [procedural_class(n, d) for n, d in SHREC_CLASSES.items()]


def fiducial_class() -> ClassTemplate:
    """Gold fiducial: a ball of :data:`GOLD_CONTRAST_V` with a soft edge; its radius is drawn
    per bead from :data:`GOLD_RADIUS_A` (table column ``bead_radius_A``)."""
    return ClassTemplate(name="fiducial", kind="ball", amplitude=GOLD_CONTRAST_V,
                         threshold=MASK_FRACTION * GOLD_CONTRAST_V, absorption_ratio=GOLD_ABSORPTION_RATIO)


def map_class(name: str, density_zyx: np.ndarray, map_pixel_A: float, pixel_size_A: float) -> ClassTemplate:
    """A protein class from a density map in arbitrary units, resampled (cubic spline) to
    ``pixel_size_A`` and scaled to volts: the mean over its envelope (the voxels at or above
    the Otsu threshold of its positive values) is :data:`PROTEIN_CONTRAST_V`; labelled at half
    that mean.

    Parameters
    ----------
    density_zyx : ndarray, shape (D, H, W)
        The map (positive = protein); negative values are clipped to 0.
    map_pixel_A, pixel_size_A : float
        Voxel size of the map and of the specimen (Å).
    """
    from scipy.ndimage import zoom
    from skimage.filters import threshold_otsu

    m = np.clip(np.asarray(density_zyx, dtype=np.float64), 0, None)
    if m.max() <= 0:
        raise ValueError(f"{name}: the map has no positive density")
    if abs(map_pixel_A / pixel_size_A - 1) > 1e-6:
        m = np.clip(zoom(m, map_pixel_A / pixel_size_A, order=3), 0, None)
    m = np.pad(m, 1)                                          # zero border: interpolation fades out
    pos = m[m > 0]
    env = m >= (threshold_otsu(pos) if np.unique(pos).size > 1 else pos.min())
    m *= PROTEIN_CONTRAST_V / m[env].mean()
    idx = np.indices(m.shape).reshape(3, -1)
    com = (idx * m.reshape(-1)).sum(1) / m.sum()              # the table position is the centre of mass
    return ClassTemplate(name=name, kind="map", map_zyx=m, map_centre=com, amplitude=1.0,
                         threshold=MASK_FRACTION * PROTEIN_CONTRAST_V,
                         absorption_ratio=LIGHT_ATOM_ABSORPTION_RATIO)
