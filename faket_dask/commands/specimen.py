"""``faket-dask specimen`` and ``faket-dask export-particles``.

::

    faket-dask specimen run.zarr --tomo 0 --shape 200 512 512 --pixel-size-A 10 --seed 1 \\
        [--templates maps/] [--particles 300] [--vesicles 4] [--fiducials 10]
    faket-dask export-particles run.zarr --tomo 0 particle_locations.txt   # or .star / .csv

Options are validated (shape, counts, templates, outputs writable) before a cluster starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import ClusterFile, Gpus, Overwrite, Scheduler, Workers, connect


def specimen_cmd(
    store: Annotated[Path, typer.Argument(help="Run store (created if missing), e.g. run.zarr.")],
    shape: Annotated[tuple[int, int, int], typer.Option(help="Volume size Z Y X in voxels.")],
    tomo: Annotated[int, typer.Option(min=0, help="Tomogram index.")] = 0,
    pixel_size_A: Annotated[float, typer.Option("--pixel-size-A", help="Voxel size in Å.")] = 10.0,
    seed: Annotated[int, typer.Option(help="Placement seed: same seed, identical specimen.")] = 0,
    templates: Annotated[
        Optional[Path], typer.Option(help="Directory of *.mrc maps, one class each (replaces the 12 built-in classes).")
    ] = None,
    particles: Annotated[int, typer.Option(help="Protein particles to place.")] = 100,
    vesicles: Annotated[int, typer.Option(help="Lipid vesicles (20-60 nm radius) to place.")] = 2,
    fiducials: Annotated[int, typer.Option(help="Gold fiducials (10 nm) to place.")] = 5,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
    gpus: Gpus = False,
    cluster: ClusterFile = None,
) -> None:
    """Generate a specimen into tomo_NNN/specimen (density, class_mask, occupancy) and tomo_NNN/particles."""
    import warnings

    from ..stages.specimen import generate_specimen, write_specimen
    from ..store import check_writable, tomo_group

    sgroup, pgroup = tomo_group(tomo, "specimen"), tomo_group(tomo, "particles")
    for v in ("density", "class_mask", "occupancy"):
        check_writable(store, f"{sgroup}/{v}", overwrite=overwrite)
    check_writable(store, f"{pgroup}/x", overwrite=overwrite)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        spec, table = generate_specimen(
            shape, pixel_size_A, seed, n_particles=particles, n_vesicles=vesicles,
            n_fiducials=fiducials, templates_dir=templates,
        )
    for w in caught:
        typer.echo(f"faket-dask: warning: {w.message}", err=True)
    with connect(scheduler, workers, gpus, cluster):
        write_specimen(spec, table, store, tomo, overwrite=overwrite)
    counts = table["class_name"].to_series().value_counts()
    summary = ", ".join(f"{n} {c}" for c, n in counts.items())
    typer.echo(f"wrote {store}/{sgroup} {tuple(spec['density'].shape)} and {store}/{pgroup} "
               f"({table.sizes['particle']} objects: {summary})")


def export_particles_cmd(
    store: Annotated[Path, typer.Argument(help="Run store with tomo_NNN/particles.")],
    dest: Annotated[Path, typer.Argument(help="Output: .txt (SHREC particle_locations), .star (RELION) or .csv.")],
    tomo: Annotated[int, typer.Option(min=0, help="Tomogram index.")] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Export the particle list of tomo_NNN as SHREC particle_locations.txt, RELION STAR or CSV."""
    from ..stages.specimen import export_particles, open_particles

    path = export_particles(open_particles(store, tomo), dest, overwrite=overwrite)
    typer.echo(f"wrote {path}")
