"""Is the specimen visible in the reference microscope's data? Three numbers per tomogram.

:func:`specimen_visibility` measures, from a run store (``docs/microscope.md``, "Visibility"):

* ``tilt_correlation``: per tilt, the Pearson correlation of ``measured`` with ``noiseless``
  (both are dark where there is matter, so a visible specimen gives a positive value that is
  highest near 0°, where the ice is thinnest);
* ``tomogram_correlation``: the Pearson correlation of the ``measured`` tomogram, low-pass
  filtered by a Gaussian of ``lowpass_sigma_vox`` voxels, with the ``noiseless`` tomogram (as
  stored, and also low-passed the same way);
* ``fiducial_contrast``: for every gold bead of the particle table on the tomogram grid, how
  many standard deviations of its surroundings its centre is darker than they are:
  ``(mean(shell) − mean(core)) / std(shell)``, the core being the voxels within half the bead
  radius and the shell those between 2 and 4 bead radii from the centre that belong to no
  particle (class mask 0).

Everything is reduced lazily (dask sums over the stored chunks; the low-pass is a
``map_overlap``), so memory stays flat in the tomogram size; only small boxes around the beads
are computed whole.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from .. import store as _store
from ..errors import InputError
from ..progress import compute
from ..store.layout import labels_group, labels_particles_group, tiltseries_var, tomogram_group

__all__ = ["lowpass_volume", "specimen_visibility"]

#: Gold bead class names of the generated specimens.
FIDUCIAL_NAMES = ("fiducial", "gold")


def _pearson_terms(a: da.Array, b: da.Array, axes: tuple[int, ...]) -> list[da.Array]:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return [a.sum(axes), b.sum(axes), (a * a).sum(axes), (b * b).sum(axes), (a * b).sum(axes)]


def _pearson(n: float, sa, sb, saa, sbb, sab) -> np.ndarray:
    cov = sab / n - (sa / n) * (sb / n)
    va = saa / n - (sa / n) ** 2
    vb = sbb / n - (sb / n) ** 2
    return cov / np.sqrt(va * vb)


def _lowpass(a: da.Array, sigma: float) -> da.Array:
    from scipy.ndimage import gaussian_filter

    depth = int(np.ceil(4 * sigma))
    return a.astype(np.float32).map_overlap(gaussian_filter, depth=depth, boundary="reflect",
                                            sigma=sigma, mode="reflect", truncate=4.0)


def lowpass_volume(vol, sigma_vox: float = 2.0):
    """``vol`` (xarray.DataArray, z y x) low-passed by a Gaussian of ``sigma_vox`` voxels, lazily."""
    out = vol.copy(data=_lowpass(vol.data, sigma_vox))
    out.attrs["lowpass_sigma_vox"] = float(sigma_vox)
    return out


def specimen_visibility(store: str | Path, tomo: int, *, lowpass_sigma_vox: float = 2.0) -> dict[str, Any]:
    """How visible the specimen of tomogram ``tomo`` is in the reference microscope's data.

    Parameters
    ----------
    store : path
        Run store with ``tomo_NNN/tiltseries/{measured,noiseless}``, their tomograms
        (``tomo_NNN/tomogram``), the class mask and particle table on the tomogram grid
        (``tomo_NNN/labels``, ``tomo_NNN/labels_particles``), as ``simulate`` writes them.
    tomo : int
        Tomogram index.
    lowpass_sigma_vox : float
        Gaussian low-pass of the measured tomogram (voxels).

    Returns
    -------
    dict
        ``tilt_angles_deg`` (list, T), ``tilt_correlation`` (list, T), ``tomogram_correlation``
        (float), ``tomogram_correlation_both_lowpassed`` (float), ``fiducial_contrast`` (list,
        one value per bead, background std units), ``lowpass_sigma_vox``.

    Raises
    ------
    InputError
        A variable the measures need is missing from the store.
    """
    need = [tiltseries_var(tomo, "measured"), tiltseries_var(tomo, "noiseless")]
    for v in need:
        if not _store.has_var(store, v):
            raise InputError(f"{store}: no {v} (run simulate with the reference microscope first)")
    m_ts = _store.open_var(store, need[0])
    n_ts = _store.open_var(store, need[1])
    tomos = _store.open(store, tomogram_group(tomo))
    for v in ("measured", "noiseless"):
        if v not in tomos:
            raise InputError(f"{store}: no {tomogram_group(tomo)}/{v} tomogram (reconstruct it first)")
    m_vol, n_vol = tomos["measured"].data, tomos["noiseless"].data
    lp = _lowpass(m_vol, lowpass_sigma_vox)
    n_px = m_ts.shape[1] * m_ts.shape[2]
    terms = (_pearson_terms(m_ts.data, n_ts.data, (1, 2)) + _pearson_terms(lp, n_vol, (0, 1, 2))
             + _pearson_terms(lp, _lowpass(n_vol, lowpass_sigma_vox), (0, 1, 2)))
    vals = compute(terms, label=f"visibility {tomo}")
    tilt_r = _pearson(n_px, *vals[:5])
    vol_r = float(_pearson(float(m_vol.size), *vals[5:10]))
    vol_r2 = float(_pearson(float(m_vol.size), *vals[10:15]))
    return {
        "tilt_angles_deg": [float(a) for a in m_ts["tilt"].values],
        "tilt_correlation": [float(r) for r in tilt_r],
        "tomogram_correlation": vol_r,
        "tomogram_correlation_both_lowpassed": vol_r2,
        "fiducial_contrast": _fiducial_contrast(store, tomo, tomos["measured"]),
        "lowpass_sigma_vox": float(lowpass_sigma_vox),
    }


def _fiducial_contrast(store: str | Path, tomo: int, vol) -> list[float]:
    """``(mean(shell) − mean(core)) / std(shell)`` of every gold bead (see the module doc)."""
    if not _store.has_var(store, f"{labels_particles_group(tomo)}/x"):
        return []
    parts = _store.open(store, labels_particles_group(tomo))
    mask = _store.open(store, labels_group(tomo))["class_mask"] if _store.has_var(
        store, f"{labels_group(tomo)}/class_mask") else None
    px = float(parts.attrs.get("pixel_size_A", vol.attrs.get("pixel_size_A")))
    names = parts["class_name"].values.astype(str)
    out = []
    shape = np.array(vol.shape)
    for r in np.flatnonzero(np.isin(names, FIDUCIAL_NAMES)):
        c = np.array([parts["z"].values[r], parts["y"].values[r], parts["x"].values[r]])
        rad = max(float(parts["radius_A"].values[r]) / px, 1.0)
        h = int(np.ceil(4 * rad)) + 1
        lo = np.maximum(np.floor(c).astype(int) - h, 0)
        hi = np.minimum(np.floor(c).astype(int) + h + 1, shape)
        if np.any(hi <= lo):
            continue
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        box = np.asarray(vol.data[sl], dtype=np.float64)
        lab = np.asarray(mask.data[sl]) if mask is not None else np.zeros(box.shape, np.uint8)
        zz, yy, xx = np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi)), indexing="ij")
        d = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
        core = box[d <= max(0.5 * rad, 0.9)]
        shell = box[(d >= 2 * rad) & (d <= 4 * rad) & (lab == 0)]
        if core.size == 0 or shell.size < 10:
            continue
        out.append(float((shell.mean() - core.mean()) / shell.std()))
    return out
