"""Procedural cryo-ET specimens: class templates, global placement, chunk-local rendering.

Pure numpy/scipy (no dask, no I/O). The stage :mod:`faket_dask.stages.specimen` wraps
:func:`render_block` in ``dask.array.map_blocks``.

Conventions
-----------
* Voxel coordinates: voxel ``(k, j, i)`` of a ``(z, y, x)`` volume has its *centre* at the
  voxel coordinate ``(z, y, x) = (k, j, i)``; in Å that is ``(i + 0.5) * pixel_size_A`` (as in
  :func:`faket_dask.datamodel.pixel_coords`). Particle positions ``x, y, z`` in the table are
  voxel coordinates (floats).
* Rotations: Euler angles ``rot, tilt, psi`` (degrees), intrinsic ZYZ: the particle is the
  template rotated *actively* by ``M = Rz(rot) @ Ry(tilt) @ Rz(psi)`` acting on ``(x, y, z)``
  column vectors (right-handed). ``M`` is the transpose of RELION's
  ``Euler_angles2matrix(rot, tilt, psi)`` (which maps particle to reference), i.e. the RELION
  convention for ``rlnAngleRot/Tilt/Psi``. Orientations are uniform on SO(3).
* Density: arbitrary units on a zero background; protein interiors are about 1, a lipid
  leaflet peaks at 1.5 and gold at 10 (gold scatters much more strongly than protein).
* Labels: a voxel belongs to particle ``r`` (table row ``r``, occupancy id ``r + 1``) iff it
  lies inside the particle's bounding sphere and the particle's density there is
  ``>= threshold`` of its class (:attr:`ClassTemplate.threshold`). Each particle's density is
  truncated to its bounding sphere and spheres never overlap, so every voxel receives density
  from at most one particle: ``class_mask > 0`` exactly where the density is at or above the
  threshold of the particle owning the voxel.
* Chunk invariance: every value is a function of absolute voxel coordinates only (each atom's
  support box, each Gaussian factor, the sphere clip), accumulated in float64 in a fixed order
  (table order, then atom order) and cast to float32 once, so any chunking gives bit-identical
  output.
"""
from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import map_coordinates
from scipy.special import erfc
from scipy.spatial.transform import Rotation

