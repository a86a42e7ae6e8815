"""Pydantic models of a run; defaults are the paper's settings (``docs/method.md``).

The models compose the settings owned by :mod:`faket_dask.params` (their names, Literal types
and defaults come from there); this module adds the run-level layout, validation across keys
and the YAML reading. Unknown keys are rejected (``extra="forbid"``) and reported with their
dotted path, e.g. ``run.yaml: unknown key 'style.lrr'``.

Memory budgets are in MiB (``compute.task_memory_MiB``, ``compute.chunk_MiB``). The old keys
``compute.task_memory_MB`` / ``compute.chunk_MB`` are still read, as the same number of MiB,
and reported by :func:`deprecations`; the settings (and so :meth:`RunConfig.hash`) are the
same whichever spelling a file uses.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_serializer, model_validator

from .errors import InputError
from .params import (
    CHUNK_MiB,
    CONTENT_LAYER_WEIGHTS,
    CONTENT_LAYERS,
    CONTENT_WEIGHT,
    DEFAULT_PRECISION,
    DEFAULT_WEIGHTS,
    EMA_DECAY,
    ITERATIONS,
    LR,
    RECONSTRUCTED_MODALITIES,
    RECONSTRUCTION_BINNING,
    RECONSTRUCTION_FILTER,
    STYLE_LAYER_WEIGHTS,
    STYLE_LAYERS,
    STYLE_WEIGHT,
    TASK_MEMORY_MiB,
    TV_WEIGHT,
    FilterName,
    MicroscopeParams,
    NoiseParams,
    Precision,
)


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


#: Noise modalities (``docs/method.md §2-3``): the orders and scales of NOISY, CONTENT and
#: BASELINE, owned by :mod:`faket_dask.params.noise`.
Noise = NoiseParams


class Style(_Strict):
    """Neural style transfer (``docs/method.md §4``); defaults from :mod:`faket_dask.params.nst`."""

    weights: str = DEFAULT_WEIGHTS
    content_layers: tuple[int, ...] = CONTENT_LAYERS
    content_layer_weights: tuple[float, ...] = CONTENT_LAYER_WEIGHTS
    content_weight: float = CONTENT_WEIGHT
    style_layers: tuple[int, ...] = STYLE_LAYERS
    style_layer_weights: tuple[float, ...] = STYLE_LAYER_WEIGHTS
    style_weight: float = STYLE_WEIGHT
    tv_weight: float = TV_WEIGHT
    lr: float = Field(LR, gt=0)
    iterations: int = Field(ITERATIONS, ge=1)
    ema_decay: float = Field(EMA_DECAY, ge=0, lt=1)
    precision: Precision = DEFAULT_PRECISION
    batch: int | None = Field(None, ge=1)
    tile: int | Literal["auto"] | None = Field(
        "auto", description="tile edge (multiple of 16); auto: untiled whenever a tilt fits the memory of one "
        "task on the workers (worker memory limit / threads; free GPU memory), tiled beyond; null: never tile"
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
    """Tomogram reconstruction (``docs/method.md §5``); defaults from :mod:`faket_dask.params.reconstruction`."""

    binning: int = Field(RECONSTRUCTION_BINNING, ge=1)
    filter: FilterName = RECONSTRUCTION_FILTER
    z_valid: tuple[float, float] | None = None
    thickness: int | None = Field(None, ge=1, description="slices before z_valid (default: binned width)")
    modalities: tuple[str, ...] = Field(
        RECONSTRUCTED_MODALITIES,
        description="tilt-series reconstructed (those a run has; content is an intermediate)",
    )


class ImportedSpecimen(_Strict):
    """A specimen (SHREC 'grandmodel') from MRC files; paths relative to the config file."""

    density: str
    class_mask: str | None = None
    pixel_size_A: float | None = Field(None, gt=0, description="default: the MRC header")
    units: Literal["V", "normalised"] = Field(
        "normalised", description="V: potential relative to ice, kept; normalised: arbitrary "
                                  "density scaled to protein's 3.36 V above ice (docs/microscope.md)")


class Specimens(_Strict):
    """The specimens: generated (``source: generate``) or imported grandmodels."""

    source: Literal["generate", "import"] = "generate"
    count: int = Field(4, ge=1, description="generated specimens")
    shape_zyx: tuple[int, int, int] = (200, 512, 512)
    particles: int | None = Field(None, ge=0, description="protein count; exclusive with volume_fraction")
    volume_fraction: float | None = Field(
        None, gt=0, le=0.5, description="protein volume fraction; default (neither given) 0.004, SHREC-like")
    vesicles: int = Field(2, ge=0)
    fiducials: int = Field(5, ge=0)
    actin: int = Field(0, ge=0, description="actin filaments")
    microtubules: int = Field(0, ge=0)
    templates_dir: str | None = None
    template_units: Literal["V", "normalised"] = Field("V", description="units of *.mrc templates")
    files: tuple[ImportedSpecimen, ...] = ()

    @model_validator(mode="after")
    def _source(self) -> "Specimens":
        if self.source == "import" and not self.files:
            raise ValueError("source 'import' needs files: [{density: ..mrc}, ...]")
        if self.source == "generate" and self.files:
            raise ValueError("files are given but source is 'generate' (set source: import)")
        if self.particles is not None and self.volume_fraction is not None:
            raise ValueError("give particles or volume_fraction, not both")
        if min(self.shape_zyx) < 16:
            raise ValueError(f"shape_zyx {list(self.shape_zyx)}: every size must be >= 16")
        return self


class ImportedStyle(_Strict):
    """A measured tilt-series used as style data (and for the noise model).

    Its tilt angles come from ``angles_file`` (IMOD ``.tlt``) or ``mdoc`` (SerialEM ``.mdoc``:
    angles, per-tilt dose in e/Å² and acquisition order, stored as tilt coordinates;
    ``docs/formats.md``), exactly one of them. ``exclude_tilts`` drops views (0-based positions
    in the stack's order, the ``.mdoc`` ZValues) from the stack and its noiseless partner; the
    range is checked against the stack before any stage (:mod:`faket_dask.run_inputs`).
    """

    measured: str
    angles_file: str | None = Field(None, description="IMOD .tlt with one angle per tilt, in the stack's order")
    mdoc: str | None = Field(None, description="SerialEM .mdoc of the stack (instead of angles_file)")
    exclude_tilts: tuple[int, ...] = Field(
        (), description="tilts to drop: 0-based indices in the stack's (file, ZValue) order")
    noiseless: str | None = Field(None, description="its noiseless projections (paired noise estimate)")
    pixel_size_A: float | None = Field(None, gt=0, description="default: the MRC header, else the .mdoc's PixelSpacing")

    @model_validator(mode="after")
    def _angles(self) -> "ImportedStyle":
        if (self.angles_file is None) == (self.mdoc is None):
            given = "both" if self.mdoc is not None else "neither"
            raise ValueError(f"give the tilt angles by angles_file (IMOD .tlt) or mdoc (SerialEM .mdoc), "
                             f"one of them ({given} given)")
        if any(i < 0 for i in self.exclude_tilts):
            raise ValueError(f"exclude_tilts {list(self.exclude_tilts)}: indices are 0-based, >= 0")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):  # pydantic's wrap-serializer signature
        # keys left unset are not dumped, so an entry written before mdoc/exclude_tilts existed
        # dumps (and hashes: RunConfig.hash, resume) exactly as it did
        data = handler(self)
        for key in ("angles_file", "mdoc", "exclude_tilts"):
            if key in data and not data[key]:
                del data[key]
        return data


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
            raise ValueError("source 'import' needs files: [{measured: ..mrc, angles_file: ..tlt}] "
                             "(or mdoc: ..mdoc instead of angles_file)")
        if self.source == "microscope" and self.files:
            raise ValueError("files are given but source is 'microscope' (set source: import)")
        return self


class Report(_Strict):
    """What the end-of-run report contains."""

    figures: bool = True


#: Old spellings of the memory budgets: read as the same number of MiB (the pipeline used the
#: MB keys with both 10**6 and 2**20 bytes; MiB is now the one unit), with a notice.
_DEPRECATED_COMPUTE_KEYS: dict[str, str] = {"chunk_MB": "chunk_MiB", "task_memory_MB": "task_memory_MiB"}


class Compute(_Strict):
    """Chunking and memory budgets in MiB (2**20 bytes; see docs/architecture.md, "Chunking")."""

    chunk_MiB: float = Field(float(CHUNK_MiB), gt=0, description="budget of one Zarr chunk (MiB)")
    task_memory_MiB: float = Field(float(TASK_MEMORY_MiB), gt=0, description="working memory of one task (MiB)")
    # Old keys this section was given under (not a setting: excluded from dumps and the hash).
    _deprecated_keys: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _old_spellings(cls, data: object, handler):  # noqa: ANN206 - pydantic's wrap signature
        """Accept ``chunk_MB`` / ``task_memory_MB`` as the MiB keys, remembering which were used."""
        old: tuple[str, ...] = ()
        if isinstance(data, dict) and any(k in data for k in _DEPRECATED_COMPUTE_KEYS):
            data = dict(data)
            for key, new in _DEPRECATED_COMPUTE_KEYS.items():
                if key in data:
                    if new in data:
                        raise ValueError(f"give {new} or its deprecated spelling {key}, not both")
                    data[new] = data.pop(key)
                    old += (key,)
        model = handler(data)
        if old:
            model._deprecated_keys = old
        return model

    def __eq__(self, other: object) -> bool:
        # The spelling a file used is not a setting: equal budgets are equal sections (pydantic
        # would also compare the private attribute).
        if not isinstance(other, Compute):
            return NotImplemented
        return self.model_dump() == other.model_dump()


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


def deprecations(cfg: RunConfig, source: str | None = None) -> list[str]:
    """One line per deprecated key ``cfg`` was read with, for the caller to print as a notice.

    Parameters
    ----------
    cfg : RunConfig
        A validated configuration.
    source : str, optional
        The file it came from, put first on each line (``"run.yaml: ..."``).

    Returns
    -------
    list of str
        E.g. ``"run.yaml: compute.task_memory_MB is deprecated; use compute.task_memory_MiB
        (same value, MiB)"``; empty when every key is current. The pipeline prints each as
        ``faket-dask: notice: LINE``.
    """
    prefix = f"{source}: " if source else ""
    return [
        f"{prefix}compute.{key} is deprecated; use compute.{_DEPRECATED_COMPUTE_KEYS[key]} (same value, MiB)"
        for key in cfg.compute._deprecated_keys
    ]


#: Keys removed when the specimen moved to volts (issue 11), with what replaces them.
_REMOVED_KEYS = {
    "phase_per_unit": "the specimen is a potential in volts now; the phase is sigma_e(U) x "
                      "the projected potential (docs/microscope.md)",
    "max_phase_rad": "the specimen is a potential in volts now; nothing is scaled to a "
                     "maximum phase (docs/microscope.md)",
    "amplitude_contrast": "amplitude contrast comes from the specimen's absorption potential; "
                          "absorption_ratio sets it for specimens without one",
}


def _explain(exc: ValidationError, source: str) -> InputError:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        gone = _REMOVED_KEYS.get(str(err["loc"][-1]))
        if gone:
            return InputError(f"{source}: '{where}' was removed: {gone}")
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
