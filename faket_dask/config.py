"""Pydantic models of a run; defaults are the paper's settings (METHOD.md).

Unknown keys are rejected (``extra="forbid"``) and reported with their dotted path, e.g.
``run.yaml: unknown key 'style.lrr'``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import InputError
from .stages.microscope import MicroscopeParams


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Acquisition(_Strict):
    """Tilt scheme and sampling (SHREC: -60..60 in 2° steps, 10 Å pixels)."""

    tilt_start_deg: float = -60.0
    tilt_stop_deg: float = 60.0
    tilt_step_deg: float = 2.0
    pixel_size_A: float = Field(10.0, gt=0)

    def angles_deg(self) -> np.ndarray:
        """The tilt angles (degrees), ``tilt_stop_deg`` included."""
        from .formats.convert import angles_from_range

        return angles_from_range(self.tilt_start_deg, self.tilt_stop_deg, self.tilt_step_deg,
                                 what="acquisition (tilt_start_deg, tilt_stop_deg, tilt_step_deg)")


class Noise(_Strict):
    """Noise modalities (METHOD.md §2-3)."""

    order: int = Field(2, ge=0, le=10, description="polynomial order for NOISY and CONTENT")
    baseline_order: int = Field(0, ge=0, le=10, description="polynomial order for BASELINE")
    noisy_scale: float = 1.0
    content_scale: float = 0.25
    baseline_scale: float = 1.0


class Style(_Strict):
    """Neural style transfer (METHOD.md §4)."""

    weights: str = "imagenet"
    content_layers: tuple[int, ...] = (8,)
    content_layer_weights: tuple[float, ...] = (100.0,)
    content_weight: float = 1.0
    style_layers: tuple[int, ...] = (1, 6, 11, 20, 29)
    style_layer_weights: tuple[float, ...] = (256.0, 64.0, 16.0, 4.0, 1.0)
    style_weight: float = 1.0
    tv_weight: float = 0.0
    lr: float = Field(0.15, gt=0)
    iterations: int = Field(1, ge=1)
    ema_decay: float = Field(0.99, ge=0, lt=1)
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    batch: int | None = Field(None, ge=1)
    tile: int | Literal["auto"] | None = Field(
        "auto", description="tile edge (multiple of 16); auto: tile only tilts too large for compute.task_memory_MB"
    )

    @model_validator(mode="after")
    def _lengths(self) -> "Style":
        if isinstance(self.tile, int) and (self.tile < 64 or self.tile % 16):
            raise ValueError(f"tile must be 'auto', null or a multiple of 16 >= 64, got {self.tile}")
        if len(self.style_layers) != len(self.style_layer_weights):
            raise ValueError("style_layers and style_layer_weights differ in length")
        if len(self.content_layers) != len(self.content_layer_weights):
            raise ValueError("content_layers and content_layer_weights differ in length")
        return self


class Reconstruction(_Strict):
    """Tomogram reconstruction (METHOD.md §5)."""

    binning: int = Field(2, ge=1)
    filter: Literal["approx_shrec", "ramp", "none"] = "approx_shrec"
    z_valid: tuple[float, float] | None = None
    thickness: int | None = Field(None, ge=1, description="slices before z_valid (default: binned width)")
    modalities: tuple[str, ...] = Field(
        ("noiseless", "measured", "noisy", "baseline", "faket"),
        description="tilt-series reconstructed (those a run has; content is an intermediate)",
    )


class ImportedSpecimen(_Strict):
    """A specimen (SHREC 'grandmodel') from MRC files; paths relative to the config file."""

    density: str
    class_mask: str | None = None
    pixel_size_A: float | None = Field(None, gt=0, description="default: the MRC header")


class Specimens(_Strict):
    """The specimens: generated (``source: generate``) or imported grandmodels."""

    source: Literal["generate", "import"] = "generate"
    count: int = Field(4, ge=1, description="generated specimens")
    shape_zyx: tuple[int, int, int] = (200, 512, 512)
    particles: int = Field(150, ge=0)
    vesicles: int = Field(2, ge=0)
    fiducials: int = Field(5, ge=0)
    templates_dir: str | None = None
    files: tuple[ImportedSpecimen, ...] = ()

    @model_validator(mode="after")
    def _source(self) -> "Specimens":
        if self.source == "import" and not self.files:
            raise ValueError("source 'import' needs files: [{density: ..mrc}, ...]")
        if self.source == "generate" and self.files:
            raise ValueError("files are given but source is 'generate' (set source: import)")
        if min(self.shape_zyx) < 16:
            raise ValueError(f"shape_zyx {list(self.shape_zyx)}: every size must be >= 16")
        return self


class ImportedStyle(_Strict):
    """A measured tilt-series used as style data (and for the noise model)."""

    measured: str
    angles_file: str = Field(description="IMOD .tlt with one angle per tilt, in the stack's order")
    noiseless: str | None = Field(None, description="its noiseless projections (paired noise estimate)")
    pixel_size_A: float | None = Field(None, gt=0, description="default: the MRC header")


class StyleData(_Strict):
    """Where the style stacks (measured references) come from."""

    source: Literal["microscope", "import"] = "microscope"
    microscope: MicroscopeParams = MicroscopeParams()
    files: tuple[ImportedStyle, ...] = ()
    match_angles: Literal["exact", "nearest"] = Field(
        "exact", description="content and style tilts pair by angle: exact (same angle set, "
        "within half a step) or nearest (e.g. a lamella range styled with a flat-specimen stack)")
    pixel_size_rtol: float = Field(
        0.01, ge=0, description="largest relative difference of style and content pixel sizes")

    @model_validator(mode="after")
    def _source(self) -> "StyleData":
        if self.source == "import" and not self.files:
            raise ValueError("source 'import' needs files: [{measured: ..mrc, angles_file: ..tlt}]")
        if self.source == "microscope" and self.files:
            raise ValueError("files are given but source is 'microscope' (set source: import)")
        return self


class Report(_Strict):
    """What the end-of-run report contains."""

    figures: bool = True


class Compute(_Strict):
    """Chunking and memory budgets (see docs/architecture.md)."""

    chunk_MB: float = Field(8.0, gt=0)
    task_memory_MB: float = Field(512.0, gt=0)


class RunConfig(_Strict):
    """A whole run. ``RunConfig()`` is the paper's setting."""

    seed: int = 0
    acquisition: Acquisition = Acquisition()
    noise: Noise = Noise()
    style: Style = Style()
    reconstruction: Reconstruction = Reconstruction()
    compute: Compute = Compute()
    specimens: Specimens = Specimens()
    style_data: StyleData = StyleData()
    report: Report = Report()
    output: str = Field("faket-run", description="output directory, relative to the config file")

    def hash(self) -> str:
        """A stable hash of the settings (recorded with each completed stage)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _explain(exc: ValidationError, source: str) -> InputError:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return InputError(f"{source}: unknown key '{where}'")
    return InputError(f"{source}: {where}: {err['msg']}")


def parse_config(data: dict, *, source: str = "config", model: type[BaseModel] = RunConfig) -> BaseModel:
    """Validate a mapping into ``model``; one-line :class:`InputError` naming the key."""
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping of settings at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, source) from None


def load_config(path: str | Path, *, model: type[BaseModel] = RunConfig) -> BaseModel:
    """Read and validate a YAML run configuration."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such config file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_config(data, source=str(p), model=model)
