"""Reference-microscope stage: noiseless tilt-series → simulated ``measured`` counts.

A physics-based stand-in for a real instrument (``docs/microscope.md``), so the method has
paired style data (``measured`` + ``noiseless``) on a fresh machine. Its parameters and their
defaults are :class:`faket_dask.params.MicroscopeParams`.

The CTF and the detector MTF are 2D Fourier filters, so each task holds one *whole* tilt: the
input is regrouped to ``(1, Y, X)`` chunks (only the y-chunks of one tilt are concatenated),
:func:`faket_dask.kernels.microscope.image_tilt` runs per tilt, and the result is split back
into the input's ``(1, cy, X)`` chunks. Every tilt's generator is keyed by
``(seed, tomo, tilt index)``, so the output is bit-identical for any chunking or cluster.
"""
from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from .. import datamodel
from ..errors import InputError
from ..params import MicroscopeParams


def _kernel_params(p: MicroscopeParams, n_tilts: int, phase_per_unit: float) -> dict[str, float]:
    """Keywords of :func:`faket_dask.kernels.microscope.image_tilt` for one tilt of ``n_tilts``."""
    return {
        "dose_e_per_A2": p.total_dose_e_per_A2 / n_tilts,
        "phase_per_unit": phase_per_unit,
        "defocus_um": p.defocus_um,
        "voltage_kV": p.voltage_kV,
        "cs_mm": p.cs_mm,
        "amplitude_contrast": p.amplitude_contrast,
        "bfactor_A2": p.bfactor_A2,
        "ice_thickness_A": p.ice_thickness_A,
        "inelastic_mfp_A": p.inelastic_mfp_A,
        "ice_phase_std_rad": p.ice_phase_std_rad,
        "mtf_a": p.mtf_a,
        "mtf_b": p.mtf_b,
        "mtf_c": p.mtf_c,
    }


def _image_block(
    block: np.ndarray,
    angles: np.ndarray,
    pixel_size_A: float,
    seed: int,
    tomo: int,
    kparams: dict[str, float],
    block_info: dict | None = None,
) -> np.ndarray:
    from ..kernels.microscope import image_tilt

    t0 = block_info[0]["array-location"][0][0]  # global tilt index: keys the generator
    out = np.empty(block.shape, np.float32)
    for i in range(block.shape[0]):
        # noiseless is −(projected density): negate to get V ≥ 0 where there is matter.
        v = -np.asarray(block[i], dtype=np.float64)
        out[i] = image_tilt(v, float(angles[t0 + i]), pixel_size_A, seed=seed, tomo=tomo,
                            tilt=t0 + i, **kparams)
    return out


def dose_per_tilt(n_tilts: int, params: MicroscopeParams | None = None) -> float:
    """Dose of each tilt (e/Å²): the total dose of ``params`` (default
    :class:`~faket_dask.params.MicroscopeParams`) spread evenly over ``n_tilts``."""
    p = params or MicroscopeParams()
    return p.total_dose_e_per_A2 / n_tilts


def simulate_microscope(
    noiseless: xr.DataArray,
    *,
    seed: int = 0,
    tomo: int = 0,
    params: MicroscopeParams | None = None,
) -> xr.DataArray:
    """Simulated measured tilt-series of a noiseless one (counts), lazily.

    Parameters
    ----------
    noiseless : xarray.DataArray, dims (tilt, y, x)
        Noiseless tilt-series = −(projected density), as written by :func:`faket_dask.project`.
    seed, tomo : int
        Key of the shot noise and ice phase, each in [0, 2³²).
    params : MicroscopeParams, optional
        Optics, ice, dose and detector (defaults: :class:`MicroscopeParams`).

    Returns
    -------
    xarray.DataArray, dims (tilt, y, x), float32, name ``"measured"``
        Electron counts per pixel; same coords and chunks as ``noiseless``. attrs: every
        parameter, the resolved ``phase_per_unit``, ``dose_per_tilt_e_per_A2``,
        ``dose_per_pixel``, ``seed``, ``tomo``, ``kind = "reference-microscope"``.

    Notes
    -----
    With ``params.phase_per_unit = None`` the scale is resolved now from ``max|noiseless|``
    (a small dask reduction computed eagerly), so the attrs record the value used.
    """
    p = params or MicroscopeParams()
    if datamodel.kind_of(noiseless) != "tiltseries":
        raise InputError(f"microscope: expected a tilt-series (tilt, y, x), got {noiseless.dims}")
    for name, v in (("seed", seed), ("tomo", tomo)):
        if not 0 <= int(v) < 2**32:
            raise InputError(f"microscope: {name} must be in [0, 2**32), got {v}")
    angles = np.asarray(noiseless["tilt"].values, dtype=np.float64)
    if not np.all(np.abs(angles) < 89.0):
        raise InputError("microscope: tilt angles must lie within (-89°, 89°) (ice grows as 1/cos θ)")
    pixel = datamodel.pixel_size_of(noiseless)
    if isinstance(noiseless.data, da.Array):
        data = noiseless.data.astype(np.float32)
        out_chunks = data.chunks  # keep the caller's (1, cy, X) chunks
    else:
        data = da.from_array(np.asarray(noiseless.data, dtype=np.float32), chunks=(1, -1, -1))
        out_chunks = data.chunks

    phase_per_unit = p.phase_per_unit
    if phase_per_unit is None:
        vmax = float(abs(data).max().compute())
        phase_per_unit = p.max_phase_rad / vmax if vmax > 0 else 0.0
    kparams = _kernel_params(p, angles.size, phase_per_unit)

    tilts = data.rechunk({0: 1, 1: -1, 2: -1})  # whole tilts: concatenates one tilt's y-chunks
    measured = tilts.map_blocks(
        _image_block, angles, pixel, int(seed), int(tomo), kparams,
        dtype=np.float32, meta=np.empty((0, 0, 0), np.float32),
    )
    measured = measured.rechunk(out_chunks)
    attrs = dict(p.model_dump())
    attrs.update(
        kind="reference-microscope",
        phase_per_unit=float(phase_per_unit),
        dose_per_tilt_e_per_A2=float(kparams["dose_e_per_A2"]),
        dose_per_pixel=float(kparams["dose_e_per_A2"] * pixel**2),
        seed=int(seed),
        tomo=int(tomo),
        model="weak-phase CTF + ice 1/cos + Poisson + MTF on expectation (docs/microscope.md)",
    )
    return datamodel.tiltseries(measured, angles, pixel, name="measured", attrs=attrs)
