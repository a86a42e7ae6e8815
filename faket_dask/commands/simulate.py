"""``faket-dask simulate CONFIG.yaml`` and ``faket-dask demo OUT_DIR``: the whole pipeline."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import ClusterFile, Gpus, Overwrite, Scheduler, Workers

Out = Annotated[Optional[Path], typer.Option("--out", help="Output directory (default: the config's `output`).")]
Device = Annotated[Optional[str], typer.Option(help="cpu or cuda (default: cuda with --gpus or a cuda cluster file).")]


def simulate_cmd(
    config: Annotated[Path, typer.Argument(help="Run configuration (YAML); `faket-dask config` prints the defaults.")],
    out: Out = None,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
    gpus: Gpus = False,
    cluster: ClusterFile = None,
    device: Device = None,
) -> None:
    """Run FakET end to end for CONFIG; rerunning the same command resumes an interrupted run.

    One run per output at a time: another is refused while a run holds OUT/.faket-dask.lock.
    """
    from ..pipeline import format_summary, simulate

    summary = simulate(config, out_dir=out, overwrite=overwrite, scheduler=scheduler, cluster_file=cluster,
                       gpus=gpus, workers=workers, device=device)
    typer.echo(format_summary(summary))
    typer.echo(f"run output in {Path(summary['store']).parent.resolve()}")


def demo_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Output directory.")] = Path("demo-out"),
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
    gpus: Gpus = False,
    cluster: ClusterFile = None,
) -> None:
    """Run the embedded demo: 3 small synthetic specimens (128³, 61 tilts) through the whole pipeline."""
    from ..demo import run_demo

    run_demo(out_dir, overwrite=overwrite, scheduler=scheduler, workers=workers, gpus=gpus, cluster_file=cluster)
