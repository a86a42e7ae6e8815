"""``faket-dask pick``: particle picks of a tomogram with a trained picker.

::

    faket-dask pick run.zarr --tomo 3 --modality measured --picker picker.pt --out picks.csv
    faket-dask pick my_tomogram.mrc --picker picker.pt --out picks.star
    faket-dask score picks.csv run.zarr --tomo 3 --tomo-grid        # how good they are

Blocks of the tomogram are segmented straight from the Zarr store (or the memory-mapped MRC
file); each local maximum of the particle probability becomes a pick (or, with
``--clustering components``, each connected component of voxels of any picked class, with the
majority label of its voxels as in DeepFinder): memory per worker does not grow with the
tomogram. Method and choices: :mod:`faket_dask.kernels.picking`; wiring:
:mod:`faket_dask.stages.picking`; files: :mod:`faket_dask.stages.picking_io`. Everything is
checked before a voxel is read; bad input is one ``faket-dask: error:`` line and writes nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..params.picking import (
    PICK_BLOCK,
    PICK_CLUSTERING,
    PICK_CONTEXT_VOXELS,
    PICK_MIN_SIZE,
    PICK_PEAK_RADIUS_A,
    PICK_PEAK_THRESHOLD,
    PICK_SMOOTH_SIGMA,
)
from . import ClusterFile, Gpus, Overwrite, Scheduler, Workers, connect


def pick_cmd(
    source: Annotated[Path, typer.Argument(help="Run store (its tomo_NNN/tomogram/MODALITY) or an MRC tomogram "
                                                "(.mrc, .rec, .map; voxel size from the header).")],
    picker: Annotated[Path, typer.Option(help="Picker checkpoint (faket-dask train-picker).")],
    out: Annotated[Path, typer.Option(help="Picks: .csv (class_name, x, y, z, x_A, y_A, z_A, size, score), RELION "
                                           ".star or SHREC .txt.")],
    tomo: Annotated[int | None, typer.Option(help="Store: tomogram index (default 0).")] = None,
    modality: Annotated[str | None, typer.Option(help="Store: tomogram modality (default measured).")] = None,
    level: Annotated[int, typer.Option(min=0, help="Store: OME-NGFF level (k: binned 2**k), e.g. to match the "
                                                   "picker's voxel size.")] = 0,
    classes: Annotated[str | None, typer.Option(help="Comma-separated classes to keep (default: all the "
                                                        "picker's).")] = None,
    clustering: Annotated[str, typer.Option(help="peaks: one pick per local maximum of the particle probability "
                                                 "(touching particles stay apart); components: one per connected "
                                                 "component of labelled voxels.")] = PICK_CLUSTERING,
    peak_radius_A: Annotated[float, typer.Option("--peak-radius-A", help="Peaks: the closest two picks may be "
                                                                          "(Å).")] = PICK_PEAK_RADIUS_A,
    smooth_sigma: Annotated[float, typer.Option(help="Peaks: Gaussian smoothing of the particle probability "
                                                     "(voxels; 0: none).")] = PICK_SMOOTH_SIGMA,
    threshold: Annotated[float, typer.Option(help="Peaks: smallest smoothed particle probability of a pick "
                                                  "(0-1).")] = PICK_PEAK_THRESHOLD,
    min_size: Annotated[int, typer.Option(help="Smallest pick: voxels of its component, or labelled voxels within "
                                               "the peak radius of the peak.")] = PICK_MIN_SIZE,
    block: Annotated[int, typer.Option(help="Block edge (voxels, multiple of 4); memory per task grows with "
                                            "(block + 2 halo)^3.")] = PICK_BLOCK,
    halo: Annotated[int, typer.Option(help="Context voxels around each block (multiple of 4); the default is the "
                                           "picker's whole context: picks independent of --block.")] = PICK_CONTEXT_VOXELS,
    any_classes: Annotated[bool, typer.Option("--any-classes", help="Pick even when the store's true classes do "
                                                                    "not include the picker's.")] = False,
    pixel_size_A: Annotated[float | None, typer.Option("--pixel-size-A", help="MRC: voxel size (Å) instead of "
                                                                                "the header's.")] = None,
    save_segmentation: Annotated[Path | None, typer.Option(help="Also write the segmentation (labels, score) as "
                                                                   "a Zarr store.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto (--gpus: cuda).")] = "cpu",
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
    gpus: Gpus = False,
    cluster: ClusterFile = None,
) -> None:
    """Pick particles: segment the tomogram block by block with the picker, then one pick per
    local maximum of the particle probability (the sum of the picked classes' probabilities,
    smoothed; class: the largest summed probability around it; size, score), or with
    --clustering components one per connected component of voxels of any picked class (class:
    its voxels' majority label; centroid, size, mean score). Rows sorted by class, z, y, x.

    Positions are voxels of the picked tomogram and Å from its corner (voxel i at
    (i + 0.5) x pixel), like the store's particle tables, so `faket-dask score PICKS STORE
    --tomo N --tomo-grid` compares them whatever the level. Warns when the picker was trained
    at another voxel size (more than 5 %). A tomogram of one block is picked in this process
    (no cluster) unless a cluster option is given.
    """
    from ..stages.picking import plan_pick, run_pick
    from ..stages.picking_io import write_picks

    plan = plan_pick(source, picker, out, tomo=tomo, modality=modality, level=level, classes=classes,
                     min_size=min_size, block=block, halo=halo, any_classes=any_classes, pixel_size_A=pixel_size_A,
                     device="cuda" if gpus else device, overwrite=overwrite, save_segmentation=save_segmentation,
                     clustering=clustering, peak_radius_A=peak_radius_A, smooth_sigma=smooth_sigma, threshold=threshold)
    import contextlib
    import math

    blocks = math.prod(-(-n // plan.block) for n in plan.source.shape)
    # One block is one task: a cluster would only add its start-up (~10-15 s here) and a copy of
    # torch per worker; run it in this process unless a cluster was asked for.
    in_process = blocks == 1 and scheduler is None and workers is None and not gpus and cluster is None
    with contextlib.nullcontext() if in_process else connect(scheduler, workers, gpus, cluster):
        table = run_pick(plan)
    path = write_picks(table, out, source=plan.source, class_names=plan.class_names, overwrite=overwrite)
    counts = table["class_name"].value_counts()
    per_class = ", ".join(f"{c} {int(counts[c])}" for c in plan.class_names if c in counts)
    typer.echo(f"wrote {path}: {len(table)} picks in {plan.source.label}" + (f" ({per_class})" if per_class else ""))
    if plan.save_segmentation is not None:
        typer.echo(f"wrote {plan.save_segmentation} (labels, score)")
