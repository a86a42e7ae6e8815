"""The loss gradient by a hand-written reverse pass over the VGG layers (memory-saving).

Autograd would keep every layer's input for the backward (~4.8 kB per pixel at the peak); this
reverse mode keeps only what each op's backward needs: the backward of a conv is the conv's
adjoint (``conv_transpose2d``, or the conv with flipped weights under Winograd: no weight
gradients, no saved inputs), of a ReLU a multiply by a saved boolean mask, of a max pool an
unpool with the saved indices; the loss gradients at the tap layers are formed in closed form
(:mod:`.loss`) during the forward pass. Measured peak: ~2.6 kB per pixel
(:data:`~faket_dask.kernels.nst.budget.NST_BYTES_PER_PIXEL`; ``docs/benchmarks.md``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ...params.nst import NSTParams
from .loss import gram, smse_and_grad, style_tap_grad, tv_and_grad
from .plan import Plan, conv, conv_input_grad, features, normalised_input, to_input
from .runtime import no_autocast

__all__ = ["TapFn", "backprop", "loss_and_grad", "loss_targets"]

#: ``tap_fn(i, F_i)``: the loss gradient w.r.t. the output ``F_i`` of ``features[i]``, or None.
TapFn = Callable[[int, torch.Tensor], "torch.Tensor | None"]


def loss_targets(
    plan: Plan, content: torch.Tensor | None, style: torch.Tensor | None, p: NSTParams
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Content features and style Grams of a batch of [0, 1] images (no autograd).

    Parameters
    ----------
    plan : Plan
        From :func:`~faket_dask.kernels.nst.plan.make_plan`.
    content, style : torch.Tensor (B, H, W) or None
        Normalised tilts; None skips that term's targets.
    p : NSTParams

    Returns
    -------
    content_feats, grams : dict
        ``{layer: (B, C, h, w)}`` at the content layers, ``{layer: (B, C, C)}`` float32 at the
        style layers.
    """
    cf: dict[int, torch.Tensor] = {}
    sg: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        if content is not None and p.content_layers:
            cf = features(plan, to_input(content, plan), p.content_layers)
        if style is not None and p.style_layers:
            feats = features(plan, to_input(style, plan), p.style_layers)
            with no_autocast(plan.device):
                sg = {l: gram(feats.pop(l)) for l in p.style_layers}
    # inference tensors cannot be saved for autograd (TV uses autograd): plain clones are cheap
    return ({l: v.clone() for l, v in cf.items()}, {l: v.clone() for l, v in sg.items()})


def backprop(plan: Plan, xn: torch.Tensor, last: int, tap_fn: TapFn) -> torch.Tensor:
    """Reverse mode over the VGG ops of a normalised input ``xn`` (B, 3, H, W).

    ``tap_fn(i, F_i)`` returns the loss gradient w.r.t. the output ``F_i`` of ``features[i]``
    (or None); it is called during the forward pass, so only ReLU masks (bool), pooling
    indices and these tap gradients are held for the backward. Returns dLoss/d``xn``
    (B, 3, H, W) float32.
    """
    saved: list[Any] = [None] * (last + 1)
    tap_grad: dict[int, torch.Tensor] = {}
    h = xn
    with torch.no_grad():
        for i in range(last + 1):
            op = plan.ops[i]
            if op.kind == "conv":
                h = conv(op, h)
            elif op.kind == "relu":
                h = h.relu_()
                saved[i] = h > 0
            else:
                shape = h.shape[-2:]
                h, idx = F.max_pool2d_with_indices(h, 2, 2)
                saved[i] = (idx, shape)
            with no_autocast(plan.device):
                g_tap = tap_fn(i, h)
            if g_tap is not None:
                tap_grad[i] = g_tap.to(h.dtype).contiguous(memory_format=plan.memory_format)
        del h
        g: torch.Tensor | None = None
        for i in range(last, -1, -1):
            if i in tap_grad:
                t = tap_grad.pop(i)
                g = t if g is None else g.add_(t)
            if g is None:
                continue
            op = plan.ops[i]
            if op.kind == "relu":
                g = g.mul_(saved[i])
            elif op.kind == "pool":
                idx, shape = saved[i]
                g = F.max_unpool2d(g, idx, 2, 2, output_size=shape)
            else:
                g = conv_input_grad(op, g, xn if op.replicate else None)
            saved[i] = None
    if g is None:
        return torch.zeros_like(xn)
    return g.float()


def loss_and_grad(
    plan: Plan,
    x: torch.Tensor,
    content_feats: Mapping[int, torch.Tensor],
    grams: Mapping[int, torch.Tensor],
    p: NSTParams,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image loss and its gradient w.r.t. the [0, 1] image, by the hand-written reverse pass.

    Parameters
    ----------
    plan : Plan
        From :func:`~faket_dask.kernels.nst.plan.make_plan`.
    x : torch.Tensor (B, 3, H, W) float32
        The optimised images in [0, 1] (the tilt in 3 channels).
    content_feats, grams : mapping
        Targets from :func:`loss_targets` (or style Grams computed once).
    p : NSTParams

    Returns
    -------
    loss : torch.Tensor (B,) float32
        ``Σ_content w·SMSE(F_l(x), F_l(c)) + Σ_style w·SMSE(G_l(x), G_l(s)) [+ TV]`` per image.
    grad : torch.Tensor (B, 3, H, W) float32
        dloss/dx, each image's own gradient.
    """
    ctaps, staps = p.content_taps(), p.style_taps()
    xn = normalised_input(x, plan)
    loss = torch.zeros(x.shape[0], device=plan.device)

    def tap_fn(i: int, h: torch.Tensor) -> torch.Tensor | None:
        nonlocal loss
        g_tap = None
        if i in ctaps:
            l_c, g_c = smse_and_grad(h.float(), content_feats[i].float())
            loss = loss + ctaps[i] * l_c
            g_tap = g_c.mul_(ctaps[i])
        if i in staps:
            l_s, g_s = style_tap_grad(h, grams[i], staps[i])
            loss = loss + l_s
            g_tap = g_s if g_tap is None else g_tap.add_(g_s)
        return g_tap

    gx = (backprop(plan, xn, p.last_layer, tap_fn) / plan.std).contiguous()
    if p.tv_weight:
        l_tv, g_tv = tv_and_grad(x, p.tv_weight)
        loss = loss + l_tv
        gx += g_tv
    return loss, gx