#: Table columns (all 1-D arrays of the same length) of a particle table.
COLUMNS = ("class_name", "class_id", "x", "y", "z", "rot", "tilt", "psi", "radius_A", "shell_radius_A")

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


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotations uniform on SO(3) as ZYZ Euler angles ``(rot, tilt, psi)`` in degrees."""
    if n == 0:
        return np.zeros((0, 3))
    return Rotation.random(n, random_state=rng).as_euler("ZYZ", degrees=True)


def rotation_matrices(euler_deg: np.ndarray) -> np.ndarray:
    """Active rotations ``Rz(rot) Ry(tilt) Rz(psi)`` on ``(x, y, z)``; shape (N, 3, 3)."""
    return Rotation.from_euler("ZYZ", np.reshape(euler_deg, (-1, 3)), degrees=True).as_matrix()


def empty_table() -> dict[str, np.ndarray]:
    """A particle table with no rows."""
    t = {c: np.zeros(0) for c in COLUMNS}
    t["class_name"] = np.zeros(0, dtype="<U32")
    t["class_id"] = np.zeros(0, dtype=np.int32)
    return t


def place_particles(
    shape_zyx: tuple[int, int, int],
    pixel_size_A: float,
    classes: list[ClassTemplate],
    counts: list[int],
    seed: int,
    *,
    max_tries: int = 200,
) -> dict[str, np.ndarray]:
    """Place particles globally: uniform positions and orientations, no overlaps.

    Objects are placed class group by class group in the order given (callers put the large
    vesicles first), each by rejection sampling: a candidate whose bounding sphere leaves the
    volume or intersects an already placed one is redrawn, at most ``max_tries`` times.

    Parameters
    ----------
    shape_zyx : (int, int, int)
        Volume shape (voxels).
    pixel_size_A : float
        Voxel size (Å).
    classes : list of ClassTemplate
        Class ``k`` gets class id ``k + 1``.
    counts : list of int
        Objects per class, same length as ``classes`` (:func:`place_groups` draws the class of
        each object at random within a group instead).
    seed : int
        Seed of the placement generator.
    max_tries : int
        Candidates per object before it is given up (with a warning).

    Returns
    -------
    dict of str to ndarray
        The particle table (:data:`COLUMNS`), one row per placed object, in placement order.
    """
    groups = [([k], n) for k, n in enumerate(counts)]
    return place_groups(shape_zyx, pixel_size_A, classes, groups, seed, max_tries=max_tries)


def place_groups(
    shape_zyx: tuple[int, int, int],
    pixel_size_A: float,
    classes: list[ClassTemplate],
    groups: list[tuple[list[int], int]],
    seed: int,
    *,
    max_tries: int = 200,
) -> dict[str, np.ndarray]:
    """Like :func:`place_particles`, but each group ``(class_indices, n)`` places ``n`` objects
    whose class is drawn uniformly from ``class_indices`` (0-based indices into ``classes``)."""
    rng = np.random.default_rng(seed)
    shape = np.asarray(shape_zyx, dtype=np.float64)
    rows: list[tuple] = []
    centres = np.zeros((0, 3))                               # (z, y, x) voxels of placed objects
    radii = np.zeros(0)                                      # bounding radii (voxels)
    missing = 0
    for class_idx, n in groups:
        for _ in range(n):
            k = int(class_idx[rng.integers(len(class_idx))])
            cls = classes[k]
            placed = False
            for _try in range(max_tries):
                shell = 0.0
                if cls.kind == "shell":
                    # the radius range shrinks to what the volume can hold (thin slabs)
                    margin = cls.bounding_radius_A(pixel_size_A, 0.0)
                    fit = (shape.min() - 1) * pixel_size_A / 2 - margin
                    shell = float(rng.uniform(VESICLE_RADIUS_A[0], max(VESICLE_RADIUS_A[0], min(VESICLE_RADIUS_A[1], fit))))
                r_A = cls.bounding_radius_A(pixel_size_A, shell)
                r = r_A / pixel_size_A
                lo, hi = np.full(3, r - 0.5), shape - 0.5 - r      # sphere inside the volume
                if np.any(hi < lo):                             # cannot fit at all
                    break
                c = rng.uniform(lo, hi)
                if len(radii) and np.any(np.sqrt(((centres - c) ** 2).sum(1)) < radii + r):
                    continue
                euler = random_rotations(1, rng)[0]
                rows.append((cls.name, k + 1, c[2], c[1], c[0], *euler, r_A, shell))
                centres = np.vstack([centres, c])
                radii = np.append(radii, r)
                placed = True
                break
            missing += not placed
    if missing:
        warnings.warn(f"placed {len(rows)} of {len(rows) + missing} objects: no room for the "
                      f"others after {max_tries} tries each (volume too small or too crowded)",
                      stacklevel=2)
    table = empty_table()
    if rows:
        cols = list(zip(*rows))
        for name, col in zip(COLUMNS, cols):
            table[name] = np.asarray(col, dtype=table[name].dtype if name in ("class_name", "class_id") else np.float64)
    return table


def _axis(lo: int, n: int) -> np.ndarray:
    return np.arange(lo, lo + n, dtype=np.float64)


def render_block(
    table: dict[str, np.ndarray],
    classes: list[ClassTemplate],
    block_origin_zyx: tuple[int, int, int],
    block_shape: tuple[int, int, int],
    pixel_size_A: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the part of the specimen inside one block.

    Only particles whose bounding sphere intersects the block are touched; the result is a
    pure function of the block's location (see the module docstring), so rendering block by
    block equals rendering in one piece, bit for bit.

    Parameters
    ----------
    table : dict of str to ndarray
        Particle table (:data:`COLUMNS`); row ``r`` gets occupancy id ``r + 1``.
    classes : list of ClassTemplate
        Class id ``k`` is ``classes[k - 1]``.
    block_origin_zyx : (int, int, int)
        Voxel index of the block's first voxel.
    block_shape : (int, int, int)
        Block shape (voxels).
    pixel_size_A : float
        Voxel size (Å).

    Returns
    -------
    density : ndarray, float32, shape ``block_shape``
    class_mask : ndarray, uint8, shape ``block_shape``
        Class id (1..K), 0 = background.
    occupancy : ndarray, uint32, shape ``block_shape``
        Particle id = table row + 1, 0 = background.
    """
    o = np.asarray(block_origin_zyx, dtype=np.int64)
    s = np.asarray(block_shape, dtype=np.int64)
    density = np.zeros(tuple(s), dtype=np.float64)
    cmask = np.zeros(tuple(s), dtype=np.uint8)
    occ = np.zeros(tuple(s), dtype=np.uint32)
    n = len(table["x"])
    if n == 0:
        return density.astype(np.float32), cmask, occ
    cen = np.stack([table["z"], table["y"], table["x"]], 1)          # voxels
    rad = np.asarray(table["radius_A"], dtype=np.float64) / pixel_size_A
    # bounding box (absolute voxel indices, inclusive) of each sphere
    box_lo = np.ceil(cen - rad[:, None]).astype(np.int64)
    box_hi = np.floor(cen + rad[:, None]).astype(np.int64)
    lo = np.maximum(box_lo, o)
    hi = np.minimum(box_hi, o + s - 1)
    touching = np.flatnonzero(np.all(lo <= hi, axis=1))
    for r in touching:                                               # fixed order: table order
        cls = classes[int(table["class_id"][r]) - 1]
        a, b = lo[r], hi[r] + 1                                      # absolute [a, b)
        zz, yy, xx = (_axis(a[i], b[i] - a[i]) for i in range(3))
        dz2 = ((zz - cen[r, 0]) ** 2)[:, None, None]
        dy2 = ((yy - cen[r, 1]) ** 2)[None, :, None]
        dx2 = ((xx - cen[r, 2]) ** 2)[None, None, :]
        d2 = dz2 + dy2 + dx2                                         # squared distance (voxels²)
        inside = d2 <= rad[r] ** 2
        if cls.kind == "atoms":
            part = _render_atoms(cls, table, r, cen[r], a, b, pixel_size_A)
        elif cls.kind == "shell":
            dist_A = np.sqrt(d2) * pixel_size_A
            R = float(table["shell_radius_A"][r])
            g = 1.0 / (2 * LEAFLET_SIGMA_A ** 2)
            part = cls.amplitude * (np.exp(-((dist_A - R - LEAFLET_OFFSET_A) ** 2) * g)
                                    + np.exp(-((dist_A - R + LEAFLET_OFFSET_A) ** 2) * g))
        elif cls.kind == "ball":
            dist_A = np.sqrt(d2) * pixel_size_A
            part = cls.amplitude * 0.5 * erfc((dist_A - GOLD_RADIUS_A) / (np.sqrt(2) * GOLD_EDGE_A))
        else:
            part = _render_map(cls, table, r, cen[r], zz, yy, xx)
        part = np.where(inside, part, 0.0)                           # truncate to the sphere
        sl = tuple(slice(a[i] - o[i], b[i] - o[i]) for i in range(3))
        density[sl] += part
        label = part >= cls.threshold
        cmask[sl][label] = int(table["class_id"][r])
        occ[sl][label] = r + 1
    return density.astype(np.float32), cmask, occ


