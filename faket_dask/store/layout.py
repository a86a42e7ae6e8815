"""Every group path of a run store, spelled in one place.

Layout::

    run.zarr/                      attrs: faket_dask, config, config_hash, run, stages
      tomo_000/specimen            density, class_mask, occupancy (z, y, x)
      tomo_000/particles           the particle table (dim `particle`)
      tomo_000/tiltseries          noiseless, measured, noisy, content, baseline, faket
      tomo_000/tomogram/MODALITY   OME-NGFF multiscale image (levels s0, s1, s2)
      tomo_000/labels              class_mask on the tomogram grid
      tomo_000/labels_particles    the particle table on the tomogram grid
      reference/style_000          imported measured (and noiseless) style stacks
      noise_model                  raw and fitted noise curves
      style_grams/<style var>      cached Gram matrices of one style stack

A variable is addressed as ``"GROUP/VAR"``, e.g. ``"tomo_000/tiltseries/measured"``.
"""
from __future__ import annotations

TILTSERIES = "tiltseries"
TOMOGRAM = "tomogram"
SPECIMEN = "specimen"
PARTICLES = "particles"
LABELS = "labels"
LABELS_PARTICLES = "labels_particles"
REFERENCE_ROOT = "reference"
NOISE_MODEL_GROUP = "noise_model"
GRAMS_ROOT = "style_grams"
PIPELINE_PREFIX = "pipeline/"


def tomo_group(tomo: int, part: str) -> str:
    """Group of tomogram ``tomo``: ``tomo_group(0, "tiltseries") == "tomo_000/tiltseries"``."""
    return f"tomo_{int(tomo):03d}/{part}"


def tomo_name(tomo: int) -> str:
    """``"tomo_000"``: the tomogram's name (its group, RELION's rlnTomoName)."""
    return f"tomo_{int(tomo):03d}"


def tiltseries_group(tomo: int) -> str:
    """``tomo_NNN/tiltseries``: every tilt-series modality of one tomogram."""
    return tomo_group(tomo, TILTSERIES)


def tiltseries_var(tomo: int, modality: str) -> str:
    """``tomo_NNN/tiltseries/MODALITY``."""
    return f"{tiltseries_group(tomo)}/{modality}"


def tomogram_group(tomo: int) -> str:
    """``tomo_NNN/tomogram``: one OME-NGFF image per modality."""
    return tomo_group(tomo, TOMOGRAM)


def specimen_group(tomo: int) -> str:
    """``tomo_NNN/specimen``."""
    return tomo_group(tomo, SPECIMEN)


def particles_group(tomo: int) -> str:
    """``tomo_NNN/particles``."""
    return tomo_group(tomo, PARTICLES)


def labels_group(tomo: int) -> str:
    """``tomo_NNN/labels``: the class mask on the tomogram grid."""
    return tomo_group(tomo, LABELS)


def labels_particles_group(tomo: int) -> str:
    """``tomo_NNN/labels_particles``: the particle table on the tomogram grid."""
    return tomo_group(tomo, LABELS_PARTICLES)


def reference_group(k: int) -> str:
    """``reference/style_NNN``: imported style stack ``k``."""
    return f"{REFERENCE_ROOT}/style_{int(k):03d}"


def reference_var(k: int, name: str) -> str:
    """``reference/style_NNN/NAME`` (``measured`` or ``noiseless``)."""
    return f"{reference_group(k)}/{name}"


def style_grams_group(style_var: str) -> str:
    """The one key of the Gram cache of a style stack ``GROUP/VAR``:
    ``"style_grams/tomo_001_tiltseries_measured"`` for ``"tomo_001/tiltseries/measured"``."""
    return f"{GRAMS_ROOT}/{style_var.strip('/').replace('/', '_')}"


def pipeline_stage_key(name: str) -> str:
    """Key of a pipeline stage in the root's ``stages`` attribute: ``pipeline/NAME``."""
    return PIPELINE_PREFIX + name
