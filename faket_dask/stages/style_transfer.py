"""The neural style-transfer stage (METHOD.md §4): CONTENT styled towards STYLE, from NOISY.

The maths is :mod:`faket_dask.kernels.style_transfer`; this module only builds Dask graphs.

Graph of :func:`style_transfer` (one tomogram)
----------------------------------------------
0. **Validation** on the client, before anything is read: dims, shapes, tilt counts, tile,
   precision, and the VGG-19 weights (``"imagenet"`` must be in the local torch hub cache; a
   file is loaded once here to check it). Workers never validate, they only build the network
   with :func:`~faket_dask.kernels.style_transfer.get_vgg` (once per worker process).
1. **Stack-wide extrema** (min/max of CONTENT, NOISY and STYLE, METHOD's whole-stack min-max
   normalisation) are computed *eagerly*, as one small reduction on the current Dask client
   (or the local scheduler), when the graph is built. Keeping them inside the graph would make
   every per-tilt task depend on a read of the whole stack, and Dask would then hold all input
   chunks in memory until their tilt's task ran; computing them first costs one extra
   streaming read and keeps memory per task bounded. They are exact (a min is a min), so they
   do not depend on the chunking, and they are recorded in the output's attrs.
2. **Style Grams** (:func:`style_grams_dataset`): one task per tilt (or per ``batch`` tilts)
   on the whole style tilt, also giving the tilt's mean/std (float64, ``ddof=0``) of the
   original style stack. They can be saved in the store (:func:`save_style_grams`) and reused
   for any number of tomograms (:func:`load_style_grams`, :func:`grams_match`).
3. **Stylisation**: CONTENT and NOISY are regrouped to whole tilts ``(b, Y, X)`` (this only
   concatenates the ``(1, cy, X)`` chunks of the same tilts), each task normalises its tilts
   with the global extrema, runs :func:`~faket_dask.kernels.style_transfer.stylise` (or
   ``stylise_tiled`` with ``tile``) with the tilts' Grams, then ``match_mean_std`` with the
   style tilts' mean/std; the result is split back into the input's chunks.

Determinism
-----------
Everything that changes the arithmetic is fixed when the graph is built, never by the worker:
the convolution algorithm (``"auto"`` is resolved here, as for a single-threaded task), the
kernel batch (one tilt per pass on CPU, the task's tilts on GPU) and the thread count (every
task runs torch with one intra-op thread through the kernel's reference-counted
:func:`~faket_dask.kernels.style_transfer.single_threaded_torch`, ``streams=1``). Parallelism
comes from Dask tasks, one per tilt. So on CPU the output is bit-identical for any input
chunking, any ``batch`` (tilts per task), any number of workers and threads per worker, and
equal to ``style_transfer_stack(..., batch=1, streams=1)`` run single-threaded with the same
algorithm. (A torch task of another stage that sets the worker's thread count while an NST task
runs would break this; the pipeline runs stages one after the other.)
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import operator
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from .. import store as st
from ..datamodel import TILT_DIMS
from ..errors import InputError, OutputExistsError
from ..progress import compute, current_client
from ..tilt_pairing import is_identity, match_tilts
from ._common import gpu_annotation, resolve_device

if TYPE_CHECKING:
    from ..kernels.style_transfer import NSTParams


class _LazyKernel:
    """``faket_dask.kernels.style_transfer``, imported on first use: ``import faket_dask``
    (and every CLI command) should not pay for importing torch."""

    def __getattr__(self, name: str) -> Any:
        from ..kernels import style_transfer as mod

        return getattr(mod, name)


k = _LazyKernel()

__all__ = [
    "GRAMS_KIND",
    "GRAMS_ROOT",
    "PRECISIONS",
    "check_inputs",
    "check_weights",
    "grams_group",
    "grams_match",
    "load_style_grams",
    "save_style_grams",
    "style_grams_dataset",
    "style_transfer",
]

#: ``attrs["kind"]`` of a Gram dataset.
GRAMS_KIND: Final = "faket_dask.style_grams"
#: Store group under which the CLI caches Gram datasets (see :func:`grams_group`).
GRAMS_ROOT: Final = "style_grams"
PRECISIONS: Final = ("fp32", "tf32", "bf16")
ALGORITHMS: Final = ("auto", "winograd", "direct")
#: Gram attrs that must agree for cached Grams to be reused (bit-identical results).
_SETTING_KEYS: Final = ("weights", "weights_seed", "weights_sha256", "precision", "algorithm",
                        "tile", "style_layers", "device", "kernel_batch", "torch")
#: Gram attrs that must agree for Grams to mean the same thing (same network and taps).
_MEANING_KEYS: Final = ("weights", "weights_seed", "weights_sha256", "style_layers")

# VGG-19 ("E") feature configuration: channels of conv layers, "M" = 2x2 max pooling.
_VGG19_CFG: Final = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                     512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _layer_channels(layer: int) -> int:
    """Channels of the output of VGG-19 ``features[layer]``."""
    i, c = 0, 3
    for v in _VGG19_CFG:
        if v == "M":
            if i == layer:
                return c
            i += 1
        else:
            c = int(v)
            if layer in (i, i + 1):
                return c
            i += 2
    raise InputError(f"style layer {layer} is beyond VGG-19's features (0..{k.LAST_LAYER})")


def _source(arr: Any, default: str) -> str:
    """Name used in messages and attrs: ``attrs["source"]`` > the array's name > default."""
    if isinstance(arr, (xr.DataArray, xr.Dataset)):
        src = arr.attrs.get("source")
        if src:
            return str(src)
        name = getattr(arr, "name", None)
        if name is not None:
            return str(name)
    return default