def _render_atoms(cls, table, r, c_zyx, a, b, pixel_size_A) -> np.ndarray:
    """Sum of the particle's Gaussian atoms over the absolute box ``[a, b)`` (float64)."""
    rot = rotation_matrices(np.array([table["rot"][r], table["tilt"][r], table["psi"][r]]))[0]
    xyz = cls.atoms_A @ rot.T / pixel_size_A                         # rotated, voxels
    pos = xyz[:, ::-1] + c_zyx                                       # (z, y, x) absolute voxels
    sig_A = cls.atom_sigma_A(pixel_size_A)
    sig = sig_A / pixel_size_A
    g = 1.0 / (2 * sig * sig)
    # a widened atom keeps its mass (integral), so coarse pixels blur rather than inflate
    amp = cls.amplitude * (cls.sigma_A / sig_A) ** 3
    cut = CUTOFF_SIGMAS * sig
    out = np.zeros(tuple(b - a), dtype=np.float64)
    # each atom's support is its own absolute box |v - p| <= cut (per axis), so whether an atom
    # touches a voxel does not depend on the block
    alo = np.maximum(np.ceil(pos - cut).astype(np.int64), a)
    ahi = np.minimum(np.floor(pos + cut).astype(np.int64) + 1, b)
    for p, l, h in zip(pos, alo, ahi):                               # fixed order: atom order
        if np.any(h <= l):
            continue
        gz = amp * np.exp(-((np.arange(l[0], h[0]) - p[0]) ** 2) * g)
        gy = np.exp(-((np.arange(l[1], h[1]) - p[1]) ** 2) * g)
        gx = np.exp(-((np.arange(l[2], h[2]) - p[2]) ** 2) * g)
        out[l[0] - a[0]:h[0] - a[0], l[1] - a[1]:h[1] - a[1], l[2] - a[2]:h[2] - a[2]] += (
            gz[:, None, None] * gy[None, :, None] * gx[None, None, :])
    return out


