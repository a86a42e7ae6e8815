"""Training the particle picker (:mod:`.picker_net`): patches, loss, epochs. Pure numpy/torch.

The recipe is DeepFinder's (Moebel et al. 2021, *Nat. Methods* 18:1386; code
``cryoet-deepfinder``, ``training.py``, ``utils/core.py``, ``losses.py``):

* **Input**: each tomogram standardised by its own mean and std (DeepFinder standardises each
  training tomogram, ``(data - mean) / std``), see :func:`standardise`.
* **Patches** (:class:`PatchSampler`): cubes of ``patch`` voxels. A fraction of each batch
  (``particle_fraction``, default 1/2) is centred on a particle chosen *class-balanced*: a class
  uniformly among the classes that have particles, then one of its particles uniformly
  (DeepFinder's ``flag_batch_bootstrap`` / ``get_bootstrap_idx``), its centre moved by a random
  shift of up to ±``shift`` voxels per axis (DeepFinder: ``Lrnd = 13`` for its 56³ patches;
  :func:`default_shift` scales that to the patch). The rest lie at uniformly random positions
  (a tomogram chosen uniformly, then the corner uniformly). A centre too close to the border is
  clamped so the patch stays inside the volume, as DeepFinder's ``get_patch_position`` does.
  A particle's centre voxel is ``round(x, y, z)`` (tables put voxel ``i``'s centre at ``i``).
  No flips or rotations (DeepFinder's default has none).
* **Loss**, class-balanced either way (``loss``):

  - ``"weighted-ce"`` (default, :func:`weighted_ce_loss`): cross-entropy with class weights
    ``w_c ∝ (1/f_c)^½`` from the voxel frequencies ``f_c`` of the training tomograms' class
    masks (:func:`class_weights`; classes absent from them weigh 0), normalised to mean 1.
  - ``"tversky"`` (:func:`tversky_loss`): DeepFinder's Tversky loss with α = β = ½, i.e. the soft
    Dice loss summed over background + classes, on the softmax of the logits:
    ``Ncl − Σ_c Σ p·g / (Σ p·g + α Σ p·(1−g) + β Σ (1−p)·g)``, sums over batch and voxels;
    every class counts equally whatever its voxel count.

  Why the default differs from DeepFinder: measured on the demo store (16 classes, 64³
  tomograms at 20 Å, patch 32, batch 4), the Tversky loss stayed at Ncl − 1 (background only)
  for 300 steps at lr 3e-4, and collapsed to all-background at 1e-3, while the weighted
  cross-entropy at lr 1e-3 fell from 2.8 to 0.9 in 200 steps and found 61 % of the proteins of
  a held-out tomogram: DeepFinder's recipe needs its ~10⁴ steps on a GPU, more than a CPU budget
  allows. ``--loss tversky --lr 1e-4`` is DeepFinder's recipe exactly.
* **Optimiser**: Adam, β = (0.9, 0.999) (DeepFinder's ``Adam(lr=0.0001, beta_1=0.9,
  beta_2=0.999)``); lr 1e-3 by default (weighted-ce; DeepFinder's 1e-4 with Tversky).
* **Validation**: a fixed set of patches drawn once (same sampler, own random stream) from the
  validation tomograms; its loss is the training loss of the whole set at once (sums over every
  validation patch; the class weights are the training tomograms'), computed after every epoch; the weights of the epoch with the lowest
  validation loss are kept.

Determinism: the weights are initialised under ``torch.manual_seed(seed)`` (in a forked RNG,
so the caller's torch RNG is untouched), patches come from ``numpy.random.Generator`` streams
spawned from ``seed``, and on CPU ``torch.use_deterministic_algorithms(True)`` is on while
training (restored after): the same seed gives bit-identical weights on the same machine and
thread count. On CUDA, cuDNN is made deterministic, but the nearest-upsampling backward uses
atomic adds, so GPU runs are reproducible only up to float rounding.
"""
from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..params.picker import (
    DEEPFINDER_PATCH,
    DEEPFINDER_SHIFT,
    DEFAULT_FILTERS,
    SIZE_MULTIPLE,
    TRAIN_BATCH,
    TRAIN_EPOCHS,
    TRAIN_LOSS,
    TRAIN_LR,
    TRAIN_PARTICLE_FRACTION,
    TRAIN_PATCH,
    TRAIN_STEPS,
    TRAIN_VAL_PATCHES,
    TVERSKY_ALPHA,
    TVERSKY_BETA,
)
from .picker_net import PickerUNet

