"""``faket-dask microscope``: simulate a measured tilt-series with the reference microscope.

::

    faket-dask microscope run.zarr --tomo 0 --seed 0 [--dose 120 --defocus -3 --write-phase]

Reads ``tomo_NNN/tiltseries/noiseless`` and writes ``tomo_NNN/tiltseries/measured``, its paired
partner (see ``docs/microscope.md``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..params import (
    BFACTOR_A2,
    DEFOCUS_UM,
    TOTAL_DOSE_E_PER_A2,
    VOLTAGE_KV,
    MicroscopeParams,
)
from ..store.layout import specimen_group, tiltseries_group, tiltseries_var
from . import ClusterFile, Gpus, Overwrite, Scheduler, Workers, connect


def microscope_cmd(
    store: Annotated[Path, typer.Argument(help="Run store with tomo_NNN/tiltseries/noiseless.")],
    tomo: Annotated[int, typer.Option(help="Tomogram index: reads and writes tomo_NNN/tiltseries; also keys the noise.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the shot noise and ice phase, 0 <= S < 2**32.")] = 0,
    dose: Annotated[float, typer.Option(help="Total dose of the series (e/Å²), spread evenly over the tilts.")] = TOTAL_DOSE_E_PER_A2,
    defocus: Annotated[float, typer.Option(help="Defocus (µm); negative = underfocus.")] = DEFOCUS_UM,
    voltage: Annotated[float, typer.Option(help="Accelerating voltage (kV).")] = VOLTAGE_KV,
    ice_thickness: Annotated[
        Optional[float],
        typer.Option(help="Ice thickness at 0° (Å), path 1/cos θ (default: the specimen's z extent)."),
    ] = None,
    bfactor: Annotated[float, typer.Option(help="B-factor of the lens envelope (Å²).")] = BFACTOR_A2,
    write_phase: Annotated[
        bool, typer.Option("--write-phase", help="Also write tomo_NNN/tiltseries/phase: the specimen's phase (rad) relative to the ice.")
    ] = False,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
    gpus: Gpus = False,
    cluster: ClusterFile = None,
) -> None:
    """Reference microscope: exit wave, lens, ice, dose + Poisson noise, MTF → tomo_NNN/tiltseries/measured."""
    from pydantic import ValidationError

    from .. import datamodel
    from .. import store as st
    from ..errors import InputError
    from ..stages.microscope import simulate_microscope, specimen_phase
    from ..stages.projection import project

    for what, v in (("--seed", seed), ("--tomo", tomo)):
        if not 0 <= v < 2**32:
            raise InputError(f"{what} must be in [0, 2**32), got {v}")
    if ice_thickness is not None and ice_thickness < 0:
        raise InputError(f"--ice-thickness must be >= 0 Å, got {ice_thickness}")
    try:
        params = MicroscopeParams(
            total_dose_e_per_A2=dose, defocus_um=defocus, voltage_kV=voltage,
            ice_thickness_A=ice_thickness, bfactor_A2=bfactor,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(f"microscope: {err['loc'][0]}: {err['msg']}") from None
    if not st.is_store(store):
        st.open_root(store)  # one-line "no such store" / "not a Zarr store"
    group = tiltseries_group(tomo)
    src = tiltseries_var(tomo, "noiseless")
    st.check_writable(store, tiltseries_var(tomo, "measured"), overwrite=overwrite)
    if write_phase:
        st.check_writable(store, tiltseries_var(tomo, "phase"), overwrite=overwrite)
    ts = st.open_var(store, src)
    # a store without a specimen (imported noiseless projections) is fine: default ice, 0.07
    spec = (st.open(store, specimen_group(tomo))
            if st.has_var(store, f"{specimen_group(tomo)}/density") else None)
    with connect(scheduler, workers, gpus, cluster):
        absorption, thickness = None, None
        if spec is not None:
            thickness = spec.sizes["z"] * datamodel.pixel_size_of(spec["density"])
            if "absorption" in spec:
                absorption = project(spec["absorption"], ts["tilt"].values)
        arr = simulate_microscope(ts, seed=seed, tomo=tomo, params=params, absorption=absorption,
                                  specimen_thickness_A=thickness)
        path = st.save(
            arr, store, group, name="measured", overwrite=overwrite, progress="microscope",
            stage_info={**params.model_dump(), "stage": "microscope", "seed": seed, "tomo": tomo,
                        "input": src, "ice_thickness_A": arr.attrs["ice_thickness_A"]},
        )
        if write_phase:
            st.save(specimen_phase(ts, params.voltage_kV), store, group, name="phase",
                    overwrite=overwrite, progress="phase")
    typer.echo(f"wrote {store}/{path} {tuple(arr.shape)}" + (f" and {store}/{group}/phase" if write_phase else ""))
