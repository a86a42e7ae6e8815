"""``faket-dask specimen`` and ``faket-dask export-particles``.

::

    faket-dask specimen run.zarr --tomo 0 --shape 200 512 512 --pixel-size-A 10 --seed 1 \\
        [--templates maps/] [--particles 300 | --volume-fraction 0.2] [--vesicles 4] \\
        [--fiducials 10] [--actin 5] [--microtubules 2]
    faket-dask export-particles run.zarr --tomo 0 particle_locations.txt   # or .star / .csv / .ndjson

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
    tomo: Annotated[int, typer.Option(help="Tomogram index (>= 0).")] = 0,
    pixel_size_A: Annotated[float, typer.Option("--pixel-size-A", help="Voxel size in Å.")] = 10.0,
    seed: Annotated[int, typer.Option(help="Placement seed: same seed, identical specimen.")] = 0,
    templates: Annotated[
        Optional[Path], typer.Option(help="Directory of atomic models (*.pdb, *.cif, *.mmcif) and *.mrc maps, one class each (replaces the 12 built-in classes).")
    ] = None,
    template_units: Annotated[
        str, typer.Option(help="Units of the *.mrc templates: V (potential relative to ice) or normalised (scaled to protein's 3.36 V above ice).")
    ] = "V",
    particles: Annotated[
        Optional[int], typer.Option(help="Protein particles to place (exclusive with --volume-fraction).")
    ] = None,
    volume_fraction: Annotated[
        Optional[float], typer.Option(help="Fraction of the volume filled by protein, in (0, 0.5] (default "
                                           "0.004, SHREC-like; exclusive with --particles).")
    ] = None,
    vesicles: Annotated[int, typer.Option(help="Lipid vesicles (20-60 nm radius, spherical or ellipsoidal).")] = 2,
    fiducials: Annotated[int, typer.Option(help="Gold fiducials (5-10 nm).")] = 5,
    actin: Annotated[int, typer.Option(help="Actin filaments (7 nm, two-strand helix).")] = 0,
    microtubules: Annotated[int, typer.Option(help="Microtubules (25 nm, 13 protofilaments).")] = 0,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
    gpus: Gpus = False,
    cluster: ClusterFile = None,
) -> None:
    """Generate a specimen into tomo_NNN/specimen and tomo_NNN/particles.

    The specimen holds density and absorption (potential in volts relative to vitreous ice),
    class_mask and occupancy; the particles group the particle table and the filament paths.
    """
    import warnings

    from ..stages.specimen import generate_specimen, write_specimen
    from ..store import check_writable
    from ..store.layout import particles_group, specimen_group

    _check_tomo(tomo)
    from ..kernels.atomic_model import MAP_UNITS

    if template_units not in MAP_UNITS:
        from ..errors import InputError

        raise InputError(f"--template-units: unknown units '{template_units}' (use one of: {', '.join(MAP_UNITS)})")
    sgroup, pgroup = specimen_group(tomo), particles_group(tomo)
    for v in ("density", "absorption", "class_mask", "occupancy"):
        check_writable(store, f"{sgroup}/{v}", overwrite=overwrite)
    check_writable(store, f"{pgroup}/x", overwrite=overwrite)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        spec, table = generate_specimen(
            shape, pixel_size_A, seed, n_particles=particles, volume_fraction=volume_fraction,
            n_vesicles=vesicles, n_fiducials=fiducials, n_actin=actin, n_microtubules=microtubules,
            templates_dir=templates, template_units=template_units,
        )
    for w in caught:
        typer.echo(f"faket-dask: warning: {w.message}", err=True)
    with connect(scheduler, workers, gpus, cluster):
        write_specimen(spec, table, store, tomo, overwrite=overwrite)
    counts = table["class_name"].to_series().value_counts()
    summary = ", ".join(f"{n} {c}" for c, n in counts.items())
    typer.echo(f"wrote {store}/{sgroup} {tuple(spec['density'].shape)} and {store}/{pgroup} "
               f"({table.sizes['particle']} objects: {summary}; protein volume fraction "
               f"{table.attrs['volume_fraction']:.4f})")


def export_particles_cmd(
    store: Annotated[Path, typer.Argument(help="Run store with tomo_NNN/particles.")],
    dest: Annotated[Path, typer.Argument(help="Output: .txt (SHREC particle_locations), .star (RELION 5), .csv, or "
                                              ".ndjson (CZ cryoET Data Portal: one DEST_<class>_<point|orientedpoint>"
                                              ".ndjson per class).")],
    tomo: Annotated[int, typer.Option(help="Tomogram index (>= 0).")] = 0,
    tomo_name: Annotated[
        Optional[str], typer.Option(help="rlnTomoName in the .star (default tomo_NNN); must match RELION's tomograms.star.")
    ] = None,
    grid: Annotated[
        str, typer.Option(help="Voxel coordinates of the specimen volume (specimen) or of the binned tomogram "
                               "(tomogram, tomo_NNN/labels_particles); Å from the centre are the same.")
    ] = "specimen",
    overwrite: Overwrite = False,
) -> None:
    """Export the particle list of tomo_NNN as SHREC particle_locations.txt, RELION 5 STAR, CSV or
    CZ cryoET Data Portal NDJSON annotations (one file per class).

    An imported grandmodel has no particle table: its particles are derived from the specimen's
    class mask (connected components, orientations unknown); without a class mask nothing is
    written.
    """
    from ..errors import InputError
    from ..stages.particle_export import check_export_path, check_tomo_name, export_particles
    from ..stages.particles import open_particles
    from ..store.layout import tomo_name as store_tomo_name

    _check_tomo(tomo)
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
                   f"from {parts.attrs['derived_from'].split(' (')[0]}, orientations unknown (written as 0; "
                   f".ndjson: point records)",
                   err=True)
    if path.suffix.lower() == ".ndjson":
        from ..stages.portal_export import portal_annotation_files

        files = [str(f) for f, _ in portal_annotation_files(parts, path).values()]
        typer.echo(f"wrote {', '.join(files)} ({parts.sizes['particle']} particles, {grid} grid, voxels of "
                   f"{parts.attrs.get('pixel_size_A', float('nan')):g} Å)")
        return
    typer.echo(f"wrote {path} ({parts.sizes['particle']} particles, {grid} grid)")


def _check_tomo(tomo: int) -> None:
    from ..errors import InputError

    if tomo < 0:
        raise InputError(f"--tomo must be >= 0, got {tomo}")


def _has_class_mask(store: Path, tomo: int) -> bool:
    from ..store import has_var
    from ..store.layout import specimen_group

    return has_var(store, f"{specimen_group(tomo)}/class_mask")