_EPS = 1e-7  # keeps 0/0 (a class absent from the batch *and* predicted nowhere) finite


def default_shift(patch: int) -> int:
    """DeepFinder's random shift (13 voxels for 56³ patches) scaled to ``patch``: ``round(13·patch/56)``."""
    return round(DEEPFINDER_SHIFT * int(patch) / DEEPFINDER_PATCH)


def standardise(volume: np.ndarray) -> np.ndarray:
    """``(v − mean) / std`` of the whole volume, float32 (std 0 → only the mean is removed)."""
    v = np.asarray(volume, dtype=np.float32)
    mean = float(v.mean(dtype=np.float64))
    std = float(v.std(dtype=np.float64))
    return ((v - mean) / (std if std > 0 else 1.0)).astype(np.float32, copy=False)


@dataclass
class Volume:
    """One tomogram to sample patches from.

    Attributes
    ----------
    data : ndarray, float32 (z, y, x)
        Standardised tomogram.
    target : ndarray, uint8 (z, y, x)
        Channel of every voxel (0 = background, k = the picker's class k).
    centres : ndarray, int (n, 3)
        Particle centre voxels (z, y, x).
    channels : ndarray, int (n,)
        Channel (class) of each particle, ≥ 1.
    """

    data: np.ndarray
    target: np.ndarray
    centres: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    channels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        if self.data.shape != self.target.shape or self.data.ndim != 3:
            raise ValueError(f"data {self.data.shape} and target {self.target.shape} must be the same 3-D grid")
        self.centres = np.asarray(self.centres, dtype=np.int64).reshape(-1, 3)
        self.channels = np.asarray(self.channels, dtype=np.int64).reshape(-1)
        if len(self.centres) != len(self.channels):
            raise ValueError("one channel per particle centre")


@dataclass
class Patches:
    """Where a batch of patches lies.

    Attributes
    ----------
    tomo : ndarray (n,)
        Index of the volume of each patch.
    corners : ndarray (n, 3)
        First voxel (z, y, x) of each patch, inside the volume.
    centres : ndarray (n, 3)
        Requested centre before clamping (particle centre + shift, or ``corner + patch // 2``
        for random patches).
    classes : ndarray (n,)
        Class (channel) whose particle centred the patch; 0 for random patches.
    """

    tomo: np.ndarray
    corners: np.ndarray
    centres: np.ndarray
    classes: np.ndarray


