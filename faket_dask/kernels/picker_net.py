"""The particle picker's network: a DeepFinder-like 3D U-Net, and its checkpoint file.

Layout (DeepFinder, Moebel et al. 2021, ``cryoet-deepfinder/models.py::my_model``)::

    in (1 channel) ─ conv32 ─ conv32 ─────────────────────────── cat ─ conv32 ─ conv32 ─ 1x1 → C+1
                              └ pool ─ conv48 ─ conv48 ──── cat ─ conv48 ─ conv48 ─ up ─ conv2³ 48 ┘
                                                └ pool ─ conv64 ×4 ─ up ─ conv2³ 64 ┘

Every 3³ convolution is "same"-padded and followed by ReLU; pooling is 2³ max pooling;
``up`` is nearest-neighbour 2× upsampling followed by a 2³ convolution that Keras pads
"same" by adding one voxel *after* each axis (we pad the same way). Output: logits over
background + classes (softmax is applied by the loss or by :func:`class_probabilities`).
The input's edge lengths must be multiples of 4 (two poolings).

Checkpoint (``torch.save`` of a plain dict, read with ``weights_only=True``)::

    {"format": "faket-dask picker", "version": 1,
     "state_dict": {...}, "filters": [32, 48, 64],
     "class_names": ["background", "1bxn", ...],   # channel k ↔ class_names[k]
     "config": {...}}                              # training settings, free-form JSON values

:func:`save_picker` / :func:`load_picker` are the one owner of that shape.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError
from ..params.picker import BACKGROUND, DEFAULT_FILTERS, SIZE_MULTIPLE

# DEFAULT_FILTERS (DeepFinder's 32, 48, 64), BACKGROUND (channel 0's name), SIZE_MULTIPLE (input
# edges: two 2³ poolings) are owned by the torch-free faket_dask.params.picker, re-exported here.
CHECKPOINT_FORMAT = "faket-dask picker"
CHECKPOINT_VERSION = 1


def _convs(c_in: int, c_out: int, n: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(n):
        layers += [nn.Conv3d(c_in if k == 0 else c_out, c_out, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class _Up(nn.Module):
    """Keras ``UpSampling3D(2)`` then ``Conv3D(c, 2, padding='same')`` + ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        # Keras/TensorFlow "same" for an even kernel pads (0 before, 1 after) on every axis.
        return F.relu(self.conv(F.pad(x, (0, 1, 0, 1, 0, 1))))


class PickerUNet(nn.Module):
    """DeepFinder's 3D U-Net (see the module docstring) for ``n_outputs`` channels.

    Parameters
    ----------
    n_outputs : int
        Background + classes (≥ 2).
    filters : sequence of 3 int
        Filters of the three levels (DeepFinder: 32, 48, 64).

    ``forward(x)``: ``x`` float32 ``(batch, 1, z, y, x)`` with edges multiples of 4 → logits
    ``(batch, n_outputs, z, y, x)``.
    """

    def __init__(self, n_outputs: int, filters: Sequence[int] = DEFAULT_FILTERS) -> None:
        super().__init__()
        f1, f2, f3 = (int(f) for f in filters)
        if n_outputs < 2:
            raise ValueError(f"a picker needs background + at least one class, got {n_outputs} outputs")
        self.high = _convs(1, f1, 2)
        self.mid = _convs(f1, f2, 2)
        self.low = _convs(f2, f3, 4)
        self.up_low = _Up(f3, f3)
        self.dec_mid = _convs(f3 + f2, f2, 2)
        self.up_mid = _Up(f2, f2)
        self.dec_high = _convs(f2 + f1, f1, 2)
        self.head = nn.Conv3d(f1, n_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(int(s) % SIZE_MULTIPLE for s in x.shape[2:]):
            raise ValueError(f"picker input edges must be multiples of {SIZE_MULTIPLE}, got {tuple(x.shape[2:])}")
        high = self.high(x)
        mid = self.mid(F.max_pool3d(high, 2))
        low = self.low(F.max_pool3d(mid, 2))
        x = self.dec_mid(torch.cat([self.up_low(low), mid], dim=1))
        x = self.dec_high(torch.cat([self.up_mid(x), high], dim=1))
        return self.head(x)


def class_probabilities(model: nn.Module, block: torch.Tensor) -> torch.Tensor:
    """Softmax class probabilities of a block, without gradients.

    ``block``: float32 ``(z, y, x)`` (standardised, edges multiples of 4) → float32
    ``(n_outputs, z, y, x)``.
    """
    with torch.inference_mode():
        return torch.softmax(model(block[None, None]), dim=1)[0]


def save_picker(path: str | Path, model: PickerUNet, class_names: Sequence[str],
                filters: Sequence[int], config: dict[str, Any]) -> None:
    """Write a picker checkpoint (format in the module docstring) atomically to ``path``."""
    path = Path(path)
    names = [str(n) for n in class_names]
    if not names or names[0] != BACKGROUND:
        raise ValueError(f"class_names must start with {BACKGROUND!r}, got {names[:3]}")
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "filters": [int(f) for f in filters], "class_names": names,
               # plain JSON types only (weights_only loading refuses str/float subclasses and numpy scalars)
               "config": json.loads(json.dumps(dict(config)))}
    tmp = path.with_name(path.name + ".partial")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_picker(path: str | Path, device: str | torch.device = "cpu") -> tuple[PickerUNet, dict[str, Any]]:
    """Read a picker checkpoint → ``(model in eval mode on device, meta)``.

    ``meta`` holds ``class_names`` (channel order, background first), ``filters`` and
    ``config``. Raises :class:`~faket_dask.errors.InputError` (one line naming the file) when the
    file is missing, not a torch file, or not a faket-dask picker of a known version.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such picker file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle/zip/runtime errors of many kinds
        raise InputError(f"{path}: not a picker checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{path}: not a faket-dask picker checkpoint (made by `faket-dask train-picker`)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise InputError(f"{path}: picker checkpoint version {payload.get('version')}, "
                         f"this faket-dask reads version {CHECKPOINT_VERSION}")
    names = list(payload["class_names"])
    model = PickerUNet(len(names), payload["filters"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise InputError(f"{path}: picker weights do not match its class list / filters "
                         f"({str(exc).splitlines()[0]})") from None
    model.to(device).eval()
    meta = {"class_names": names, "filters": list(payload["filters"]), "config": dict(payload["config"])}
    return model, meta
