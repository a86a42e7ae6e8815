"""Argument handling shared by the NST kernels: stacks, devices, parameters, batch sizes."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ...params.nst import DEFAULT_BATCH_PIXELS, NSTParams
from .runtime import single_threaded_active

__all__ = ["as_stack", "default_batch", "is_grams", "n_streams", "params_with", "resolve_device"]


def params_with(params: NSTParams | None, overrides: Mapping[str, Any]) -> NSTParams:
    """``params`` (default: the paper's) with single fields replaced (``lr=0.1``).

    Raises
    ------
    TypeError
        An override that is not an :class:`NSTParams` field.
    """
    return (params if params is not None else NSTParams()).replace(**overrides)


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


def default_batch(shape: tuple[int, int], device: torch.device | str | None = None) -> int:
    """Tilts per pass when ``batch`` is not given: ``max(1, P // (H·W))``.

    ``P`` is :data:`~faket_dask.params.nst.DEFAULT_BATCH_PIXELS` (``2**16`` on CPU: one tilt
    at 256², 16 at 64²; ``2**20`` on CUDA). Memory: ``stylise`` holds ~2.6 kB per pixel and
    tilt of the batch at its peak (measured at 256² on CPU: +270 MB for 1 tilt, +685 MB for
    4; the autograd reference +316 MB for its single tilt).
    """
    kind = torch.device(device).type if device is not None else "cpu"
    budget = DEFAULT_BATCH_PIXELS.get(kind, DEFAULT_BATCH_PIXELS["cpu"])
    return max(1, budget // (int(shape[0]) * int(shape[1])))


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
