"""``faket-dask train-picker``: train a DeepFinder-like particle picker on a run store.

::

    faket-dask train-picker out/run.zarr --modality faket --train 0,1 --validate 2 \\
        --out picker.pt --epochs 20 --patch 48 --batch 8 --lr 1e-3 --seed 0 [--loss tversky] [--gpus]

The network (DeepFinder's 3D U-Net) and the checkpoint: :mod:`faket_dask.kernels.picker_net`;
the recipe (class-balanced patches, a class-balanced loss, Adam, best epoch kept):
:mod:`faket_dask.kernels.picker_training`; the checks and the store:
:mod:`faket_dask.stages.picker_training`. Every input is checked before any tomogram is read;
bad input is one ``faket-dask: error:`` line and nothing is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..params.picker import (
    DEEPFINDER_PATCH,
    DEEPFINDER_SHIFT,
    MIN_PATCH,
    SIZE_MULTIPLE,
    TRAIN_BATCH,
    TRAIN_EPOCHS,
    TRAIN_LOSS,
    TRAIN_LR,
    TRAIN_PARTICLE_FRACTION,
    TRAIN_PATCH,
    TRAIN_STEPS,
    TRAIN_VAL_PATCHES,
)
from . import Overwrite


def train_picker_cmd(
    store: Annotated[Path, typer.Argument(help="Run store with tomo_NNN/tomogram/MODALITY, tomo_NNN/labels "
                                               "and tomo_NNN/labels_particles.")],
    train: Annotated[str, typer.Option(help="Comma-separated tomogram indices to train on, e.g. 0,1.")],
    validate: Annotated[str, typer.Option(help="Comma-separated tomogram indices to validate on (not in --train).")],
    out: Annotated[Path, typer.Option(help="Checkpoint file to write (e.g. picker.pt).")],
    modality: Annotated[str, typer.Option(help="Tomogram modality: faket, noisy, baseline, noiseless, measured.")]
    = "faket",
    epochs: Annotated[int, typer.Option(min=1, help="Epochs; the epoch with the lowest validation loss is kept.")]
    = TRAIN_EPOCHS,
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps per epoch.")] = TRAIN_STEPS,
    patch: Annotated[int, typer.Option(help=f"Patch edge (voxels): a multiple of {SIZE_MULTIPLE}, at least "
                                            f"{MIN_PATCH}, at most the smallest tomogram edge (DeepFinder: "
                                            f"{DEEPFINDER_PATCH}).")] = TRAIN_PATCH,
    batch: Annotated[int, typer.Option(min=1, help="Patches per step.")] = TRAIN_BATCH,
    lr: Annotated[float, typer.Option(help="Adam learning rate (DeepFinder: 1e-4 with --loss tversky).")] = TRAIN_LR,
    loss: Annotated[str, typer.Option(help="weighted-ce (cross-entropy, class weights (1/voxel frequency)^0.5) "
                                           "or tversky (DeepFinder's soft Dice; needs many more steps).")]
    = TRAIN_LOSS,
    seed: Annotated[int, typer.Option(help="Seed of the initial weights and of the patch sampling "
                                           "(same seed: same weights on CPU).")] = 0,
    shift: Annotated[Optional[int], typer.Option(
        min=0, help=f"Random shift (voxels per axis) of particle-centred patches (default "
                    f"round({DEEPFINDER_SHIFT}*patch/{DEEPFINDER_PATCH})).")] = None,
    particle_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Fraction of each batch centred on "
                                                                             "particles, classes drawn uniformly.")]
    = TRAIN_PARTICLE_FRACTION,
    val_patches: Annotated[int, typer.Option(min=1, help="Fixed validation patches (drawn once with the seed).")]
    = TRAIN_VAL_PATCHES,
    classes: Annotated[Optional[str], typer.Option(help="Comma-separated classes to train on (others count as "
                                                        "background; default: every class of --train).")] = None,
    gpus: Annotated[bool, typer.Option("--gpus", help="Train on the first CUDA GPU (cuda:0).")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Train a DeepFinder-like 3D U-Net picker (two poolings, 32/48/64 filters, softmax over
    background + classes) on the reconstructed tomograms of one modality against their class
    masks.

    Patches: half centred on particles of classes drawn uniformly, shifted at random, half at
    random positions; loss: class-weighted cross-entropy (or DeepFinder's Tversky loss);
    Adam. Validation after every epoch on a fixed patch set; the best epoch's weights are saved
    with the class list and the training settings (read by `faket-dask pick`).
    """
    from ..stages.picker_training import train_picker

    result = train_picker(store, train, validate, out, modality=modality, epochs=epochs, steps=steps,
                          patch=patch, batch=batch, lr=lr, seed=seed, shift=shift, loss=loss,
                          particle_fraction=particle_fraction, val_patches=val_patches, classes=classes,
                          gpus=gpus, overwrite=overwrite, log=typer.echo)
    typer.echo(f"wrote {result['out']} ({len(result['class_ids'])} classes: {', '.join(result['class_ids'])})")
    typer.echo(f"best epoch {result['best_epoch']}/{result['epochs']}: val loss {result['best_val_loss']:.4f} "
               f"(untrained {result['initial_val_loss']:.4f}); {result['wall_time_s']:.1f} s on {result['device']}")
