"""Memory of the NST kernels and the tile that fits a task's memory (no Dask here).

The kernel owns its memory figures: :data:`NST_BYTES_PER_PIXEL` (what :func:`~.transfer.stylise`
holds per tilt pixel at its peak) and the tiling halo (:func:`~.sizing.tile_halo`).
:func:`auto_tile` turns a memory budget into a tile edge, None meaning the whole tilt fits;
:func:`device_task_bytes` measures the memory one task may use on a device. Which budget a
task gets on a cluster (the worker's memory limit divided by its threads) is the stage's
business (:mod:`faket_dask.stages.nst_budget`).
"""
from __future__ import annotations

from typing import Final

from ...params.nst import NSTParams
from .sizing import crop_shape

__all__ = ["CUDA_FREE_FRACTION", "MIN_TILE", "NST_BYTES_PER_PIXEL", "auto_tile", "device_task_bytes",
           "nst_task_bytes"]

#: Bytes :func:`~.transfer.stylise` holds per tilt pixel at its peak (activations of the VGG-19
#: prefix to relu5_1, the hand-written reverse pass and Adam's state), measured with
#: ``benchmarks/bench_style.py`` at 256² on CPU: +270 MB for one tilt, +685 MB for four; the
#: autograd reference holds ~4.8 kB. Linear in pixels (the activations are), so it holds at
#: 1024² too (docs/benchmarks.md).
NST_BYTES_PER_PIXEL: Final = 2600
#: Share of the free GPU memory (``torch.cuda.mem_get_info``) a CUDA task plans to use: the
#: caching allocator's fragmentation and cuDNN workspaces need the rest.
CUDA_FREE_FRACTION: Final = 0.8
#: Smallest tile :func:`auto_tile` returns (below it the halo's work dominates: (1+320/64)² = 36×).
MIN_TILE: Final = 64


def nst_task_bytes(shape_yx: tuple[int, int], tilts: int = 1) -> int:
    """Peak bytes of :func:`~.transfer.stylise` on ``tilts`` untiled tilts of ``shape_yx``."""
    return int(tilts) * int(shape_yx[0]) * int(shape_yx[1]) * NST_BYTES_PER_PIXEL


def auto_tile(shape_yx: tuple[int, int], budget_bytes: float, params: NSTParams | None = None
              ) -> int | None:
    """Tile edge (pixels) for NST of one tilt within ``budget_bytes``; None: no tiling needed.

    Parameters
    ----------
    shape_yx : (int, int)
        Tilt size in pixels.
    budget_bytes : float
        Memory one task may use (e.g. :func:`device_task_bytes`).
    params : NSTParams, optional
        Method settings; their layers fix the tiling halo (:func:`~.sizing.tile_halo`).

    Returns
    -------
    int or None
        None when the whole tilt fits; else the largest multiple of 16 (≥ :data:`MIN_TILE`)
        whose crop (:func:`~.sizing.crop_shape`: tile + the halo on both sides) fits. When none
        fits: :data:`MIN_TILE` if its crop is smaller than the tilt (the least memory there
        is), else None (a tilt smaller than one crop gains nothing from tiling).
    """
    h, w = int(shape_yx[0]), int(shape_yx[1])
    if nst_task_bytes((h, w)) <= budget_bytes:
        return None
    best = None
    for t in range(MIN_TILE, max(h, w) + 16, 16):
        if nst_task_bytes(crop_shape((h, w), t, params)) <= budget_bytes:
            best = t
    if best is None and crop_shape((h, w), MIN_TILE, params) != (h, w):
        best = MIN_TILE          # nothing fits: the smallest crop is still the least memory
    return best


def device_task_bytes(device: str, *, memory_limit_bytes: float | None = None, threads: int = 1) -> int:
    """Memory one NST task may use on ``device``.

    Parameters
    ----------
    device : str
        ``"cpu"`` or a CUDA device (``"cuda"``, ``"cuda:1"``).
    memory_limit_bytes : float, optional
        CPU: the process's memory limit (a Dask worker's ``memory_limit``); None or 0: the
        memory the system has available now (``psutil.virtual_memory().available``).
    threads : int
        Tasks that run at once in that memory (a Dask worker's threads).

    Returns
    -------
    int
        CPU: ``memory_limit_bytes / threads``. CUDA: :data:`CUDA_FREE_FRACTION` of the device's
        free memory (``torch.cuda.mem_get_info``), the GPU being one task's at a time.
    """
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free * CUDA_FREE_FRACTION)
    if not memory_limit_bytes:
        import psutil

        memory_limit_bytes = psutil.virtual_memory().available
    return int(memory_limit_bytes / max(1, int(threads)))
