"""FakET's neural style transfer kernels (``docs/method.md §4``): pure torch/numpy, no Dask.

Where each piece lives (``docs/style.md``, "Code layout"):

* :mod:`.stylise` — :func:`stylise` (the fast path for a block of tilts), :func:`style_grams`,
  :func:`style_transfer_stack` (in memory), :func:`normalise`, :func:`match_mean_std`,
  :func:`default_batch`;
* :mod:`.tiled` — :func:`stylise_tiled` and :func:`tile_halo` (large tilts, tile by tile);
* :mod:`.budget` — the kernel's memory per pixel and the tile that fits a budget;
* :mod:`.reference` — :func:`stylise_reference`, the autograd/``torch.optim.Adam`` oracle;
* :mod:`.vgg` — the network: :func:`build_vgg`, :func:`get_vgg` (per-process cache), weights;
* :mod:`.reverse` — the memory-saving hand-written reverse pass, :func:`loss_and_grad`;
* :mod:`.loss` — Gram, ScaledMSE and TV with their gradients in closed form;
* :mod:`.optim` — :class:`AdamEMA` (torch's Adam arithmetic + the EMA of the iterates);
* :mod:`.plan` — the VGG layers as a prepared plan of tensors (:func:`make_plan`);
* :mod:`.backend` — direct vs NNPACK Winograd convolutions (``algorithm=``);
* :mod:`.runtime` — :func:`nst_runtime`: precision and threads, entered once per task.

Settings and tables (``NSTParams``, layers, precision and algorithm names, defaults) are owned
by the torch-free :mod:`faket_dask.params.nst`.
"""
from __future__ import annotations

from ...params.nst import NSTParams
from .backend import WINOGRAD_FROM, nnpack_available, resolve_algorithm
from .optim import AdamEMA
from .plan import Plan, make_plan
from .reference import stylise_reference
from .reverse import loss_and_grad, loss_targets
from .runtime import nst_runtime, single_threaded_torch
from .stylise import (
    default_batch, match_mean_std, normalise, style_grams, style_transfer_stack, stylise,
)
from .tiled import crop_shape, stylise_tiled, tile_halo
from .vgg import (
    WeightsUnavailableError, build_vgg, clear_vgg_cache, fetch_imagenet_weights, get_vgg,
    imagenet_weights_path, weights_key,
)

__all__ = [
    "AdamEMA",
    "NSTParams",
    "Plan",
    "WINOGRAD_FROM",
    "WeightsUnavailableError",
    "build_vgg",
    "clear_vgg_cache",
    "crop_shape",
    "default_batch",
    "fetch_imagenet_weights",
    "get_vgg",
    "imagenet_weights_path",
    "loss_and_grad",
    "loss_targets",
    "make_plan",
    "match_mean_std",
    "nnpack_available",
    "normalise",
    "nst_runtime",
    "resolve_algorithm",
    "single_threaded_torch",
    "style_grams",
    "style_transfer_stack",
    "stylise",
    "stylise_reference",
    "stylise_tiled",
    "tile_halo",
    "weights_key",
]
