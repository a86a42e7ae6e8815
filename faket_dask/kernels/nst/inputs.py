"""Argument handling shared by the NST kernels: stacks, devices, parameters, batch sizes."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .runtime import single_threaded_active
from .sizing import default_batch, params_with  # re-exported: torch-free owner

__all__ = ["as_stack", "default_batch", "is_grams", "n_streams", "params_with", "resolve_device"]


def as_stack(a: np.ndarray | torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
    """``a`` as a (tilts, y, x) float32 tensor on ``device`` (a 2D image is one tilt).

    Raises
    ------
    ValueError
        ``a`` is not 2D or 3D (the message names ``name``).
    """
    t = torch.as_tensor(a)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"{name}: expected (tilts, y, x), got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=torch.float32)


def resolve_device(vgg: nn.Module, device: torch.device | str | None) -> torch.device:
    """``device``, or the device of ``vgg``'s parameters when None."""
    if device is not None:
        return torch.device(device)
    p = next(vgg.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def is_grams(style: Any) -> bool:
    """Whether ``style`` is a list of Gram tensors (``style_grams``) rather than tilts."""
    return isinstance(style, (list, tuple)) and all(isinstance(g, torch.Tensor) for g in style)


def n_streams(streams: int | None, device: torch.device, n_blocks: int) -> int:
    """Concurrent single-threaded streams for ``n_blocks`` blocks of tilts (CPU only).

    Default: the torch thread count, or 1 inside a single-threaded runtime (the caller, e.g.
    a Dask task, owns the parallelism).

    Raises
    ------
    ValueError
        ``streams < 1``.
    """
    if device.type != "cpu":
        return 1
    if streams is None:
        streams = torch.get_num_threads() if not single_threaded_active() else 1
    if streams < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")
    return max(1, min(int(streams), n_blocks))