def _as_tilts(obj: Any, what: str) -> xr.DataArray:
    """A dask-backed (tilt, y, x) DataArray of real numbers (chunks kept)."""
    name = _source(obj, what)
    if not isinstance(obj, xr.DataArray):
        if not hasattr(obj, "ndim") or obj.ndim != 3:
            shape = getattr(obj, "shape", type(obj).__name__)
            raise InputError(f"{what} '{name}': expected a (tilt, y, x) tilt-series, got {shape}")
        obj = xr.DataArray(obj, dims=TILT_DIMS)
    if tuple(obj.dims) != TILT_DIMS:
        raise InputError(f"{what} '{name}': expected dims {TILT_DIMS}, got {tuple(obj.dims)}")
    if min(obj.shape) < 1:
        raise InputError(f"{what} '{name}': empty tilt-series, shape {obj.shape}")
    if (not np.issubdtype(obj.dtype, np.number) or np.issubdtype(obj.dtype, np.complexfloating)
            or obj.dtype == bool):
        raise InputError(f"{what} '{name}': expected real numbers, got dtype {obj.dtype}")
    data = obj.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(1, -1, -1))
        obj = obj.copy(data=data)
    return obj


def _dask(a: Any) -> da.Array:
    return a if isinstance(a, da.Array) else da.from_array(np.asarray(a))


def _task_chunks(n: int, b: int) -> tuple[int, ...]:
    return tuple(min(b, n - i) for i in range(0, n, b))


def _whole_tilts(a: da.Array, tch: tuple[int, ...]) -> da.Array:
    """Regroup to ``(b, Y, X)`` blocks: concatenates the y/x chunks of the same tilts only."""
    return a.rechunk({0: tch, 1: -1, 2: -1})


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
        (:func:`~faket_dask.kernels.style_transfer.imagenet_weights_path`; nothing is
        downloaded); a file must hold a torchvision VGG-19 state dict (it is loaded once here,
        and the check is remembered for the file's size and modification time).

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
    if isinstance(weights, str) and weights == "random":
        return "random"
    if isinstance(weights, str) and weights == "imagenet":
        if not k.imagenet_weights_path().is_file():
            try:  # the kernel's own message (where the cache is, how to fill it)
                k.build_vgg("imagenet")
            except k.WeightsUnavailableError as exc:
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
        try:
            k.build_vgg(p)
        except k.WeightsUnavailableError as exc:
            raise InputError(str(exc).splitlines()[0]) from None
        with _CACHE_LOCK:
            _VALID_FILES[key] = True
    return str(p)


@dataclasses.dataclass(frozen=True)
class _Settings:
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

    def grams_attrs(self) -> dict[str, Any]:
        """The Gram-dataset attrs these settings imply (JSON types only)."""
        import torch

        is_file = self.weights not in ("random", "imagenet")
        return {
            "weights": self.weights,
            "weights_seed": int(self.seed) if self.weights == "random" else None,
            "weights_sha256": _sha256(Path(self.weights)) if is_file else None,
            "precision": self.precision,
            "algorithm": self.algorithm,
            "tile": self.tile,
            "style_layers": [int(v) for v in self.params.style_layers],
            "device": _device_type(self.device),
            "kernel_batch": int(self.kernel_batch),
            "torch": torch.__version__.split("+")[0],
        }

    def kernel_cfg(self) -> dict[str, Any]:
        return {"weights": self.weights, "seed": self.seed, "device": self.device,
                "precision": self.precision, "algorithm": self.algorithm, "tile": self.tile,
                "params": self.params, "batch": self.kernel_batch}


def _device_type(device: str) -> str:
    import torch

    return torch.device(device).type


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v >= hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi})"
        raise InputError(f"{name} must be {bound}, got {v}")
    return v


