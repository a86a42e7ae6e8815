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

from . import ClusterFile, Gpus, Overwrite, Scheduler, Workers, connect


def microscope_cmd(
    store: Annotated[Path, typer.Argument(help="Run store with tomo_NNN/tiltseries/noiseless.")],
    tomo: Annotated[int, typer.Option(help="Tomogram index: reads and writes tomo_NNN/tiltseries; also keys the noise.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the shot noise and ice phase, 0 <= S < 2**32.")] = 0,
    dose: Annotated[float, typer.Option(help="Total dose of the series (e/Å²), spread evenly over the tilts.")] = 120.0,
    defocus: Annotated[float, typer.Option(help="Defocus (µm); negative = underfocus.")] = -3.0,
    ice_thickness: Annotated[float, typer.Option(help="Ice thickness at 0° (Å); grows as 1/cos θ.")] = 1500.0,
    bfactor: Annotated[float, typer.Option(help="B-factor of the CTF envelope (Å²).")] = 100.0,
    phase_per_unit: Annotated[
        Optional[float],
        typer.Option(help="Phase (rad) per unit projected density (default: 0.2 rad at the densest pixel)."),
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
    from ..stages.microscope import MicroscopeParams, simulate_microscope

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
    group = st.tomo_group(tomo, "tiltseries")
    src = f"{group}/noiseless"
    st.check_writable(store, f"{group}/measured", overwrite=overwrite)
    ts = st.open_var(store, src)
    with connect(scheduler, workers, gpus, cluster):
        arr = simulate_microscope(ts, seed=seed, tomo=tomo, params=params)
        path = st.save(
            arr, store, group, name="measured", overwrite=overwrite, progress="microscope",
            stage_info={**params.model_dump(), "stage": "microscope", "seed": seed, "tomo": tomo,
                        "input": src, "phase_per_unit": arr.attrs["phase_per_unit"]},
        )
    typer.echo(f"wrote {store}/{path} {tuple(arr.shape)}")
