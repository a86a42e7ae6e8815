"""The straightforward per-tilt NST loop, kept as the oracle (tests, benchmark).

Autograd and ``torch.optim.Adam``, one tilt at a time, 3-channel images, style Grams
recomputed for every tilt, the VGG module called layer by layer as Crowson's ``VGGFeatures``
does; IEEE float32. It shares nothing with the fast path but the network and the settings, so
agreement between the two checks the hand-written reverse pass, the closed-form loss gradients
and the Adam/EMA arithmetic (``docs/method.md §4``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...params.nst import IMAGENET_MEAN, IMAGENET_STD, SMSE_EPS, NSTParams
from .inputs import as_stack, params_with, resolve_device
from .runtime import kernel_runtime

__all__ = ["stylise_reference"]


def stylise_reference(
    vgg: nn.Module,
    content: np.ndarray | torch.Tensor,
    init: np.ndarray | torch.Tensor,
    style: np.ndarray | torch.Tensor,
    *,
    params: NSTParams | None = None,
    device: torch.device | str | None = None,
    **overrides: Any,
) -> np.ndarray:
    """The per-tilt loop with autograd and ``torch.optim.Adam`` (the oracle of ``stylise``).

    Parameters
    ----------
    vgg : torch.nn.Module
        From ``build_vgg`` / ``get_vgg``.
    content, init, style : array (t, H, W) float
        Normalised [0, 1] stacks (tilt i styles tilt i).
    params, device, **overrides
        As in ``stylise``; always IEEE float32.

    Returns
    -------
    numpy.ndarray (t, H, W) float32
        The stylised tilts in normalised units, before ``match_mean_std``.
    """
    p = params_with(params, overrides)
    dev = resolve_device(vgg, device)
    c_all = as_stack(content, "content", dev)
    x_all = as_stack(init, "init", dev)
    s_all = as_stack(style, "style", dev)
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
    ctaps, staps = p.content_taps(), p.style_taps()

    def feats(img: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        h = (img - mean) / std
        out = {}
        for i in range(max(layers) + 1):
            h = vgg[i](h)
            if i in layers:
                out[i] = h
        return out

    def gram(f: torch.Tensor) -> torch.Tensor:
        m = f.flatten(-2)
        return m @ m.transpose(-2, -1) / m.shape[-1]

    def smse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = a - b
        return d.pow(2).sum() / d.abs().sum().add(SMSE_EPS)

    res = np.empty(tuple(c_all.shape), np.float32)
    with kernel_runtime("fp32", dev):
        for i in range(c_all.shape[0]):
            c = c_all[i][None, None].repeat(1, 3, 1, 1)
            s = s_all[i][None, None].repeat(1, 3, 1, 1)
            x = x_all[i][None, None].repeat(1, 3, 1, 1)
            ct = feats(c, list(ctaps)) if ctaps else {}
            st = feats(s, list(staps)) if staps else {}
            sg = {l: gram(st[l]) for l in staps}
            x.requires_grad_(True)
            opt = torch.optim.Adam([x], lr=p.lr, betas=p.betas, eps=p.eps)
            decay = torch.tensor(p.ema_decay)
            accum = torch.tensor(1.0)
            avg = torch.zeros_like(x)
            accum *= decay
            avg *= decay
            avg += (1 - decay) * x.detach()
            for _ in range(p.iterations):
                f = feats(x, sorted({*ctaps, *staps}))
                loss = sum(w * smse(f[l], ct[l]) for l, w in ctaps.items())
                loss = loss + sum(w * smse(gram(f[l]), sg[l]) for l, w in staps.items())
                if p.tv_weight:
                    pad = F.pad(x, (0, 1, 0, 1), mode="replicate")
                    dx = pad[..., :-1, 1:] - pad[..., :-1, :-1]
                    dy = pad[..., 1:, :-1] - pad[..., :-1, :-1]
                    loss = loss + p.tv_weight * (dx**2 + dy**2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
                accum *= decay
                avg *= decay
                avg += (1 - decay) * x.detach()
            res[i] = (avg / (1 - accum)).clamp(0, 1)[0].mean(0).cpu().numpy()
    return res
