"""The neural style-transfer stage (``docs/method.md §4``): CONTENT styled like STYLE, from NOISY.

The maths is :mod:`faket_dask.kernels.nst`; this module only builds Dask graphs. The Gram cache
is :mod:`.style_grams`, the client-side checks and settings :mod:`.style_settings`.

Graph of :func:`style_transfer` (one tomogram)
----------------------------------------------
0. **Validation** on the client, before anything is read: dims, shapes, tilt counts, tile,
   precision, and the VGG-19 weights (``"imagenet"`` must be in the local torch hub cache; a
   file is loaded once here to check it). Workers never validate, they only build the network
   with :func:`~faket_dask.kernels.nst.get_vgg` (once per worker process).
1. **Stack-wide extrema** (min/max of CONTENT, NOISY and STYLE, the method's whole-stack
   min-max normalisation) are computed *eagerly*, as one small reduction on the current Dask
   client (or the local scheduler), when the graph is built. Keeping them inside the graph
   would make every per-tilt task depend on a read of the whole stack, and Dask would then
   hold all input chunks in memory until their tilt's task ran; computing them first costs one
   extra streaming read and keeps memory per task bounded. They are exact (a min is a min), so
   they do not depend on the chunking, and they are recorded in the output's attrs.
2. **Style Grams** (:func:`~.style_grams.style_grams_dataset`): one task per tilt (or per
   ``batch`` tilts) on the whole style tilt, also giving the tilt's mean/std (float64,
   ``ddof=0``) of the original style stack; or a saved Gram dataset passed as ``style``.
3. **Stylisation**: CONTENT and NOISY are regrouped to whole tilts ``(b, Y, X)`` (this only
   concatenates the ``(1, cy, X)`` chunks of the same tilts), each task normalises its tilts
   with the global extrema, runs :func:`~faket_dask.kernels.nst.stylise` (or
   ``stylise_tiled`` with ``tile``) with the tilts' Grams, then ``match_mean_std`` with the
   style tilts' mean/std; the result is split back into the input's chunks.

Determinism
-----------
Everything that changes the arithmetic is fixed when the graph is built, never by the worker:
the convolution algorithm (``"auto"`` is resolved here, as for a single-threaded task), the
kernel batch (one tilt per pass on CPU, the task's tilts on GPU) and the thread count (every
task runs its kernel calls inside one :func:`~faket_dask.kernels.nst.nst_runtime` with
``threads=1``: one intra-op torch thread, ``streams=1``). Parallelism comes from Dask tasks,
one per tilt. So on CPU the output is bit-identical for any input chunking, any ``batch``
(tilts per task), any number of workers and threads per worker, and equal to
``style_transfer_stack(..., batch=1, streams=1)`` run single-threaded with the same algorithm.
(A torch task of another stage that sets the worker's thread count while an NST task runs would
break this; the pipeline runs stages one after the other.)
"""
from __future__ import annotations

import dataclasses
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from ..datamodel import TILT_DIMS
from ..errors import InputError
from ..graph_fusion import fuse_private_inputs
from ..params.nst import NSTParams
from ..tilt_pairing import is_identity, match_tilts
from ._common import gpu_annotation
from .style_grams import GRAMS_KIND, MEANING_KEYS, gram_var, grams_from
from .style_settings import (
    Settings, as_dask, as_tilts, attrs_difference, check_device_usable, device_type, extrema,
    json_normal, settings, source_name, task_chunks, task_vgg, whole_tilts,
)

__all__ = ["check_inputs", "style_transfer"]


def _nst_block(c: np.ndarray, x: np.ndarray, *rest: np.ndarray, cfg: dict[str, Any],
               crange: tuple[float, float], xrange: tuple[float, float]) -> np.ndarray:
    """One task: normalise, stylise with the tilts' Grams, match the style mean/std."""
    import torch

    from ..kernels.nst import match_mean_std, normalise, nst_runtime, stylise, stylise_tiled

    *grams, mean, std = rest
    vgg = task_vgg(cfg)
    cn = normalise(c, *crange)
    xn = normalise(x, *xrange)
    gt = [torch.tensor(np.asarray(g), dtype=torch.float32) for g in grams]
    with nst_runtime(cfg["precision"], cfg["device"], threads=1):
        if cfg["tile"] is None:
            out = stylise(vgg, cn, xn, gt, params=cfg["params"], batch=cfg["batch"],
                          precision=cfg["precision"], algorithm=cfg["algorithm"], streams=1,
                          device=cfg["device"])
        else:
            out = stylise_tiled(vgg, cn, xn, gt, tile=cfg["tile"], params=cfg["params"],
                                batch=cfg["batch"], precision=cfg["precision"],
                                algorithm=cfg["algorithm"], device=cfg["device"])
    return match_mean_std(out, mean, std)


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Prepared:
    content: xr.DataArray
    init: xr.DataArray
    style: xr.DataArray | xr.Dataset
    names: dict[str, str]
    settings: Settings
    grams_settings: Settings | None  # for a style stack given as a DataArray


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
    content = as_tilts(content, "content")
    init = as_tilts(init, "init")
    names = {"content": source_name(content, "content"), "init": source_name(init, "init")}
    if content.shape != init.shape:
        raise InputError(f"content '{names['content']}' has shape {tuple(content.shape)} but "
                         f"init '{names['init']}' has {tuple(init.shape)}")
    kw = dict(weights=weights, seed=seed, device=device, precision=precision, tile=tile,
              params=params, batch=batch, algorithm=algorithm)
    if isinstance(style, xr.Dataset):
        names["style"] = source_name(style, "style")
        if style.attrs.get("kind") != GRAMS_KIND:
            raise InputError(f"style dataset '{names['style']}' is not a Gram dataset "
                             "(style_grams_dataset / load_style_grams)")
    else:
        style = as_tilts(style, "style")
        names["style"] = source_name(style, "style")
    style = _pair_by_angle(content, style, names, match_angles, match_option)
    s = settings(tuple(content.shape[1:]), **kw)
    gs = None
    if isinstance(style, xr.Dataset):
        want = s.grams_attrs()
        bad = attrs_difference(style, want, MEANING_KEYS)
        if bad is not None:
            raise InputError(f"style Grams '{names['style']}' were computed with other settings: "
                             f"{bad}; recompute them (style_grams_dataset)")
        for var in [gram_var(v) for v in s.params.style_layers] + ["style_mean", "style_std"]:
            if var not in style.data_vars:
                raise InputError(f"style Grams '{names['style']}' have no variable '{var}'")
    else:
        gs = settings(tuple(style.shape[1:]), **kw)
    return _Prepared(content, init, style, names, s, gs)


