"""``faket-dask compare``: how far simulated tilt-series are from the reference microscope's.

::

    faket-dask compare out/run.zarr --modalities faket,baseline,noisy --reference measured \\
        --tomos 0,1 --out out/compare            # compare.json + one PNG per measure

Measures, their definitions and every field of ``compare.json``: ``docs/compare.md``. The
store, the tomograms, the modalities and the output folder are checked before anything is
read; bad input is one ``faket-dask: error:`` line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..params import UNPAIRED_BAND
from ..params.compare import COMPARE_HIST_BIN, COMPARE_SPECTRUM_BAND, COMPARE_TILE_PX
from . import ClusterFile, Overwrite, Scheduler, Workers
from . import connect as _connect


def compare_cmd(
    store: Annotated[Path, typer.Argument(help="Run store with tomo_NNN/tiltseries/MODALITY.")],
    modalities: Annotated[str, typer.Option(help="Comma-separated simulated modalities to compare.")] = "faket,baseline,noisy",
    reference: Annotated[str, typer.Option(help="Reference modality of each tomogram, or a GROUP/VAR shared by all "
                                                "(e.g. reference/style_000/measured).")] = "measured",
    tomos: Annotated[Optional[str], typer.Option(help="Comma-separated tomogram indices (default: all).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder for compare.json and the figures "
                                                     "(default: compare/ beside the store).")] = None,
    tile: Annotated[int, typer.Option(min=4, help="Side (pixels) of the power-spectrum tiles.")] = COMPARE_TILE_PX,
    band: Annotated[
        Optional[tuple[float, float]],
        typer.Option(help=f"LO HI: band of the spectrum distance, fractions of Nyquist "
                          f"(default {COMPARE_SPECTRUM_BAND[0]:g} {COMPARE_SPECTRUM_BAND[1]:g})."),
    ] = None,
    noise_band: Annotated[
        Optional[tuple[float, float]],
        typer.Option(help=f"LO HI: band of the unpaired noise estimate, fractions of Nyquist "
                          f"(default {UNPAIRED_BAND[0]:g} {UNPAIRED_BAND[1]:g})."),
    ] = None,
    hist_bin: Annotated[float, typer.Option(help="Bin width of the standardised histogram (tilt std): the error "
                                                 "bound of the Wasserstein distance.")] = COMPARE_HIST_BIN,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
    cluster: ClusterFile = None,
) -> None:
    """Compare simulated modalities with the reference, per tilt and pooled over tilts and
    tomograms: radial power spectrum, mean and std curves, unpaired noise σ, 1-Wasserstein
    distance of the standardised histograms, correlation with noiseless.

    Writes OUT/compare.json and OUT/{spectrum,mean,std,noise_sigma,histogram,correlation}.png
    and prints the pooled distances (smaller = closer to the reference). Runs on one in-process
    worker unless --workers, --scheduler or --cluster say otherwise. Details: docs/compare.md.
    """
    from ..stages.compare_io import (
        check_out,
        parse_names,
        plan_store,
        run_plan,
        write_json,
    )

    names = parse_names(modalities, "--modalities")
    settings = {"tile": tile, "hist_bin": hist_bin}
    if band is not None:
        settings["band"] = band
    if noise_band is not None:
        settings["noise_band"] = noise_band
    checked = plan_store(store, names, reference, tomos, **settings)  # metadata only: nothing read yet
    out_dir = check_out(out if out is not None else Path(store).resolve().parent / "compare", overwrite)
    with _connect(scheduler, workers, False, cluster, processes=workers is not None):
        result = run_plan(checked)
    from ..report.compare import plot_compare

    typer.echo(_table(result))
    typer.echo(f"wrote {write_json(result, out_dir)}")
    for path in plot_compare(result, out_dir):
        typer.echo(f"wrote {path}")


def _table(result: dict) -> str:
    """Pooled distances, one row per measure, one column per modality (best marked *)."""
    mods = result["modalities"]
    width = max([12] + [len(m) + 1 for m in mods])
    lines = [f"distance to {result['reference']} (pooled over {len(result['tomograms'])} tomogram(s); smaller is closer)",
             f"{'measure':<12}" + "".join(f"{m:>{width}}" for m in mods)]
    for measure, order in result["ranking"].items():
        cells = []
        for m in mods:
            d = result["pooled"][m][measure]
            mark = "*" if order and order[0] == m else " "
            cells.append(f"{'-' if d is None else f'{d:.4g}'}{mark}".rjust(width))
        lines.append(f"{measure:<12}" + "".join(cells))
    return "\n".join(lines)
