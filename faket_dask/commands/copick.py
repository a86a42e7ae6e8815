"""``faket-dask export-copick``: a run store as a copick project.

::

    faket-dask export-copick run.zarr copick-project [--modalities faket,baseline] \\
        [--user-id faket-dask] [--session-id 0] [--overwrite]
    python -c "import copick; root = copick.from_file('copick-project/copick_config.json')"

Everything is checked (store, destination, modalities, ids, class names) before anything is
written; the project appears under its name only when complete (docs/formats.md, "copick
project").
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import Overwrite


def export_copick_cmd(
    store: Annotated[Path, typer.Argument(help="Run store with reconstructed tomograms (and labels for picks).")],
    root: Annotated[Path, typer.Argument(help="copick project directory to create (config: ROOT/copick_config.json).")],
    modalities: Annotated[
        Optional[str], typer.Option(help="Comma-separated tomogram modalities, e.g. faket,baseline (default: "
                                         "every modality all tomograms have); copick tomogram types.")
    ] = None,
    user_id: Annotated[str, typer.Option(help="copick user id of the picks and segmentations.")] = "faket-dask",
    session_id: Annotated[str, typer.Option(help="copick session id (0: made by a tool).")] = "0",
    overwrite: Overwrite = False,
) -> None:
    """Export tomograms, class masks and particles as a copick filesystem project.

    One run per tomogram: the chosen modalities as OME-Zarr (zarr v2, as copick and the CZ
    cryoET Data Portal store them), the class mask as a multilabel segmentation, the particles
    as picks (Å, 4x4 object-to-tomogram transforms) and filaments as copick filaments. Class
    names copick cannot use are renamed with a notice (my_protein -> my-protein).
    """
    from ..stages.copick_export import CONFIG_NAME, plan_copick_export, write_copick_project

    mods = None if modalities is None else [m for m in modalities.split(",")]
    plan = plan_copick_export(store, root, modalities=mods, user_id=user_id, session_id=session_id,
                              overwrite=overwrite)
    for line in plan.notices:
        typer.echo(f"faket-dask: notice: {line}", err=True)
    counts = write_copick_project(plan)
    typer.echo(f"wrote {plan.root} ({counts['runs']} runs, {counts['tomograms']} tomograms "
               f"[{', '.join(plan.modalities)}], {counts['picks']} picks of {len(plan.classes)} objects); "
               f"open it with copick.from_file('{plan.root / CONFIG_NAME}')")