def _render_map(cls, table, r, c_zyx, zz, yy, xx) -> np.ndarray:
    """Trilinear sample of the rotated map at the absolute voxels ``zz x yy x xx`` (float64)."""
    rot = rotation_matrices(np.array([table["rot"][r], table["tilt"][r], table["psi"][r]]))[0]
    Z, Y, X = np.meshgrid(zz - c_zyx[0], yy - c_zyx[1], xx - c_zyx[2], indexing="ij")
    v = np.stack([X.ravel(), Y.ravel(), Z.ravel()])                  # (x, y, z) offsets, voxels
    q = rot.T @ v                                                    # back to the template frame
    coords = q[::-1] + cls.map_centre[:, None]                       # (z, y, x) map indices
    vals = map_coordinates(cls.map_zyx, coords, order=1, mode="constant", cval=0.0)
    return vals.reshape(Z.shape)


# -- particle tables from label volumes --------------------------------------------------------
@dataclass
class LabelStats:
    """Per-object statistics gathered from label volumes.

    Attributes
    ----------
    class_id : numpy.ndarray, int32, shape (N,)
        Class id of each object (1-based; 0 never occurs).
    count : numpy.ndarray, int64, shape (N,)
        Voxels of each object.
    centroid_zyx : numpy.ndarray, float64, shape (N, 3)
        Centroid of each object's voxels in voxel coordinates (voxel ``i`` has its centre at ``i``).
    key : numpy.ndarray, int64, shape (N,)
        Occupancy id (:class:`OccupancyComponents`) or the internal label of the component's first
        voxel in raster (z, y, x) order (:class:`MaskComponents`); the rows are sorted by it.
    """

    class_id: np.ndarray
    count: np.ndarray
    centroid_zyx: np.ndarray
    key: np.ndarray


def _as_class_ids(slab: np.ndarray, what: str) -> np.ndarray:
    """A slab of class ids as int64; ``ValueError`` unless every value is a non-negative integer."""
    a = np.asarray(slab)
    if a.dtype.kind in "iu":
        out = a if a.dtype.itemsize < 8 else a.astype(np.int64, copy=False)   # bincount-safe, no copy
    elif a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise ValueError(f"{what} holds non-integer values (expected integer ids)")
        out = a.astype(np.int64)
    elif a.dtype.kind == "b":
        out = a.astype(np.int64)
    else:
        raise ValueError(f"{what} has dtype {a.dtype} (expected integer ids)")
    if out.size and out.min() < 0:
        raise ValueError(f"{what} holds negative values (expected ids >= 0)")
    return out