def _settings(
    shape_yx: tuple[int, int], *, weights: Any, seed: Any, device: str | None, precision: str,
    tile: Any, params: NSTParams | None, batch: Any, algorithm: str,
) -> _Settings:
    import torch

    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if algorithm not in ALGORITHMS:
        raise InputError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if tile is not None:
        if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile <= 0 or tile % 16:
            raise InputError(f"tile must be a positive multiple of 16 (pixels), got {tile!r}")
        tile = int(tile)
    if batch is not None:
        batch = _check_int("batch", batch, 1)
    seed = _check_int("seed", seed, 0, 2**63)
    if params is None:
        params = k.NSTParams()
    elif not isinstance(params, k.NSTParams):
        raise InputError(f"params must be an NSTParams, got {type(params).__name__}")
    for layer in (*params.style_layers, *params.content_layers):
        if not 0 <= int(layer) <= k.LAST_LAYER:
            raise InputError(f"NST layer {layer} is beyond VGG-19's features (0..{k.LAST_LAYER})")
    dev = resolve_device(device)
    try:
        dtype = torch.device(dev).type
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"device: {exc}") from None
    if dtype not in ("cpu", "cuda"):
        raise InputError(f"device must be cpu or cuda, got {dev!r}")
    try:
        alg = k.resolve_algorithm(algorithm, dev, precision, shape_yx, single_threaded=True)
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"style transfer: {exc}") from None
    wkey = check_weights(weights)
    if dtype == "cpu":
        # One tilt per pass: each tilt's arithmetic is then the same whatever the grouping.
        kb = 1
        tb = batch or 1
    else:
        crop = shape_yx if tile is None else tuple(
            min(n, tile + 2 * k.tile_halo(params, backward=True)) for n in shape_yx)
        tb = batch or k.default_batch(crop, dev)
        kb = tb
    return _Settings(wkey, seed, dev, precision, alg, tile, params, tb, kb)


def _check_device_usable(device: str) -> None:
    """A CUDA graph needs a GPU here (local scheduler) or workers offering ``GPU=1``."""
    if _device_type(device) != "cuda":
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


def _extrema(arrays: Sequence[xr.DataArray], names: Sequence[str]) -> list[tuple[float, float]]:
    """Global (min, max) of each array: one small eager reduction for all of them."""
    parts = []
    for a in arrays:
        parts += [a.data.min(), a.data.max()]
    vals = compute(parts, label="style transfer: input ranges")
    out = []
    for i, n in enumerate(names):
        lo, hi = float(vals[2 * i]), float(vals[2 * i + 1])
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise InputError(f"'{n}' has NaN or inf values")
        if not hi > lo:
            raise InputError(f"'{n}' is constant ({lo:g}); cannot min-max normalise it")
        out.append((lo, hi))
    return out


# --------------------------------------------------------------------------------------------
# worker-side task functions
# --------------------------------------------------------------------------------------------
def _vgg(cfg: dict[str, Any]):
    try:
        return k.get_vgg(cfg["weights"], seed=cfg["seed"], device=cfg["device"])
    except k.WeightsUnavailableError as exc:  # a worker without the client's files
        raise InputError(str(exc).splitlines()[0]) from None


def _grams_block(s: np.ndarray, *, cfg: dict[str, Any], vmin: float, vmax: float) -> tuple:
    """Grams (one (b, C, C) float32 array per style layer) + per-tilt mean, std of a block."""
    vgg = _vgg(cfg)
    sn = k.normalise(s, vmin, vmax)
    with k.single_threaded_torch():
        grams = k.style_grams(vgg, sn, params=cfg["params"], batch=cfg["batch"],
                              precision=cfg["precision"], algorithm=cfg["algorithm"],
                              device=cfg["device"], tile=cfg["tile"])
    s64 = np.asarray(s, dtype=np.float64)
    return (*[g.float().cpu().numpy() for g in grams],
            s64.mean(axis=(1, 2)), s64.std(axis=(1, 2)))


