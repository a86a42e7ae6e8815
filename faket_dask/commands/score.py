"""``faket-dask score``: score particle picks against the true particles (SHREC'21 or CZII rules).

::

    faket-dask score picks.csv run.zarr --tomo 0 --metric czii --out report.json \\
        --confusion confusion.csv          # also writes confusion.png

Rules and sources: :mod:`faket_dask.kernels.scoring`; files and frames:
:mod:`faket_dask.stages.scoring_points`; reconciling: :mod:`faket_dask.stages.scoring`; outputs:
:mod:`faket_dask.stages.scoring_outputs`; every field of the report: ``docs/scoring.md``.
Outputs are checked before anything is read; bad input is one ``faket-dask: error:`` line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import Overwrite


def score_cmd(
    picks: Annotated[Path, typer.Argument(help="Picks: .csv (class_name and x_A, y_A, z_A or x, y, z), RELION .star "
                                               "or SHREC .txt.")],
    truth: Annotated[Path, typer.Argument(help="True particles: a run store (its particle table, with --tomo) or a "
                                               ".csv / .star / SHREC particle_locations.txt.")],
    metric: Annotated[str, typer.Option(help="shrec (hit inside the particle's occupancy, else within its radius; "
                                             "score = classification macro-F1) or czii (same-class pick within "
                                             "0.5 x radius; score = weighted F-beta).")] = "shrec",
    tomo: Annotated[
        Optional[list[int]], typer.Option(help="Tomogram index of a run store truth; repeat for several (default 0).")
    ] = None,
    tomo_grid: Annotated[
        bool, typer.Option("--tomo-grid", help="Truth = the store's tomogram-grid table (labels_particles): picks "
                                               "measured from the reconstructed tomogram's corner.")
    ] = False,
    radius: Annotated[
        Optional[list[str]], typer.Option(help="NAME=Å: radius of a class (replaces the truth's radius_A); repeatable.")
    ] = None,
    pixel_size_A: Annotated[
        Optional[float], typer.Option("--pixel-size-A", help="Voxel size (Å) of files with voxel positions only "
                                                            "(SHREC .txt, x y z without x_A).")
    ] = None,
    beta: Annotated[float, typer.Option(help="β of the per-class F-beta (CZII: 4).")] = 4.0,
    weight: Annotated[
        Optional[list[str]], typer.Option(help="NAME=w: czii class weight (default 1 each); repeatable.")
    ] = None,
    classes: Annotated[
        Optional[str], typer.Option(help="Comma-separated true classes to score (others and their picks dropped), "
                                         "e.g. to leave out vesicles and fiducials.")
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write the numbers as JSON (docs/scoring.md).")] = None,
    confusion: Annotated[
        Optional[Path], typer.Option(help="Write the confusion matrix as CSV, and as a figure beside it (.png).")
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Score picks against the true particles: localisation precision/recall/F1, per-class
    counts and F-beta, classification macro-F1 and the metric's headline score.

    SHREC'21: a pick is a hit on the particle whose occupancy (dilated by one voxel) it falls in,
    or within the particle's radius when there is no occupancy volume; a particle counts once,
    extra picks lower precision; its class is that of its first pick. CZII: per class, a true
    particle is found by a pick of its class within 0.5 x its radius; TP/FP/FN summed over
    tomograms, then F-beta per class, weighted mean = score. Details: docs/scoring.md.
    """
    from ..stages.scoring import score_files
    from ..stages.scoring_outputs import (
        check_outputs,
        confusion_png,
        write_confusion_csv,
        write_report,
    )

    check_outputs(out, confusion, overwrite=overwrite)
    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    result, notes = score_files(picks, truth, metric=metric, tomos=tomo, tomo_grid=tomo_grid, radius=radius,
                                pixel_size_A=pixel_size_A, beta=beta, weights=weight, classes=names)
    for line in notes:
        typer.echo(f"faket-dask: note: {line}", err=True)
    typer.echo(_summary(result))
    if out is not None:
        typer.echo(f"wrote {write_report(result, out)}")
    if confusion is not None:
        from ..report.scoring import plot_confusion

        typer.echo(f"wrote {write_confusion_csv(result, confusion)}")
        typer.echo(f"wrote {plot_confusion(result, confusion_png(confusion))}")


def _summary(result) -> str:
    loc = result.localization
    lines = [f"{result.metric}: {result.n_picks} picks, {result.n_truth} particles"
             + (f", {result.duplicates} extra picks on found particles" if result.duplicates else ""),
             (f"localization  tp {loc.tp}  fp {loc.fp}  fn {loc.fn}  precision {loc.precision:.4f}  "
              f"recall {loc.recall:.4f}  f1 {loc.f1:.4f}")]
    width = max([len("class")] + [len(c) for c in result.classes])
    lines.append(f"{'class':<{width}}  {'tp':>6} {'fp':>6} {'fn':>6}  precision  recall      f1  "
                 f"f{result.beta:g}" + ("  weight" if result.metric == "czii" else ""))
    for c, k in result.classes.items():
        lines.append(f"{c:<{width}}  {k.tp:>6} {k.fp:>6} {k.fn:>6}  {k.precision:9.4f}  {k.recall:6.4f}  "
                     f"{k.f1:6.4f}  {k.fbeta:6.4f}" + (f"  {result.weights[c]:6g}" if result.metric == "czii" else ""))
    lines.append(f"classification macro-F1 {result.classification_macro_f1:.4f}")
    what = "classification macro-F1" if result.metric == "shrec" else f"weighted F{result.beta:g}"
    lines.append(f"score ({what}) {result.score:.4f}")
    return "\n".join(lines)
