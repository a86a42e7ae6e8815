"""Imported volumes in declared units, turned into the potential in volts relative to ice.

``import-mrc --kind volume --units V|normalised`` and the config's ``specimens.files[].units``
say what an imported grandmodel holds:

* ``"V"``: the electrostatic potential in volts relative to the solvent (vitreous ice), as
  potential simulators write it: stored as it is.
* ``"normalised"``: arbitrary density units with the solvent at 0 (e.g. SHREC's grandmodels):
  negative values are clipped to 0 and the rest is scaled so that its mean inside the envelope
  equals the protein-minus-ice contrast of :func:`faket_dask.kernels.potential.protein_potential_V`
  (3.36 V). The envelope is the voxels above Otsu's threshold of the positive voxels (the same
  rule as normalised MRC templates, :func:`faket_dask.kernels.atomic_model.volts_class_from_map`).
  Otsu is computed from a 256-bin histogram reduced lazily over the chunks, so the volume is
  never held whole.
"""
from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import InputError
from ..kernels.atomic_model import MAP_UNITS
from ..kernels.potential import ice_potential_V, protein_potential_V
from ..progress import compute

__all__ = ["VOLUME_UNITS", "to_volts"]

#: Units an imported volume may declare (the same names as MRC templates').
VOLUME_UNITS = MAP_UNITS
#: Histogram bins of the lazy Otsu threshold.
OTSU_BINS = 256


def check_units(units: str, source: str) -> str:
    """``units`` if it is one of :data:`VOLUME_UNITS`, else a one-line :class:`InputError`."""
    if units not in VOLUME_UNITS:
        raise InputError(f"{source}: unknown units '{units}' (use one of: {', '.join(VOLUME_UNITS)})")
    return units


def to_volts(arr: xr.DataArray, units: str, source: str) -> xr.DataArray:
    """The imported volume ``arr`` as potential in volts relative to ice, lazily.

    Parameters
    ----------
    arr : xarray.DataArray, dims (z, y, x), dask- or numpy-backed
        The volume as read (float32).
    units : {"V", "normalised"}
        What ``arr`` holds (module docstring).
    source : str
        The file, for messages.

    Returns
    -------
    xarray.DataArray
        float32, attrs ``units = "V"``, ``units_imported`` and, for ``"normalised"``, the
        ``volts_per_unit`` scale and the ``envelope_threshold`` used.

    Raises
    ------
    InputError
        Unknown units, or a ``"normalised"`` volume without positive voxels.
    """
    check_units(units, source)
    out = arr.astype(np.float32)
    attrs = dict(arr.attrs)
    if units == "normalised":
        data = arr.data if isinstance(arr.data, da.Array) else da.from_array(np.asarray(arr.data))
        pos = da.clip(data.astype(np.float64), 0, None)
        vmax = float(compute(pos.max(), label=f"range of {source}"))
        if not vmax > 0:
            raise InputError(f"{source}: a 'normalised' volume needs positive density, the maximum is {vmax:g}")
        edges = np.linspace(0.0, vmax, OTSU_BINS + 1)
        counts, _ = da.histogram(pos[pos > 0], bins=edges)
        counts = np.asarray(compute(counts, label=f"histogram of {source}"))
        from skimage.filters import threshold_otsu

        centres = 0.5 * (edges[1:] + edges[:-1])
        # one occupied bin (a constant map): no threshold to find, every positive voxel is in
        thr = (float(threshold_otsu(hist=(counts, centres))) if np.count_nonzero(counts) > 1
               else 0.0)
        inside = pos > thr
        s, n = compute([da.where(inside, pos, 0).sum(), inside.sum()], label=f"envelope of {source}")
        mean_inside = float(s) / max(int(n), 1)
        scale = (protein_potential_V() - ice_potential_V()) / mean_inside
        out = arr.copy(data=(pos * scale).astype(np.float32))
        attrs.update(volts_per_unit=float(scale), envelope_threshold=thr)
    attrs.update(units="V", units_imported=units)
    out.attrs = attrs
    return out
