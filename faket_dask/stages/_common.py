"""Helpers shared by the stages: device choice, GPU annotation, slab rechunking."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import dask
import dask.array as da


def resolve_device(device: str | None) -> str:
    """``None``/``"auto"`` → ``"cuda"`` when torch sees a GPU here, else ``"cpu"``."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


@contextlib.contextmanager
def gpu_annotation(device: str) -> Iterator[None]:
    """Tasks built inside ask for the worker resource ``GPU=1`` when ``device`` is CUDA.

    Workers of a dask-cuda cluster advertise ``GPU=1`` (see ``cluster.py``), so GPU tasks run
    one at a time per GPU and never land on CPU-only workers.
    """
    if device.startswith("cuda"):
        with dask.annotate(resources={"GPU": 1}):
            yield
    else:
        yield


def y_slabs(arr: da.Array) -> da.Array:
    """Merge every chunk along axes 0 and 2 so each block is a whole ``(N, cy, X)`` slab.

    Only concatenates neighbouring chunks of one y-range (never moves data between y-ranges),
    so a slab task holds one slab, as the chunk-alignment rule intends.
    """
    return arr.rechunk({0: -1, 2: -1})
