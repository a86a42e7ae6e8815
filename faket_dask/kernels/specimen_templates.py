"""Specimen class templates: procedural proteins, vesicles, gold fiducials and density maps.

Pure numpy/scipy (no dask, no I/O). A :class:`ClassTemplate` says what one class of object looks
like; :mod:`faket_dask.kernels.specimen_placement` places objects of these classes and
:func:`faket_dask.kernels.specimen.render_block` renders them.

Density conventions: arbitrary units on a zero background; protein interiors are about 1, a
lipid leaflet peaks at 1.5 and gold at 10 (gold scatters much more strongly than protein). The
12 protein classes stand in for SHREC 2021's (``docs/method.md §6``); this generator is the
project's own, not part of the paper's method (``docs/method.md §1.1``).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

#: SHREC 2021 protein classes (PDB ids) and the nominal diameters (nm) of their procedural
#: stand-ins, spread over SHREC's size range (≈ 4-25 nm), roughly in order of molecular mass.
SHREC_CLASSES: dict[str, float] = {
    "1s3x": 4.0, "3qm1": 5.0, "3gl1": 6.0, "3h84": 7.0, "2cg9": 8.5, "3d2f": 10.0,
    "1u6g": 11.5, "3cf3": 13.0, "1bxn": 14.5, "1qvr": 17.0, "4cr2": 21.0, "5mrc": 25.0,
}
#: Peak density of one protein pseudo-atom / one lipid leaflet / gold.
PROTEIN_DENSITY = 1.0
LIPID_DENSITY = 1.5
GOLD_DENSITY = 10.0
#: Fraction of a class's reference amplitude above which a voxel is labelled.
MASK_FRACTION = 0.5
#: Protein voxels are labelled at or above this density (a fraction of the interior density
#: low enough that the smallest classes, blurred at coarse pixel sizes, keep a label).
PROTEIN_THRESHOLD = 0.3 * PROTEIN_DENSITY
#: Gaussians are cut at this many sigmas (the tail beyond is < 3.4e-4 of the peak).
CUTOFF_SIGMAS = 4.0
#: Vesicle bilayer: leaflets at ``R +/- LEAFLET_OFFSET_A`` with Gaussian width ``LEAFLET_SIGMA_A``
#: (≈ 4 nm thick bilayer); shell radius range (Å).
LEAFLET_OFFSET_A = 18.0
LEAFLET_SIGMA_A = 8.0
VESICLE_RADIUS_A = (200.0, 600.0)
#: Gold fiducial: radius (Å, 10 nm diameter) and edge width (Å).
GOLD_RADIUS_A = 50.0
GOLD_EDGE_A = 3.0


@dataclass
class ClassTemplate:
    """One specimen class.

    Attributes
    ----------
    name : str
        Class name (PDB id, ``"vesicle"``, ``"fiducial"`` or the MRC file stem).
    kind : {"atoms", "shell", "ball", "map"}
        Pseudo-atom cluster, lipid vesicle, gold bead, or a density map.
    atoms_A : ndarray, shape (N, 3)
        ``"atoms"``: pseudo-atom positions (Å, ``(x, y, z)``) relative to the centroid.
    sigma_A : float
        ``"atoms"``: Gaussian width of a pseudo-atom (Å), before the pixel-size floor.
    amplitude : float
        Peak density of one atom (chosen so a class's interior is about
        :data:`PROTEIN_DENSITY`) / of one leaflet / of the gold bead / 1 for maps (maps are
        normalised to peak 1).
    map_zyx : ndarray, shape (D, H, W), optional
        ``"map"``: density resampled to the rendering pixel size, centred on its centre of mass
        at voxel ``map_centre``.
    map_centre : ndarray, shape (3,)
        ``"map"``: ``(z, y, x)`` voxel coordinate of the template centre in ``map_zyx``.
    threshold : float
        Density at or above which a voxel of a particle of this class is labelled.
    """

    name: str
    kind: str
    atoms_A: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    sigma_A: float = 0.0
    amplitude: float = 1.0
    map_zyx: np.ndarray | None = None
    map_centre: np.ndarray | None = None
    threshold: float = 0.5

    def atom_sigma_A(self, pixel_size_A: float) -> float:
        """Rendered atom width (Å): never below 0.75 voxel, so atoms are not lost between
        voxel centres at coarse pixel sizes."""
        return max(self.sigma_A, 0.75 * pixel_size_A)

    def bounding_radius_A(self, pixel_size_A: float, shell_radius_A: float = 0.0) -> float:
        """Radius (Å) of the sphere around the centre outside which the class has no density."""
        if self.kind == "atoms":
            r = np.sqrt((self.atoms_A ** 2).sum(1)).max() if len(self.atoms_A) else 0.0
            return float(r + CUTOFF_SIGMAS * self.atom_sigma_A(pixel_size_A))
        if self.kind == "shell":
            return float(shell_radius_A + LEAFLET_OFFSET_A + CUTOFF_SIGMAS * LEAFLET_SIGMA_A)
        if self.kind == "ball":
            return float(GOLD_RADIUS_A + CUTOFF_SIGMAS * GOLD_EDGE_A)
        # map: half-diagonal of the box seen from the centre (voxels -> Å)
        shape = np.asarray(self.map_zyx.shape, dtype=np.float64)
        far = np.maximum(self.map_centre + 0.5, shape - 0.5 - self.map_centre)
        return float(np.sqrt((far ** 2).sum()) * pixel_size_A)

    def diameter_A(self) -> float:
        """Nominal diameter (Å) of an ``"atoms"`` class: atom extent plus one sigma each side."""
        r = np.sqrt((self.atoms_A ** 2).sum(1)).max()
        return float(2 * (r + self.sigma_A))


def procedural_class(name: str, diameter_nm: float) -> ClassTemplate:
    """A fixed pseudo-atom cluster of nominal diameter ``diameter_nm`` (nm).

    The shape (1-6 overlapping lobes, or a ring of lobes) is drawn from a generator seeded by
    the class name only, so a class is the same in every run and differs from the others.
    """
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
    a -= a.mean(0)                                           # centre = centroid of the atoms
    # scale so that the nominal diameter is exactly the requested one
    scale = (radius - sigma) / np.sqrt((a ** 2).sum(1)).max()
    a *= scale
    # atom amplitude such that the interior density is about PROTEIN_DENSITY: total mass
    # (sum of the lobe volumes x density) shared by the atoms
    volume = (4 / 3) * np.pi * ((lobe_r * scale) ** 3).sum()
    amp = PROTEIN_DENSITY * volume / (len(a) * (2 * np.pi) ** 1.5 * sigma ** 3)
    return ClassTemplate(name=name, kind="atoms", atoms_A=a, sigma_A=sigma, amplitude=float(amp),
                         threshold=PROTEIN_THRESHOLD)


def builtin_classes() -> list[ClassTemplate]:
    """The 12 procedural protein classes of :data:`SHREC_CLASSES` (4-25 nm)."""
    return [procedural_class(n, d) for n, d in SHREC_CLASSES.items()]


def vesicle_class() -> ClassTemplate:
    """Lipid vesicle: a spherical shell of two Gaussian leaflets (radius per particle)."""
    return ClassTemplate(name="vesicle", kind="shell", amplitude=LIPID_DENSITY,
                         threshold=MASK_FRACTION * LIPID_DENSITY)


def fiducial_class() -> ClassTemplate:
    """Gold fiducial: a dense 10 nm ball with a soft edge."""
    return ClassTemplate(name="fiducial", kind="ball", amplitude=GOLD_DENSITY,
                         threshold=MASK_FRACTION * GOLD_DENSITY)


def map_class(name: str, density_zyx: np.ndarray, map_pixel_A: float, pixel_size_A: float) -> ClassTemplate:
    """A class from a density map, resampled (cubic spline) to ``pixel_size_A``.

    Parameters
    ----------
    density_zyx : ndarray, shape (D, H, W)
        The map (positive = protein); negative values are clipped to 0.
    map_pixel_A, pixel_size_A : float
        Voxel size of the map and of the specimen (Å).
    """
    from scipy.ndimage import zoom

    m = np.clip(np.asarray(density_zyx, dtype=np.float64), 0, None)
    if m.max() <= 0:
        raise ValueError(f"{name}: the map has no positive density")
    if abs(map_pixel_A / pixel_size_A - 1) > 1e-6:
        m = np.clip(zoom(m, map_pixel_A / pixel_size_A, order=3), 0, None)
    m = np.pad(m, 1)                                          # zero border: interpolation fades out
    m /= m.max()                                              # peak 1, like a protein atom
    idx = np.indices(m.shape).reshape(3, -1)
    com = (idx * m.reshape(-1)).sum(1) / m.sum()              # the table position is the centre of mass
    return ClassTemplate(name=name, kind="map", map_zyx=m, map_centre=com,
                         amplitude=1.0, threshold=MASK_FRACTION)
