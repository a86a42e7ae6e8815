"""What the style-transfer stage checks and fixes on the client, before any task exists.

Shared by :mod:`.style_grams` (the Gram cache) and :mod:`.style_transfer` (the stage): input
tilt-series checks, the VGG-19 weights check, the :class:`Settings` that fix a graph's
arithmetic (resolved algorithm, kernel batch, ...), the eager input ranges, and the worker-side
network lookup. Torch and the kernels are imported inside functions only, so that
``import faket_dask`` (and every CLI command) does not pay for importing torch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import InputError
from ..params import MIB
from ..params.nst import ALGORITHMS, LAST_LAYER, NAMED_WEIGHTS, PRECISIONS, NSTParams
from ..progress import compute, current_client
from ._common import check_tiltseries, resolve_device

__all__ = [
    "Settings",
    "as_dask",
    "as_tilts",
    "attrs_difference",
    "check_device_usable",
    "check_weights",
    "client_needs_torch",
    "device_type",
    "extrema",
    "json_normal",
    "settings",
    "source_name",
    "task_chunks",
    "task_vgg",
    "whole_tilts",
]


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def source_name(arr: Any, default: str) -> str:
    """Name used in messages and attrs: ``attrs["source"]`` > the array's name > default."""
    if isinstance(arr, (xr.DataArray, xr.Dataset)):
        src = arr.attrs.get("source")
        if src:
            return str(src)
        name = getattr(arr, "name", None)
        if name is not None:
            return str(name)
    return default


def as_tilts(obj: Any, what: str) -> xr.DataArray:
    """A dask-backed (tilt, y, x) DataArray of real numbers (chunks kept).

    Raises
    ------
    InputError
        Not a 3D (tilt, y, x) array of real numbers, or empty.
    """
    obj = check_tiltseries(obj, f"{what} '{source_name(obj, what)}'")
    data = obj.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(1, -1, -1))
        obj = obj.copy(data=data)
    return obj


def as_dask(a: Any) -> da.Array:
    """``a`` as a dask array (an in-memory array becomes one chunk)."""
    return a if isinstance(a, da.Array) else da.from_array(np.asarray(a))


def task_chunks(n: int, b: int) -> tuple[int, ...]:
    """Tilt chunks of ``b`` tilts (one task each) for ``n`` tilts."""
    return tuple(min(b, n - i) for i in range(0, n, b))


def whole_tilts(a: da.Array, tch: tuple[int, ...]) -> da.Array:
    """Regroup to ``(b, Y, X)`` blocks: concatenates the y/x chunks of the same tilts only."""
    return a.rechunk({0: tch, 1: -1, 2: -1})


# --------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------
_SHA_CACHE: dict[tuple[str, int, int], str] = {}
_VALID_FILES: dict[tuple[str, int, int], bool] = {}
_CACHE_LOCK = threading.Lock()


def _file_key(p: Path) -> tuple[str, int, int]:
    s = p.stat()
    return (str(p), s.st_size, s.st_mtime_ns)