class MaskComponents:
    """Connected components of every class of a class mask, fed slab by slab along z.

    The result equals ``scipy.ndimage.label(mask == k)`` on the whole volume for every class ``k``
    (face connectivity: voxels sharing a face are connected, scipy's default structure), but
    only one slab is in memory at a time: each slab is labelled alone and components that touch
    across a slab boundary (same class, same (y, x), adjacent planes) are merged with a
    union-find. Rows are ordered by class id, then by the raster (z, y, x) position of each
    component's first voxel (scipy's label order).

    Each slab is labelled in one pass (``skimage.measure.label``: regions of equal non-zero
    value, face connectivity), which are the components of every class at once.

    Memory: the slab and its int64 labels (8 bytes per voxel, plus skimage's temporaries), and
    the coordinates of the labelled voxels (32 bytes each); the union-find holds a few ints per
    slab-local component.
    """

    def __init__(self) -> None:
        self._z = 0
        self._parent = np.zeros(1, np.int64)                      # label 0: background
        self._cls = np.zeros(1, np.int64)
        self._count = np.zeros(1, np.int64)
        self._sums = np.zeros((1, 3), np.float64)                 # exact integer sums (< 2**53)
        self._last_labels: np.ndarray | None = None               # labels of the last plane fed

    def add(self, slab: np.ndarray) -> None:
        """Feed the next ``(nz, Y, X)`` slab of class ids (any integer or integral float dtype).

        Raises
        ------
        ValueError
            If the slab is not 3D, its (Y, X) differs from earlier slabs, or it holds negative or
            non-integer values.
        """
        from skimage import measure

        cls = _as_class_ids(slab, "class mask")
        if cls.ndim != 3:
            raise ValueError(f"class mask slab must be 3D (z, y, x), got shape {cls.shape}")
        if self._last_labels is not None and cls.shape[1:] != self._last_labels.shape:
            raise ValueError(f"class mask slab of (y, x) {cls.shape[1:]} after {self._last_labels.shape}")
        if cls.shape[0] == 0:
            return
        # one pass labels regions of equal non-zero value (face connectivity), i.e. the
        # components of every class at once
        labels = measure.label(cls, background=0, connectivity=1).astype(np.int64, copy=False)
        zz, yy, xx = np.nonzero(labels)
        if zz.size:
            n = int(labels[zz, yy, xx].max())
            base = len(self._parent) - 1
            ids = labels[zz, yy, xx]
            kinds = np.zeros(n + 1, np.int64)
            kinds[ids] = cls[zz, yy, xx]
            cnt = np.bincount(ids, minlength=n + 1)[1:]
            sums = np.stack([np.bincount(ids, weights=c, minlength=n + 1)[1:]
                             for c in (zz + self._z, yy, xx)], axis=1)
            labels[zz, yy, xx] += base
            self._parent = np.concatenate([self._parent, np.arange(base + 1, base + n + 1)])
            self._cls = np.concatenate([self._cls, kinds[1:]])
            self._count = np.concatenate([self._count, cnt])
            self._sums = np.concatenate([self._sums, sums])
        if self._last_labels is not None:
            a, b = self._last_labels, labels[0]
            touch = (a > 0) & (b > 0)
            touch &= self._cls[a] == self._cls[b]
            if touch.any():
                pairs = np.unique(np.stack([a[touch], b[touch]], axis=1), axis=0)
                for p, q in pairs:
                    self._union(int(p), int(q))
        self._last_labels = labels[-1].copy()
        self._z += cls.shape[0]

    def _find(self, i: int) -> int:
        parent = self._parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:                                  # path compression
            parent[i], i = root, parent[i]
        return int(root)

    def _union(self, i: int, j: int) -> None:
        ri, rj = self._find(i), self._find(j)
        if ri != rj:                                              # the smaller label is the root
            self._parent[max(ri, rj)] = min(ri, rj)

    def result(self) -> LabelStats:
        """The components found so far (see :class:`LabelStats`)."""
        parent = self._parent.copy()
        while True:                                               # resolve every root
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
        n = len(parent)
        count = np.bincount(parent, weights=self._count, minlength=n)
        sums = np.stack([np.bincount(parent, weights=self._sums[:, d], minlength=n) for d in range(3)], axis=1)
        roots = np.flatnonzero(parent == np.arange(n))
        roots = roots[roots > 0]
        order = np.lexsort((roots, self._cls[roots]))
        roots = roots[order]
        cnt = count[roots].astype(np.int64)
        return LabelStats(class_id=self._cls[roots].astype(np.int32), count=cnt,
                          centroid_zyx=sums[roots] / np.maximum(cnt, 1)[:, None], key=roots.astype(np.int64))