def _nst_block(c: np.ndarray, x: np.ndarray, *rest: np.ndarray, cfg: dict[str, Any],
               crange: tuple[float, float], xrange: tuple[float, float]) -> np.ndarray:
    """One task: normalise, stylise with the tilts' Grams, match the style mean/std."""
    import torch

    *grams, mean, std = rest
    vgg = _vgg(cfg)
    cn = k.normalise(c, *crange)
    xn = k.normalise(x, *xrange)
    gt = [torch.tensor(np.asarray(g), dtype=torch.float32) for g in grams]
    with k.single_threaded_torch():
        if cfg["tile"] is None:
            out = k.stylise(vgg, cn, xn, gt, params=cfg["params"], batch=cfg["batch"],
                            precision=cfg["precision"], algorithm=cfg["algorithm"], streams=1,
                            device=cfg["device"])
        else:
            out = k.stylise_tiled(vgg, cn, xn, gt, tile=cfg["tile"], params=cfg["params"],
                                  batch=cfg["batch"], precision=cfg["precision"],
                                  algorithm=cfg["algorithm"], device=cfg["device"])
    return k.match_mean_std(out, mean, std)


# --------------------------------------------------------------------------------------------
# Gram datasets
# --------------------------------------------------------------------------------------------
def _gram_var(layer: int) -> str:
    return f"gram_{int(layer)}"


def _grams_from(style: xr.DataArray, s: _Settings, srange: tuple[float, float]) -> xr.Dataset:
    """The lazy Gram dataset of a validated style stack with known extrema."""
    data = style.data
    t = data.shape[0]
    tch = _task_chunks(t, s.task_batch)
    blocks = _whole_tilts(data, tch)
    layers = [int(v) for v in s.params.style_layers]
    cfg = s.kernel_cfg()
    token = tokenize(blocks.name, cfg, srange)
    with gpu_annotation(s.device):
        packed = da.map_blocks(
            _grams_block, blocks, cfg=cfg, vmin=srange[0], vmax=srange[1], drop_axis=[1, 2],
            chunks=(tch,), dtype=object, meta=np.empty((0,), dtype=object),
            name=f"style-grams-{token}",
        )
    out: dict[str, Any] = {}
    for i, layer in enumerate(layers):
        c = _layer_channels(layer)
        arr = packed.map_blocks(
            operator.getitem, i, new_axis=[1, 2], chunks=(tch, (c,), (c,)), dtype=np.float32,
            meta=np.empty((0, 0, 0), np.float32), name=f"style-gram-{layer}-{token}",
        )
        out[_gram_var(layer)] = (("tilt", f"gram_{layer}_i", f"gram_{layer}_j"), arr)
    for i, var in ((len(layers), "style_mean"), (len(layers) + 1, "style_std")):
        arr = packed.map_blocks(operator.getitem, i, chunks=(tch,), dtype=np.float64,
                                meta=np.empty((0,), np.float64), name=f"{var}-{token}")
        out[var] = (("tilt",), arr)
    coords = {"tilt": style["tilt"].variable} if "tilt" in style.coords else {}
    attrs = {
        "kind": GRAMS_KIND,
        "source": _source(style, "style"),
        "style_shape": [int(n) for n in style.shape],
        "style_vmin": float(srange[0]),
        "style_vmax": float(srange[1]),
        **s.grams_attrs(),
        "gram": "G = F F^T / (H_l W_l) of VGG-19 features[l] of the min-max normalised style "
                "tilt (METHOD.md section 4)",
    }
    return xr.Dataset(out, coords=coords, attrs=attrs)