def _sha256(p: Path) -> str:
    key = _file_key(p)
    with _CACHE_LOCK:
        if key in _SHA_CACHE:
            return _SHA_CACHE[key]
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    with _CACHE_LOCK:
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def check_weights(weights: Any) -> str:
    """Validate a VGG-19 weights choice on the client and return its canonical key.

    Parameters
    ----------
    weights : {"imagenet", "random"} or path
        ``"imagenet"`` must already be in the local torch hub cache
        (:func:`faket_dask.kernels.nst.imagenet_weights_path`; nothing is downloaded); a file
        must hold a torchvision VGG-19 state dict (it is loaded once here, and the check is
        remembered for the file's size and modification time).

    Returns
    -------
    str
        ``"random"``, ``"imagenet"`` or the file's resolved path.

    Raises
    ------
    InputError
        One line: the ImageNet weights are not cached (run ``faket-dask fetch-weights`` on a
        machine with internet access, or pass a file), or the file is missing or unusable.
    """
    from ..params.nst import imagenet_weights_path

    if isinstance(weights, str) and weights == "random":
        return "random"
    if isinstance(weights, str) and weights == "imagenet":
        if not imagenet_weights_path().is_file():
            from ..kernels.nst import WeightsUnavailableError, build_vgg  # torch: ~3 s to import

            try:  # the kernel's own message (where the cache is, how to fill it)
                build_vgg("imagenet")
            except WeightsUnavailableError as exc:
                raise InputError(str(exc)) from None
        return "imagenet"
    if not isinstance(weights, (str, Path)) or not str(weights):
        raise InputError(f"weights must be 'imagenet', 'random' or a file, got {weights!r}")
    p = Path(weights).expanduser()
    if not p.is_file():
        raise InputError(f"{p}: VGG-19 weights file not found (weights: 'imagenet', 'random' or "
                         "a torchvision VGG-19 state-dict file)")
    p = p.resolve()
    key = _file_key(p)
    with _CACHE_LOCK:
        known = _VALID_FILES.get(key)
    if not known:
        from ..kernels.nst import WeightsUnavailableError, build_vgg

        try:
            build_vgg(p)
        except WeightsUnavailableError as exc:
            raise InputError(str(exc).splitlines()[0]) from None
        with _CACHE_LOCK:
            _VALID_FILES[key] = True
    return str(p)


def client_needs_torch(weights: Any, device: str | None, algorithm: str = "auto") -> bool:
    """Whether building the NST graphs with these options imports torch in this process.

    A weights file is loaded once to check it (:func:`check_weights`), ``algorithm="winograd"``
    asks torch whether NNPACK works, and a device of None or ``"auto"`` asks torch for a GPU
    (:func:`._common.resolve_device`); everything else the client decides is torch-free
    (:mod:`faket_dask.kernels.nst.sizing`). Used to import torch before concurrent stages
    only where it will be imported anyway (:mod:`faket_dask.torch_import` says why).
    """
    is_file = not (isinstance(weights, str) and weights in NAMED_WEIGHTS)
    return is_file or algorithm == "winograd" or device in (None, "auto")


def task_vgg(cfg: dict[str, Any]):
    """Worker side: the task's network (built once per worker process, ``get_vgg``).

    Raises
    ------
    InputError
        A worker without the client's weights file or torch cache.
    """
    from ..kernels.nst import WeightsUnavailableError, get_vgg

    try:
        return get_vgg(cfg["weights"], seed=cfg["seed"], device=cfg["device"])
    except WeightsUnavailableError as exc:
        raise InputError(str(exc).splitlines()[0]) from None


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------
def device_type(device: str) -> str:
    """``"cpu"`` or ``"cuda"`` for a torch device string (no torch imported).

    Raises
    ------
    ValueError
        Not a device spelling.
    """
    from ..kernels.nst.sizing import device_kind

    return device_kind(device)


