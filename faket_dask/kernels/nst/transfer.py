"""FakET's neural style transfer of a block of tilts (``docs/method.md §4``): the fast path.

Pure torch/numpy: no Dask, no I/O, any torch device. The Dask stage
(:mod:`faket_dask.stages.style_transfer`)

1. computes the global min/max of the CONTENT, NOISY (init) and STYLE stacks and the per-tilt
   mean/std of the *original* style stack;
2. per block of tilts, inside one :func:`~.runtime.nst_runtime`: :func:`normalise` the three
   blocks with the global extrema, :func:`stylise` (with :func:`style_grams` computed once per
   style stack), then :func:`match_mean_std` to the style statistics of those tilts.

:func:`style_transfer_stack` runs all of this in memory (tests, small data).

What is computed, per tilt i (``NSTParams`` defaults)
-----------------------------------------------------
* ``x0 = repeat(init_i, 3 channels)``, ``c = repeat(content_i)``, ``s = repeat(style_i)``, all
  in [0, 1]; ``N(.)`` = ImageNet normalisation; ``F_l`` = VGG-19 ``features[l]`` output.
* ``loss(x) = SMSE(F_8(N x), F_8(N c)) + Σ_l w_l SMSE(G(F_l(N x)), G(F_l(N s)))`` with
  ``l ∈ {1, 6, 11, 20, 29}``, ``w ∝ (256, 64, 16, 4, 1)`` summing to 1 (:mod:`.loss`).
* One Adam step (lr 0.15), clamp to [0, 1]; output ``clamp((0.99 x0 + x1) / 1.99, 0, 1)``
  averaged over the 3 channels (:mod:`.optim`).

Why it is fast
--------------
The work is four VGG passes per tilt (style targets, content targets, forward and backward of
``x``), ~76 G multiply-adds at 256², nearly all in 3×3 convolutions. :func:`stylise` runs its
own reverse mode (:mod:`.reverse`: less memory, one matmul per Gram gradient), takes style Grams
computed once, batches tilts, runs the deep convs through NNPACK's Winograd transform when
single-threaded (:mod:`.backend`), and with several torch threads runs blocks of tilts
concurrently in single-threaded *streams* (at 2 threads the direct convs are already near
peak, and NNPACK's pool does not scale on the small deep maps). Measured 1.5× the throughput of
:func:`~.reference.stylise_reference` on 2 AMD Zen 4 cores, but no faster on 2 Intel AVX-512
cores, where oneDNN's direct convolutions are fast (``docs/benchmarks.md``). Tried and rejected:
channels_last (1.1×, 3× more sign flips), Winograd in plain torch (no gain), oneDNN
grouped-conv Winograd (slower), bf16 in the deep layers (1.4×, ~2 % of pixels move > 1e-4).

Exactness
---------
Adam's first step is ``lr·g/(|g| + 1e-8)``: any two float32 implementations differ wherever a
gradient element is within rounding of zero, by a whole sign step (±lr/(3·1.99) ≈ 0.025 in
normalised units) or less. oneDNN's NCHW kernels reproduce the golden file to ≤ 1e-3 × the
tilt's std on all but 1–3 of 20480 pixels; Winograd from conv3_1 on changes nothing measurable.
The final mean/std match uses population std (``ddof=0``) on both sides (the golden's styled
stds equal the style stds to 1e-7).
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import nn

from ...params.nst import Algorithm, NSTParams, Precision
from .inputs import as_stack, default_batch, is_grams, n_streams, params_with, resolve_device
from .optim import AdamEMA
from .plan import make_plan
from .reverse import loss_and_grad, loss_targets
from .runtime import kernel_runtime, precision_scope, single_threaded_torch
from .tiled import check_tile, crop_shape, stylise_tiled, tile_halo, tiled_grams, tiles_of

__all__ = ["default_batch", "match_mean_std", "normalise", "style_grams", "style_transfer_stack",
           "stylise"]


def normalise(
    stack: np.ndarray | torch.Tensor, vmin: float | None = None, vmax: float | None = None
) -> np.ndarray:
    """Min–max normalise a whole stack to [0, 1] (``docs/method.md §4`` item 1: over the stack).

    Parameters
    ----------
    stack : array (t, H, W)
        Any real values.
    vmin, vmax : float, optional
        The *global* extrema of the full stack (the Dask stage passes them so that every block
        uses the same scale); default: of ``stack`` itself.

    Returns
    -------
    numpy.ndarray (t, H, W) float32
        ``(stack − vmin) / (vmax − vmin)``, computed in float32 like the original.

    Raises
    ------
    ValueError
        The stack is constant.
    """
    a = np.asarray(stack, dtype=np.float32)
    lo = np.float32(a.min() if vmin is None else vmin)
    hi = np.float32(a.max() if vmax is None else vmax)
    if not hi > lo:
        raise ValueError("cannot min-max normalise a constant stack")
    return (a - lo) / (hi - lo)


def match_mean_std(
    out: np.ndarray | torch.Tensor,
    target_mean: np.ndarray | Sequence[float],
    target_std: np.ndarray | Sequence[float],
) -> np.ndarray:
    """Give every tilt of ``out`` the mean and std of the matching tilt of the style stack
    (``docs/method.md §4`` item 7).

    Parameters
    ----------
    out : array (t, H, W)
        Stylised tilts (normalised units).
    target_mean, target_std : array (t,)
        Per-tilt mean and population std (``ddof=0``) of the original, un-normalised style
        stack.

    Returns
    -------
    numpy.ndarray (t, H, W) float32
        ``(out_i − mean(out_i)) / std(out_i) · target_std_i + target_mean_i``, in float64
        internally; a constant tilt becomes the target mean.

    Raises
    ------
    ValueError
        The tilt counts differ.
    """
    a = np.asarray(out.detach().cpu() if isinstance(out, torch.Tensor) else out, np.float64)
    if a.ndim == 2:
        a = a[None]
    mu = np.asarray(target_mean, np.float64).reshape(-1, 1, 1)
    sd = np.asarray(target_std, np.float64).reshape(-1, 1, 1)
    if mu.shape[0] != a.shape[0] or sd.shape[0] != a.shape[0]:
        raise ValueError(f"{a.shape[0]} tilts but {mu.shape[0]} means / {sd.shape[0]} stds")
    m = a.mean(axis=(1, 2), keepdims=True)
    s = a.std(axis=(1, 2), keepdims=True)
    s = np.where(s > 0, s, 1.0)  # a constant tilt stays constant (at the target mean)
    return ((a - m) / s * sd + mu).astype(np.float32)


def style_grams(
    vgg: nn.Module,
    style: np.ndarray | torch.Tensor,
    *,
    params: NSTParams | None = None,
    batch: int | None = None,
    precision: Precision = "fp32",
    algorithm: Algorithm = "auto",
    device: torch.device | str | None = None,
    tile: int | None = None,
    **overrides: Any,
) -> list[torch.Tensor]:
    """Gram matrices of the style tilts at the style layers (compute once, reuse).

    Parameters
    ----------
    vgg : torch.nn.Module
        From ``build_vgg`` / ``get_vgg``.
    style : array (t, H, W) float
        Style tilts normalised to [0, 1] (:func:`normalise` with the stack's extrema).
    params, **overrides
        :class:`~faket_dask.params.nst.NSTParams` (only ``style_layers`` is used).
    batch : int, optional
        Tilts per forward pass (default :func:`default_batch`).
    precision : {"fp32", "tf32", "bf16"}
    algorithm : {"auto", "winograd", "direct"}
        As in :func:`stylise` (use the same for the Grams and the stylisation).
    device : torch device, optional
        Default: the device of ``vgg``.
    tile : int, optional
        Compute the Grams tile by tile (a multiple of 16), summing ``F Fᵀ`` over tiles as
        :func:`~.tiled.stylise_tiled` does, so a large tilt's activations are never held whole;
        the result is then exactly the Grams ``stylise_tiled`` computes for itself (same
        ``batch``).

    Returns
    -------
    list of torch.Tensor
        One float32 ``(t, C_l, C_l)`` tensor per ``params.style_layers`` entry, in that order,
        on ``device``; ``G = F Fᵀ / (H_l W_l)`` of the (unweighted) features.

    Raises
    ------
    ValueError
        Bad stack shape, tile, precision or algorithm.
    """
    p = params_with(params, overrides)
    dev = resolve_device(vgg, device)
    s = as_stack(style, "style", dev)
    h, w = s.shape[-2:]
    plan = make_plan(vgg, dev, precision, algorithm, h * w)
    if tile is not None:
        check_tile(tile)
        halo_f = tile_halo(p, backward=False)
        tiles = tiles_of(h, w, tile)
        b = batch or default_batch(crop_shape((h, w), tile, p), dev)
    else:
        b = batch or default_batch(s.shape[-2:], dev)
    parts: dict[int, list[torch.Tensor]] = {l: [] for l in p.style_layers}
    with kernel_runtime(precision, dev):
        for i0 in range(0, s.shape[0], b):
            if not p.style_layers:
                break
            if tile is not None:
                sg = tiled_grams(plan, s[i0:i0 + b], tiles, halo_f, p.style_layers)
            else:
                _, sg = loss_targets(plan, None, s[i0:i0 + b], p)
            for l in p.style_layers:
                parts[l].append(sg[l])
    return [torch.cat(parts[l]) for l in p.style_layers]


def stylise(
    vgg: nn.Module,
    content: np.ndarray | torch.Tensor,
    init: np.ndarray | torch.Tensor,
    style: np.ndarray | torch.Tensor | Sequence[torch.Tensor],
    *,
    params: NSTParams | None = None,
    batch: int | None = None,
    precision: Precision = "fp32",
    algorithm: Algorithm = "auto",
    streams: int | None = None,
    device: torch.device | str | None = None,
    **overrides: Any,
) -> np.ndarray:
    """Style-transfer a block of tilts (``docs/method.md §4``): the fast path.

    Parameters
    ----------
    vgg : torch.nn.Module
        From ``build_vgg`` / ``get_vgg`` (read only).
    content, init : array (t, H, W) float
        CONTENT and NOISY tilts, each min–max normalised to [0, 1] over its whole stack.
    style : array (t, H, W) float, or list of tensors
        Normalised style tilts (tilt i styles tilt i), or their :func:`style_grams` (one
        ``(t, C, C)`` tensor per style layer, same ``style_layers``).
    params : NSTParams, optional
        Method settings; ``**overrides`` replace single fields (``lr=0.1``, ``iterations=2``).
    batch : int, optional
        Tilts per pass (default :func:`default_batch`). Changes only the rounding (each
        tilt's gradient agrees to ~1e-6 relative), as does torch's thread count.
    precision : {"fp32", "tf32", "bf16"}
        ``fp32`` (default) is IEEE float32 throughout. ``tf32`` allows TF32 on CUDA (no-op on
        CPU); ``bf16`` autocasts convolutions/matmuls to bfloat16 (losses stay float32). Both
        flip the sign of small gradient elements and so change some pixels by ±lr/(3·1.99).
        Inside an :func:`~.runtime.nst_runtime` it must be the runtime's precision.
    algorithm : {"auto", "winograd", "direct"}
        How the 3×3 convolutions are computed (:mod:`.backend`). ``auto`` (default):
        ``winograd`` on CPU when torch runs single-threaded (one thread per Dask task, or in
        ``streams``), the tilt has ≥ 192² pixels and NNPACK is available; else ``direct``.
    streams : int, optional
        CPU only: process blocks of tilts in this many threads at once, each running torch
        single-threaded (the process-wide torch thread count is set to 1 for the duration of
        the call and restored after). Default: ``torch.get_num_threads()`` on CPU (capped at
        the number of blocks), 1 inside a single-threaded runtime; ``1`` keeps the caller's
        threading untouched. The result is bit-identical to ``streams=1`` run with one torch
        thread (same ``algorithm``).
    device : torch device, optional
        Default: the device of ``vgg``.

    Returns
    -------
    numpy.ndarray (t, H, W) float32
        The stylised tilts in normalised units ([0, 1]), before :func:`match_mean_std`.

    Raises
    ------
    ValueError
        Shapes or tilt counts differ, or bad precision, algorithm or streams.
    TypeError
        An override that is not an ``NSTParams`` field.

    Notes
    -----
    NNPACK sizes its thread pool once per process from ``torch.get_num_threads()`` at its first
    use: run the first Winograd call single-threaded (Dask tasks do, and so does ``streams``),
    or its pool serialises concurrent calls.
    """
    p = params_with(params, overrides)
    dev = resolve_device(vgg, device)
    c = as_stack(content, "content", dev)
    x0 = as_stack(init, "init", dev)
    if c.shape != x0.shape:
        raise ValueError(f"content {tuple(c.shape)} and init {tuple(x0.shape)} differ")
    grams_in = is_grams(style)
    if grams_in:
        if len(style) != len(p.style_layers):
            raise ValueError(f"{len(style)} Gram tensors for {len(p.style_layers)} style layers")
        grams_all = [g.to(dev) for g in style]
        if any(g.shape[0] != c.shape[0] for g in grams_all):
            raise ValueError("style Grams and content have different tilt counts")
        s = None
    else:
        s = as_stack(style, "style", dev)
        if s.shape[0] != c.shape[0]:
            raise ValueError(f"{s.shape[0]} style tilts for {c.shape[0]} content tilts")
    t = c.shape[0]
    b = batch or default_batch(c.shape[-2:], dev)
    blocks = [slice(i0, min(i0 + b, t)) for i0 in range(0, t, b)]
    n = n_streams(streams, dev, len(blocks))
    out = np.empty(tuple(c.shape), np.float32)

    def run(sl: slice) -> None:
        # the plan is made in the computing thread: "auto" looks at its torch thread count
        plan = make_plan(vgg, dev, precision, algorithm, c.shape[-1] * c.shape[-2])
        cf, sg = loss_targets(plan, c[sl], None if grams_in else s[sl], p)
        if grams_in:
            sg = {l: g[sl] for l, g in zip(p.style_layers, grams_all)}
        x = x0[sl, None].expand(-1, 3, -1, -1).clone()
        opt = AdamEMA(x, p)
        for _ in range(p.iterations):
            _, grad = loss_and_grad(plan, x, cf, sg, p)
            opt.update(grad)
        out[sl] = opt.result().float().cpu().numpy()

    def run_in_stream(sl: slice) -> None:
        with precision_scope(precision, dev):  # autocast is per thread
            run(sl)

    with kernel_runtime(precision, dev):
        if n == 1:
            for sl in blocks:
                run(sl)
        else:
            with single_threaded_torch(), ThreadPoolExecutor(n) as pool:
                for _ in pool.map(run_in_stream, blocks):  # re-raises the first error
                    pass
    return out


def style_transfer_stack(
    content: np.ndarray | torch.Tensor,
    style: np.ndarray | torch.Tensor,
    init: np.ndarray | torch.Tensor,
    vgg: nn.Module,
    *,
    params: NSTParams | None = None,
    batch: int | None = None,
    tile: int | None = None,
    precision: Precision = "fp32",
    algorithm: Algorithm = "auto",
    streams: int | None = None,
    device: torch.device | str | None = None,
    **overrides: Any,
) -> np.ndarray:
    """The whole in-memory FakET style transfer of one tilt-series (``docs/method.md §4``).

    Parameters
    ----------
    content, style, init : array (t, H, W)
        CONTENT, STYLE (measured reference of another tomogram) and NOISY stacks in their
        original units.
    vgg : torch.nn.Module
        From ``build_vgg`` / ``get_vgg``.
    params, batch, precision, algorithm, streams, device, **overrides
        As in :func:`stylise` (``streams`` is not used with ``tile``).
    tile : int, optional
        Use :func:`~.tiled.stylise_tiled` with this tile size (pixels, a multiple of 16).

    Returns
    -------
    numpy.ndarray (t, H, W) float32
        Stylised tilts with each tilt's mean/std equal to the style tilt's (``ddof=0``).

    Raises
    ------
    ValueError
        As :func:`stylise` and :func:`normalise`.
    """
    s_raw = np.asarray(style.detach().cpu() if isinstance(style, torch.Tensor) else style)
    c, s, x = normalise(content), normalise(s_raw), normalise(init)
    if tile is None:
        out = stylise(vgg, c, x, s, params=params, batch=batch, precision=precision,
                      algorithm=algorithm, streams=streams, device=device, **overrides)
    else:
        out = stylise_tiled(vgg, c, x, s, tile=tile, params=params, precision=precision,
                            algorithm=algorithm, device=device, **overrides)
    s64 = s_raw.astype(np.float64)
    return match_mean_std(out, s64.mean(axis=(1, 2)), s64.std(axis=(1, 2)))
