"""Re-render particles from an exported particle list and compare them with the rendered specimen.

Used by ``tests/test_orientations.py`` to prove the orientation convention written into each
export (RELION STAR, SHREC txt, CZ portal NDJSON, copick picks): a test reads a file with the
format's own semantics, turns each record into a position (voxels of the specimen grid, x y z,
voxel ``i`` centred at ``i``) and a 3×3 **active** rotation template → particle acting on
``(x, y, z)`` column vectors, and :func:`particle_correlations` re-renders the template there
and correlates it with the specimen.

The re-rendering is written here from the template's definition, independently of the
specimen kernels (:mod:`faket_dask.kernels.specimen`): a procedural class is a sum of Gaussian
pseudo-atoms (``ClassTemplate.atoms_A``, Å, ``(x, y, z)`` about the template centre, width
``max(sigma_A, 0.75 · pixel)``), a map class (or a bare template volume) is sampled trilinearly
at the template-frame coordinates ``Rᵀ (v - position)``.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

#: Rendered atom widths are never below this many voxels (the renderer's documented floor).
MIN_SIGMA_VOXELS = 0.75


def _box(position_xyz: np.ndarray, radius: float, shape_zyx: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
    """Voxel coordinates (z, y, x; 1-D each) of the box of ``radius`` around ``position``, clipped."""
    c = np.asarray(position_xyz, np.float64)[::-1]
    lo = np.maximum(np.ceil(c - radius).astype(int), 0)
    hi = np.minimum(np.floor(c + radius).astype(int), np.asarray(shape_zyx) - 1)
    return tuple(np.arange(lo[i], hi[i] + 1, dtype=np.float64) for i in range(3))


def render_template(template, pixel_size_A: float, position_xyz, rotation: np.ndarray,
                    zz: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """The template placed at ``position_xyz`` (voxels) turned by ``rotation``, on the grid
    ``zz × yy × xx`` (voxel coordinates), shape ``(len(zz), len(yy), len(xx))``, arbitrary scale.

    Parameters
    ----------
    template : ClassTemplate or ndarray
        ``kind == "atoms"`` (pseudo-atoms), ``kind == "map"`` (``map_zyx`` with its centre
        ``map_centre``), or a bare ``(D, H, W)`` volume at ``pixel_size_A`` centred at
        ``(D - 1) / 2, (H - 1) / 2, (W - 1) / 2``.
    pixel_size_A : float
        Voxel size of the specimen grid (Å).
    position_xyz : (3,) array
        Particle centre, voxels of the specimen grid.
    rotation : (3, 3) array
        Active rotation template → particle on ``(x, y, z)`` column vectors.
    """
    R = np.asarray(rotation, np.float64).reshape(3, 3)
    p = np.asarray(position_xyz, np.float64)
    if getattr(template, "kind", None) == "atoms":
        # atom a at p + R a (voxels); a Gaussian is the product of its x, y and z factors
        atoms = np.asarray(template.atoms_A, np.float64) @ R.T / pixel_size_A + p
        s = max(float(template.sigma_A), MIN_SIGMA_VOXELS * pixel_size_A) / pixel_size_A
        gx, gy, gz = (np.exp(-(ax[None, :] - atoms[:, j, None]) ** 2 / (2 * s * s))
                      for j, ax in enumerate((xx, yy, zz)))
        zy = (gz[:, :, None] * gy[:, None, :]).reshape(len(atoms), -1)     # (A, Z·Y)
        return (zy.T @ gx).reshape(len(zz), len(yy), len(xx))
    Z, Y, X = np.meshgrid(zz, yy, xx, indexing="ij")
    v = np.stack([X - p[0], Y - p[1], Z - p[2]], -1)                  # (..., 3) x y z, voxels
    if getattr(template, "kind", None) == "map":
        vol, centre = np.asarray(template.map_zyx, np.float64), np.asarray(template.map_centre, np.float64)
    else:
        vol = np.asarray(template, np.float64)
        centre = (np.asarray(vol.shape, np.float64) - 1) / 2
    q = v @ R                                                          # Rᵀ v: template frame, x y z
    coords = np.stack([q[..., 2], q[..., 1], q[..., 0]]).reshape(3, -1) + centre[:, None]
    return map_coordinates(vol, coords, order=1, mode="constant", cval=0.0).reshape(Z.shape)


def template_radius_vox(template, pixel_size_A: float) -> float:
    """Radius (voxels) holding the template's density: the atoms' extent + 3 sigma, or for a map
    the farthest voxel above 0.1 % of its maximum (+ 1 voxel) from its centre."""
    if getattr(template, "kind", None) == "atoms":
        r = np.sqrt((np.asarray(template.atoms_A) ** 2).sum(1)).max()
        s = max(float(template.sigma_A), MIN_SIGMA_VOXELS * pixel_size_A)
        return float((r + 3 * s) / pixel_size_A)
    if getattr(template, "kind", None) == "map":
        vol, centre = np.asarray(template.map_zyx, np.float64), np.asarray(template.map_centre, np.float64)
    else:
        vol = np.asarray(template, np.float64)
        centre = (np.asarray(vol.shape, np.float64) - 1) / 2
    idx = np.argwhere(vol > 1e-3 * vol.max())
    return float(np.sqrt(((idx - centre) ** 2).sum(1)).max() + 1.0)


def particle_correlations(
    template,
    pixel_size_A: float,
    positions_xyz: np.ndarray,
    rotations: np.ndarray,
    specimen: np.ndarray,
    *,
    radius_vox: float | None = None,
) -> np.ndarray:
    """Pearson correlation of each re-rendered particle with the specimen around it.

    Parameters
    ----------
    template : ClassTemplate or ndarray
        The particles' class (see :func:`render_template`).
    pixel_size_A : float
        Voxel size of the specimen (Å).
    positions_xyz : ndarray, shape (N, 3)
        Particle centres, voxels of the specimen grid (x, y, z; voxel ``i`` centred at ``i``).
    rotations : ndarray, shape (N, 3, 3)
        Active rotations template → particle on ``(x, y, z)`` column vectors.
    specimen : ndarray, shape (Z, Y, X)
        The rendered specimen (density).
    radius_vox : float, optional
        Radius of the sphere around each centre the correlation is taken over (default
        :func:`template_radius_vox`).

    Returns
    -------
    ndarray, shape (N,)
        Correlation per particle (1 = the specimen there is the re-rendered particle up to scale).
    """
    spec = np.asarray(specimen, np.float64)
    r = template_radius_vox(template, pixel_size_A) if radius_vox is None else float(radius_vox)
    out = []
    for p, R in zip(np.reshape(positions_xyz, (-1, 3)), np.reshape(rotations, (-1, 3, 3))):
        zz, yy, xx = _box(p, r, spec.shape)
        model = render_template(template, pixel_size_A, p, R, zz, yy, xx)
        Z, Y, X = np.meshgrid(zz, yy, xx, indexing="ij")
        inside = (X - p[0]) ** 2 + (Y - p[1]) ** 2 + (Z - p[2]) ** 2 <= r * r
        data = spec[np.ix_(zz.astype(int), yy.astype(int), xx.astype(int))]
        out.append(float(np.corrcoef(model[inside], data[inside])[0, 1]))
    return np.asarray(out)