def style_grams_dataset(
    style: xr.DataArray,
    *,
    weights: Any = "imagenet",
    seed: int = 0,
    device: str | None = None,
    precision: str = "fp32",
    tile: int | None = None,
    params: NSTParams | None = None,
    batch: int | None = None,
    algorithm: str = "auto",
) -> xr.Dataset:
    """Gram matrices of a style tilt-series, lazily (compute once, reuse for many tomograms).

    Parameters
    ----------
    style : DataArray (tilt, y, x)
        The style stack in its original units (a measured reference of another tomogram).
        ``attrs["source"]`` (else its name) is recorded as the dataset's ``source``.
    weights, seed, device, precision, tile, params, batch, algorithm
        As in :func:`style_transfer`; use the same values there.

    Returns
    -------
    xarray.Dataset
        ``gram_<l>`` (tilt, gram_<l>_i, gram_<l>_j) float32 for every style layer ``l``,
        ``style_mean``/``style_std`` (tilt,) float64 (``ddof=0``, of the original stack),
        chunked one task (1 tilt, or ``batch``) per chunk; attrs record everything the Grams
        depend on: ``weights`` (``"random"``, ``"imagenet"`` or the file's resolved path),
        ``weights_seed`` (random), ``weights_sha256`` (file), ``precision``, ``algorithm``
        (resolved), ``tile``, ``style_layers``, ``device`` (cpu/cuda), ``kernel_batch``,
        ``torch`` (version), ``style_vmin``/``style_vmax``, ``style_shape``, ``source``.

    Notes
    -----
    The style stack's min/max are computed now (a small reduction on the current client);
    the Grams are computed per tilt by whoever computes or saves the dataset.
    """
    style = _as_tilts(style, "style")
    s = _settings(tuple(style.shape[1:]), weights=weights, seed=seed, device=device,
                  precision=precision, tile=tile, params=params, batch=batch, algorithm=algorithm)
    _check_device_usable(s.device)
    (srange,) = _extrema([style], [_source(style, "style")])
    return _grams_from(style, s, srange)


def grams_group(style_var: str) -> str:
    """Store group of the cached Grams of ``GROUP/VAR``:
    ``"style_grams/tomo_001_tiltseries_measured"`` for ``"tomo_001/tiltseries/measured"``."""
    return f"{GRAMS_ROOT}/{style_var.strip('/').replace('/', '_')}"


def save_style_grams(ds: xr.Dataset, store: str | Path, group: str, *,
                     overwrite: bool = False) -> str:
    """Write a Gram dataset into a run store and mark the group complete.

    The group's stage status is ``running`` while it is written and ``complete`` only after
    the last chunk, so :func:`load_style_grams` never trusts an interrupted write; a failed
    write removes the group (and a store created for it).

    Returns
    -------
    str
        The group written.

    Raises
    ------
    OutputExistsError
        The group exists and ``overwrite`` is false.
    """
    if not isinstance(ds, xr.Dataset) or ds.attrs.get("kind") != GRAMS_KIND:
        raise InputError("save_style_grams: not a Gram dataset (use style_grams_dataset)")
    group = group.strip("/")
    if not group:
        raise InputError("save_style_grams: empty group")
    p = Path(store)
    if p.exists() and not st.is_store(p):
        raise InputError(f"{p}: exists and is not a Zarr store")
    if st.is_store(p):
        import zarr

        root = zarr.open_group(str(p), mode="r")
        if group in root and not overwrite:
            raise OutputExistsError(f"{store}: {group} exists; pass --overwrite to replace it")
    info = {"stage": "style_grams", "source": ds.attrs.get("source"),
            "weights": ds.attrs.get("weights"), "precision": ds.attrs.get("precision"),
            "tile": ds.attrs.get("tile")}
    with st.rollback_on_error(p, group, **info):
        st.open_root(p, create=True)
        st.mark_stage(p, group, status="running", **info)
        out = ds.copy()
        for v in out.variables.values():
            v.encoding.clear()
        delayed = out.to_zarr(str(p), group=group, mode="w", zarr_format=3, consolidated=False,
                              compute=False)
        compute(delayed, label=f"style Grams -> {group}")
        st.mark_stage(p, group, status="complete", **info)
    return group


def load_style_grams(store: str | Path, group: str) -> xr.Dataset | None:
    """The Gram dataset saved at ``group`` (lazy), or None if absent or not marked complete."""
    group = group.strip("/")
    if not st.is_store(store):
        return None
    try:
        status = st.stage_status(store).get(group, {})
    except Exception:  # noqa: BLE001 - an unreadable store: no usable cache
        return None
    if status.get("status") != "complete":
        return None
    try:
        ds = xr.open_zarr(str(store), group=group, consolidated=False, zarr_format=3)
    except Exception:  # noqa: BLE001 - missing/damaged group: recompute rather than fail
        return None
    if ds.attrs.get("kind") != GRAMS_KIND:
        return None
    return ds


