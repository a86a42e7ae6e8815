"""Reference-microscope stage: projected potential → simulated ``measured`` counts.

A physics-based stand-in for a real instrument (``docs/microscope.md``), so the method has
paired style data (``measured`` + ``noiseless``) on a fresh machine. Its parameters and their
defaults are :class:`faket_dask.params.MicroscopeParams`. The specimen is in volts, so the
``noiseless`` tilt-series (``−∫V dl`` in V·voxel, :func:`faket_dask.project`) times the pixel
size and the interaction constant is the phase: nothing is rescaled.

The lens and the detector MTF are 2D Fourier filters, so each task holds *whole* tilts: the
input's y-chunks are joined (its tilt chunks kept: ``(1, Y, X)`` from ``(1, cy, X)``, or the
caller's batches of small whole tilts, as the pipeline reads them), :func:`faket_dask.kernels.
microscope.image_tilt` runs per tilt, and the result is split back into the input's chunks. Every tilt's generator is keyed by
``(seed, tomo, tilt index)``, so the output is bit-identical for any chunking or cluster.
"""
from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from .. import datamodel
from ..errors import InputError
from ..params import MicroscopeParams


def _kernel_params(p: MicroscopeParams, n_tilts: int, ice_A: float) -> dict[str, float]:
    """Keywords of :func:`faket_dask.kernels.microscope.image_tilt` shared by every tilt."""
    from ..kernels.potential import LIGHT_ATOM_ABSORPTION_RATIO

    return {
        "dose_e_per_A2": p.total_dose_e_per_A2 / n_tilts,
        "absorption_ratio": (LIGHT_ATOM_ABSORPTION_RATIO if p.absorption_ratio is None
                             else p.absorption_ratio),
        "defocus_um": p.defocus_um,
        "voltage_kV": p.voltage_kV,
        "cs_mm": p.cs_mm,
        "bfactor_A2": p.bfactor_A2,
        "ice_thickness_A": ice_A,
        "inelastic_mfp_A": p.inelastic_mfp_A,
        "mtf_a": p.mtf_a,
        "mtf_b": p.mtf_b,
        "mtf_c": p.mtf_c,
    }


def _ice_std(p: MicroscopeParams, ice_A: float, angle_deg: float, pixel_size_A: float) -> float:
    """Ice phase noise std of one tilt: the given value at 0° (variance ∝ path), or physics."""
    from ..kernels.microscope import ice_phase_std_rad

    path = ice_A / np.cos(np.deg2rad(angle_deg))
    if p.ice_phase_std_rad is not None:
        return float(p.ice_phase_std_rad * np.sqrt(path / ice_A)) if ice_A > 0 else 0.0
    return ice_phase_std_rad(path, pixel_size_A, p.voltage_kV)


def _image_block(
    block: np.ndarray,
    *rest: np.ndarray,
    angles: np.ndarray,
    pixel_size_A: float,
    seed: int,
    tomo: int,
    kparams: dict[str, float],
    ice_std: np.ndarray,
    block_info: dict | None = None,
) -> np.ndarray:
    from ..kernels.microscope import image_tilt

    t0 = block_info[0]["array-location"][0][0]  # global tilt index: keys the generator
    out = np.empty(block.shape, np.float32)
    for i in range(block.shape[0]):
        # noiseless is −∫V in V·voxel: negate and scale to V·Å (matter positive).
        v = -np.asarray(block[i], dtype=np.float64) * pixel_size_A
        w = -np.asarray(rest[0][i], dtype=np.float64) * pixel_size_A if rest else None
        out[i] = image_tilt(v, float(angles[t0 + i]), pixel_size_A, seed=seed, tomo=tomo,
                            tilt=t0 + i, absorption_proj_VA=w,
                            ice_phase_std_rad=float(ice_std[t0 + i]), **kparams)
    return out