def check_inputs(
    content: Any, style: Any, init: Any, *, weights: Any = "imagenet", seed: int = 0,
    device: str | None = None, batch: int | None = None, precision: str = "fp32",
    tile: int | str | None = None, params: NSTParams | None = None, algorithm: str = "auto",
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
    tile: int | str | None = None,
    params: NSTParams | None = None,
    name: str = "faket",
    algorithm: str = "auto",
    match_angles: str = "exact",
    match_option: str = "match_angles='nearest'",
) -> xr.DataArray:
    """FakET's neural style transfer of a tilt-series (``docs/method.md §4``), lazily.

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
        Tilts per task (default ``default_batch``: 2**16 pixels on CPU, i.e. 4 tilts of 128²,
        1 from 256²; on CUDA as many as fit). On CPU
        the kernel still runs one tilt per pass, so the result does not depend on ``batch``;
        on CUDA a task's tilts are one pass.
    precision : {"fp32", "tf32", "bf16"}
    tile : int or "auto", optional
        Process every tilt in ``tile × tile`` tiles (a multiple of 16): the Grams and the
        gradient are computed tile by tile, so a large tilt's VGG activations are never held
        whole (peak ≈ ``(tile + 320)²`` pixels of activations per task). ``"auto"``: untiled
        when a tilt fits the memory of one task on the workers, else the largest tile that
        fits (:mod:`faket_dask.stages.nst_budget`). None: untiled.
    params : NSTParams, optional
        Method settings (default: the paper's).
    name : str
        Name of the result.
    algorithm : {"auto", "winograd", "direct"}
        Convolution algorithm; ``"auto"`` is direct on every machine (Winograd from conv3_1 on
        only when asked for; :mod:`faket_dask.kernels.nst.backend`).
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
        ``nst_seed``, ``nst_precision``, ``nst_tile`` (the tile used, None = untiled),
        ``nst_tile_requested``, ``nst_task_memory_MiB`` (``"auto"``: the memory of one task it
        was chosen for), ``nst_algorithm``, ``nst_batch``,
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
    check_device_usable(s.device)
    content, init, names = prep.content, prep.init, prep.names
    if isinstance(prep.style, xr.Dataset):
        crange, xrange = extrema([content, init], [names["content"], names["init"]])
        grams = prep.style
        srange = (grams.attrs.get("style_vmin"), grams.attrs.get("style_vmax"))
    else:
        crange, xrange, srange = extrema([content, init, prep.style],
                                          [names["content"], names["init"], names["style"]])
        grams = grams_from(prep.style, prep.grams_settings, srange)

    t = content.sizes["tilt"]
    tch = task_chunks(t, s.task_batch)
    c = whole_tilts(content.data, tch)
    x = whole_tilts(init.data, tch)
    args: list[Any] = [c, ("t", "y", "x"), x, ("t", "y", "x")]
    for i, layer in enumerate(s.params.style_layers):
        g = as_dask(grams[gram_var(layer)].data).rechunk({0: tch, 1: -1, 2: -1})
        args += [g, ("t", f"a{i}", f"b{i}")]
    for var in ("style_mean", "style_std"):
        args += [as_dask(grams[var].data).rechunk({0: tch}), ("t",)]
    cfg = s.kernel_cfg()
    token = tokenize(c.name, x.name, [a.name for a in args[4::2]], cfg, crange, xrange)
    with gpu_annotation(s.device):
        out = da.blockwise(
            _nst_block, ("t", "y", "x"), *args, cfg=cfg, crange=crange, xrange=xrange,
            concatenate=True, dtype=np.float32, meta=np.empty((0, 0, 0), np.float32),
            name=f"style-transfer-{token}",
        )
    # each task reads its own inputs: no worker waits for a read queued behind the other
    # worker's NST task (graph_fusion.py says why)
    out = fuse_private_inputs(out)
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
        "nst_tile_requested": tile,
        "nst_task_memory_MiB": s.tile_budget_MiB,
        "nst_algorithm": s.algorithm,
        "nst_batch": int(s.task_batch),
        "nst_device": device_type(s.device),
        "nst_params": json_normal(dataclasses.asdict(s.params)),
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
