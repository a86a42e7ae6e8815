"""NST of tilts too large for their VGG activations to fit in memory: tile by tile, same result.

Each tilt is processed in ``tile × tile`` tiles, each on a crop with a margin
(:func:`tile_halo`), in two passes per Adam iteration:

1. per tile (margin 80 px for FakET's layers), the tile's exact features give its share of the
   global sums the loss needs: Σ|d| and Σd² of the content term, F Fᵀ of every style layer;
2. per tile (margin 160 px), the loss gradient w.r.t. the tile's pixels, with the global
   terms: for ScaledMSE with global ``S1 = Σ|a−b| + eps``, ``S2 = Σ(a−b)²`` it is
   ``2(a−b)/S1 − S2·sign(a−b)/S1²``, and through a Gram ``(dG + dGᵀ) F / n``.

Style Grams are likewise summed over tiles. Crop origins are multiples of 16 (96 with
Winograd), so every pooling window of a crop is one of the whole image's and the crop's
interior is computed exactly as in the whole image (up to float rounding of the sums). Peak
memory follows the crop, about ``(tile + 320)²`` pixels per tilt of the batch; the cost is
about ``(1 + 320/tile)²`` times the untiled one, so use the largest tile that fits.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ...params.nst import SMSE_EPS, Algorithm, NSTParams, Precision, layer_strides
from .inputs import as_stack, is_grams, resolve_device
from .sizing import crop_shape, default_batch, params_with, tile_halo
from .loss import gram_backward, smse_and_grad, smse_grad_given, tv_and_grad
from .optim import AdamEMA
from .plan import Plan, features, make_plan, normalised_input, to_input
from .reverse import backprop
from .runtime import kernel_runtime, no_autocast

__all__ = ["check_tile", "crop_shape", "stylise_tiled", "tile_halo", "tiled_grams", "tiles_of"]

Tile = tuple[int, int, int, int]  # y0, y1, x0, x1


def check_tile(tile: int) -> None:
    """Raise ValueError unless ``tile`` is a positive multiple of 16 (pooling alignment)."""
    if tile <= 0 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")


def tiles_of(h: int, w: int, tile: int) -> list[Tile]:
    """The ``tile × tile`` tiles covering an ``h × w`` image (smaller at the far edges)."""
    return [(y0, min(y0 + tile, h), x0, min(x0 + tile, w))
            for y0 in range(0, h, tile) for x0 in range(0, w, tile)]


def _crop(t: Tile, halo: int, h: int, w: int, align: int = 16) -> Tile:
    """Crop of tile ``t`` with margin ``halo``; its origin a multiple of ``align`` (16: pooling
    windows coincide with the whole image's; 96 with Winograd, whose 6×6 output tiles, at
    1/4 … 1/16 resolution, then also coincide, so the crop's arithmetic is the image's)."""
    y0, y1, x0, x1 = t
    return (max(0, (y0 - halo) // align * align), min(h, y1 + halo),
            max(0, (x0 - halo) // align * align), min(w, x1 + halo))


def _align(plan: Plan) -> int:
    return 96 if any(op.winograd for op in plan.ops) else 16


def _interior(f: torch.Tensor, t: Tile, crop: Tile, stride: int) -> torch.Tensor:
    """The features of tile ``t`` in the map ``f`` computed on ``crop``."""
    y0, y1, x0, x1 = t
    cy, _, cx, _ = crop
    return f[..., (y0 - cy) // stride:(y1 - cy) // stride, (x0 - cx) // stride:(x1 - cx) // stride]


def tiled_grams(plan: Plan, imgs: torch.Tensor, tiles: list[Tile], halo: int,
                layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Whole-image Grams of ``imgs`` (B, H, W) from tile crops: Σ_tiles F_t F_tᵀ / (H_l W_l),
    summed in float64, returned float32 ``{layer: (B, C, C)}``."""
    h, w = imgs.shape[-2:]
    strides = layer_strides(max(layers))
    acc: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        for t in tiles:
            cr = _crop(t, halo, h, w, _align(plan))
            feats = features(plan, to_input(imgs[:, cr[0]:cr[1], cr[2]:cr[3]], plan), layers)
            with no_autocast(plan.device):
                for l in layers:
                    m = _interior(feats.pop(l), t, cr, strides[l]).float().flatten(2)
                    g = torch.bmm(m, m.transpose(1, 2)).double()
                    acc[l] = g if l not in acc else acc[l].add_(g)
    return {l: (acc[l] / ((h // strides[l]) * (w // strides[l]))).float() for l in layers}


def _tiled_loss_and_grad(
    plan: Plan, x: torch.Tensor, content: torch.Tensor, grams: Mapping[int, torch.Tensor],
    p: NSTParams, tiles: list[Tile], halo_f: int, halo_b: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss_and_grad`` computed tile by tile (the two passes of the module docstring)."""
    ctaps, staps = p.content_taps(), p.style_taps()
    taps = sorted(set(ctaps) | set(staps))
    last = p.last_layer
    strides = layer_strides(last)
    b, _, h, w = x.shape
    dev = plan.device
    ones = (b,) + (1,) * 3
    # Pass 1: the global sums each ScaledMSE needs (content: Σ|d|, Σd² over the whole map;
    # style: the whole Gram, a sum of per-tile F Fᵀ).
    s1 = {l: torch.zeros(b, dtype=torch.float64, device=dev) for l in ctaps}
    s2 = {l: torch.zeros(b, dtype=torch.float64, device=dev) for l in ctaps}
    gx: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        for t in tiles:
            cr = _crop(t, halo_f, h, w, _align(plan))
            xn = normalised_input(x[..., cr[0]:cr[1], cr[2]:cr[3]], plan)
            feats = features(plan, xn, taps)
            cfeats = (features(plan, to_input(content[:, cr[0]:cr[1], cr[2]:cr[3]], plan),
                               list(ctaps)) if ctaps else {})
            with no_autocast(dev):
                for l in ctaps:
                    d = (_interior(feats[l], t, cr, strides[l]).float()
                         - _interior(cfeats[l], t, cr, strides[l]).float())
                    s1[l] += d.abs().sum((1, 2, 3)).double()
                    s2[l] += d.square().sum((1, 2, 3)).double()
                for l in staps:
                    m = _interior(feats[l], t, cr, strides[l]).float().flatten(2)
                    g = torch.bmm(m, m.transpose(1, 2)).double()
                    gx[l] = g if l not in gx else gx[l].add_(g)
            del feats, cfeats
    loss = torch.zeros(b, dtype=torch.float64, device=dev)
    cs1, cs2, dgs = {}, {}, {}
    for l, wt in ctaps.items():
        loss += wt * s2[l] / (s1[l] + SMSE_EPS)
        cs1[l] = (s1[l] + SMSE_EPS).float().view(ones)
        cs2[l] = s2[l].float().view(ones)
    for l, wt in staps.items():
        n = (h // strides[l]) * (w // strides[l])
        l_s, dgs[l] = smse_and_grad((gx.pop(l) / n).float(), grams[l])
        loss += wt * l_s.double()

    # Pass 2: every tile's gradient, given the global terms, on a crop wide enough that all
    # features reaching the tile's pixels are exact.
    grad = torch.empty_like(x)
    for t in tiles:
        cr = _crop(t, halo_b, h, w, _align(plan))
        xn = normalised_input(x[..., cr[0]:cr[1], cr[2]:cr[3]], plan)
        if ctaps:
            with torch.inference_mode():
                cf = features(plan, to_input(content[:, cr[0]:cr[1], cr[2]:cr[3]], plan),
                              list(ctaps))
            cf = {l: v.clone() for l, v in cf.items()}

        def tap_fn(i: int, f: torch.Tensor) -> torch.Tensor | None:
            g_tap = None
            if i in ctaps:
                d = f.float() - cf[i].float()
                g_tap = smse_grad_given(d, cs1[i], cs2[i]).mul_(ctaps[i])
            if i in staps:
                n = (h // strides[i]) * (w // strides[i])
                g_s = gram_backward(f, dgs[i], staps[i], n)
                g_tap = g_s if g_tap is None else g_tap.add_(g_s)
            return g_tap

        g = backprop(plan, xn, last, tap_fn) / plan.std
        y0, y1, x0, x1 = t
        grad[..., y0:y1, x0:x1] = g[..., y0 - cr[0]:y1 - cr[0], x0 - cr[2]:x1 - cr[2]]
    loss = loss.float()
    if p.tv_weight:  # local (one pixel): on the whole image directly
        l_tv, g_tv = tv_and_grad(x, p.tv_weight)
        loss = loss + l_tv
        grad += g_tv
    return loss, grad


def stylise_tiled(
    vgg: nn.Module,
    content: np.ndarray | torch.Tensor,
    init: np.ndarray | torch.Tensor,
    style: np.ndarray | torch.Tensor | Sequence[torch.Tensor],
    *,
    tile: int = 512,
    params: NSTParams | None = None,
    batch: int | None = None,
    precision: Precision = "fp32",
    algorithm: Algorithm = "auto",
    device: torch.device | str | None = None,
    **overrides: Any,
) -> np.ndarray:
    """``stylise`` for tilts too large for the VGG activations to fit in memory at once.

    Parameters
    ----------
    vgg, content, init, style, params, precision, algorithm, device, **overrides
        As in :func:`~.transfer.stylise` (``algorithm="auto"`` decides by the whole tilt's
        size).
    tile : int
        Tile edge in pixels, a multiple of 16 (module docstring: the two passes and margins).
    batch : int, optional
        Tilts processed together (default: as many as ``default_batch`` allows for one crop).

    Returns
    -------
    numpy.ndarray (t, H, W) float32
        As ``stylise``: equal up to isolated flipped sign steps (``docs/style.md``).

    Raises
    ------
    ValueError
        Bad tile, shapes that differ, bad precision or algorithm.
    """
    p = params_with(params, overrides)
    check_tile(tile)
    dev = resolve_device(vgg, device)
    c = as_stack(content, "content", dev)
    x0 = as_stack(init, "init", dev)
    if c.shape != x0.shape:
        raise ValueError(f"content {tuple(c.shape)} and init {tuple(x0.shape)} differ")
    t, h, w = c.shape
    plan = make_plan(vgg, dev, precision, algorithm, h * w)
    grams_in = is_grams(style)
    if grams_in:
        if len(style) != len(p.style_layers):
            raise ValueError(f"{len(style)} Gram tensors for {len(p.style_layers)} style layers")
        grams_all = [g.to(dev) for g in style]
        s = None
    else:
        s = as_stack(style, "style", dev)
        if s.shape != c.shape:
            raise ValueError(f"style {tuple(s.shape)} and content {tuple(c.shape)} differ")
    halo_f = tile_halo(p, backward=False)
    halo_b = tile_halo(p, backward=True)
    tiles = tiles_of(h, w, tile)
    b = batch or default_batch(crop_shape((h, w), tile, p), dev)
    out = np.empty((t, h, w), np.float32)
    with kernel_runtime(precision, dev):
        for i0 in range(0, t, b):
            sl = slice(i0, min(i0 + b, t))
            if grams_in:
                sg = {l: g[sl] for l, g in zip(p.style_layers, grams_all)}
            elif p.style_layers:
                sg = tiled_grams(plan, s[sl], tiles, halo_f, p.style_layers)
            else:
                sg = {}
            x = x0[sl, None].expand(-1, 3, -1, -1).clone()
            opt = AdamEMA(x, p)
            for _ in range(p.iterations):
                _, grad = _tiled_loss_and_grad(plan, x, c[sl], sg, p, tiles, halo_f, halo_b)
                opt.update(grad)
            out[sl] = opt.result().float().cpu().numpy()
    return out
