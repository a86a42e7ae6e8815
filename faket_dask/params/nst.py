"""Neural style transfer settings (``docs/method.md §4``): the one owner of names and defaults.

Torch-free, so :mod:`faket_dask.config`, the stages and the commands can validate NST settings
without importing torch; :mod:`faket_dask.kernels.nst` imports every table and default from
here. What lives here:

* :class:`NSTParams` — the method's numbers (layers, weights, Adam, EMA), defaults = the
  paper's (``docs/method.md §4`` items 3–6);
* the VGG-19 layer table (torchvision's configuration "E") and what follows from it: the op
  kind, input stride and channel count of every ``features`` index;
* the names of the precisions, convolution algorithms and weight sources, with their defaults;
* the default batch (:data:`DEFAULT_BATCH_PIXELS`); the kernel's bytes per pixel are the
  kernel's own (:data:`faket_dask.kernels.nst.budget.NST_BYTES_PER_PIXEL`).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "BETAS",
    "CONTENT_LAYERS",
    "CONTENT_LAYER_WEIGHTS",
    "CONTENT_WEIGHT",
    "DEFAULT_ALGORITHM",
    "DEFAULT_BATCH_PIXELS",
    "DEFAULT_PRECISION",
    "DEFAULT_WEIGHTS",
    "IMAGENET_VGG19_URL",
    "EMA_DECAY",
    "EPS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ITERATIONS",
    "LAST_LAYER",
    "LR",
    "NSTParams",
    "NAMED_WEIGHTS",
    "PRECISIONS",
    "Precision",
    "SMSE_EPS",
    "STYLE_LAYERS",
    "STYLE_LAYER_WEIGHTS",
    "STYLE_WEIGHT",
    "TV_WEIGHT",
    "VGG19_CFG",
    "imagenet_weights_path",
    "layer_channels",
    "layer_kinds",
    "layer_strides",
]

# --------------------------------------------------------------------------------------------
# The network (docs/method.md §4 item 2)
# --------------------------------------------------------------------------------------------
#: ImageNet normalisation of torchvision's VGG-19 (per RGB channel, images in [0, 1]); source:
#: torchvision's ``VGG19_Weights.IMAGENET1K_V1.transforms`` (the paper's network input).
IMAGENET_MEAN: Final[tuple[float, float, float]] = (0.485, 0.456, 0.406)
IMAGENET_STD: Final[tuple[float, float, float]] = (0.229, 0.224, 0.225)
#: torchvision's VGG-19 ``features`` (configuration "E" of ``torchvision.models.vgg.cfgs``):
#: output channels of each 3×3 conv (each followed by a ReLU), ``"M"`` = 2×2 max pooling.
VGG19_CFG: Final = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                    512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
#: The network is truncated after this ``features`` index (relu5_1, the deepest style layer).
LAST_LAYER: Final = 29

# --------------------------------------------------------------------------------------------
# The method's numbers (docs/method.md §4 items 3-6; the paper's settings)
# --------------------------------------------------------------------------------------------
#: ``features`` indices of the content term (relu2_2) and its weight (normalised to 1).
CONTENT_LAYERS: Final[tuple[int, ...]] = (8,)
CONTENT_LAYER_WEIGHTS: Final[tuple[float, ...]] = (100.0,)
CONTENT_WEIGHT: Final = 1.0
#: ``features`` indices of the style term (relu1_1 … relu5_1) and their weights (normalised to
#: sum 1); FakET uses one style image with weight 1.
STYLE_LAYERS: Final[tuple[int, ...]] = (1, 6, 11, 20, 29)
STYLE_LAYER_WEIGHTS: Final[tuple[float, ...]] = (256.0, 64.0, 16.0, 4.0, 1.0)
STYLE_WEIGHT: Final = 1.0
#: Weight of the L2 total variation of the [0, 1] image (FakET: 0).
TV_WEIGHT: Final = 0.0
#: Adam: learning rate, betas, eps; one iteration (the paper's single 1024 scale).
LR: Final = 0.15
BETAS: Final[tuple[float, float]] = (0.9, 0.999)
EPS: Final = 1e-8
ITERATIONS: Final = 1
#: Decay of the bias-corrected moving average of the iterates (Crowson's ``EMA``).
EMA_DECAY: Final = 0.99
#: ``eps`` of ScaledMSE ``Σ(a−b)² / (Σ|a−b| + eps)`` (Crowson's style-transfer-pytorch).
SMSE_EPS: Final = 1e-8

# --------------------------------------------------------------------------------------------
# Names of the choices, and defaults
# --------------------------------------------------------------------------------------------
Precision = Literal["fp32", "tf32", "bf16"]
#: ``fp32``: IEEE float32; ``tf32``: TF32 tensor cores on CUDA (no effect on CPU); ``bf16``:
#: convolutions and matmuls autocast to bfloat16.
PRECISIONS: Final[tuple[str, ...]] = ("fp32", "tf32", "bf16")
DEFAULT_PRECISION: Final = "fp32"
Algorithm = Literal["auto", "winograd", "direct"]
#: How the 3×3 convolutions are computed (``faket_dask.kernels.nst.backend``).
ALGORITHMS: Final[tuple[str, ...]] = ("auto", "winograd", "direct")
DEFAULT_ALGORITHM: Final = "auto"
#: Weight sources spelled by name (any other value is a state-dict file).
NAMED_WEIGHTS: Final[tuple[str, ...]] = ("imagenet", "random")
DEFAULT_WEIGHTS: Final = "imagenet"
#: torchvision's ``VGG19_Weights.IMAGENET1K_V1.url`` (tests compare it with torchvision's).
IMAGENET_VGG19_URL: Final = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"


def imagenet_weights_path() -> Path:
    """Where torchvision keeps the ImageNet VGG-19 weights in the local torch hub cache.

    ``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``, with ``get_dir``'s rule written out
    (torch.hub documentation): ``$TORCH_HOME/hub``, ``$TORCH_HOME`` defaulting to
    ``$XDG_CACHE_HOME/torch`` and that to ``~/.cache/torch``. Written out rather than asked of
    torch because the pipeline checks the weights before any work starts, on the client, which
    otherwise never imports torch: importing torch and torchvision for this path took 4.9 s of
    the demo's first 6.3 s (py-spy, 2-core VM). Tested equal to torch's and torchvision's
    answer under each variable. (``torch.hub.set_dir`` in the same process is not seen.)

    Returns
    -------
    Path
        The state-dict file (it may not exist).
    """
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints" / IMAGENET_VGG19_URL.rsplit("/", 1)[1]

# --------------------------------------------------------------------------------------------
# Memory of the fast kernel (measured, benchmarks/bench_style.py)
# --------------------------------------------------------------------------------------------
#: Tilts × pixels per pass of ``stylise`` when ``batch`` is not given. CPU: one 256² tilt's
#: activations (16 MiB per 64-channel map) still fit the L3 cache, four do not, and measured at
#: 2 threads a batch of 4 ran 15 % slower than one tilt at a time; small tilts are still
#: batched to amortise per-call overheads. GPU: ~2.7 GB of activations at 2.6 kB per pixel.
DEFAULT_BATCH_PIXELS: Final[Mapping[str, int]] = {"cpu": 2**16, "cuda": 2**20}


# --------------------------------------------------------------------------------------------
# The layer table's consequences
# --------------------------------------------------------------------------------------------
@functools.cache
def layer_kinds() -> tuple[str, ...]:
    """Op kind (``"conv"``, ``"relu"``, ``"pool"``) of every VGG-19 ``features`` index."""
    kinds: list[str] = []
    for v in VGG19_CFG:
        kinds += ["pool"] if v == "M" else ["conv", "relu"]
    return tuple(kinds)


def layer_strides(last: int = LAST_LAYER) -> list[int]:
    """Input pixels per feature of each ``features`` output up to ``last`` (×2 per pool)."""
    out, s = [], 1
    for k in layer_kinds()[: last + 1]:
        s *= 2 if k == "pool" else 1
        out.append(s)
    return out


def layer_channels(layer: int) -> int:
    """Channels of the output of VGG-19 ``features[layer]``.

    Raises
    ------
    ValueError
        ``layer`` is outside ``0 … LAST_LAYER``.
    """
    if not 0 <= int(layer) <= LAST_LAYER:
        raise ValueError(f"layer {layer} is beyond VGG-19's features (0..{LAST_LAYER})")
    c = 3
    i = 0
    for v in VGG19_CFG:
        if v != "M":
            c = int(v)
        n = 1 if v == "M" else 2  # a conv entry is two features indices: conv, relu
        if i <= int(layer) < i + n:
            return c
        i += n
    raise AssertionError("unreachable: LAST_LAYER is inside VGG19_CFG")


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NSTParams:
    """Settings of the method (defaults = the paper's, ``docs/method.md §4``).

    Field names match ``faket_dask.config.Style`` so ``NSTParams.from_config(cfg.style)`` maps
    a run configuration. Layer indices are torchvision VGG-19 ``features`` indices.

    Attributes
    ----------
    content_layers, content_layer_weights : tuple
        Content taps and their weights (normalised to sum 1 in absolute value).
    content_weight : float
        Factor on the whole content term.
    style_layers, style_layer_weights : tuple
        Style taps and their weights (normalised to sum 1 in absolute value).
    style_weight : float
        Factor on the whole style term (FakET: one style image, weight 1).
    tv_weight : float
        Weight of the L2 total-variation term on the [0, 1] image (FakET: 0).
    lr, betas, eps : float
        Adam settings.
    iterations : int
        Adam iterations (FakET: 1).
    ema_decay : float
        Decay of the bias-corrected moving average of the iterates that is returned.

    Raises
    ------
    ValueError
        On construction: layer and weight lists of different lengths, duplicate layers, no
        layers at all, ``iterations < 1`` or ``ema_decay`` outside [0, 1).
    """

    content_layers: tuple[int, ...] = CONTENT_LAYERS
    content_layer_weights: tuple[float, ...] = CONTENT_LAYER_WEIGHTS
    content_weight: float = CONTENT_WEIGHT
    style_layers: tuple[int, ...] = STYLE_LAYERS
    style_layer_weights: tuple[float, ...] = STYLE_LAYER_WEIGHTS
    style_weight: float = STYLE_WEIGHT
    tv_weight: float = TV_WEIGHT
    lr: float = LR
    betas: tuple[float, float] = BETAS
    eps: float = EPS
    iterations: int = ITERATIONS
    ema_decay: float = EMA_DECAY

    def __post_init__(self) -> None:
        for name in ("content_layers", "content_layer_weights", "style_layers",
                     "style_layer_weights", "betas"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.content_layers) != len(self.content_layer_weights):
            raise ValueError("content_layers and content_layer_weights differ in length")
        if len(self.style_layers) != len(self.style_layer_weights):
            raise ValueError("style_layers and style_layer_weights differ in length")
        if len(set(self.style_layers)) != len(self.style_layers):
            raise ValueError("style_layers contains duplicates")
        if len(set(self.content_layers)) != len(self.content_layers):
            raise ValueError("content_layers contains duplicates")
        if not self.content_layers and not self.style_layers:
            raise ValueError("no content and no style layers")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    @classmethod
    def from_config(cls, cfg: Any) -> "NSTParams":
        """Build from any object (or mapping) carrying some of the field names."""
        get = cfg.get if isinstance(cfg, Mapping) else functools.partial(getattr, cfg)
        names = [f.name for f in dataclasses.fields(cls)]
        marker = object()
        kw = {n: v for n in names if (v := get(n, marker)) is not marker}
        return cls(**kw)

    def replace(self, **overrides: Any) -> "NSTParams":
        """A copy with single fields replaced (``params.replace(lr=0.1)``); self when none."""
        return dataclasses.replace(self, **overrides) if overrides else self

    @property
    def last_layer(self) -> int:
        """Deepest ``features`` index the loss needs."""
        return max((*self.content_layers, *self.style_layers))

    def content_taps(self) -> dict[int, float]:
        """``{layer: weight}`` of the content term, weights normalised and scaled."""
        return _normalised(self.content_layers, self.content_layer_weights, self.content_weight)

    def style_taps(self) -> dict[int, float]:
        """``{layer: weight}`` of the style term, weights normalised and scaled."""
        return _normalised(self.style_layers, self.style_layer_weights, self.style_weight)


def _normalised(layers: Sequence[int], weights: Sequence[float], factor: float) -> dict[int, float]:
    total = sum(abs(w) for w in weights)
    return {int(l): float(factor * w / total) for l, w in zip(layers, weights, strict=True)}
