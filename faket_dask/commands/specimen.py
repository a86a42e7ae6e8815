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
    from ..store import check_writable
    from ..store.layout import particles_group, specimen_group

    sgroup, pgroup = specimen_group(tomo), particles_group(tomo)
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
    dest: Annotated[Path, typer.Argument(help="Output: .txt (SHREC particle_locations), .star (RELION 5) or .csv.")],
    tomo: Annotated[int, typer.Option(min=0, help="Tomogram index.")] = 0,
    tomo_name: Annotated[
        Optional[str], typer.Option(help="rlnTomoName in the .star (default tomo_NNN); must match RELION's tomograms.star.")
    ] = None,
    grid: Annotated[
        str, typer.Option(help="Voxel coordinates of the specimen volume (specimen) or of the binned tomogram "
                               "(tomogram, tomo_NNN/labels_particles); Å from the centre are the same.")
    ] = "specimen",
    overwrite: Overwrite = False,
) -> None:
    """Export the particle list of tomo_NNN as SHREC particle_locations.txt, RELION 5 STAR or CSV.

    An imported grandmodel has no particle table: its particles are derived from the specimen's
    class mask (connected components, orientations unknown); without a class mask nothing is
    written.
    """
    from ..errors import InputError
    from ..stages.particle_export import check_export_path, check_tomo_name, export_particles
    from ..stages.particles import open_particles
    from ..store.layout import tomo_name as store_tomo_name

    name = store_tomo_name(tomo)
    check_export_path(dest, overwrite=overwrite)
    check_tomo_name(tomo_name or name)
    parts = open_particles(store, tomo, grid=grid)  # type: ignore[arg-type]
    if parts.sizes.get("particle", 0) == 0:
        if _has_class_mask(store, tomo):
            why = "(no particle table and its class mask labels no voxel)"
        elif "volume_shape_zyx" in parts.attrs:
            why = ("(imported grandmodel without a class mask); give it one (specimens.files[].class_mask) "
                   "to derive them")
        else:
            why = "(no particle table and no specimen volume)"
        raise InputError(f"{store}: {name} has no particles {why}; nothing written")
    path = export_particles(parts, dest, overwrite=overwrite, tomo_name=tomo_name)
    if parts.attrs.get("derived_from"):
        typer.echo(f"faket-dask: note: {name} has no particle table; {parts.sizes['particle']} particles derived "
                   f"from {parts.attrs['derived_from'].split(' (')[0]}, orientations unknown (written as 0)",
                   err=True)
    typer.echo(f"wrote {path} ({parts.sizes['particle']} particles, {grid} grid)")


def _has_class_mask(store: Path, tomo: int) -> bool:
    from ..store import has_var
    from ..store.layout import specimen_group

    return has_var(store, f"{specimen_group(tomo)}/class_mask")
