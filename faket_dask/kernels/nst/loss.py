"""The pieces of FakET's loss and their gradients (``docs/method.md §4`` item 4).

Per image of a batch (every function keeps the batch axis first, so each tilt of a batch has
its own normalisers and the gradient of the summed loss is each tilt's own gradient):

* Gram matrix ``G(F) = F Fᵀ / (h w)`` of a (B, C, h, w) feature map;
* ScaledMSE ``SMSE(a, b) = Σ(a−b)² / (Σ|a−b| + eps)`` with gradient
  ``2(a−b)/S1 − S2·sign(a−b)/S1²`` (``S1 = Σ|a−b| + eps``, ``S2 = Σ(a−b)²``);
* through a Gram: ``dL/dF = (dG + dGᵀ) F / n`` (one matmul, autograd forms two);
* Crowson's L2 total variation of the [0, 1] image (its gradient by autograd: it is local and
  cheap, and FakET's weight is 0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...params.nst import SMSE_EPS

__all__ = ["gram", "gram_backward", "smse_and_grad", "smse_grad_given", "style_tap_grad",
           "tv_and_grad"]


def gram(f: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, C) = F Fᵀ / (h w), float32."""
    m = f.flatten(2)
    if m.dtype != torch.float32:
        m = m.float()
    return torch.bmm(m, m.transpose(1, 2)) / m.shape[-1]


def smse_and_grad(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image ScaledMSE ``Σ(a−b)²/(Σ|a−b|+eps)`` (B,) and its gradient w.r.t. ``a``.

    ``d/da = 2(a−b)/S1 − S2·sign(a−b)/S1²`` with ``S1 = Σ|a−b| + eps`` and ``S2 = Σ(a−b)²``,
    summed over all but the first axis (the same terms autograd forms).
    """
    d = a - b
    dims = tuple(range(1, d.ndim))
    s1 = d.abs().sum(dims, keepdim=True).add_(SMSE_EPS)
    s2 = d.square().sum(dims, keepdim=True)
    return (s2 / s1).flatten(), smse_grad_given(d, s1, s2)


def smse_grad_given(d: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """Gradient of ScaledMSE w.r.t. ``a`` given ``d = a − b`` and *global* S1 (with eps), S2
    of shape (B, 1, ...) — used where ``d`` is one tile of a larger map."""
    grad = d * (2.0 / s1)
    grad.addcmul_(torch.sign(d), -(s2 / (s1 * s1)))
    return grad


def style_tap_grad(
    f: torch.Tensor, target: torch.Tensor, weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted style loss (B,) at one layer and its gradient w.r.t. the features ``f``.

    ``target`` is the style Gram (B, C, C) of the layer.
    """
    g = gram(f)
    loss, dg = smse_and_grad(g, target)
    return weight * loss, gram_backward(f, dg, weight)


def gram_backward(f: torch.Tensor, dg: torch.Tensor, weight: float, n: int | None = None
                  ) -> torch.Tensor:
    """``weight · (dG + dGᵀ) F / n``, laid out like ``f`` (NCHW or channels_last).

    ``n`` is the pixel count the Gram was normalised with (default: ``f``'s own; a tile of a
    larger map passes the whole map's).
    """
    b, c, h, w = f.shape
    m = f.flatten(2)
    if m.dtype != torch.float32:
        m = m.float()
    sym = (dg + dg.transpose(1, 2)) * (weight / (n or h * w))
    if f.is_contiguous():
        return torch.bmm(sym, m).view(b, c, h, w).to(f.dtype)
    # (B, hw, C) = Fᵀ·sym is the channels_last memory layout of (B, C, h, w): no transposes.
    out = torch.bmm(m.transpose(1, 2), sym)
    return out.view(b, h, w, c).permute(0, 3, 1, 2).to(f.dtype)


def tv_and_grad(x: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Crowson's L2 total variation (mean over c, h, w of each image, replicate-padded
    differences) times ``weight`` (B,) and its gradient w.r.t. ``x`` (B, C, H, W)."""
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        p = F.pad(xx, (0, 1, 0, 1), mode="replicate")
        dx = p[..., :-1, 1:] - p[..., :-1, :-1]
        dy = p[..., 1:, :-1] - p[..., :-1, :-1]
        tv = (dx.square() + dy.square()).mean((1, 2, 3)) * weight
        (g,) = torch.autograd.grad(tv.sum(), xx)
    return tv.detach(), g
