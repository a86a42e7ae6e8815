"""The particle picker's network constants and training defaults: torch-free, numpy-free.

The one owner of these facts: the network (:mod:`faket_dask.kernels.picker_net`, which
re-exports the first three), the training kernels (:mod:`faket_dask.kernels.picker_training`),
the stage (:mod:`faket_dask.stages.picker_training`) and the CLI's help texts read these names.
Sources: DeepFinder (Moebel et al. 2021, *Nat. Methods* 18:1386; ``cryoet-deepfinder``:
``models.py``, ``training.py``, ``losses.py``).
"""
from __future__ import annotations

from typing import Final

__all__ = [
    "BACKGROUND",
    "DEEPFINDER_PATCH",
    "DEEPFINDER_SHIFT",
    "DEFAULT_FILTERS",
    "MIN_PATCH",
    "SIZE_MULTIPLE",
    "TRAIN_BATCH",
    "TRAIN_EPOCHS",
    "TRAIN_LOSS",
    "TRAIN_LR",
    "TRAIN_PARTICLE_FRACTION",
    "TRAIN_PATCH",
    "TRAIN_STEPS",
    "TRAIN_VAL_PATCHES",
    "TVERSKY_ALPHA",
    "TVERSKY_BETA",
]

#: DeepFinder's filters per level (models.py: 32, 48, 64).
DEFAULT_FILTERS: Final = (32, 48, 64)
#: Name of channel 0 of every picker.
BACKGROUND: Final = "background"
#: Edge lengths of a picker's input must be multiples of this (two 2³ poolings).
SIZE_MULTIPLE: Final = 4
#: Smallest training patch edge (two poolings leave 2 voxels).
MIN_PATCH: Final = 8

#: DeepFinder's patch edge and the random shift (``Lrnd``) of its particle-centred patches.
DEEPFINDER_PATCH: Final = 56
DEEPFINDER_SHIFT: Final = 13
#: Tversky weights of false positives (α) and false negatives (β); ½, ½ = soft Dice (DeepFinder).
TVERSKY_ALPHA: Final = 0.5
TVERSKY_BETA: Final = 0.5

#: Training defaults of ``faket-dask train-picker``: patch edge (the issue's 48; DeepFinder 56),
#: epochs, optimiser steps per epoch, patches per step, the loss and Adam's learning rate
#: (weighted cross-entropy at 1e-3: it learns on a CPU budget, see
#: ``faket_dask.kernels.picker_training``; DeepFinder: Tversky at 1e-4), the fraction of each
#: batch centred on particles, the fixed validation patches.
TRAIN_PATCH: Final = 48
TRAIN_EPOCHS: Final = 20
TRAIN_STEPS: Final = 50
TRAIN_BATCH: Final = 8
TRAIN_LR: Final = 1e-3
TRAIN_LOSS: Final = "weighted-ce"
TRAIN_PARTICLE_FRACTION: Final = 0.5
TRAIN_VAL_PATCHES: Final = 32