def specimen_phase(noiseless: xr.DataArray, voltage_kV: float | None = None) -> xr.DataArray:
    """The specimen's phase shift (rad) relative to the ice, lazily: ``σ_e(U) · ∫V dl``.

    What the microscope sees before the ice noise, the lens and the detector (``microscope
    --write-phase``). ``voltage_kV`` defaults to :class:`MicroscopeParams`'.

    Returns
    -------
    xarray.DataArray, dims (tilt, y, x), float32, name ``"phase"``, attrs ``units = "rad"``
    """
    from ..kernels.potential import interaction_constant

    kv = MicroscopeParams().voltage_kV if voltage_kV is None else float(voltage_kV)
    scale = -interaction_constant(kv) * datamodel.pixel_size_of(noiseless)
    ph = (noiseless * np.float32(scale)).astype(np.float32)
    return datamodel.tiltseries(ph.data, noiseless["tilt"].values, datamodel.pixel_size_of(noiseless),
                                name="phase", attrs={"units": "rad", "voltage_kV": kv,
                                "description": "specimen phase relative to the ice: sigma_e(U) "
                                               "x projected potential (docs/microscope.md)"})


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
    absorption: xr.DataArray | None = None,
    specimen_thickness_A: float | None = None,
) -> xr.DataArray:
    """Simulated measured tilt-series of a specimen's projections (counts), lazily.

    Parameters
    ----------
    noiseless : xarray.DataArray, dims (tilt, y, x)
        Noiseless tilt-series = −(projected potential) in V·voxel relative to ice, as written
        by :func:`faket_dask.project` from a specimen in volts.
    seed, tomo : int
        Key of the shot noise and ice phase, each in [0, 2³²).
    params : MicroscopeParams, optional
        Optics, ice, dose and detector (defaults: :class:`MicroscopeParams`).
    absorption : xarray.DataArray, dims (tilt, y, x), optional
        ``fd.project`` of the specimen's absorption potential (same convention and shape as
        ``noiseless``). Default: ``params.absorption_ratio`` (light atoms' 0.07) times the
        real potential.
    specimen_thickness_A : float, optional
        The specimen's z extent (Å): the ice thickness at 0° when ``params.ice_thickness_A``
        is None (else :data:`faket_dask.params.ICE_THICKNESS_A`).

    Returns
    -------
    xarray.DataArray, dims (tilt, y, x), float32, name ``"measured"``
        Electron counts per pixel; same coords and chunks as ``noiseless``. attrs: every
        parameter (ice thickness and absorption ratio resolved), ``interaction_constant``,
        ``dose_per_tilt_e_per_A2``, ``dose_per_pixel``, ``seed``, ``tomo``,
        ``kind = "reference-microscope"``.

    Raises
    ------
    InputError
        Not a tilt-series, seed/tomo out of range, angles beyond ±89°, or an ``absorption``
        of another shape.
    """
    from ..kernels.potential import interaction_constant
    from ..params import ICE_THICKNESS_A

    p = params or MicroscopeParams()
    if datamodel.kind_of(noiseless) != "tiltseries":
        raise InputError(f"microscope: expected a tilt-series (tilt, y, x), got {noiseless.dims}")
    for name, v in (("seed", seed), ("tomo", tomo)):
        if not 0 <= int(v) < 2**32:
            raise InputError(f"microscope: {name} must be in [0, 2**32), got {v}")
    if absorption is not None and absorption.shape != noiseless.shape:
        raise InputError(f"microscope: absorption {absorption.shape} and noiseless "
                         f"{noiseless.shape} differ in shape")
    angles = np.asarray(noiseless["tilt"].values, dtype=np.float64)
    if not np.all(np.abs(angles) < 89.0):
        raise InputError("microscope: tilt angles must lie within (-89°, 89°) (ice grows as 1/cos θ)")
    pixel = datamodel.pixel_size_of(noiseless)
    if isinstance(noiseless.data, da.Array):
        data = noiseless.data.astype(np.float32)
    else:
        data = da.from_array(np.asarray(noiseless.data, dtype=np.float32), chunks=(1, -1, -1))
    out_chunks = data.chunks  # keep the caller's (1, cy, X) chunks

    if p.ice_thickness_A is not None:
        ice_A = float(p.ice_thickness_A)
    elif specimen_thickness_A is not None:
        ice_A = float(specimen_thickness_A)
    else:
        ice_A = ICE_THICKNESS_A
    kparams = _kernel_params(p, angles.size, ice_A)
    ice_std = np.array([_ice_std(p, ice_A, a, pixel) for a in angles])

    # whole tilts: a tilt's y-chunks joined, the caller's tilt grouping kept (a batch of small
    # tilts is one task; the pipeline reads them so)
    arrays = [data.rechunk({1: -1, 2: -1})]
    if absorption is not None:
        w = absorption.data if isinstance(absorption.data, da.Array) else da.from_array(
            np.asarray(absorption.data))
        arrays.append(w.astype(np.float32).rechunk(arrays[0].chunks))
    measured = da.map_blocks(
        _image_block, *arrays, angles=angles, pixel_size_A=pixel, seed=int(seed), tomo=int(tomo),
        kparams=kparams, ice_std=ice_std, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32),
    )
    measured = measured.rechunk(out_chunks)
    attrs = dict(p.model_dump())
    attrs.update(
        kind="reference-microscope",
        ice_thickness_A=ice_A,
        absorption_ratio=float(kparams["absorption_ratio"]),
        absorption="specimen absorption potential" if absorption is not None else "absorption_ratio x potential",
        ice_phase_std_rad_at_0=float(_ice_std(p, ice_A, 0.0, pixel)),
        interaction_constant_rad_per_V_A=interaction_constant(p.voltage_kV),
        dose_per_tilt_e_per_A2=float(kparams["dose_e_per_A2"]),
        dose_per_pixel=float(kparams["dose_e_per_A2"] * pixel**2),
        seed=int(seed),
        tomo=int(tomo),
        model="exit wave exp(i sigma V - sigma W) + ice noise + lens + ice attenuation + MTF + "
              "Poisson (docs/microscope.md)",
    )
    return datamodel.tiltseries(measured, angles, pixel, name="measured", attrs=attrs)
