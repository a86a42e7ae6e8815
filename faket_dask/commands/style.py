"""``faket-dask style`` (neural style transfer) and ``faket-dask fetch-weights``.

::

    faket-dask fetch-weights                  # once, on a machine with internet access
    faket-dask style run.zarr --tomo 0 --style tomo_001/tiltseries/measured [--weights imagenet]

``style`` reads ``tomo_NNN/tiltseries/content`` and ``.../noisy`` and writes
``tomo_NNN/tiltseries/faket``. The style stack's Gram matrices are cached in the store under the
one cache key ``store.layout.style_grams_group(STYLE)`` (``style_grams/<GROUP_VAR>``, the key
the pipeline writes too, so Grams of a ``simulate`` run are reused) while the settings they
depend on are unchanged (otherwise that cache group alone is recomputed). Everything that can
be checked without reading pixels (store, variables, shapes, tilt counts, tile, precision,
weights, existing output) is checked before a cluster is started.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..params.nst import DEFAULT_PRECISION, DEFAULT_WEIGHTS, PRECISIONS
from . import ClusterFile, Gpus, Overwrite, Scheduler, Workers, connect


def _cluster_has_gpus(client) -> bool:
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # older distributed
        info = client.scheduler_info()
    return any("GPU" in (w.get("resources") or {}) for w in info.get("workers", {}).values())


def _parse_tile(text: str) -> int | str | None:
    """``--tile``: ``auto``, ``none`` or a number (checked by the stage)."""
    from ..errors import InputError

    low = text.strip().lower()
    if low in ("auto", "none"):
        return None if low == "none" else "auto"
    try:
        return int(low)
    except ValueError:
        raise InputError(f"--tile must be auto, none or a multiple of 16, got '{text}'") from None


def style_cmd(
    store: Annotated[Path, typer.Argument(help="Run store with tomo_NNN/tiltseries/content and noisy.")],
    style: Annotated[str, typer.Option("--style", help="GROUP/VAR of the style tilt-series (measured data of another tomogram, same angles).")],
    tomo: Annotated[int, typer.Option(help="Tomogram index: reads and writes tomo_NNN/tiltseries.")] = 0,
    weights: Annotated[str, typer.Option(help="VGG-19 weights: imagenet (local torch hub cache, see fetch-weights), random, or a state-dict file.")] = DEFAULT_WEIGHTS,
    seed: Annotated[int, typer.Option(help="Seed of --weights random.")] = 0,
    tile: Annotated[str, typer.Option(help="auto: untiled whenever a tilt fits one task's memory on the workers, else tiled; N: TILE x TILE tiles (multiple of 16); none: never tile.")] = "auto",
    batch: Annotated[Optional[int], typer.Option(help="Tilts per task (default: 2**16 pixels' worth on CPU, 1 tilt from 256²; on GPU as many as fit).")] = None,
    precision: Annotated[str, typer.Option(help=", ".join(PRECISIONS) + ".")] = DEFAULT_PRECISION,
    device: Annotated[str, typer.Option(help="auto (cuda when the cluster's workers offer GPU=1), cpu or cuda.")] = "auto",
    match_angles: Annotated[str, typer.Option(help="Content tilts meet the style tilt of the same angle: exact (same angle set) or nearest.")] = "exact",
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
    gpus: Gpus = False,
    cluster: ClusterFile = None,
) -> None:
    """Neural style transfer (docs/method.md §4): CONTENT styled like --style, from NOISY -> faket."""
    from .. import store as st
    from ..errors import InputError
    from ..stages.style_grams import (
        grams_match, load_style_grams, save_style_grams, style_grams_dataset,
    )
    from ..stages.style_transfer import check_inputs, style_transfer
    from ..torch_import import import_torch_everywhere

    if not 0 <= tomo < 2**32:
        raise InputError(f"--tomo must be in [0, 2**32), got {tomo}")
    tile_opt = _parse_tile(tile)
    if precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device must be auto, cpu or cuda, got '{device}'")
    if not st.is_store(store):
        st.open_root(store)  # one-line "no such store" / "not a Zarr store"
    st.split_var_path(style)
    group = st.tiltseries_group(tomo)
    content = st.open_var(store, st.tiltseries_var(tomo, "content"))
    noisy = st.open_var(store, st.tiltseries_var(tomo, "noisy"))
    style_ts = st.open_var(store, style)
    style_ts.attrs["source"] = style.strip("/")  # names it in messages and in the output
    kw = dict(weights=weights, seed=seed, tile=tile_opt, batch=batch, precision=precision)
    pairing = dict(match_angles=match_angles, match_option="--match-angles nearest")
    check_inputs(content, style_ts, noisy, device="cuda" if device == "cuda" else "cpu", **kw,
                 **pairing)
    st.check_writable(store, st.tiltseries_var(tomo, "faket"), overwrite=overwrite)
    cache = st.style_grams_group(style)

    with connect(scheduler, workers, gpus, cluster) as client:
        import_torch_everywhere(client)  # before any task imports it (torch_import.py)
        dev = device if device != "auto" else ("cuda" if _cluster_has_gpus(client) else "cpu")
        grams = load_style_grams(store, cache)
        if grams is not None and grams_match(grams, style=style_ts, device=dev, **kw):
            typer.echo(f"reusing style Grams {store}/{cache}")
        else:
            ds = style_grams_dataset(style_ts, device=dev, **kw)
            save_style_grams(ds, store, cache, overwrite=True)
            grams = load_style_grams(store, cache)
            typer.echo(f"computed style Grams -> {store}/{cache}")
        out = style_transfer(content, grams, noisy, device=dev, **kw, **pairing)
        out.attrs["style"] = style.strip("/")
        path = st.save(
            out, store, group, name="faket", overwrite=overwrite, progress="style transfer",
            stage_info={
                "stage": "style", "tomo": tomo, "style": style.strip("/"), "grams": cache,
                "weights": out.attrs["nst_weights"], "seed": seed, "tile": out.attrs["nst_tile"],
                "precision": precision, "algorithm": out.attrs["nst_algorithm"],
                "device": out.attrs["nst_device"],
            },
        )
    typer.echo(f"wrote {store}/{path} {tuple(out.shape)}")


def fetch_weights_cmd() -> None:
    """Download torchvision's ImageNet VGG-19 weights (IMAGENET1K_V1) into the torch hub cache."""
    from ..errors import FaketError
    from ..kernels import nst

    path = nst.imagenet_weights_path()
    if path.is_file():
        typer.echo(f"already cached: {path}")
        return
    try:
        got = nst.fetch_imagenet_weights(progress=True)
    except Exception as exc:  # noqa: BLE001 - offline, proxy, hash mismatch: one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FaketError(
            f"cannot download the ImageNet VGG-19 weights to {path} ({type(exc).__name__}: "
            f"{first}); run `faket-dask fetch-weights` on a machine with internet access and copy "
            "that file here (or point TORCH_HOME at its cache), or use --weights random / a "
            "state-dict file"
        ) from None
    typer.echo(f"downloaded {got}")
