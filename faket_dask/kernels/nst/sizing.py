"""What a graph builder needs to know of the NST kernels, without importing torch.

The Dask stages fix a graph's arithmetic on the client (algorithm, batch, tile, crop) before
any task exists; importing torch for that cost the client ~2-4 s at the start of every run on
the 2-core VM, three processes importing torch at once (issue 15, measured 2026-12-02). So the
pure arithmetic of those choices lives here, torch-free, and the torch modules of this package
(:mod:`.tiled`, :mod:`.inputs`, :mod:`.backend`, :mod:`.runtime`) import it from here: one
owner. Only ``algorithm="winograd"`` asks torch (whether NNPACK is usable), and imports it then.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, Literal

from ...params.nst import (
    ALGORITHMS, DEFAULT_BATCH_PIXELS, PRECISIONS, Algorithm, NSTParams, Precision, layer_kinds,
    layer_strides,
)

__all__ = ["check_algorithm", "check_precision", "crop_shape", "default_batch", "device_kind",
           "nnpack_available", "params_with", "resolve_algorithm", "tile_halo", "use_winograd"]

_DEVICE = re.compile(r"(?P<kind>[a-z_]+)(:\d+)?")


def device_kind(device: Any) -> str:
    """``"cpu"``, ``"cuda"``, ...: the type of a device string or ``torch.device`` (default CPU).

    ``str(torch.device("cuda", 0))`` is ``"cuda:0"``, so a torch device needs no torch here.

    Raises
    ------
    ValueError
        Not a device spelling (``KIND`` or ``KIND:INDEX``).
    """
    if device is None:
        return "cpu"
    m = _DEVICE.fullmatch(str(device).strip())
    if m is None:
        raise ValueError(f"not a device: {device!r} (expected e.g. 'cpu', 'cuda', 'cuda:0')")
    return m.group("kind")


def params_with(params: NSTParams | None, overrides: Mapping[str, Any]) -> NSTParams:
    """``params`` (default: the paper's) with single fields replaced (``lr=0.1``).

    Raises
    ------
    TypeError
        An override that is not an :class:`NSTParams` field.
    """
    return (params if params is not None else NSTParams()).replace(**overrides)


def check_precision(precision: str) -> None:
    """Raise ValueError unless ``precision`` is one of :data:`~faket_dask.params.nst.PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be 'fp32', 'tf32' or 'bf16', got {precision!r}")


def default_batch(shape: tuple[int, int], device: Any = None) -> int:
    """Tilts per pass when ``batch`` is not given: ``max(1, P // (H·W))``.

    ``P`` is :data:`~faket_dask.params.nst.DEFAULT_BATCH_PIXELS` (``2**16`` on CPU: one tilt
    at 256², 16 at 64²; ``2**20`` on CUDA). Memory: ``stylise`` holds ~2.6 kB per pixel and
    tilt of the batch at its peak (measured at 256² on CPU: +270 MB for 1 tilt, +685 MB for
    4; the autograd reference +316 MB for its single tilt).
    """
    kind = device_kind(device)
    budget = DEFAULT_BATCH_PIXELS.get(kind, DEFAULT_BATCH_PIXELS["cpu"])
    return max(1, budget // (int(shape[0]) * int(shape[1])))


def tile_halo(params: NSTParams | None = None, *, backward: bool = True, **overrides: Any) -> int:
    """Margin (pixels, a multiple of 16) around a tile that makes tiled results exact.

    A tile is processed on a crop that extends ``halo`` pixels beyond it (less at the image
    border). At the crop's artificial edges the convolutions see padding instead of the
    neighbouring pixels; this *contamination* grows by one feature per 3×3 conv and halves
    (rounding up) at each 2×2 pooling. ``backward=False``: the margin after which every
    tap-layer feature of the tile is exact (pass 1, statistics). ``backward=True``: the margin
    after which the gradient w.r.t. every tile pixel is exact, i.e. the contamination plus the
    backward reach of the deepest tap (pass 2). Derived by propagating the contaminated prefix
    through the layer sequence; for FakET's layers: 80 and 160 pixels.
    """
    p = params_with(params, overrides)
    last = p.last_layer
    kinds = layer_kinds()[: last + 1]
    strides = layer_strides(last)
    taps = set(p.content_layers) | set(p.style_layers)
    contam: list[int] = []  # contaminated features from the crop edge after each op
    c = 0
    for k in kinds:
        c = c + 1 if k == "conv" else (c + 1) // 2 if k == "pool" else c
        contam.append(c)
    if not backward:
        need = max(contam[l] * strides[l] for l in taps)
    else:
        w = 0  # wrong gradient elements from the crop edge, at the current op's output
        for i in range(last, -1, -1):
            if i in taps or kinds[i] == "relu":  # tap gradients / ReLU masks of bad features
                w = max(w, contam[i])
            if kinds[i] == "pool":  # unpooling spreads each wrong element over its window
                w = 2 * max(w, contam[i])
            elif kinds[i] == "conv":  # the adjoint reaches one further, and misses the outside
                w = w + 1
        need = w
    return -(-need // 16) * 16


def crop_shape(shape: tuple[int, int], tile: int, params: NSTParams | None = None
               ) -> tuple[int, int]:
    """(y, x) of the largest crop (tile + the backward margin on both sides) of a tilt."""
    halo = tile_halo(params, backward=True)
    return (min(int(shape[0]), tile + 2 * halo), min(int(shape[1]), tile + 2 * halo))


@functools.cache
def nnpack_available() -> bool:
    """NNPACK usable (this also runs its one-time initialisation, which its conv needs).

    Imports torch (the one function of this module that does).
    """
    import torch

    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


def check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be 'auto', 'winograd' or 'direct', got {algorithm!r}")


def use_winograd(algorithm: Algorithm, device: Any, precision: Precision,
                 npix: int) -> bool:
    """Whether a kernel call with these settings runs the deep convs through NNPACK: only for
    ``algorithm="winograd"`` (``"auto"`` is direct).

    Raises
    ------
    ValueError
        Unknown algorithm, or ``"winograd"`` on CUDA or with bf16.
    RuntimeError
        ``"winograd"`` with a torch built without NNPACK.
    """
    check_algorithm(algorithm)
    if algorithm != "winograd":  # "auto" is direct: no question for torch
        return False
    if device_kind(device) != "cpu" or precision == "bf16":
        raise ValueError("algorithm='winograd' needs a CPU device and fp32/tf32 precision")
    if not nnpack_available():  # torch: only when Winograd is asked for
        raise RuntimeError("algorithm='winograd' needs a torch build with NNPACK")
    return True


def resolve_algorithm(
    algorithm: Algorithm, device: Any, precision: Precision,
    shape: tuple[int, int], *, single_threaded: bool = True,
) -> Literal["winograd", "direct"]:
    """What ``algorithm`` means for tilts of ``shape`` (y, x) on ``device``: ``"auto"`` is
    ``"direct"`` (:mod:`.backend`'s docstring says why). ``single_threaded`` is kept for callers; the answer no
    longer depends on the thread count. The Dask stage fixes the result when it builds the
    graph, so every task uses the same arithmetic.

    Returns
    -------
    {"winograd", "direct"}

    Raises
    ------
    ValueError, RuntimeError
        As :func:`use_winograd`; ValueError for an unknown precision or device.
    """
    npix = int(shape[0]) * int(shape[1])
    check_precision(precision)
    return "winograd" if use_winograd(algorithm, device, precision, npix) else "direct"
