"""``faket-dask train-picker`` on a run store: checks, reading the tomograms, the checkpoint.

The network and its file: :mod:`faket_dask.kernels.picker_net`; the training recipe
(DeepFinder's patches, a class-balanced loss, Adam): :mod:`faket_dask.kernels.picker_training`.

Data: the reconstructed tomograms ``tomo_NNN/tomogram/MODALITY`` (level ``s0``), each
standardised by its own mean and std; targets: ``tomo_NNN/labels/class_mask`` (same grid, value
= class id, 0 = background); particles: ``tomo_NNN/labels_particles`` (voxels of the same grid).

Classes: the union of the class names of the train tomograms' particle tables, ordered by class
id (or the subset named by ``classes``); channel 0 is background, channel k the k-th class.
Mask values of other ids (and particles of other classes) count as background.

Every check runs before any tomogram is read and raises a one-line
:class:`~faket_dask.errors.InputError` / :class:`~faket_dask.errors.OutputExistsError` naming
the file: the output (exists without ``overwrite``, its folder missing), no CUDA GPU for
``gpus``, the store, the tomogram indices, train/validate overlap, the modality, the labels and
particle tables, the patch size, the class names, and the settings.
"""
from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OutputExistsError
from ..params.picker import (
    BACKGROUND,
    DEFAULT_FILTERS,
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
from ..store.layout import (
    LABELS_PARTICLES,
    labels_group,
    labels_particles_group,
    tomo_name,
    tomogram_group,
)
from .compare_io import parse_names, parse_tomos

__all__ = ["TrainingPlan", "check_training", "run_training", "train_picker"]

NORMALISATION = "per-tomogram standardisation"
#: How the checkpoint's config names each loss of :data:`~faket_dask.kernels.picker_training.LOSSES`.
LOSS_NAMES = {"weighted-ce": "cross-entropy, class weights (1/voxel frequency)^0.5 of the train tomograms",
              "tversky": "Tversky (alpha = beta = 0.5: soft Dice summed over background + classes), on the softmax"}


@dataclass
class TrainingPlan:
    """A checked training job (metadata only; nothing read yet)."""

    store: Path
    modality: str
    train: list[int]
    validate: list[int]
    out: Path
    patch: int
    class_names: list[str]           # background first
    class_ids: dict[str, int]        # name -> class id of the store, channel order
    pixel_size_A: float | None
    device: str


def _check_out(out: str | Path, overwrite: bool) -> Path:
    """The checkpoint path: refused if it exists without ``overwrite``, is a folder, or its folder is missing."""
    p = Path(out)
    if p.is_dir():
        raise InputError(f"{p}: is a folder; --out names the checkpoint file (e.g. picker.pt)")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p}: exists; pass --overwrite to replace it")
    if not p.parent.is_dir():
        raise InputError(f"{p.parent}: no such folder (for --out {p})")
    return p


def _tomogram_images(root: Any, t: int) -> list[str]:
    """Modalities of ``tomo_NNN/tomogram`` (OME-NGFF images)."""
    import zarr

    from ..store import ngff

    try:
        group = root[tomogram_group(t)]
    except KeyError:
        return []
    return sorted(name for name, sub in group.groups() if isinstance(sub, zarr.Group) and ngff.is_image(sub))


def _class_table(store: Path, t: int) -> list[tuple[int, str]]:
    """``(class_id, class_name)`` of every particle of ``tomo_NNN/labels_particles``."""
    from ..store import open as open_group

    ds = open_group(store, labels_particles_group(t))
    ids = np.asarray(ds["class_id"].values).astype(np.int64)
    names = [str(n) for n in np.asarray(ds["class_name"].values)]
    return list(zip(ids.tolist(), names))


def _tomos(text: str | Sequence[int], available: list[int], store: Path, what: str) -> list[int]:
    """:func:`~faket_dask.stages.compare_io.parse_tomos`, with the store named when none is given."""
    if (not [t for t in text.split(",") if t.strip()]) if isinstance(text, str) else not list(text):
        raise InputError(f"{what}: no tomogram given; {store} has tomograms {', '.join(map(str, available))}")
    return parse_tomos(text, available, store, what)


