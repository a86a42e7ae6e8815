"""Style Gram matrices as a lazy Dataset, and their cache in a run store (``docs/method.md §4``).

The Gram matrices of a style stack depend only on the stack and a few settings, so they are
computed once per style stack and reused for every tomogram it styles. A Gram dataset
(:func:`style_grams_dataset`) records every setting it depends on in its attrs;
:func:`save_style_grams` writes it into the store under the one cache key
``faket_dask.store.layout.style_grams_group(style_var)`` (``style_grams/tomo_001_tiltseries_
measured`` for ``tomo_001/tiltseries/measured``, used by the pipeline and by
``faket-dask style`` alike), :func:`load_style_grams` trusts only a completely written group,
and :func:`grams_match` says whether cached Grams are exactly what would be computed now.
"""
from __future__ import annotations

import operator
from pathlib import Path
from typing import Any, Final

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from .. import store as st
from ..errors import InputError, OutputExistsError
from ..params.nst import NSTParams, layer_channels
from ..progress import compute
from ._common import gpu_annotation
from .style_settings import (
    Settings, as_tilts, attrs_difference, check_device_usable, extrema, json_normal, settings,
    source_name, task_chunks, task_vgg, whole_tilts,
)

__all__ = [
    "GRAMS_KIND",
    "MEANING_KEYS",
    "SETTING_KEYS",
    "gram_var",
    "grams_from",
    "grams_match",
    "load_style_grams",
    "save_style_grams",
    "style_grams_dataset",
]

#: ``attrs["kind"]`` of a Gram dataset.
GRAMS_KIND: Final = "faket_dask.style_grams"
#: Gram attrs that must agree for cached Grams to be reused (bit-identical results).
SETTING_KEYS: Final = ("weights", "weights_seed", "weights_sha256", "precision", "algorithm",
                       "tile", "style_layers", "device", "kernel_batch", "torch")
#: Gram attrs that must agree for Grams to mean the same thing (same network and taps).
MEANING_KEYS: Final = ("weights", "weights_seed", "weights_sha256", "style_layers")


def gram_var(layer: int) -> str:
    """Variable of the Grams of ``features[layer]``: ``gram_<layer>``."""
    return f"gram_{int(layer)}"


def _grams_block(s: np.ndarray, *, cfg: dict[str, Any], vmin: float, vmax: float) -> tuple:
    """One task: Grams (one (b, C, C) float32 array per style layer) + per-tilt mean, std."""
    from ..kernels.nst import normalise, nst_runtime, style_grams

    vgg = task_vgg(cfg)
    sn = normalise(s, vmin, vmax)
    with nst_runtime(cfg["precision"], cfg["device"], threads=1):
        grams = style_grams(vgg, sn, params=cfg["params"], batch=cfg["batch"],
                            precision=cfg["precision"], algorithm=cfg["algorithm"],
                            device=cfg["device"], tile=cfg["tile"])
    s64 = np.asarray(s, dtype=np.float64)
    return (*[g.float().cpu().numpy() for g in grams],
            s64.mean(axis=(1, 2)), s64.std(axis=(1, 2)))


def grams_from(style: xr.DataArray, s: Settings, srange: tuple[float, float]) -> xr.Dataset:
    """The lazy Gram dataset of a validated style stack with known extrema."""
    data = style.data
    t = data.shape[0]
    tch = task_chunks(t, s.task_batch)
    blocks = whole_tilts(data, tch)
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
        c = layer_channels(layer)
        arr = packed.map_blocks(
            operator.getitem, i, new_axis=[1, 2], chunks=(tch, (c,), (c,)), dtype=np.float32,
            meta=np.empty((0, 0, 0), np.float32), name=f"style-gram-{layer}-{token}",
        )
        out[gram_var(layer)] = (("tilt", f"gram_{layer}_i", f"gram_{layer}_j"), arr)
    for i, var in ((len(layers), "style_mean"), (len(layers) + 1, "style_std")):
        arr = packed.map_blocks(operator.getitem, i, chunks=(tch,), dtype=np.float64,
                                meta=np.empty((0,), np.float64), name=f"{var}-{token}")
        out[var] = (("tilt",), arr)
    coords = {"tilt": style["tilt"].variable} if "tilt" in style.coords else {}
    attrs = {
        "kind": GRAMS_KIND,
        "source": source_name(style, "style"),
        "style_shape": [int(n) for n in style.shape],
        "style_vmin": float(srange[0]),
        "style_vmax": float(srange[1]),
        **s.grams_attrs(),
        "gram": "G = F F^T / (H_l W_l) of VGG-19 features[l] of the min-max normalised style "
                "tilt (docs/method.md section 4)",
    }
    return xr.Dataset(out, coords=coords, attrs=attrs)