def _norm(v: Any) -> Any:
    """JSON-like normal form (tuples -> lists) for attr comparisons."""
    if isinstance(v, dict):
        return {str(key): _norm(x) for key, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _diff(ds: xr.Dataset, expected: dict[str, Any], keys: Sequence[str]) -> str | None:
    for key in keys:
        have, want = _norm(ds.attrs.get(key)), _norm(expected.get(key))
        if have != want:
            return f"{key} {have!r} (expected {want!r})"
    return None


def grams_match(
    ds: xr.Dataset,
    *,
    style: xr.DataArray | None = None,
    weights: Any = "imagenet",
    seed: int = 0,
    device: str | None = None,
    precision: str = "fp32",
    tile: int | None = None,
    params: NSTParams | None = None,
    batch: int | None = None,
    algorithm: str = "auto",
) -> bool:
    """Whether ``ds`` holds exactly the Grams :func:`style_grams_dataset` would compute now.

    Compares the recorded settings (weights and their seed/hash, precision, resolved
    algorithm, tile, style layers, device type, kernel batch, torch version). With ``style``
    also its source name, shape and min/max (a small reduction, computed now).
    Raises :class:`InputError` for unusable settings (e.g. weights not available).
    """
    if not isinstance(ds, xr.Dataset) or ds.attrs.get("kind") != GRAMS_KIND:
        return False
    if style is not None:
        style = _as_tilts(style, "style")
        shape_yx = tuple(style.shape[1:])
    else:
        shape = ds.attrs.get("style_shape") or [0, 1, 1]
        shape_yx = (int(shape[1]), int(shape[2]))
    s = _settings(shape_yx, weights=weights, seed=seed, device=device, precision=precision,
                  tile=tile, params=params, batch=batch, algorithm=algorithm)
    if _diff(ds, s.grams_attrs(), _SETTING_KEYS) is not None:
        return False
    for layer in s.params.style_layers:
        if _gram_var(layer) not in ds.data_vars:
            return False
    if style is None:
        return True
    if _norm(ds.attrs.get("source")) != _source(style, "style"):
        return False
    if _norm(ds.attrs.get("style_shape")) != [int(n) for n in style.shape]:
        return False
    (srange,) = _extrema([style], [_source(style, "style")])
    return _norm([ds.attrs.get("style_vmin"), ds.attrs.get("style_vmax")]) == list(srange)


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Prepared:
    content: xr.DataArray
    init: xr.DataArray
    style: xr.DataArray | xr.Dataset
    names: dict[str, str]
    settings: _Settings
    grams_settings: _Settings | None  # for a style stack given as a DataArray


def _angles_of(obj: xr.DataArray | xr.Dataset) -> np.ndarray | None:
    if "tilt" in obj.coords and np.issubdtype(obj["tilt"].dtype, np.number):
        return np.asarray(obj["tilt"].values, np.float64)
    return None


def _pair_by_angle(content: xr.DataArray, style: xr.DataArray | xr.Dataset,
                   names: dict[str, str], match_angles: str,
                   match_option: str) -> xr.DataArray | xr.Dataset:
    """``style`` reordered so that its tilt i has content tilt i's angle (see
    :func:`faket_dask.tilt_pairing.match_tilts`); by position when either lacks angles."""
    t = content.sizes["tilt"]
    ca, sa = _angles_of(content), _angles_of(style)
    if ca is None or sa is None:
        ts = style.sizes.get("tilt", 0)
        if ts != t:
            raise InputError(f"style stack '{names['style']}' has {ts} tilts but content "
                             f"'{names['content']}' has {t}")
        return style
    idx = match_tilts(ca, sa, target=f"content '{names['content']}'",
                      source=f"style stack '{names['style']}'", mode=match_angles,
                      option=match_option)
    if is_identity(idx):
        return style
    return style.isel(tilt=idx)


def _prepare(content: Any, style: Any, init: Any, *, weights: Any, seed: Any, device: Any,
             batch: Any, precision: str, tile: Any, params: NSTParams | None,
             algorithm: str, match_angles: str = "exact",
             match_option: str = "match_angles='nearest'") -> _Prepared:
    content = _as_tilts(content, "content")
    init = _as_tilts(init, "init")
    names = {"content": _source(content, "content"), "init": _source(init, "init")}
    if content.shape != init.shape:
        raise InputError(f"content '{names['content']}' has shape {tuple(content.shape)} but "
                         f"init '{names['init']}' has {tuple(init.shape)}")
    t = content.sizes["tilt"]
    kw = dict(weights=weights, seed=seed, device=device, precision=precision, tile=tile,
              params=params, batch=batch, algorithm=algorithm)
    if isinstance(style, xr.Dataset):
        names["style"] = _source(style, "style")
        if style.attrs.get("kind") != GRAMS_KIND:
            raise InputError(f"style dataset '{names['style']}' is not a Gram dataset "
                             "(style_grams_dataset / load_style_grams)")
    else:
        style = _as_tilts(style, "style")
        names["style"] = _source(style, "style")
    style = _pair_by_angle(content, style, names, match_angles, match_option)
    s = _settings(tuple(content.shape[1:]), **kw)
    gs = None
    if isinstance(style, xr.Dataset):
        want = s.grams_attrs()
        bad = _diff(style, want, _MEANING_KEYS)
        if bad is not None:
            raise InputError(f"style Grams '{names['style']}' were computed with other settings: "
                             f"{bad}; recompute them (style_grams_dataset)")
        for var in [_gram_var(v) for v in s.params.style_layers] + ["style_mean", "style_std"]:
            if var not in style.data_vars:
                raise InputError(f"style Grams '{names['style']}' have no variable '{var}'")
    else:
        gs = _settings(tuple(style.shape[1:]), **kw)
    return _Prepared(content, init, style, names, s, gs)


def check_inputs(
    content: Any, style: Any, init: Any, *, weights: Any = "imagenet", seed: int = 0,
    device: str | None = None, batch: int | None = None, precision: str = "fp32",
    tile: int | None = None, params: NSTParams | None = None, algorithm: str = "auto",
    match_angles: str = "exact", match_option: str = "match_angles='nearest'",
) -> None:
    """Everything :func:`style_transfer` validates before reading data (cheap, no compute).

    The CLI calls this before it starts a cluster. Raises :class:`InputError`.
    """
    _prepare(content, style, init, weights=weights, seed=seed, device=device, batch=batch,
             precision=precision, tile=tile, params=params, algorithm=algorithm,
             match_angles=match_angles, match_option=match_option)


def style_transfer(
    content: xr.DataArray,
    style: xr.DataArray | xr.Dataset,
    init: xr.DataArray,
    *,
    weights: Any = "imagenet",
    seed: int = 0,
    device: str | None = None,
    batch: int | None = None,
    precision: str = "fp32",
    tile: int | None = None,
    params: NSTParams | None = None,
    name: str = "faket",
    algorithm: str = "auto",
    match_angles: str = "exact",
    match_option: str = "match_angles='nearest'",
) -> xr.DataArray:
    """FakET's neural style transfer of a tilt-series (METHOD.md §4), lazily.

    Parameters
    ----------
    content : DataArray (tilt, y, x)
        CONTENT (the noiseless projections with a quarter of the noise), any units.
    style : DataArray (tilt, y, x) or Dataset
        The style stack (original units), or its Grams from
        :func:`style_grams_dataset` / :func:`load_style_grams` (then nothing of the style
        stack is recomputed; the Grams must come from the same weights and style layers).
    init : DataArray (tilt, y, x)
        NOISY, the image the optimisation starts from; same shape as ``content``.
    weights : {"imagenet", "random"} or path
        VGG-19 weights: torchvision's ImageNet weights from the local torch hub cache (fetch
        them with ``faket-dask fetch-weights``), random ones made by
        ``torch.manual_seed(seed); torchvision.models.vgg19(weights=None)``, or a torchvision
        VGG-19 state-dict file (readable by every worker).
    seed : int
        Seed of the random weights (ignored otherwise).
    device : str, optional
        ``"cpu"``, ``"cuda"``; None: CUDA when torch sees a GPU here. CUDA tasks ask for the
        worker resource ``GPU=1``.
    batch : int, optional
        Tilts per task (default 1 on CPU; on CUDA as many as fit, ``default_batch``). On CPU
        the kernel still runs one tilt per pass, so the result does not depend on ``batch``;
        on CUDA a task's tilts are one pass.
    precision : {"fp32", "tf32", "bf16"}
    tile : int, optional
        Process every tilt in ``tile × tile`` tiles (a multiple of 16): the Grams and the
        gradient are computed tile by tile, so a large tilt's VGG activations are never held
        whole (peak ≈ ``(tile + 320)²`` pixels of activations per task).
    params : NSTParams, optional
        Method settings (default: the paper's).
    name : str
        Name of the result.
    algorithm : {"auto", "winograd", "direct"}
        Convolution algorithm; ``"auto"`` is resolved now (Winograd from conv3_1 on CPU for
        tilts of at least 192² pixels when torch has NNPACK, else direct).
    match_angles : {"exact", "nearest"}
        How content tilts meet style tilts when both carry angles: each content tilt is
        styled with the style tilt *of the same angle*, whatever the stacks' orders
        (``"exact"``: the angle sets must agree within half a step, else InputError naming
        both ranges; ``"nearest"``: the nearest style angle, counts may differ). Without
        angles on either side, tilt i styles tilt i and the counts must agree.
    match_option : str
        How the caller spells the ``"nearest"`` setting (named in the refusal).

    Returns
    -------
    DataArray (tilt, y, x), float32
        Lazy; content's coords and chunks; every tilt has the style tilt's mean and std.
        attrs: content's, plus ``style`` (the style stack's source), ``nst_weights``,
        ``nst_seed``, ``nst_precision``, ``nst_tile``, ``nst_algorithm``, ``nst_batch``,
        ``nst_device``, ``nst_params``, ``nst_content``/``nst_init`` (sources) and the input
        ranges ``nst_content_range``, ``nst_init_range``, ``nst_style_range``.

    Raises
    ------
    InputError
        Before any data is read: not tilt-series, shapes or tilt counts differ, bad tile,
        precision or batch, weights unavailable; after the (eager) input ranges: NaN/inf or a
        constant stack.

    Notes
    -----
    The min/max of the three stacks are computed now (see the module docstring); the rest is
    computed by whoever computes or saves the result.
    """
    prep = _prepare(content, style, init, weights=weights, seed=seed, device=device,
                    batch=batch, precision=precision, tile=tile, params=params,
                    algorithm=algorithm, match_angles=match_angles,
                    match_option=match_option)
    s = prep.settings
    _check_device_usable(s.device)
    content, init, names = prep.content, prep.init, prep.names
    if isinstance(prep.style, xr.Dataset):
        crange, xrange = _extrema([content, init], [names["content"], names["init"]])
        grams = prep.style
        srange = (grams.attrs.get("style_vmin"), grams.attrs.get("style_vmax"))
    else:
        crange, xrange, srange = _extrema([content, init, prep.style],
                                          [names["content"], names["init"], names["style"]])
        grams = _grams_from(prep.style, prep.grams_settings, srange)

    t = content.sizes["tilt"]
    tch = _task_chunks(t, s.task_batch)
    c = _whole_tilts(content.data, tch)
    x = _whole_tilts(init.data, tch)
    args: list[Any] = [c, ("t", "y", "x"), x, ("t", "y", "x")]
    for i, layer in enumerate(s.params.style_layers):
        g = _dask(grams[_gram_var(layer)].data).rechunk({0: tch, 1: -1, 2: -1})
        args += [g, ("t", f"a{i}", f"b{i}")]
    for var in ("style_mean", "style_std"):
        args += [_dask(grams[var].data).rechunk({0: tch}), ("t",)]
    cfg = s.kernel_cfg()
    token = tokenize(c.name, x.name, [a.name for a in args[4::2]], cfg, crange, xrange)
    with gpu_annotation(s.device):
        out = da.blockwise(
            _nst_block, ("t", "y", "x"), *args, cfg=cfg, crange=crange, xrange=xrange,
            concatenate=True, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32),
            name=f"style-transfer-{token}",
        )
    out = out.rechunk(content.data.chunks)

    attrs = {key: v for key, v in content.attrs.items() if key not in ("source", "noise_modality")}
    attrs.update({
        "style": names["style"],
        "nst_content": names["content"],
        "nst_init": names["init"],
        "nst_weights": s.weights,
        "nst_seed": int(s.seed),
        "nst_precision": s.precision,
        "nst_tile": s.tile,
        "nst_algorithm": s.algorithm,
        "nst_batch": int(s.task_batch),
        "nst_device": _device_type(s.device),
        "nst_params": _norm(dataclasses.asdict(s.params)),
        "nst_content_range": [float(v) for v in crange],
        "nst_init_range": [float(v) for v in xrange],
        "nst_style_range": [None if v is None else float(v) for v in srange],
        "nst_match_angles": match_angles,
    })
    style_angles = _angles_of(prep.style)
    if style_angles is not None:
        # which style tilt styled each content tilt, for the record
        attrs["nst_style_tilt_deg"] = [float(a) for a in style_angles]
    return xr.DataArray(out, dims=TILT_DIMS, coords=content.coords, attrs=attrs, name=name)
