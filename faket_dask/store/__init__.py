"""The Zarr (v3) run store: :mod:`.run_store` (open, save, stage records), :mod:`.layout`
(group paths, the only place that spells them), :mod:`.ngff` (OME-NGFF images).

A variable is addressed as ``"GROUP/VAR"``, e.g. ``"tomo_000/tiltseries/measured"``.

The path helpers of :mod:`.layout` are imported eagerly (pure Python); everything else is
loaded from :mod:`.run_store` on first use (PEP 562), because importing it pulls in xarray and
zarr (~0.8 s) and ``faket-dask --help`` must not wait for that.
"""
from __future__ import annotations

from typing import Any

from .disk import check_disk, disk_free_bytes  # noqa: F401 - re-exported
from .layout import (  # noqa: F401 - re-exported: the store's public path helpers
    NOISE_MODEL_GROUP, labels_group, labels_particles_group, particles_group, pipeline_stage_key,
    reference_group, reference_var, specimen_group, style_grams_group, tiltseries_group,
    tiltseries_var, tomo_group, tomo_name, tomogram_group,
)


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    from importlib import import_module

    # import_module, not ``from . import run_store``: the latter asks this module for the
    # attribute first and would recurse into __getattr__.
    return getattr(import_module(".run_store", __name__), name)
