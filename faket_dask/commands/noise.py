"""``faket-dask noise``: estimate a noise model from reference data, add noise to tilt-series.

::

    faket-dask noise estimate run.zarr --measured reference/style_000/measured \\
        --noiseless reference/style_000/noiseless [--order 2 --order 0]
    faket-dask noise estimate run.zarr --measured reference/real_000/measured   # unpaired
    faket-dask noise apply run.zarr --tomo 0 --modalities noisy,content,baseline --seed 0 \\
        [--order 2 --baseline-order 0 --noisy-scale 1 --content-scale 0.25 --baseline-scale 1]

``noise apply`` makes each modality with the same function as ``simulate``
(:func:`faket_dask.stages.noise.add_noise_modality`), from the orders and scales given here
(defaults: the paper's, :data:`faket_dask.params.MODALITIES`), so the same settings give the
same bits. Everything is validated (variables exist, shapes and tilt counts agree, no NaN/inf or
constant tilt, outputs may be written) before a cluster is started or a byte is written; the
value check reads the inputs once on local threads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..params import (
    BASELINE_ORDER,
    BASELINE_SCALE,
    CONTENT_SCALE,
    NOISE_ORDER,
    NOISY_SCALE,
    UNPAIRED_BAND,
)
from ..store.layout import NOISE_MODEL_GROUP, tiltseries_group, tiltseries_var
from . import ClusterFile, Gpus, Overwrite, Scheduler, Workers, connect

app = typer.Typer(
    help="Noise model (docs/method.md §2-3): estimate it from references, apply it to tilt-series.",
    no_args_is_help=True,
)


def _default_path(store: Path, suffix: str) -> Path:
    """``run.zarr`` -> ``run_<suffix>`` beside the store (outside the Zarr hierarchy)."""
    name = store.name[:-5] if store.name.endswith(".zarr") else store.name
    return store.parent / f"{name}_{suffix}"


def _check_file_writable(path: Path, overwrite: bool) -> None:
    from ..errors import InputError, OutputExistsError

    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists; pass --overwrite to replace it")
    if path.exists() and path.is_dir():
        raise InputError(f"{path}: is a directory")


@app.command("estimate")
def estimate_cmd(
    store: Annotated[Path, typer.Argument(help="Run store holding the reference tilt-series.")],
    measured: Annotated[list[str], typer.Option("--measured", help="GROUP/VAR of a measured reference (repeat for several).")],
    noiseless: Annotated[
        Optional[list[str]],
        typer.Option("--noiseless", help="GROUP/VAR of the noiseless partner of each --measured, same order. Omit all for the unpaired (spectral) estimate."),
    ] = None,
    order: Annotated[
        Optional[list[int]],
        typer.Option("--order", help="Polynomial order(s) of the fitted curves to store; the first is the default (repeat; default: 2 and 0)."),
    ] = None,
    band: Annotated[
        tuple[float, float],
        typer.Option(help="Unpaired estimate: frequency band LO HI as fractions of Nyquist."),
    ] = UNPAIRED_BAND,
    group: Annotated[str, typer.Option(help="Store group of the model.")] = NOISE_MODEL_GROUP,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the model as JSON here (default: STORE_noise_model.json beside the store).")] = None,
    figure: Annotated[Optional[Path], typer.Option(help="PNG of the curves and fits (default: STORE_noise_curves.png beside the store).")] = None,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
    gpus: Gpus = False,
    cluster: ClusterFile = None,
) -> None:
    """Estimate per-tilt noise curves (r, sigma, mean, std) and store the noise model."""
    from .. import store as st
    from ..errors import InputError
    from ..kernels.noise_spectral import band_bins
    from ..noise_model import check_order
    from ..params import NOISE_MODEL_ORDERS
    from ..report import plot_noise_curves
    from ..stages.noise import estimate_noise
    from ..stages.tilt_statistics import check_references, check_values

    noiseless = list(noiseless or [])
    orders = [check_order(o) for o in (order or NOISE_MODEL_ORDERS)]
    if not st.is_store(store):
        st.open_root(store)  # raises the one-line "no such store" / "not a Zarr store"
    if noiseless and len(noiseless) != len(measured):
        raise InputError(
            f"{len(measured)} --measured but {len(noiseless)} --noiseless: give one noiseless per measured (or none for the unpaired estimate)"
        )
    ms = [st.open_var(store, v) for v in measured]
    cs = [st.open_var(store, v) for v in noiseless]
    check_references(ms, cs or None, measured, noiseless or None)
    if not cs:
        for m in ms:
            band_bins(m.sizes["x"], band)
    group = group.strip("/")
    st.check_writable(store, f"{group}/r", overwrite=overwrite)
    json_path = json_path or _default_path(store, "noise_model.json")
    figure = figure or _default_path(store, "noise_curves.png")
    for p in (json_path, figure):
        _check_file_writable(p, overwrite)
    check_values(ms + cs, list(measured) + noiseless)

    with connect(scheduler, workers, gpus, cluster):
        model = estimate_noise(
            ms, cs or None, orders[0], sources=measured, noiseless_sources=noiseless or None, band=band
        )
    model.save(store, group, orders=orders, overwrite=overwrite)
    model.to_json(json_path, orders=orders)
    plot_noise_curves(model, figure, orders=orders)
    typer.echo(f"method: {model.method} ({model.n_references} reference(s), {model.n_tilts} tilts)")
    for o in orders:
        m = model.with_order(o)
        typer.echo(
            f"order {o}: r {m.curve('r').min():.4f}..{m.curve('r').max():.4f}, "
            f"sigma {m.curve('sigma').min():.4f}..{m.curve('sigma').max():.4f}"
        )
    if model.method == "unpaired":
        ratio = float(model.raw["band_ratio"].median())
        if ratio > 1.2:
            typer.echo(
                f"note: band power falls across the band (median ratio {ratio:.2f} > 1.2): signal is "
                "left in it and sigma is overestimated; try a higher --band"
            )
    typer.echo(f"wrote {store}/{group}")
    typer.echo(f"wrote {json_path}")
    typer.echo(f"wrote {figure}")


@app.command("apply")
def apply_cmd(
    store: Annotated[Path, typer.Argument(help="Run store with the noiseless tilt-series and the noise model.")],
    tomo: Annotated[int, typer.Option(help="Tomogram index: reads and writes tomo_NNN/tiltseries; also keys the noise field.")] = 0,
    modalities: Annotated[str, typer.Option(help="Comma-separated: noisy, content, baseline.")] = "noisy,content,baseline",
    seed: Annotated[int, typer.Option(help="Seed of the noise field, 0 <= S < 2**32 (shared by the modalities).")] = 0,
    input_var: Annotated[Optional[str], typer.Option("--input", help="GROUP/VAR of the noiseless tilt-series (default tomo_NNN/tiltseries/noiseless).")] = None,
    model_group: Annotated[str, typer.Option(help="Store group of the noise model.")] = NOISE_MODEL_GROUP,
    model_json: Annotated[Optional[Path], typer.Option(help="Read the noise model from this JSON file instead of the store.")] = None,
    match_angles: Annotated[str, typer.Option(help="Tilts take the model's curves at their own angle: exact (same angle set) or nearest.")] = "exact",
    order: Annotated[int, typer.Option(help="Polynomial order of the curves of NOISY and CONTENT.")] = NOISE_ORDER,
    baseline_order: Annotated[int, typer.Option(help="Polynomial order of the curves of BASELINE.")] = BASELINE_ORDER,
    noisy_scale: Annotated[float, typer.Option(help="Noise scale k of NOISY.")] = NOISY_SCALE,
    content_scale: Annotated[float, typer.Option(help="Noise scale k of CONTENT (the paper: a quarter of NOISY's).")] = CONTENT_SCALE,
    baseline_scale: Annotated[float, typer.Option(help="Noise scale k of BASELINE.")] = BASELINE_SCALE,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
    gpus: Gpus = False,
    cluster: ClusterFile = None,
) -> None:
    """Add FakET noise (docs/method.md §3) and write the modalities into tomo_NNN/tiltseries."""
    from pydantic import ValidationError

    from .. import store as st
    from ..errors import InputError
    from ..noise_model import NoiseModel
    from ..params import NoiseParams
    from ..stages.noise import add_noise_modality, modality_specs, open_input
    from ..stages.tilt_statistics import check_values

    names = modality_specs(modalities)
    for what, v in (("--seed", seed), ("--tomo", tomo)):
        if not 0 <= v < 2**32:
            raise InputError(f"{what} must be in [0, 2**32), got {v}")
    try:
        params = NoiseParams(order=order, baseline_order=baseline_order, noisy_scale=noisy_scale,
                             content_scale=content_scale, baseline_scale=baseline_scale)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    if not st.is_store(store):
        st.open_root(store)
    src = input_var or tiltseries_var(tomo, "noiseless")
    ts = open_input(store, src)
    model = NoiseModel.from_json(model_json) if model_json else NoiseModel.load(store, model_group)
    # Building the graphs checks tilt counts and options; nothing is computed yet.
    outs = {n: add_noise_modality(ts, model, n, seed, tomo=tomo, params=params, match_angles=match_angles,
                                  match_option="--match-angles nearest") for n in names}
    group = tiltseries_group(tomo)
    for n in names:
        st.check_writable(store, f"{group}/{n}", overwrite=overwrite)
    check_values([ts], [src])

    model_src = str(model_json) if model_json else f"{store}/{model_group}"
    with connect(scheduler, workers, gpus, cluster):
        for n, arr in outs.items():
            spec = params.modality(n)
            path = st.save(
                arr, store, group, name=n, overwrite=overwrite, progress=f"adding noise: {n}",
                stage_info={
                    "stage": "noise", "modality": n, "seed": seed, "tomo": tomo, "scale": spec.scale,
                    "order": spec.order, "input": src, "model": model_src,
                },
            )
            typer.echo(f"wrote {store}/{path}")
