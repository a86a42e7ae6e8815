"""Sub-commands of the ``faket-dask`` CLI, one module per topic.

``faket_dask/cli.py`` registers them (e.g. ``app.add_typer(noise.app, name="noise")``).
The cluster options below are the single definition used by ``cli.py`` and every sub-command
(they live here, not in ``cli``, because ``cli`` imports the sub-commands).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

# Cluster options shared by every command that computes.
Scheduler = Annotated[Optional[str], typer.Option(help="Address of a running Dask scheduler to join.")]
Workers = Annotated[Optional[int], typer.Option(min=1, help="Workers of the local cluster (default: one per core).")]
Gpus = Annotated[bool, typer.Option("--gpus", help="Use a dask-cuda LocalCUDACluster (one worker per GPU).")]
ClusterFile = Annotated[Optional[Path], typer.Option("--cluster", help="YAML cluster description (cluster/*.yaml).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]


def connect(scheduler, workers, gpus, cluster_file, *, processes: bool = True):
    """Start or join the cluster chosen by the shared options (see :func:`faket_dask.connect`)."""
    from ..cluster import connect as _connect

    return _connect(scheduler, workers=workers, gpus=gpus, cluster_file=cluster_file, processes=processes)