def style_grams_dataset(
    style: xr.DataArray,
    *,
    weights: Any = "imagenet",
    seed: int = 0,
    device: str | None = None,
    precision: str = "fp32",
    tile: int | str | None = None,
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
        As in :func:`~faket_dask.stages.style_transfer.style_transfer`; use the same values
        there.

    Returns
    -------
    xarray.Dataset
        ``gram_<l>`` (tilt, gram_<l>_i, gram_<l>_j) float32 for every style layer ``l``,
        ``style_mean``/``style_std`` (tilt,) float64 (``ddof=0``, of the original stack),
        chunked one task (``batch`` tilts, default ``default_batch``) per chunk; attrs record everything the Grams
        depend on: ``weights`` (``"random"``, ``"imagenet"`` or the file's resolved path),
        ``weights_seed`` (random), ``weights_sha256`` (file), ``precision``, ``algorithm``
        (resolved), ``tile``, ``style_layers``, ``device`` (cpu/cuda), ``kernel_batch``,
        ``torch`` (version), ``style_vmin``/``style_vmax``, ``style_shape``, ``source``.

    Raises
    ------
    InputError
        Bad settings or style stack (before anything is read), NaN/inf or a constant stack
        (after the eager range).

    Notes
    -----
    The style stack's min/max are computed now (a small reduction on the current client);
    the Grams are computed per tilt by whoever computes or saves the dataset.
    """
    style = as_tilts(style, "style")
    s = settings(tuple(style.shape[1:]), weights=weights, seed=seed, device=device,
                 precision=precision, tile=tile, params=params, batch=batch, algorithm=algorithm)
    check_device_usable(s.device)
    (srange,) = extrema([style], [source_name(style, "style")])
    return grams_from(style, s, srange)


def save_style_grams(ds: xr.Dataset, store: str | Path, group: str, *,
                     overwrite: bool = False) -> str:
    """Write a Gram dataset into a run store and mark the group complete.

    ``group`` is the cache key, ``faket_dask.store.layout.style_grams_group(style_var)``. The
    group's stage status is ``running`` while it is written and ``complete`` only after the
    last chunk, so :func:`load_style_grams` never trusts an interrupted write; a failed write
    removes the group (and a store created for it).

    Returns
    -------
    str
        The group written.

    Raises
    ------
    InputError
        Not a Gram dataset, an empty group, or a path that is not a Zarr store.
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
        out = st.clear_encoding(ds.copy())
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


def grams_match(
    ds: xr.Dataset,
    *,
    style: xr.DataArray | None = None,
    weights: Any = "imagenet",
    seed: int = 0,
    device: str | None = None,
    precision: str = "fp32",
    tile: int | str | None = None,
    params: NSTParams | None = None,
    batch: int | None = None,
    algorithm: str = "auto",
) -> bool:
    """Whether ``ds`` holds exactly the Grams :func:`style_grams_dataset` would compute now.

    Compares the recorded settings (weights and their seed/hash, precision, resolved
    algorithm, tile, style layers, device type, kernel batch, torch version). With ``style``
    also its source name, shape and min/max (a small reduction, computed now).

    Raises
    ------
    InputError
        Unusable settings (e.g. weights not available).
    """
    if not isinstance(ds, xr.Dataset) or ds.attrs.get("kind") != GRAMS_KIND:
        return False
    if style is not None:
        style = as_tilts(style, "style")
        shape_yx = tuple(style.shape[1:])
    else:
        shape = ds.attrs.get("style_shape") or [0, 1, 1]
        shape_yx = (int(shape[1]), int(shape[2]))
    s = settings(shape_yx, weights=weights, seed=seed, device=device, precision=precision,
                 tile=tile, params=params, batch=batch, algorithm=algorithm)
    if attrs_difference(ds, s.grams_attrs(), SETTING_KEYS) is not None:
        return False
    for layer in s.params.style_layers:
        if gram_var(layer) not in ds.data_vars:
            return False
    if style is None:
        return True
    if json_normal(ds.attrs.get("source")) != source_name(style, "style"):
        return False
    if json_normal(ds.attrs.get("style_shape")) != [int(n) for n in style.shape]:
        return False
    (srange,) = extrema([style], [source_name(style, "style")])
    return json_normal([ds.attrs.get("style_vmin"), ds.attrs.get("style_vmax")]) == list(srange)