def check_training(store: str | Path, train: str | Sequence[int], validate: str | Sequence[int], out: str | Path,
                   *, modality: str = "faket", patch: int = TRAIN_PATCH, classes: str | Sequence[str] | None = None,
                   overwrite: bool = False, gpus: bool = False) -> TrainingPlan:
    """Check a training job, reading metadata and the particle tables only.

    Parameters are those of :func:`train_picker`.

    Returns
    -------
    TrainingPlan

    Raises
    ------
    InputError, OutputExistsError
        One line naming the file (see the module docstring), in the order: output, GPU,
        patch size, store, tomograms, then per tomogram modality, labels, particle table and
        patch vs its edges, then pixel sizes and classes.
    """
    import zarr

    from ..store import has_var, open_root
    from ..store import open as open_group

    out_path = _check_out(out, overwrite)
    if gpus:
        import torch

        if not torch.cuda.is_available():
            raise InputError("--gpus: no CUDA GPU here (torch.cuda.is_available() is False)")
    if int(patch) % SIZE_MULTIPLE or int(patch) < MIN_PATCH:
        raise InputError(f"--patch {patch}: must be a multiple of {SIZE_MULTIPLE} and at least {MIN_PATCH} "
                         "(the network pools twice)")
    store = Path(store)
    open_root(store)  # InputError: no such store / not a Zarr store
    root = zarr.open_group(str(store), mode="r", use_consolidated=False)  # the current listing
    available = []
    for key in root.group_keys():
        tail = key.rpartition("_")[2]
        if tail.isdigit() and tomo_name(int(tail)) == key and _tomogram_images(root, int(tail)):
            available.append(int(tail))
    if not available:
        raise InputError(f"{store}: no reconstructed tomograms (tomo_NNN/tomogram); run `faket-dask simulate` first")
    available.sort()
    train_t = _tomos(train, available, store, "--train")
    val_t = _tomos(validate, available, store, "--validate")
    shared = sorted(set(train_t) & set(val_t))
    if shared:
        raise InputError(f"{store}: --train and --validate share {tomo_name(shared[0])}; validate on other tomograms")
    pixel = {}
    for t in train_t + val_t:
        have = _tomogram_images(root, t)
        if modality not in have:
            raise InputError(f"{store}: {tomo_name(t)} has no tomogram '{modality}' (has: {', '.join(have)})")
        image = open_group(store, f"{tomogram_group(t)}/{modality}", level=0)[modality]
        shape = tuple(int(image.sizes[d]) for d in ("z", "y", "x"))
        if not has_var(store, f"{labels_group(t)}/class_mask"):
            raise InputError(f"{store}: {tomo_name(t)} has no labels ({labels_group(t)}/class_mask; "
                             f"`faket-dask simulate` writes them)")
        mask = open_group(store, labels_group(t))["class_mask"]
        mshape = tuple(int(mask.sizes[d]) for d in ("z", "y", "x"))
        if mshape != shape:
            raise InputError(f"{store}: {labels_group(t)}/class_mask {mshape} is not on the grid of "
                             f"{tomogram_group(t)}/{modality} {shape}")
        if not has_var(store, f"{labels_particles_group(t)}/class_id"):
            raise InputError(f"{store}: {tomo_name(t)} has no particle table on the tomogram grid "
                             f"({tomo_name(t)}/{LABELS_PARTICLES})")
        if patch > min(shape):
            raise InputError(f"{store}: --patch {patch} is larger than {tomo_name(t)}'s smallest edge "
                             f"(tomogram {shape} z, y, x)")
        px = image.attrs.get("pixel_size_A")
        pixel[t] = None if px is None else float(px)
    sizes = {p for p in pixel.values() if p is not None}
    if len(sizes) > 1:
        raise InputError(f"{store}: the tomograms have different pixel sizes "
                         f"({', '.join(f'{tomo_name(t)} {p:g} Å' for t, p in pixel.items() if p is not None)}); "
                         "train on one scale")
    ids: dict[str, int] = {}
    for t in train_t + val_t:
        for cid, name in _class_table(store, t):
            if ids.setdefault(name, cid) != cid:
                raise InputError(f"{store}: class '{name}' has id {ids[name]} in one tomogram and {cid} in "
                                 f"{tomo_name(t)}")
    train_names = {name for t in train_t for _, name in _class_table(store, t)}
    if not train_names:
        raise InputError(f"{store}: the --train tomograms have no particles ({LABELS_PARTICLES} is empty)")
    order = sorted(train_names, key=lambda n: (ids[n], n))
    if classes is not None:
        chosen = parse_names(classes, "--classes")
        for c in chosen:
            if c == BACKGROUND or c not in train_names:
                raise InputError(f"{store}: --classes '{c}' is not a class of the --train tomograms "
                                 f"(they have: {', '.join(order)})")
        order = [n for n in order if n in chosen]
    return TrainingPlan(store=store, modality=modality, train=train_t, validate=val_t, out=out_path,
                        patch=int(patch), class_names=[BACKGROUND, *order], class_ids={n: ids[n] for n in order},
                        pixel_size_A=next(iter(sizes)) if sizes else None, device="cuda:0" if gpus else "cpu")


