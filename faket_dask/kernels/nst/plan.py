"""The VGG layers as a prepared plan of plain tensors, and the inference forward pass.

The hand-written passes (:mod:`.reverse`, :mod:`.tiled`) do not call the ``nn.Module``: they
walk a :class:`Plan` — every layer's op kind, weights on the device, its convolution algorithm
(:mod:`.backend`) — built once per module, device and settings and cached (weakly, with the
module).
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...params.nst import IMAGENET_MEAN, IMAGENET_STD, LAST_LAYER, Algorithm, Precision
from .backend import WINOGRAD_FROM, conv3x3, conv3x3_input_grad, use_winograd

__all__ = ["Op", "Plan", "clear_plans", "conv", "conv_input_grad", "features", "make_plan",
           "normalised_input", "to_input"]


@dataclass(frozen=True)
class Op:
    """One ``features`` layer: a 3×3 conv, a ReLU or a 2×2 max pooling."""

    kind: Literal["conv", "relu", "pool"]
    weight: torch.Tensor | None = None  # (Cout, Cin, 3, 3)
    bias: torch.Tensor | None = None
    replicate: bool = False
    weight_t: torch.Tensor | None = None  # (Cin, Cout, 3, 3) flipped: the adjoint as a conv
    winograd: bool = False  # through NNPACK's Winograd F(6x6, 3x3), one image per call


@dataclass(frozen=True)
class Plan:
    """The layers of one VGG module prepared for ``device`` (see :func:`make_plan`)."""

    ops: tuple[Op, ...]
    device: torch.device
    mean: torch.Tensor  # (1, 3, 1, 1)
    std: torch.Tensor
    memory_format: torch.memory_format


_PLANS: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, Plan]]" = weakref.WeakKeyDictionary()
_PLAN_LOCK = threading.Lock()


def clear_plans() -> None:
    """Forget every prepared plan."""
    with _PLAN_LOCK:
        _PLANS.clear()


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def _build(vgg: nn.Module, device: torch.device, winograd: bool,
           memory_format: torch.memory_format) -> Plan:
    ops: list[Op] = []
    for i, m in enumerate(vgg):
        if i > LAST_LAYER:
            break
        if isinstance(m, nn.Conv2d):
            if (m.kernel_size != (3, 3) or m.stride != (1, 1) or m.padding != (1, 1)
                    or m.dilation != (1, 1) or m.groups != 1):
                raise ValueError(f"layer {i}: only VGG 3x3/stride 1/pad 1 convs supported")
            if m.padding_mode not in ("zeros", "replicate"):
                raise ValueError(f"layer {i}: padding_mode {m.padding_mode!r} unsupported")
            w = m.weight.detach().to(device, torch.float32)
            wino = winograd and i >= WINOGRAD_FROM and m.padding_mode == "zeros"
            wt = w.transpose(0, 1).flip(2, 3).contiguous() if wino else None
            ops.append(Op("conv", w.contiguous(memory_format=memory_format),
                          m.bias.detach().to(device, torch.float32).contiguous(),
                          m.padding_mode == "replicate", wt, wino))
        elif isinstance(m, nn.ReLU):
            ops.append(Op("relu"))
        elif isinstance(m, nn.MaxPool2d):
            if _pair(m.kernel_size) != (2, 2) or _pair(m.stride) != (2, 2) or m.ceil_mode \
                    or _pair(m.padding) != (0, 0) or _pair(m.dilation) != (1, 1):
                raise ValueError(f"layer {i}: only 2x2/stride 2 max pooling supported")
            ops.append(Op("pool"))
        else:
            raise ValueError(f"layer {i}: unsupported module {type(m).__name__}")
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return Plan(tuple(ops), device, mean, std, memory_format)


def make_plan(vgg: nn.Module, device: torch.device, precision: Precision = "fp32",
              algorithm: Algorithm = "direct", npix: int = 0) -> Plan:
    """The prepared plan of ``vgg`` for tilts of ``npix`` pixels (cached per module and settings).

    Parameters
    ----------
    vgg : torch.nn.Module
        A VGG ``features`` stack (``build_vgg``): 3×3 convs, ReLUs, 2×2 max pooling only.
    device : torch.device
    precision, algorithm : str
        Decide the conv algorithm (:func:`.sizing.use_winograd`) and the memory format.
    npix : int
        Pixels per tilt.

    Raises
    ------
    ValueError
        An unsupported layer, or an impossible algorithm (see :func:`.sizing.use_winograd`).
    """
    wino = use_winograd(algorithm, device, precision, npix)
    # channels_last only where tensor cores want it; on CPU plain NCHW oneDNN convolutions are
    # several times more accurate than its channels_last kernels (measured: 3e-7 vs 2e-6
    # relative), which keeps sign flips of tiny gradients (docs/style.md) rarer.
    cl = device.type == "cuda" and precision == "bf16"
    fmt = torch.channels_last if cl else torch.contiguous_format
    key = (str(device), wino, str(fmt))
    with _PLAN_LOCK:
        per = _PLANS.setdefault(vgg, {})
        if key not in per:
            per[key] = _build(vgg, device, wino, fmt)
        return per[key]


def conv(op: Op, h: torch.Tensor) -> torch.Tensor:
    """Forward of a conv op."""
    return conv3x3(h, op.weight, op.bias, replicate=op.replicate, winograd=op.winograd)


def conv_input_grad(op: Op, g: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
    """Gradient w.r.t. a conv op's input ``x`` (``x`` needed for the replicate-padded layer)."""
    return conv3x3_input_grad(g, op.weight, op.weight_t, replicate=op.replicate,
                              winograd=op.winograd, x=x)


def normalised_input(x: torch.Tensor, plan: Plan) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> ImageNet-normalised, in the plan's memory format."""
    return ((x - plan.mean) / plan.std).contiguous(memory_format=plan.memory_format)


def to_input(img: torch.Tensor, plan: Plan) -> torch.Tensor:
    """(B, H, W) in [0, 1] -> ImageNet-normalised (B, 3, H, W) (the tilt in 3 channels)."""
    return normalised_input(img[:, None].expand(-1, 3, -1, -1), plan)


def features(plan: Plan, xn: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Inference forward of a normalised input; returns the requested ``features`` outputs."""
    want = set(layers)
    out: dict[int, torch.Tensor] = {}
    h = xn
    for i in range(max(want) + 1):
        op = plan.ops[i]
        if op.kind == "conv":
            h = conv(op, h)
        elif op.kind == "relu":
            h = h.relu_()
        else:
            h = F.max_pool2d(h, 2, 2)
        if i in want:
            out[i] = h
    return out