class PatchSampler:
    """Draws patch positions from volumes, class-balanced around particles (module docstring).

    Parameters
    ----------
    volumes : sequence of Volume
    patch : int
        Edge of the cubic patches (every volume edge must be ≥ patch).
    shift : int
        Largest random shift (voxels, per axis) of particle-centred patches.
    particle_fraction : float
        Fraction of each draw centred on particles (rounded to a whole count); 0 when the
        volumes have no particles.
    """

    def __init__(self, volumes: Sequence[Volume], patch: int, shift: int,
                 particle_fraction: float = TRAIN_PARTICLE_FRACTION) -> None:
        self.volumes = list(volumes)
        self.patch, self.shift = int(patch), int(shift)
        self.particle_fraction = float(particle_fraction)
        if not self.volumes:
            raise ValueError("no volume to sample from")
        for v in self.volumes:
            if min(v.data.shape) < self.patch:
                raise ValueError(f"patch {self.patch} is larger than a volume {v.data.shape}")
        tomo = np.concatenate([np.full(len(v.channels), i) for i, v in enumerate(self.volumes)]).astype(np.int64)
        self._tomo = tomo
        self._centres = np.concatenate([v.centres for v in self.volumes]).reshape(-1, 3)
        chans = np.concatenate([v.channels for v in self.volumes]).astype(np.int64)
        #: Classes with at least one particle, ascending; the class-balanced draw picks among them.
        self.classes = np.unique(chans)
        self._by_class = [np.flatnonzero(chans == c) for c in self.classes]

    def n_particle(self, n: int) -> int:
        """How many of ``n`` patches are particle-centred."""
        return 0 if not len(self.classes) else round(self.particle_fraction * n)

    def draw(self, rng: np.random.Generator, n: int) -> Patches:
        """``n`` patch positions: the particle-centred ones first, then the random ones."""
        p, half = self.patch, self.patch // 2
        k = self.n_particle(n)
        tomo = np.empty(n, dtype=np.int64)
        centres = np.empty((n, 3), dtype=np.int64)
        classes = np.zeros(n, dtype=np.int64)
        for i in range(k):
            c = int(rng.integers(len(self.classes)))                    # class, uniformly
            j = int(self._by_class[c][rng.integers(len(self._by_class[c]))])  # one of its particles
            tomo[i], classes[i] = self._tomo[j], self.classes[c]
            centres[i] = self._centres[j] + rng.integers(-self.shift, self.shift + 1, size=3)
        for i in range(k, n):
            t = int(rng.integers(len(self.volumes)))
            shape = np.asarray(self.volumes[t].data.shape)
            tomo[i] = t
            centres[i] = rng.integers(0, shape - p + 1) + half
        shapes = np.asarray([self.volumes[t].data.shape for t in tomo]).reshape(n, 3)
        corners = np.clip(centres - half, 0, shapes - p)                # DeepFinder clamps to the border
        return Patches(tomo=tomo, corners=corners, centres=centres, classes=classes)

    def extract(self, patches: Patches) -> tuple[np.ndarray, np.ndarray]:
        """Cut the patches: ``(x float32 (n, 1, p, p, p), y int64 (n, p, p, p))``."""
        p = self.patch
        n = len(patches.tomo)
        x = np.empty((n, 1, p, p, p), dtype=np.float32)
        y = np.empty((n, p, p, p), dtype=np.int64)
        for i, (t, (z0, y0, x0)) in enumerate(zip(patches.tomo, patches.corners)):
            v = self.volumes[int(t)]
            x[i, 0] = v.data[z0:z0 + p, y0:y0 + p, x0:x0 + p]
            y[i] = v.target[z0:z0 + p, y0:y0 + p, x0:x0 + p]
        return x, y


