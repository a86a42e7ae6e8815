"""The ``faket-dask`` command line: parses, calls the library, prints.

User errors (:class:`faket_dask.errors.FaketError`) are printed as one line
``faket-dask: error: ...`` on stderr with exit status 2, never as a traceback.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import FaketError

app = typer.Typer(
    name="faket-dask",
    help="FakET cryo-ET simulation (noise + neural style transfer) on Dask and Zarr.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Cluster options shared by every command that computes live in commands/ (no import cycle).
from .commands import ClusterFile, Gpus, Overwrite, Scheduler, Workers  # noqa: E402
from .commands import connect as _connect  # noqa: E402


@app.command("import-mrc")
def import_mrc_cmd(
    src: Annotated[Path, typer.Argument(help="MRC file to import.")],
    store: Annotated[Path, typer.Argument(help="Run store (created if missing), e.g. run.zarr.")],
    var: Annotated[str, typer.Argument(help="GROUP/VAR, e.g. tomo_000/tiltseries/measured.")],
    kind: Annotated[str, typer.Option(help="tiltseries or volume.")] = "tiltseries",
    angles_file: Annotated[Optional[Path], typer.Option(help="IMOD .tlt file, one angle per line.")] = None,
    angles: Annotated[
        Optional[tuple[float, float, float]],
        typer.Option(help="START STOP STEP in degrees, STOP included (-60 60 2 gives 61 tilts)."),
    ] = None,
    mdoc: Annotated[
        Optional[Path],
        typer.Option(help="SerialEM .mdoc of the stack: tilt angles (TiltAngle), dose per tilt "
                          "(ExposureDose, PriorRecordDose, e/Å²), acquisition order (DateTime, else ZValue "
                          "order) and, if the header has none, the pixel size (PixelSpacing). "
                          "Instead of --angles-file/--angles."),
    ] = None,
    exclude_tilts: Annotated[
        Optional[str],
        typer.Option(help="Tilts to drop before storing, e.g. 0,5,7: 0-based indices in the file's "
                          "section order (the .mdoc ZValue), not in angle order."),
    ] = None,
    pixel_size_A: Annotated[Optional[float], typer.Option("--pixel-size-A", help="Pixel size in Å (default: MRC header, else the .mdoc's PixelSpacing).")] = None,
    units: Annotated[
        Optional[str],
        typer.Option(help="A volume's units: V (potential relative to ice, kept) or normalised (scaled to protein's 3.36 V above ice)."),
    ] = None,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
    gpus: Gpus = False,
    cluster: ClusterFile = None,
) -> None:
    """Import an MRC tilt-series or volume into a Zarr run store, streaming chunk by chunk.

    A tilt-series is stored sorted by angle; its file order is kept as coordinate
    acquisition_index. With --mdoc the acquisition order, doses and file positions are stored
    as tilt coordinates (acquisition_index, dose_e_per_A2, prior_dose_e_per_A2,
    section_index). How mode-0 bytes or an odd machine stamp were read, and what an .mdoc
    lacked, is printed as ``faket-dask: notice: FILE: ...`` (docs/formats.md).
    """
    from .formats.convert import angles_from_range, check_mrc_shape, import_mrc, load_mrc
    from .store import check_writable, split_var_path

    if kind not in ("tiltseries", "volume"):
        raise FaketError(f"--kind must be tiltseries or volume, got '{kind}'")
    split_var_path(var)
    if units is not None:
        from .formats.units import check_units

        check_units(units, "--units")
        if kind != "volume":
            raise FaketError(f"--units applies to volumes (--kind volume), not to a {kind}")
    # The file first: a bad or 2D file is the error to report, whatever the angles say.
    info = check_mrc_shape(src, kind)
    angles_deg = angles_from_range(*angles) if angles else None
    # Validate everything (including a NaN scan) before a cluster is started or a byte written.
    check_writable(store, var, overwrite=overwrite)
    if angles_file is not None and angles_deg is not None:
        raise FaketError("give either --angles-file or --angles, not both")
    from .formats.mdoc import check_sections, mdoc_pixel_size, parse_exclude_tilts, read_mdoc

    exclude = parse_exclude_tilts(exclude_tilts)
    notices = list(info.notices)
    tilts = None
    if mdoc is not None:
        if angles_file is not None or angles_deg is not None:
            raise FaketError(f"{mdoc}: give the tilt angles once: --mdoc, --angles-file or --angles")
        tilts = read_mdoc(mdoc)
        check_sections(tilts, info)
        pixel_size_A, px_notices = mdoc_pixel_size(info, tilts, pixel_size_A)
        notices += list(tilts.notices) + list(px_notices)
    if angles_file is not None:
        from .formats.mrc import read_tlt

        angles_deg = read_tlt(angles_file)
    load_mrc(src, kind=kind, angles_deg=angles_deg, pixel_size_A=pixel_size_A, mdoc=tilts,
             exclude_tilts=exclude)
    for line in notices:
        typer.echo(f"faket-dask: notice: {line}", err=True)
    with _connect(scheduler, workers, gpus, cluster, processes=workers is not None):
        path = import_mrc(
            src, store, var, kind=kind, angles_deg=angles_deg, pixel_size_A=pixel_size_A,
            overwrite=overwrite, units=units, mdoc=tilts, exclude_tilts=exclude,
        )
    typer.echo(f"imported {src} -> {store}/{path}")


@app.command("export-mrc")
def export_mrc_cmd(
    store: Annotated[Path, typer.Argument(help="Run store.")],
    var: Annotated[str, typer.Argument(help="GROUP/VAR to export.")],
    dest: Annotated[Path, typer.Argument(help="Output .mrc (a tilt-series also gets DEST.tlt).")],
    overwrite: Overwrite = False,
) -> None:
    """Export a tilt-series or volume of a run store to MRC2014 (+ IMOD .tlt)."""
    from .formats.convert import export_mrc
    from .store import open_var

    arr = open_var(store, var)
    for f in export_mrc(arr, dest, overwrite=overwrite):
        typer.echo(f"wrote {f}")


@app.command("info")
def info_cmd(store: Annotated[Path, typer.Argument(help="Run store.")]) -> None:
    """List groups, variables, shapes, chunks, dtypes and stage status of a run store."""
    from .store import describe, stage_status

    rows = describe(store)
    typer.echo(f"{store}")
    width = max([len(r.path) for r in rows] + [8])
    typer.echo(f"  {'variable':<{width}}  {'dims':<16} {'shape':<20} {'chunks':<20} dtype")
    for r in rows:
        dims = ",".join(r.dims)
        typer.echo(f"  {r.path:<{width}}  {dims:<16} {str(r.shape):<20} {str(r.chunks):<20} {r.dtype}")
    stages = stage_status(store)
    if stages:
        typer.echo("stages:")
        for key, st in sorted(stages.items()):
            extra = f" ({st['stage']})" if "stage" in st else ""
            typer.echo(f"  {key:<{width}}  {st.get('status', '?')}{extra}")


@app.command("project")
def project_cmd(
    store: Annotated[Path, typer.Argument(help="Run store with tomo_NNN/specimen/density.")],
    tomo: Annotated[int, typer.Option(min=0, help="Tomogram index.")] = 0,
    angles: Annotated[
        Optional[tuple[float, float, float]],
        typer.Option(help="START STOP STEP in degrees, STOP included (default: -60 60 2)."),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
    gpus: Gpus = False,
    cluster: ClusterFile = None,
) -> None:
    """Project tomo_NNN/specimen/density into tomo_NNN/tiltseries/noiseless (docs/method.md §1)."""
    from .config import Acquisition
    from .formats.convert import angles_from_range
    from .stages.projection import project
    from .store import check_writable, open_var, save
    from .store.layout import specimen_group, tiltseries_group, tiltseries_var

    out_group = tiltseries_group(tomo)
    check_writable(store, tiltseries_var(tomo, "noiseless"), overwrite=overwrite)
    vol = open_var(store, f"{specimen_group(tomo)}/density")
    angles_deg = angles_from_range(*angles) if angles else Acquisition().angles_deg()
    with _connect(scheduler, workers, gpus, cluster):
        ts = project(vol, angles_deg, device="cuda" if gpus else device)
        path = save(ts, store, out_group, name="noiseless", overwrite=overwrite,
                    stage_info={"stage": "project"}, progress="projecting")
    typer.echo(f"wrote {store}/{path} {tuple(ts.shape)}")


# reconstruct_cmd's defaults and choices: their one owner is faket_dask.params.reconstruction.
from .params import CROWTHER, FILTER_NAMES, RECONSTRUCTION_BINNING, RECONSTRUCTION_FILTER, SHREC_Z_VALID  # noqa: E402


@app.command("reconstruct")
def reconstruct_cmd(
    store: Annotated[Path, typer.Argument(help="Run store.")],
    tomo: Annotated[int, typer.Option(min=0, help="Tomogram index.")] = 0,
    modality: Annotated[str, typer.Option(help="Tilt-series variable to reconstruct (faket, noisy, ...).")] = "faket",
    binning: Annotated[int, typer.Option(min=1, help="Binning factor (cubic spline).")] = RECONSTRUCTION_BINNING,
    filter: Annotated[str, typer.Option(help=f"{', '.join(FILTER_NAMES[:-1])} or {FILTER_NAMES[-1]}.")] = RECONSTRUCTION_FILTER,
    crowther: Annotated[Optional[float], typer.Option(help=f"approxShrec Crowther frequency, fraction of Nyquist ({CROWTHER:g}).")] = None,
    z_valid: Annotated[
        Optional[tuple[float, float]],
        typer.Option(help=f"Relative z-range to keep, e.g. {SHREC_Z_VALID[0]:g} {SHREC_Z_VALID[1]:g} (SHREC's)."),
    ] = None,
    thickness: Annotated[Optional[int], typer.Option(min=1, help="Slices before --z-valid (default: binned width).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
    gpus: Gpus = False,
    cluster: ClusterFile = None,
) -> None:
    """Reconstruct tomo_NNN/tiltseries/MODALITY into the OME-NGFF image tomo_NNN/tomogram/MODALITY."""
    import shutil

    from .stages.reconstruction import reconstruct
    from .store import check_writable, open_var, save_image
    from .store.layout import tiltseries_var, tomogram_group

    if filter not in FILTER_NAMES:
        raise FaketError(f"--filter must be one of {', '.join(FILTER_NAMES)}, got '{filter}'")
    out_group = tomogram_group(tomo)
    check_writable(store, f"{out_group}/{modality}", overwrite=overwrite)
    ts = open_var(store, tiltseries_var(tomo, modality))
    scratch = Path(store) / "_scratch"
    with _connect(scheduler, workers, gpus, cluster):
        vol = reconstruct(ts, binning=binning, filter=filter, crowther=crowther, z_valid=z_valid, thickness=thickness,
                          device="cuda" if gpus else device, scratch_dir=scratch)
        path = save_image(vol, store, out_group, modality, overwrite=overwrite,
                          stage_info={"stage": "reconstruct", "binning": binning, "filter": filter},
                          progress="reconstructing")
    shutil.rmtree(scratch, ignore_errors=True)
    typer.echo(f"wrote {store}/{path} {tuple(vol.shape)} (OME-NGFF, 3 levels)")


@app.command("config")
def config_cmd() -> None:
    """Print the default run configuration (the paper's settings) as YAML."""
    import yaml

    from .config import RunConfig

    typer.echo(yaml.safe_dump(RunConfig().model_dump(mode="json"), sort_keys=False))


from .commands import noise as _noise_commands  # noqa: E402
app.add_typer(_noise_commands.app, name="noise")
from .commands.microscope import microscope_cmd  # noqa: E402
app.command("microscope")(microscope_cmd)
from .commands.specimen import export_particles_cmd, specimen_cmd  # noqa: E402
app.command("specimen")(specimen_cmd)
app.command("export-particles")(export_particles_cmd)
from .commands.copick import export_copick_cmd  # noqa: E402
app.command("export-copick")(export_copick_cmd)
from .commands.style import fetch_weights_cmd, style_cmd  # noqa: E402
app.command("style")(style_cmd)
app.command("fetch-weights")(fetch_weights_cmd)
from .commands.simulate import demo_cmd, simulate_cmd  # noqa: E402
app.command("simulate")(simulate_cmd)
app.command("demo")(demo_cmd)
from .commands.score import score_cmd  # noqa: E402
app.command("score")(score_cmd)
from .commands.train_picker import train_picker_cmd  # noqa: E402
app.command("train-picker")(train_picker_cmd)
from .commands.pick import pick_cmd  # noqa: E402
app.command("pick")(pick_cmd)
from .commands.compare import compare_cmd  # noqa: E402
app.command("compare")(compare_cmd)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``faket-dask`` console script.

    Errors a user can cause end in one line ``faket-dask: error: ...`` and exit status 2:
    :class:`FaketError` (validation) and storage errors (``OSError``, Zarr errors; set
    ``FAKET_DEBUG=1`` to get their traceback). Warnings are shown as one line each.
    """
    import os

    from .messages import install_warning_format, storage_error_line

    install_warning_format()
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="faket-dask", standalone_mode=True)
    except FaketError as exc:  # before OSError: OutputExistsError is a FileExistsError too
        print(f"faket-dask: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("faket-dask: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        line = storage_error_line(exc)
        if line is None or os.environ.get("FAKET_DEBUG", "") not in ("", "0"):
            raise
        print(f"faket-dask: error: {line}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