class OccupancyComponents:
    """One object per occupancy id (all voxels of the id, connected or not), fed slab by slab.

    The class of an object is the most frequent non-zero class of its voxels in the class mask
    (in generated specimens all of them agree); an id whose voxels carry no class gets class 0
    only if no class mask is given. Rows are ordered by occupancy id.
    """

    def __init__(self) -> None:
        self._z = 0
        self._stats: dict[int, np.ndarray] = {}                   # id -> [count, sz, sy, sx]
        self._votes: dict[tuple[int, int], int] = {}              # (id, class) -> voxels

    def add(self, occupancy: np.ndarray, class_mask: np.ndarray | None = None) -> None:
        """Feed the next ``(nz, Y, X)`` slab of occupancy ids (and class ids, same shape).

        Raises
        ------
        ValueError
            If the slabs are not 3D, differ in shape, or hold negative / non-integer ids.
        """
        occ = _as_class_ids(occupancy, "occupancy")
        if occ.ndim != 3:
            raise ValueError(f"occupancy slab must be 3D (z, y, x), got shape {occ.shape}")
        cls = None
        if class_mask is not None:
            cls = _as_class_ids(class_mask, "class mask")
            if cls.shape != occ.shape:
                raise ValueError(f"class mask slab {cls.shape} differs from occupancy slab {occ.shape}")
        zz, yy, xx = np.nonzero(occ)
        if zz.size:
            ids, inv = np.unique(occ[zz, yy, xx], return_inverse=True)
            cnt = np.bincount(inv, minlength=len(ids))
            sums = [np.bincount(inv, weights=c, minlength=len(ids)) for c in (zz + self._z, yy, xx)]
            for j, i in enumerate(ids.tolist()):
                row = np.array([cnt[j], sums[0][j], sums[1][j], sums[2][j]], np.float64)
                self._stats[i] = self._stats[i] + row if i in self._stats else row
            if cls is not None:
                c = cls[zz, yy, xx]
                keep = c > 0
                pair, pcount = np.unique(np.stack([ids[inv[keep]], c[keep]], axis=1), axis=0,
                                         return_counts=True)
                for (i, k), m in zip(pair.tolist(), pcount.tolist()):
                    self._votes[(i, k)] = self._votes.get((i, k), 0) + m
        self._z += occ.shape[0]

    def result(self) -> LabelStats:
        """The objects found so far (see :class:`LabelStats`)."""
        ids = np.array(sorted(self._stats), dtype=np.int64)
        best: dict[int, tuple[int, int]] = {}
        for (i, k), m in sorted(self._votes.items()):
            if i not in best or m > best[i][1]:
                best[i] = (k, m)
        cls = np.array([best.get(int(i), (0, 0))[0] for i in ids], dtype=np.int32)
        st = np.array([self._stats[int(i)] for i in ids]).reshape(-1, 4)
        cnt = st[:, 0].astype(np.int64)
        return LabelStats(class_id=cls, count=cnt, centroid_zyx=st[:, 1:] / np.maximum(cnt, 1)[:, None],
                          key=ids)