def _check_settings(epochs: int, steps: int, batch: int, lr: float, shift: int | None, particle_fraction: float,
                    val_patches: int, filters: Sequence[int]) -> None:
    for name, value in (("--epochs", epochs), ("--steps", steps), ("--batch", batch), ("--val-patches", val_patches)):
        if int(value) < 1:
            raise InputError(f"{name} {value}: must be at least 1")
    if not lr > 0:
        raise InputError(f"--lr {lr}: must be > 0")
    if shift is not None and int(shift) < 0:
        raise InputError(f"--shift {shift}: must be ≥ 0")
    if not 0 <= particle_fraction <= 1:
        raise InputError(f"--particle-fraction {particle_fraction}: must be in [0, 1]")
    if len(filters) != 3 or min(int(f) for f in filters) < 1:
        raise InputError(f"filters {tuple(filters)}: three positive filter counts expected")


def _load_volume(store: Path, t: int, modality: str, lut: np.ndarray, class_ids: dict[str, int]) -> Any:
    """One tomogram as a :class:`~faket_dask.kernels.picker_training.Volume` (read into memory)."""
    from ..kernels.picker_training import Volume, standardise
    from ..store import open as open_group

    data = standardise(np.asarray(open_group(store, f"{tomogram_group(t)}/{modality}", level=0)[modality].values))
    mask = np.asarray(open_group(store, labels_group(t))["class_mask"].values)
    target = lut[mask.astype(np.int64).clip(0, len(lut) - 1)]
    table = open_group(store, labels_particles_group(t))
    names = [str(n) for n in np.asarray(table["class_name"].values)]
    keep = np.asarray([n in class_ids for n in names], dtype=bool)
    zyx = np.stack([np.asarray(table[c].values, dtype=np.float64) for c in ("z", "y", "x")], axis=1).reshape(-1, 3)
    centres = np.rint(zyx[keep]).astype(np.int64)            # voxel i is centred at i
    centres = np.clip(centres, 0, np.asarray(data.shape) - 1)
    channels = lut[np.asarray([class_ids[n] for n, k in zip(names, keep) if k], dtype=np.int64)]
    return Volume(data=data, target=target, centres=centres, channels=channels)


def _progress_enabled() -> bool:
    from ..progress import _enabled

    return _enabled()