def tversky_terms(probs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per channel: ``Σ p·g``, ``Σ p·(1−g)``, ``Σ (1−p)·g`` over batch and voxels.

    ``probs``: ``(n, C, z, y, x)`` class probabilities; ``target``: ``(n, z, y, x)`` channel indices.
    """
    g = torch.nn.functional.one_hot(target, probs.shape[1]).movedim(-1, 1).to(probs.dtype)
    dims = (0, 2, 3, 4)
    tp = (probs * g).sum(dims)
    return tp, (probs * (1 - g)).sum(dims), ((1 - probs) * g).sum(dims)


def tversky_from_terms(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor,
                       alpha: float = TVERSKY_ALPHA, beta: float = TVERSKY_BETA) -> torch.Tensor:
    """``Ncl − Σ_c tp / (tp + α·fp + β·fn)`` (DeepFinder ``losses.tversky_loss``; ``eps`` in the denominator)."""
    return tp.shape[0] - (tp / (tp + alpha * fp + beta * fn + _EPS)).sum()


def tversky_loss(probs: torch.Tensor, target: torch.Tensor, alpha: float = TVERSKY_ALPHA,
                 beta: float = TVERSKY_BETA) -> torch.Tensor:
    """DeepFinder's Tversky loss of class probabilities against a label map.

    Parameters
    ----------
    probs : Tensor (n, C, z, y, x)
        Class probabilities (softmax of the logits), background = channel 0.
    target : Tensor, int (n, z, y, x)
        Channel of every voxel.
    alpha, beta : float
        Weights of false positives and false negatives (½, ½: the soft Dice loss).

    Returns
    -------
    Tensor (scalar)
        In ``[0, C]``: 0 for a perfect prediction of a batch in which every channel occurs; a
        channel absent from the batch adds ~1 whatever is predicted (as in DeepFinder).
    """
    return tversky_from_terms(*tversky_terms(probs, target), alpha, beta)


#: The losses :func:`fit` knows (module docstring).
LOSSES = ("weighted-ce", "tversky")


def class_weights(volumes: Sequence[Volume], n_outputs: int) -> np.ndarray:
    """Class weights of the weighted cross-entropy: ``(1/f_c)^½`` normalised to mean 1.

    Parameters
    ----------
    volumes : sequence of Volume
        The training tomograms; ``f_c`` is channel ``c``'s share of all their target voxels.
    n_outputs : int
        Channels (background + classes).

    Returns
    -------
    ndarray, float64 (n_outputs,)
        0 for channels absent from every volume; the others have mean 1. Square-root inverse
        frequency (not full inverse frequency): a class of a few hundred voxels would otherwise
        weigh ~10³ × the background and the picker would paint every blob with it.
    """
    counts = np.zeros(n_outputs, np.float64)
    for v in volumes:
        counts += np.bincount(np.asarray(v.target).ravel(), minlength=n_outputs)[:n_outputs]
    present = counts > 0
    w = np.zeros(n_outputs, np.float64)
    w[present] = np.sqrt(counts.sum() / counts[present])
    return w / w[present].mean()


def weighted_ce_terms(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``[Σ w_y · (−log p_y), Σ w_y]`` over batch and voxels (the weighted mean's two sums)."""
    nll = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    w = weights[target]
    return torch.stack([(w * nll).sum(), w.sum()])


def weighted_ce_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Class-weighted cross-entropy: ``Σ w_y · (−log softmax(logits)_y) / Σ w_y``.

    Parameters
    ----------
    logits : Tensor (n, C, z, y, x)
    target : Tensor, int (n, z, y, x)
        Channel of every voxel.
    weights : Tensor (C,)
        From :func:`class_weights`.

    Returns
    -------
    Tensor (scalar), ≥ 0; 0 only for a perfect, infinitely confident prediction (torch's
    ``cross_entropy(weight=...)`` with ``reduction="mean"``).
    """
    num, den = weighted_ce_terms(logits, target, weights)
    return num / den


def _loss_terms(kind: str, logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if kind == "tversky":
        return torch.stack(tversky_terms(torch.softmax(logits, dim=1), target))
    assert weights is not None
    return weighted_ce_terms(logits, target, weights)


def _loss_from_terms(kind: str, terms: torch.Tensor) -> torch.Tensor:
    return tversky_from_terms(*terms) if kind == "tversky" else terms[0] / terms[1]


def init_model(n_outputs: int, filters: Sequence[int] = DEFAULT_FILTERS, seed: int = 0) -> PickerUNet:
    """A :class:`PickerUNet` initialised under ``torch.manual_seed(seed)`` (caller's RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return PickerUNet(n_outputs, filters)


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic torch algorithms while inside (CPU: all; CUDA: cuDNN), then restored."""
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev[2], prev[3]


def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, batch: int, device: torch.device,
             loss: str = "tversky", weights: torch.Tensor | None = None) -> float:
    """The loss of the whole set ``(x, y)`` (sums over every patch), in chunks of ``batch``."""
    model.eval()
    sums = None
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            logits = model(torch.from_numpy(x[i:i + batch]).to(device))
            terms = _loss_terms(loss, logits, torch.from_numpy(y[i:i + batch]).to(device), weights).double()
            sums = terms if sums is None else sums + terms
    assert sums is not None
    return float(_loss_from_terms(loss, sums))


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, sampler: PatchSampler,
                rng: np.random.Generator, steps: int, batch: int, device: torch.device,
                on_step: Callable[[float], None] | None = None, loss_kind: str = "tversky",
                weights: torch.Tensor | None = None) -> float:
    """``steps`` optimiser steps on freshly drawn batches; returns the mean training loss."""
    model.train()
    total = 0.0
    for _ in range(steps):
        x, y = sampler.extract(sampler.draw(rng, batch))
        logits = model(torch.from_numpy(x).to(device))
        loss = _loss_from_terms(loss_kind, _loss_terms(loss_kind, logits, torch.from_numpy(y).to(device), weights))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        total += value
        if on_step is not None:
            on_step(value)
    return total / max(steps, 1)


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes
    ----------
    state_dict : dict
        Weights (CPU copies) of the best epoch.
    history : list of dict
        ``{"epoch", "train_loss", "val_loss"}`` per epoch (epochs count from 1).
    best_epoch : int
    best_val_loss : float
    initial_val_loss : float
        Validation loss of the untrained network.
    wall_s : float
    class_weights : list of float or None
        The weighted cross-entropy's class weights (None for the Tversky loss).
    """

    state_dict: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    best_epoch: int
    best_val_loss: float
    initial_val_loss: float
    wall_s: float
    class_weights: list[float] | None = None


def fit(model: torch.nn.Module, train: Sequence[Volume], validate: Sequence[Volume], *,
        epochs: int = TRAIN_EPOCHS, steps: int = TRAIN_STEPS, batch: int = TRAIN_BATCH, lr: float = TRAIN_LR,
        patch: int = TRAIN_PATCH, shift: int | None = None, particle_fraction: float = TRAIN_PARTICLE_FRACTION,
        val_patches: int = TRAIN_VAL_PATCHES, seed: int = 0, loss: str = TRAIN_LOSS,
        device: str | torch.device = "cpu", on_step: Callable[[float], None] | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None) -> FitResult:
    """Train ``model`` on patches of ``train``, validate on ``validate`` every epoch, keep the best.

    Parameters
    ----------
    model : torch.nn.Module
        E.g. :func:`init_model`; moved to ``device`` and trained in place (it ends with the
        last epoch's weights; the best ones are in the result).
    train, validate : sequence of Volume
        Standardised tomograms with their channel maps and particles.
    epochs, steps, batch : int
        Epochs, optimiser steps per epoch, patches per step.
    lr : float
        Adam learning rate (β = 0.9, 0.999).
    patch : int
        Patch edge, a multiple of 4.
    shift : int, optional
        Random shift of particle-centred patches (default :func:`default_shift`).
    particle_fraction : float
        Fraction of each batch centred on particles.
    val_patches : int
        Size of the fixed validation set.
    seed : int
        Seeds the training and validation patch streams (the weights' seed is :func:`init_model`'s).
    loss : {"weighted-ce", "tversky"}
        The loss (module docstring).
    device : str or torch.device
    on_step : callable(loss), optional
        Called after every step (progress bars).
    on_epoch : callable(record), optional
        Called after every epoch with ``{"epoch", "train_loss", "val_loss", "best_epoch",
        "best_val_loss"}``.

    Returns
    -------
    FitResult
    """
    if patch % SIZE_MULTIPLE:
        raise ValueError(f"patch {patch} is not a multiple of {SIZE_MULTIPLE}")
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r}: one of {', '.join(LOSSES)}")
    device = torch.device(device)
    shift = default_shift(patch) if shift is None else int(shift)
    t0 = time.perf_counter()
    train_rng, val_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(2))
    train_sampler = PatchSampler(train, patch, shift, particle_fraction)
    val_sampler = PatchSampler(validate, patch, shift, particle_fraction)
    val_x, val_y = val_sampler.extract(val_sampler.draw(val_rng, val_patches))
    model.to(device)
    n_outputs = int(model.head.out_channels) if hasattr(model, "head") else int(max(v.target.max() for v in train)) + 1
    weights = None if loss == "tversky" else torch.tensor(class_weights(train, n_outputs), dtype=torch.float32,
                                                             device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    history: list[dict[str, float]] = []
    best_epoch, best_loss, best_state = 0, float("inf"), None
    with deterministic(device):
        initial = evaluate(model, val_x, val_y, batch, device, loss, weights)
        for epoch in range(1, epochs + 1):
            train_loss = train_epoch(model, optimizer, train_sampler, train_rng, steps, batch, device, on_step,
                                     loss, weights)
            val_loss = evaluate(model, val_x, val_y, batch, device, loss, weights)
            history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
            if val_loss < best_loss or best_state is None:
                best_epoch, best_loss = epoch, val_loss
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            if on_epoch is not None:
                on_epoch({**history[-1], "best_epoch": best_epoch, "best_val_loss": best_loss})
    if best_state is None:  # epochs == 0: the untrained weights
        best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        best_loss = initial
    return FitResult(state_dict=best_state, history=history, best_epoch=best_epoch, best_val_loss=best_loss,
                     initial_val_loss=initial, wall_s=time.perf_counter() - t0,
                     class_weights=None if weights is None else [float(w) for w in weights.cpu()])
