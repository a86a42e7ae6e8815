"""Labels on the tomogram grid: the class mask and the particle table, lazily.

The geometry is :mod:`faket_dask.kernels.labels`; this module only builds the Dask graph and
the labelled arrays (``tomo_NNN/labels/class_mask``, ``tomo_NNN/labels_particles``).
"""
from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from .. import chunking, datamodel
from ..kernels import labels as K


def tomogram_grid(specimen_x: int, binning: int, thickness: int | None,
                  z_valid: tuple[float, float] | None) -> tuple[int, int, int]:
    """``(nz_full, z0, nz_keep)``: tomogram slices before ``z_valid``, first and count kept.

    ``thickness`` defaults to the binned width, as the reconstruction stage does.
    """
    from ..kernels.reconstruction_shapes import z_valid_slice  # torch-free

    nz_full = thickness or specimen_x // binning
    sl = z_valid_slice(nz_full, z_valid) if z_valid else slice(0, nz_full)
    return nz_full, sl.start, sl.stop - sl.start


def class_mask_on_tomogram(class_mask: xr.DataArray, *, binning: int, nz_full: int, z0: int,
                           nz_keep: int, pixel_size_A: float) -> xr.DataArray:
    """The class mask (z, y, x) of a specimen sampled on the tomogram grid, lazily.

    Returns
    -------
    DataArray (nz_keep, Y // b, X // b), uint8
        Nearest-neighbour labels (0 outside the specimen); pixel size ``pixel_size_A · b``;
        attrs: the mask's, ``binning`` and ``mapping``.
    """
    Z, Y, X = class_mask.shape
    b = int(binning)
    src, valid = K.source_slices(Z, nz_full, z0, nz_keep, b)
    cm = class_mask.data[:, K.centre_voxels(Y, b), K.centre_voxels(X, b)]
    mapped = da.where(da.from_array(valid, chunks=-1)[:, None, None], cm[src], 0).astype(np.uint8)
    mapped = mapped.rechunk(chunking.volume_chunks(
        mapped.shape, chunking.choose_cy(*mapped.shape[1:], mapped.shape[0])))
    return datamodel.volume(mapped, pixel_size_A * b, name="class_mask", dtype=None,
                            attrs={**class_mask.attrs, "binning": b,
                                   "mapping": "nearest (centre voxel of each bin); z centred"})


def particles_on_tomogram(particles: xr.Dataset, *, specimen_z: int, binning: int,
                          nz_full: int, z0: int, pixel_size_A: float) -> xr.Dataset:
    """The particle table with coordinates on the tomogram grid (in memory; tables are small)."""
    out = particles.copy()
    out["x"], out["y"], out["z"] = (
        ("particle", c) for c in K.to_tomogram_grid(
            particles["x"].values, particles["y"].values, particles["z"].values,
            specimen_z=specimen_z, nz_full=nz_full, z0=z0, binning=binning))
    if "filament_x" in particles:
        # filament paths are points like the particle centres: the same mapping
        out["filament_x"], out["filament_y"], out["filament_z"] = (
            ("filament_point", c) for c in K.to_tomogram_grid(
                particles["filament_x"].values, particles["filament_y"].values,
                particles["filament_z"].values, specimen_z=specimen_z, nz_full=nz_full, z0=z0,
                binning=binning))
    out.attrs.update(pixel_size_A=pixel_size_A * binning, binning=int(binning),
                     grid="tomogram (tomo_NNN/tomogram level 0)")
    return out