def run_training(plan: TrainingPlan, *, epochs: int = TRAIN_EPOCHS, steps: int = TRAIN_STEPS,
                 batch: int = TRAIN_BATCH, lr: float = TRAIN_LR, seed: int = 0, shift: int | None = None,
                 particle_fraction: float = TRAIN_PARTICLE_FRACTION, val_patches: int = TRAIN_VAL_PATCHES,
                 filters: Sequence[int] = DEFAULT_FILTERS, loss: str = TRAIN_LOSS, progress: bool | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train a checked job (:func:`check_training`) and write its checkpoint atomically.

    Returns
    -------
    dict
        The checkpoint's ``config`` plus ``out`` (its path).
    """
    import torch
    from tqdm import tqdm

    from ..kernels.picker_net import save_picker
    from ..kernels.picker_training import default_shift, fit, init_model

    shift = default_shift(plan.patch) if shift is None else int(shift)
    lut = np.zeros(256, dtype=np.uint8)                        # class id -> channel (others: background)
    for k, name in enumerate(plan.class_names[1:], start=1):
        if 0 <= plan.class_ids[name] < len(lut):
            lut[plan.class_ids[name]] = k
    train = [_load_volume(plan.store, t, plan.modality, lut, plan.class_ids) for t in plan.train]
    validate = [_load_volume(plan.store, t, plan.modality, lut, plan.class_ids) for t in plan.validate]
    model = init_model(len(plan.class_names), filters, seed)
    show = _progress_enabled() if progress is None else bool(progress)
    bar = tqdm(total=epochs * steps, file=sys.stderr, disable=not show, unit="step", dynamic_ncols=True,
               desc="training")

    def on_step(loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.update(1)

    def on_epoch(rec: dict[str, float]) -> None:
        line = (f"epoch {int(rec['epoch'])}/{epochs}: train loss {rec['train_loss']:.4f}, val loss "
                f"{rec['val_loss']:.4f}; best epoch {int(rec['best_epoch'])} ({rec['best_val_loss']:.4f})")
        if log is not None:
            bar.clear()
            log(line)
            bar.refresh()

    try:
        result = fit(model, train, validate, epochs=epochs, steps=steps, batch=batch, lr=lr, patch=plan.patch,
                     shift=shift, particle_fraction=particle_fraction, val_patches=val_patches, seed=seed,
                     device=plan.device, on_step=on_step, on_epoch=on_epoch, loss=loss)
    finally:
        bar.close()
    model.load_state_dict(result.state_dict)
    config = {
        "store": str(plan.store.resolve()), "modality": plan.modality, "train": plan.train,
        "validate": plan.validate, "class_ids": plan.class_ids, "pixel_size_A": plan.pixel_size_A,
        "normalisation": NORMALISATION, "loss": loss, "loss_description": LOSS_NAMES[loss],
        "class_weights": result.class_weights, "optimizer": "Adam (beta1 0.9, beta2 0.999)",
        "epochs": epochs, "steps": steps, "patch": plan.patch, "batch": batch, "lr": lr, "shift": shift,
        "particle_fraction": particle_fraction, "val_patches": val_patches, "seed": seed,
        "filters": [int(f) for f in filters],
        "history": result.history, "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
        "initial_val_loss": result.initial_val_loss,
        "faket_dask_version": _version(), "torch_version": torch.__version__, "device": plan.device,
        "torch_threads": torch.get_num_threads(), "wall_time_s": round(result.wall_s, 3),
    }
    save_picker(plan.out, model, plan.class_names, filters, config)
    return {**config, "out": str(plan.out)}


def _version() -> str:
    try:
        return importlib.metadata.version("faket-dask")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def train_picker(store: str | Path, train: str | Sequence[int], validate: str | Sequence[int], out: str | Path,
                 *, modality: str = "faket", epochs: int = TRAIN_EPOCHS, steps: int = TRAIN_STEPS,
                 patch: int = TRAIN_PATCH, batch: int = TRAIN_BATCH, lr: float = TRAIN_LR, seed: int = 0,
                 shift: int | None = None, particle_fraction: float = TRAIN_PARTICLE_FRACTION,
                 val_patches: int = TRAIN_VAL_PATCHES,
                 classes: str | Sequence[str] | None = None, filters: Sequence[int] = DEFAULT_FILTERS,
                 loss: str = TRAIN_LOSS, gpus: bool = False, overwrite: bool = False, progress: bool | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train a DeepFinder-like particle picker on a run store's tomograms and class masks.

    Recipe and sources: :mod:`faket_dask.kernels.picker_training`; network and checkpoint:
    :mod:`faket_dask.kernels.picker_net` (read it back with ``load_picker``).

    Parameters
    ----------
    store : path
        Run store with ``tomo_NNN/tomogram/MODALITY``, ``tomo_NNN/labels/class_mask`` and
        ``tomo_NNN/labels_particles``.
    train, validate : str or sequence of int
        Tomogram indices (``"0,1"`` or ``[0, 1]``); disjoint.
    out : path
        Checkpoint file (written atomically at the end).
    modality : str
        Tomogram modality to train on (``faket``, ``noisy``, ``baseline``, ``noiseless``, ...).
    epochs, steps, batch : int
        Epochs, optimiser steps per epoch, patches per step (defaults 20, 50, 8).
    patch : int
        Patch edge in voxels, a multiple of 4, ≥ 8, ≤ every tomogram's smallest edge (48).
    lr : float
        Adam learning rate (1e-3; DeepFinder: 1e-4 with the Tversky loss).
    seed : int
        Weights' initialisation and patch sampling; same seed ⇒ same weights on CPU.
    shift : int, optional
        Random shift (voxels per axis) of particle-centred patches (default ``round(13·patch/56)``).
    particle_fraction : float
        Fraction of each batch centred on particles (class-balanced); the rest at random.
    val_patches : int
        Size of the fixed validation set (drawn once from ``validate``).
    classes : str or sequence of str, optional
        Train on these classes only (the others count as background); default: every class
        of the train tomograms' particle tables.
    filters : sequence of 3 int
        Filters per level (DeepFinder: 32, 48, 64).
    loss : {"weighted-ce", "tversky"}
        Class-weighted cross-entropy (default) or DeepFinder's Tversky loss
        (:mod:`faket_dask.kernels.picker_training` says why the default differs).
    gpus : bool
        Train on ``cuda:0``.
    overwrite : bool
        Replace an existing ``out``.
    progress : bool, optional
        Progress bar on stderr (default: unless ``FAKET_PROGRESS=0``).
    log : callable(str), optional
        Receives one line per epoch.

    Returns
    -------
    dict
        The checkpoint's ``config`` (history, best_epoch, best_val_loss, ...) and ``out``.
    """
    _check_settings(epochs, steps, batch, lr, shift, particle_fraction, val_patches, filters)
    if loss not in LOSS_NAMES:
        raise InputError(f"--loss {loss}: one of {', '.join(LOSS_NAMES)}")
    plan = check_training(store, train, validate, out, modality=modality, patch=patch, classes=classes,
                          overwrite=overwrite, gpus=gpus)
    return run_training(plan, epochs=epochs, steps=steps, batch=batch, lr=lr, seed=seed, shift=shift,
                        particle_fraction=particle_fraction, val_patches=val_patches, filters=filters,
                        loss=loss, progress=progress, log=log)
