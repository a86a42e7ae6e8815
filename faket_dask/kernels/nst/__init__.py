"""FakET's neural style transfer kernels (``docs/method.md §4``): pure torch/numpy, no Dask.

Where each piece lives (``docs/style.md``, "Code layout"):

* :mod:`.transfer` — :func:`stylise` (the fast path for a block of tilts), :func:`style_grams`,
  :func:`style_transfer_stack` (in memory), :func:`normalise`, :func:`match_mean_std`;
* :mod:`.tiled` — :func:`stylise_tiled` (large tilts, tile by tile);
* :mod:`.budget` — the kernel's memory per pixel and the tile that fits a budget;
* :mod:`.reference` — :func:`stylise_reference`, the autograd/``torch.optim.Adam`` oracle;
* :mod:`.vgg` — the network: :func:`build_vgg`, :func:`get_vgg` (per-process cache), weights;
* :mod:`.reverse` — the memory-saving hand-written reverse pass, :func:`loss_and_grad`;
* :mod:`.loss` — Gram, ScaledMSE and TV with their gradients in closed form;
* :mod:`.optim` — :class:`AdamEMA` (torch's Adam arithmetic + the EMA of the iterates);
* :mod:`.plan` — the VGG layers as a prepared plan of tensors (:func:`make_plan`);
* :mod:`.backend` — direct vs NNPACK Winograd convolutions (``algorithm=``);
* :mod:`.runtime` — :func:`nst_runtime`: precision and threads, entered once per task;
* :mod:`.sizing` — the torch-free arithmetic a graph builder needs (:func:`crop_shape`,
  :func:`default_batch`, :func:`tile_halo`, :func:`resolve_algorithm`).

Settings and tables (``NSTParams``, layers, precision and algorithm names, defaults) are owned
by the torch-free :mod:`faket_dask.params.nst`.

The names below are loaded on first use (PEP 562): ``from faket_dask.kernels.nst import
crop_shape`` or ``from faket_dask.kernels.nst.budget import auto_tile`` does not import torch,
so the client builds NST graphs without it (~2-4 s at the start of a run on 2 cores, issue 15);
``stylise`` and the rest import torch when first asked for. (No submodule is named like a
public function: importing a submodule sets the package attribute of its name, which would hide
the function; hence ``transfer.py`` for :func:`stylise`.)
"""
from __future__ import annotations

import importlib
from typing import Any

from ...params.nst import NSTParams, imagenet_weights_path

#: Where each public name lives (the submodule that owns it).
_OWNER: dict[str, str] = {
    "AdamEMA": "optim", "Plan": "plan", "make_plan": "plan",
    "WINOGRAD_FROM": "backend", "nnpack_available": "sizing",
    "WeightsUnavailableError": "vgg", "build_vgg": "vgg", "clear_vgg_cache": "vgg",
    "fetch_imagenet_weights": "vgg", "get_vgg": "vgg",
    "weights_key": "vgg",
    "crop_shape": "sizing", "default_batch": "sizing", "resolve_algorithm": "sizing",
    "tile_halo": "sizing",
    "loss_and_grad": "reverse", "loss_targets": "reverse",
    "match_mean_std": "transfer", "normalise": "transfer", "style_grams": "transfer",
    "style_transfer_stack": "transfer", "stylise": "transfer",
    "nst_runtime": "runtime", "single_threaded_torch": "runtime",
    "stylise_reference": "reference", "stylise_tiled": "tiled",
}

#: The submodules that import torch: a process imports them all before tasks that need them run
#: beside others (:mod:`faket_dask.torch_import` says why).
TORCH_SUBMODULES: tuple[str, ...] = tuple(
    f"{__name__}.{m}" for m in ("runtime", "backend", "plan", "loss", "reverse", "optim", "inputs",
                                "tiled", "transfer", "reference", "vgg"))


def __getattr__(name: str) -> Any:
    owner = _OWNER.get(name)
    if owner is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{owner}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AdamEMA",
    "TORCH_SUBMODULES",
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