def _torch_version() -> str:
    """torch's release (``"2.14.1"``) from the installed distribution's metadata: the same
    string as ``torch.__version__`` without its local ``+cu…`` part, without importing torch."""
    from importlib.metadata import version

    return version("torch").split("+")[0]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that fixes the arithmetic of the stage, decided on the client."""

    weights: str  # canonical key (check_weights)
    seed: int
    device: str
    precision: str
    algorithm: str  # "winograd" or "direct" (resolved)
    tile: int | None
    params: NSTParams
    task_batch: int
    kernel_batch: int
    #: ``tile="auto"``: the memory one task had (MiB, :mod:`.nst_budget`); None otherwise.
    tile_budget_MiB: float | None = None

    def grams_attrs(self) -> dict[str, Any]:
        """The Gram-dataset attrs these settings imply (JSON types only)."""
        is_file = self.weights not in NAMED_WEIGHTS
        return {
            "weights": self.weights,
            "weights_seed": int(self.seed) if self.weights == "random" else None,
            "weights_sha256": _sha256(Path(self.weights)) if is_file else None,
            "precision": self.precision,
            "algorithm": self.algorithm,
            "tile": self.tile,
            "style_layers": [int(v) for v in self.params.style_layers],
            "device": device_type(self.device),
            "kernel_batch": int(self.kernel_batch),
            "torch": _torch_version(),
        }

    def kernel_cfg(self) -> dict[str, Any]:
        """What a task needs (pickled into the graph)."""
        return {"weights": self.weights, "seed": self.seed, "device": self.device,
                "precision": self.precision, "algorithm": self.algorithm, "tile": self.tile,
                "params": self.params, "batch": self.kernel_batch}


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v >= hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi})"
        raise InputError(f"{name} must be {bound}, got {v}")
    return v


def settings(
    shape_yx: tuple[int, int], *, weights: Any, seed: Any, device: str | None, precision: str,
    tile: Any, params: NSTParams | None, batch: Any, algorithm: str,
) -> Settings:
    """Validate the stage's options for tilts of ``shape_yx`` and fix the arithmetic.

    ``algorithm="auto"`` is resolved as for a single-threaded task; on CPU the kernel runs one
    tilt per pass (so each tilt's arithmetic does not depend on the grouping), on CUDA a task's
    tilts. ``tile="auto"``: None (untiled) when one tilt's NST fits the memory of one task as
    the workers report it (:func:`.nst_budget.task_bytes`), else the largest tile that fits
    (:func:`faket_dask.kernels.nst.budget.auto_tile`); on CUDA the default batch is also capped
    by that memory.

    Raises
    ------
    InputError
        Bad precision, algorithm, tile, batch, seed, params, layers, device or weights.
    """
    # torch-free (kernels.nst.sizing): the client builds the graph without importing torch
    from ..kernels.nst.budget import nst_task_bytes
    from ..kernels.nst.sizing import crop_shape, default_batch, resolve_algorithm

    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if algorithm not in ALGORITHMS:
        raise InputError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    auto = isinstance(tile, str) and tile == "auto"
    if tile is not None and not auto:
        if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile <= 0 or tile % 16:
            raise InputError(f"tile must be 'auto' or a positive multiple of 16 (pixels), got {tile!r}")
        tile = int(tile)
    if batch is not None:
        batch = _check_int("batch", batch, 1)
    seed = _check_int("seed", seed, 0, 2**63)
    if params is None:
        params = NSTParams()
    elif not isinstance(params, NSTParams):
        raise InputError(f"params must be an NSTParams, got {type(params).__name__}")
    for layer in (*params.style_layers, *params.content_layers):
        if not 0 <= int(layer) <= LAST_LAYER:
            raise InputError(f"NST layer {layer} is beyond VGG-19's features (0..{LAST_LAYER})")
    dev = resolve_device(device)
    try:
        dtype = device_type(dev)
    except ValueError as exc:
        raise InputError(f"device: {exc}") from None
    if dtype not in ("cpu", "cuda"):
        raise InputError(f"device must be cpu or cuda, got {dev!r}")
    try:
        alg = resolve_algorithm(algorithm, dev, precision, shape_yx, single_threaded=True)
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"style transfer: {exc}") from None
    wkey = check_weights(weights)
    budget_MiB = None
    if auto:
        from ..kernels.nst.budget import auto_tile
        from .nst_budget import task_bytes

        budget = task_bytes(dev)
        budget_MiB = round(budget / MIB, 1)
        tile = auto_tile(shape_yx, budget, params)
    tile_crop = shape_yx if tile is None else crop_shape(shape_yx, tile, params)
    if dtype == "cpu":
        # One tilt per pass: each tilt's arithmetic is then the same whatever the grouping.
        # Small tilts go several to a task (default_batch: 2**16 pixels, 4 tilts of 128²), so
        # the per-task overhead (scheduling, inputs, entering the runtime) does not dominate.
        kb = 1
        tb = batch or default_batch(tile_crop, dev)
    else:
        tb = batch or default_batch(tile_crop, dev)
        if auto and batch is None:
            # as many tilts per pass as the measured memory holds, at least one
            tb = max(1, min(tb, int(budget // nst_task_bytes(tile_crop))))
        kb = tb
    return Settings(wkey, seed, dev, precision, alg, tile, params, tb, kb, budget_MiB)


def check_device_usable(device: str) -> None:
    """A CUDA graph needs a GPU here (local scheduler) or workers offering ``GPU=1``.

    Raises
    ------
    InputError
        No GPU here, or the current cluster's workers offer no ``GPU=1``.
    """
    if device_type(device) != "cuda":
        return
    client = current_client()
    if client is None:
        import torch

        if not torch.cuda.is_available():
            raise InputError("device 'cuda': torch sees no CUDA GPU on this machine")
        return
    try:
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
    except TypeError:  # older distributed without n_workers
        workers = client.scheduler_info().get("workers", {})
    if workers and not any("GPU" in (w.get("resources") or {}) for w in workers.values()):
        raise InputError(
            "device 'cuda': no worker of the Dask cluster offers the resource GPU=1 (start it "
            "with --gpus, dask-cuda or a cluster file of type cuda), or use device 'cpu'"
        )


def _block_extrema(block: np.ndarray) -> np.ndarray:
    """(min, max) of one block, shaped (1, 1, 2) for ``map_blocks`` over a (t, y, x) array."""
    return np.array([block.min(), block.max()], dtype=np.float64).reshape(1, 1, 2)


def extrema(arrays: Sequence[xr.DataArray], names: Sequence[str]) -> list[tuple[float, float]]:
    """Global (min, max) of each (t, y, x) array: one small eager computation for all of them.

    Each block's min and max come from one task, which Dask fuses with the block's read (one
    task per stored chunk instead of three: ``data.min()`` and ``data.max()`` were two
    reductions, each with its own task per chunk beside the read; in the demo, 1,452 tasks
    of ~0.2 ms that left the workers 79 % idle for ~5 s). The values are the same: float32
    extrema are exact in float64.

    Raises
    ------
    InputError
        An array has NaN/inf values or is constant.
    """
    parts = []
    for a in arrays:
        d = a.data if isinstance(a.data, da.Array) else da.from_array(np.asarray(a.data))
        nb = d.numblocks
        parts.append(d.map_blocks(_block_extrema, chunks=((1,) * nb[0], (1,) * nb[1], (2,) * nb[2]),
                                  dtype=np.float64))
    vals = compute(parts, label="style transfer: input ranges")
    out = []
    for n, v in zip(names, vals):
        v = np.asarray(v, np.float64).reshape(-1, 2)
        lo, hi = float(v[:, 0].min()), float(v[:, 1].max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise InputError(f"'{n}' has NaN or inf values")
        if not hi > lo:
            raise InputError(f"'{n}' is constant ({lo:g}); cannot min-max normalise it")
        out.append((lo, hi))
    return out


# --------------------------------------------------------------------------------------------
# attrs
# --------------------------------------------------------------------------------------------
def json_normal(v: Any) -> Any:
    """JSON-like normal form (tuples -> lists, numpy scalars -> Python) for attr comparisons."""
    if isinstance(v, dict):
        return {str(key): json_normal(x) for key, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_normal(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def attrs_difference(ds: xr.Dataset, expected: dict[str, Any], keys: Sequence[str]) -> str | None:
    """The first of ``keys`` whose attr differs from ``expected``, spelled for a message."""
    for key in keys:
        have, want = json_normal(ds.attrs.get(key)), json_normal(expected.get(key))
        if have != want:
            return f"{key} {have!r} (expected {want!r})"
    return None
