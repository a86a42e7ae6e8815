"""``faket-dask microscope``: simulate a measured tilt-series with the reference microscope.

::

    faket-dask microscope run.zarr --tomo 0 --seed 0 [--dose 120 --defocus -3 --ice-thickness 1500]

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
    ICE_THICKNESS_A,
    MAX_PHASE_RAD,
    TOTAL_DOSE_E_PER_A2,
    MicroscopeParams,
)
from ..store.layout import tiltseries_group, tiltseries_var
from . import ClusterFile, Gpus, Overwrite, Scheduler, Workers, connect


def microscope_cmd(
    store: Annotated[Path, typer.Argument(help="Run store with tomo_NNN/tiltseries/noiseless.")],
    tomo: Annotated[int, typer.Option(help="Tomogram index: reads and writes tomo_NNN/tiltseries; also keys the noise.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the shot noise and ice phase, 0 <= S < 2**32.")] = 0,
    dose: Annotated[float, typer.Option(help="Total dose of the series (e/Å²), spread evenly over the tilts.")] = TOTAL_DOSE_E_PER_A2,
    defocus: Annotated[float, typer.Option(help="Defocus (µm); negative = underfocus.")] = DEFOCUS_UM,
    ice_thickness: Annotated[float, typer.Option(help="Ice thickness at 0° (Å); grows as 1/cos θ.")] = ICE_THICKNESS_A,
    bfactor: Annotated[float, typer.Option(help="B-factor of the CTF envelope (Å²).")] = BFACTOR_A2,
    phase_per_unit: Annotated[
        Optional[float],
        typer.Option(help=f"Phase (rad) per unit projected density (default: {MAX_PHASE_RAD:g} rad at the densest pixel)."),
    ] = None,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
    gpus: Gpus = False,
    cluster: ClusterFile = None,
) -> None:
    """Reference microscope: CTF, ice, dose + Poisson noise, MTF → tomo_NNN/tiltseries/measured."""
    from pydantic import ValidationError

    from .. import store as st
    from ..errors import InputError
    from ..stages.microscope import simulate_microscope

    for what, v in (("--seed", seed), ("--tomo", tomo)):
        if not 0 <= v < 2**32:
            raise InputError(f"{what} must be in [0, 2**32), got {v}")
    try:
        params = MicroscopeParams(
            total_dose_e_per_A2=dose, defocus_um=defocus, ice_thickness_A=ice_thickness,
            bfactor_A2=bfactor, phase_per_unit=phase_per_unit,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(f"microscope: {err['loc'][0]}: {err['msg']}") from None
    if not st.is_store(store):
        st.open_root(store)  # one-line "no such store" / "not a Zarr store"
    group = tiltseries_group(tomo)
    src = tiltseries_var(tomo, "noiseless")
    st.check_writable(store, tiltseries_var(tomo, "measured"), overwrite=overwrite)
    ts = st.open_var(store, src)
    with connect(scheduler, workers, gpus, cluster):
        arr = simulate_microscope(ts, seed=seed, tomo=tomo, params=params)
        path = st.save(
            arr, store, group, name="measured", overwrite=overwrite, progress="microscope",
            stage_info={**params.model_dump(), "stage": "microscope", "seed": seed, "tomo": tomo,
                        "input": src, "phase_per_unit": arr.attrs["phase_per_unit"]},
        )
    typer.echo(f"wrote {store}/{path} {tuple(arr.shape)}")
