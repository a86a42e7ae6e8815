"""Neural style transfer of tilt-series, exactly as FakET does it (METHOD.md §4).

Pure torch/numpy: no dask, no I/O, any torch device. The Dask stage is expected to

1. compute the global min/max of the CONTENT, NOISY (init) and STYLE stacks (small dask
   reductions) and the per-tilt mean/std of the *original* style stack;
2. per block of tilts: :func:`normalise` the three blocks with the global extrema, call
   :func:`stylise` (optionally with :func:`style_grams` computed once per style stack), then
   :func:`match_mean_std` to the style statistics of those tilts.

:func:`style_transfer_stack` runs all of this in memory (tests, small data).

What is computed, per tilt i (the paper's setting, :class:`NSTParams` defaults)
-------------------------------------------------------------------------------
* ``x0 = repeat(init_i, 3 channels)``, ``c = repeat(content_i)``, ``s = repeat(style_i)``, all
  in [0, 1]; ``N(.)`` = ImageNet normalisation; ``F_l`` = VGG-19 ``features[l]`` output
  (first conv with replicate padding, max pooling).
* ``loss(x) = SMSE(F_8(N x), F_8(N c)) + Σ_l w_l SMSE(G(F_l(N x)), G(F_l(N s)))`` with
  ``l ∈ {1, 6, 11, 20, 29}``, ``w ∝ (256, 64, 16, 4, 1)`` summing to 1,
  ``G(F) = F Fᵀ / (H_l W_l)`` and ``SMSE(a, b) = Σ(a−b)² / (Σ|a−b| + 1e-8)``.
* One Adam step (lr 0.15, betas 0.9/0.999, eps 1e-8) on the 3-channel ``x``, clamp to [0, 1];
  output ``clamp((0.99 x0 + x1) / 1.99, 0, 1)`` averaged over the 3 channels (the
  bias-corrected EMA of the iterates, as ``EMA`` in Crowson's style-transfer-pytorch).

Why the fast path is written by hand
------------------------------------
Adam's first step is ``lr·g/(|g| + eps)``: only the *sign* of each gradient element matters,
and the work is four VGG passes per tilt (style targets, content targets, forward and backward
of ``x``), ~76 G multiply-adds at 256², nearly all in 3×3 convolutions that oneDNN already
runs close to peak (the autograd reference reaches ~75 % of this CPU's fp32 peak at 2
threads). :func:`stylise` therefore

* computes the convs from conv3_1 on (74 % of the multiply-adds) with NNPACK's Winograd
  transform when torch runs single-threaded on CPU, as in a Dask worker with one thread
  (``algorithm="auto"``): ~2× fewer operations than a direct conv;
* runs its own reverse mode instead of autograd: the backward of a conv is the conv with
  flipped weights / ``conv_transpose2d`` (no weight gradients, no saved inputs), of a ReLU a
  multiply by a saved boolean mask, of a max-pool an unpool with the saved indices, so less
  memory is held for the backward (~2.6 kB per pixel instead of ~4.8 kB);
* forms the tap-layer loss gradients in closed form during the forward pass; the Gram
  gradient ``(dG + dGᵀ) F / n`` is one matmul instead of autograd's two;
* can batch several tilts per pass (each tilt's ScaledMSE has its own normalisers, so the
  gradient of the summed loss is each tilt's own gradient; on CPU one 256² tilt per pass is
  fastest, see :func:`default_batch`), runs the target passes without autograd bookkeeping,
  and takes style Grams computed once (:func:`style_grams`).

With more than one torch thread, :func:`stylise` runs blocks of tilts concurrently in
single-threaded streams (``streams``) instead of relying on intra-op threads: at 2 threads the
direct convs are already near peak (an intra-op-parallel fast path is no faster than the
reference there) and NNPACK's own pool does not scale on the small deep maps.

Measured on 2 Zen 4 cores, 61 × 256², random weights (``benchmarks/bench_style.py``): 1.5×
the throughput of :func:`stylise_reference` at 1 thread and at 2 (see the benchmark for the
numbers). Tried and rejected: channels_last (1.1×, 3× more sign flips), Winograd in plain
torch (MKL runs AVX2 SGEMM on AMD: no gain), oneDNN grouped-conv Winograd (slower), bf16 in
the deep layers (1.4×, but ~2 % of pixels move by > 1e-4).

:func:`stylise_reference` is the straightforward autograd/``torch.optim.Adam`` loop, one tilt
at a time, kept as the oracle (tests, benchmark). :func:`stylise_tiled` processes tilts too
large for memory in tiles with the same result.

Exactness
---------
Because the step is ``g/(|g| + 1e-8)``, any two float32 implementations differ wherever a
gradient element is within rounding of zero: by a whole sign step (±lr/(3·1.99) ≈ 0.025 in
normalised units) or, where |g| ≈ 1e-8, by less. The rate of such pixels follows the
convolutions' rounding error. oneDNN's plain-NCHW kernels (3e-7 relative) reproduce the golden
file to ≤ 1e-3 × the tilt's std on all but 1–3 of 20480 pixels; its channels_last kernels
(2e-6) on 7, and Winograd in conv1_x/conv2_x (1e-5) on 9–22, whereas Winograd from conv3_1 on
changes nothing measurable (1–3 pixels; against the reference at 256²: no sign flips, 0.02 %
of pixels beyond 1e-4). Hence NCHW on CPU and Winograd only from conv3_1. The final per-tilt
mean/std match uses population std (``ddof=0``) on both sides (the golden's styled stds equal
the style stds to 1e-7; mixing ddofs would leave 1.2e-4).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Algorithm",
    "CONTENT_LAYERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NSTParams",
    "Precision",
    "STYLE_LAYERS",
    "WINOGRAD_FROM",
    "WeightsUnavailableError",
    "build_vgg",
    "clear_vgg_cache",
    "default_batch",
    "fetch_imagenet_weights",
    "get_vgg",
    "imagenet_weights_path",
    "match_mean_std",
    "normalise",
    "resolve_algorithm",
    "single_threaded_torch",
    "style_grams",
    "style_transfer_stack",
    "stylise",
    "stylise_reference",
    "stylise_tiled",
    "tile_halo",
]

#: ImageNet normalisation of torchvision's VGG-19 (per RGB channel, images in [0, 1]).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: ``features`` indices used by FakET (relu2_2 for content, relu1_1 … relu5_1 for style).
CONTENT_LAYERS: tuple[int, ...] = (8,)
STYLE_LAYERS: tuple[int, ...] = (1, 6, 11, 20, 29)
#: The network is truncated after this ``features`` index (relu5_1).
LAST_LAYER = 29

Precision = Literal["fp32", "tf32", "bf16"]
WeightsSpec = str | os.PathLike

# Tilts × pixels per pass of :func:`stylise` when ``batch`` is not given. CPU: one 256² tilt's
# activations (16 MB per 64-channel map) still fit the L3 cache, four do not, and measured at
# 2 threads a batch of 4 ran 15 % slower than one tilt at a time; small tilts are still
# batched to amortise per-call overheads. GPU: ~2.7 GB of activations at 2.6 kB per pixel.
_DEFAULT_BATCH_PIXELS = {"cpu": 2**16, "cuda": 2**20}


class WeightsUnavailableError(RuntimeError):
    """The requested VGG-19 weights cannot be loaded without a download."""


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NSTParams:
    """Settings of the method (defaults = the paper's, METHOD.md §4).

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
    """

    content_layers: tuple[int, ...] = CONTENT_LAYERS
    content_layer_weights: tuple[float, ...] = (100.0,)
    content_weight: float = 1.0
    style_layers: tuple[int, ...] = STYLE_LAYERS
    style_layer_weights: tuple[float, ...] = (256.0, 64.0, 16.0, 4.0, 1.0)
    style_weight: float = 1.0
    tv_weight: float = 0.0
    lr: float = 0.15
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    iterations: int = 1
    ema_decay: float = 0.99

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


def _params(params: NSTParams | None, overrides: Mapping[str, Any]) -> NSTParams:
    base = params if params is not None else NSTParams()
    return dataclasses.replace(base, **overrides) if overrides else base


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------
def _vgg19_features_skeleton() -> nn.Sequential:
    """Uninitialised-weights VGG-19 ``features`` (the full model is not needed to load)."""
    from torchvision.models import vgg as tv_vgg

    try:
        return tv_vgg.make_layers(tv_vgg.cfgs["E"], batch_norm=False)
    except (AttributeError, KeyError):  # torchvision moved its internals: build the full model
        return tv_vgg.vgg19(weights=None).features


def _random_vgg19_features(seed: int) -> nn.Sequential:
    """``features`` of ``torch.manual_seed(seed); torchvision.models.vgg19(weights=None)``.

    Bit-identical to building the whole model (tests check it) without allocating the 123 M
    classifier weights (~0.5 GB, ~1 GB peak): torchvision builds ``features`` (default init
    draws), then the three ``Linear`` layers (default init: one uniform draw per weight and
    bias element), then re-initialises every conv with ``kaiming_normal_`` in module order;
    the classifier's own re-initialisation comes after the convs and does not matter. So the
    classifier's default-init draws are made into a small scratch buffer instead. The
    caller's global RNG state is preserved.
    """
    import math

    from torchvision.models import vgg as tv_vgg

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            features = tv_vgg.make_layers(tv_vgg.cfgs["E"], batch_norm=False)
        except (AttributeError, KeyError):  # torchvision internals moved: the expensive way
            return tv_vgg.vgg19(weights=None).features
        scratch = torch.empty(2**22)
        for fan_in, fan_out in ((512 * 7 * 7, 4096), (4096, 4096), (4096, 1000)):
            bound = 1.0 / math.sqrt(fan_in)  # the values are discarded; only the count matters
            n = fan_in * fan_out
            while n > 0:
                k = min(n, scratch.numel())
                scratch[:k].uniform_(-bound, bound)
                n -= k
            scratch[:fan_out].uniform_(-bound, bound)
        for m in features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
    return features


def _finish_features(features: nn.Sequential, device: torch.device | str | None) -> nn.Sequential:
    """Truncate after relu5_1, first conv padding 'replicate', eval, frozen."""
    feats = features[: LAST_LAYER + 1]
    first = feats[0]
    # skip_init: a fresh Conv2d would draw its default init from the caller's global RNG
    conv = nn.utils.skip_init(nn.Conv2d, first.in_channels, first.out_channels,
                              first.kernel_size, stride=first.stride, padding=first.padding,
                              padding_mode="replicate")
    with torch.no_grad():
        conv.weight.copy_(first.weight)
        conv.bias.copy_(first.bias)
    feats[0] = conv
    feats.eval().requires_grad_(False)
    if device is not None:
        feats.to(device)
    return feats


def imagenet_weights_path() -> Path:
    """Where torchvision keeps VGG19_Weights.IMAGENET1K_V1 in the local torch hub cache.

    Honours ``TORCH_HOME`` (the directory is ``$TORCH_HOME/hub/checkpoints``).
    """
    from torchvision.models import VGG19_Weights

    url = VGG19_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def fetch_imagenet_weights(progress: bool = True) -> Path:
    """Download torchvision's ImageNet VGG-19 weights into the torch hub cache (needs internet).

    Returns
    -------
    Path
        The cached state-dict file (see :func:`imagenet_weights_path`).
    """
    from torchvision.models import VGG19_Weights

    VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=progress, check_hash=True)
    return imagenet_weights_path()


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise WeightsUnavailableError(f"{path}: cannot read a VGG-19 state dict ({exc})") from exc
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping):
        raise WeightsUnavailableError(f"{path}: not a state dict (got {type(sd).__name__})")
    if any(k.startswith("features.") for k in sd):  # a full torchvision VGG state dict
        sd = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    # Only the layers we keep; tolerates features-only dicts of a truncated model too.
    keep = {k: v for k, v in sd.items() if k.split(".")[0].isdigit()
            and int(k.split(".")[0]) <= LAST_LAYER}
    return keep


def build_vgg(
    weights: WeightsSpec = "random", seed: int = 0, device: torch.device | str | None = None
) -> nn.Sequential:
    """Build FakET's VGG-19 feature extractor.

    Parameters
    ----------
    weights : {"random", "imagenet"} or path
        ``"random"``: ``torch.manual_seed(seed); torchvision.models.vgg19(weights=None)`` (the
        paper's ablation; the caller's global RNG state is preserved). ``"imagenet"``:
        torchvision's ``IMAGENET1K_V1`` from the local torch hub cache only, never downloaded
        here. A path: a torchvision VGG-19 state dict (full model, or ``features`` keys only).
    seed : int
        Seed for ``"random"``; ignored otherwise.
    device : torch device, optional
        Where the module lives (default CPU).

    Returns
    -------
    torch.nn.Sequential
        ``features[:30]`` (through relu5_1), first conv with ``padding_mode='replicate'``, max
        pooling, eval mode, ``requires_grad=False``.

    Raises
    ------
    WeightsUnavailableError
        ``"imagenet"`` is not cached, or the file is unreadable/incompatible.
    """
    if isinstance(weights, str) and weights == "random":
        return _finish_features(_random_vgg19_features(seed), device)

    if isinstance(weights, str) and weights == "imagenet":
        path = imagenet_weights_path()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"ImageNet VGG-19 weights are not in the local torch hub cache ({path}). "
                "Run `faket-dask fetch-weights` on a machine with internet access (then copy "
                "that file here or point TORCH_HOME at the cache), or pass weights=<path to a "
                "torchvision VGG-19 state dict>, or weights='random'."
            )
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(f"{path}: VGG-19 weights file not found")
    sd = _load_state_dict(path)
    with torch.random.fork_rng(devices=[]):  # the skeleton's throw-away init uses the RNG
        features = _vgg19_features_skeleton()[: LAST_LAYER + 1]
    try:
        features.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise WeightsUnavailableError(
            f"{path}: not a torchvision VGG-19 state dict ({str(exc).splitlines()[0]})"
        ) from exc
    return _finish_features(features, device)


_VGG_CACHE: dict[tuple[str, int, str], nn.Sequential] = {}
_VGG_LOCK = threading.Lock()


def _weights_key(weights: WeightsSpec) -> str:
    if isinstance(weights, str) and weights in ("random", "imagenet"):
        return weights
    return str(Path(weights).expanduser().resolve())


def get_vgg(
    weights: WeightsSpec = "random", seed: int = 0, device: torch.device | str | None = None
) -> nn.Sequential:
    """:func:`build_vgg`, built once per process and ``(weights, seed, device)``.

    A Dask worker calls this in every task; only the first call pays for the build. The
    returned module is shared: treat it as read-only.
    """
    key_w = _weights_key(weights)
    key = (key_w, int(seed) if key_w == "random" else 0, str(torch.device(device or "cpu")))
    with _VGG_LOCK:  # worker threads of one process must not build it twice
        vgg = _VGG_CACHE.get(key)
        if vgg is None:
            vgg = build_vgg(weights, seed=seed, device=device)
            _VGG_CACHE[key] = vgg
        return vgg


def clear_vgg_cache() -> None:
    """Forget the models built by :func:`get_vgg` (and their prepared layer plans)."""
    with _VGG_LOCK:
        _VGG_CACHE.clear()
    with _PLAN_LOCK:
        _PLANS.clear()


# --------------------------------------------------------------------------------------------
# The prepared layer plan used by the hand-written forward/backward
# --------------------------------------------------------------------------------------------
Algorithm = Literal["auto", "winograd", "direct"]

#: With ``algorithm="winograd"`` the convs from this ``features`` index on (conv3_1 …, 74 % of
#: the multiply-adds at any image size) use NNPACK's Winograd transform. Its ~1e-5 relative
#: error in conv1_x/conv2_x flips the sign of tiny gradient elements on ~0.1 % of the golden
#: pixels (measured); from conv3_1 on, no more than the exact path does.
WINOGRAD_FROM = 10


@dataclass(frozen=True)
class _Op:
    kind: Literal["conv", "relu", "pool"]
    weight: torch.Tensor | None = None  # (Cout, Cin, 3, 3)
    bias: torch.Tensor | None = None
    replicate: bool = False
    weight_t: torch.Tensor | None = None  # (Cin, Cout, 3, 3) flipped: the adjoint as a conv
    winograd: bool = False  # through NNPACK's Winograd F(6x6, 3x3), one image per call


@dataclass(frozen=True)
class _Plan:
    ops: tuple[_Op, ...]
    device: torch.device
    mean: torch.Tensor  # (1, 3, 1, 1)
    std: torch.Tensor
    memory_format: torch.memory_format


_PLANS: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, _Plan]]" = weakref.WeakKeyDictionary()
_PLAN_LOCK = threading.Lock()


def _module_device(vgg: nn.Module) -> torch.device:
    p = next(vgg.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@functools.cache
def _nnpack_ok() -> bool:
    """NNPACK usable (this also runs its one-time initialisation, which its conv needs)."""
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


# "auto" uses Winograd from this many pixels per tilt on: below ~128² NNPACK's per-call overhead
# on the small deep feature maps makes it slower than oneDNN (measured 2x slower at 64²). And
# only single-threaded: NNPACK's own thread pool scales poorly on the small deep maps and
# competes with the OpenMP pool of the other ops (measured at 2 threads: no faster than
# direct). The Dask stage runs one torch thread per worker process, NNPACK's best case.
_WINOGRAD_MIN_PIXELS = 192 * 192


def _use_winograd(algorithm: Algorithm, device: torch.device, precision: Precision,
                  npix: int) -> bool:
    if algorithm not in ("auto", "winograd", "direct"):
        raise ValueError(f"algorithm must be 'auto', 'winograd' or 'direct', got {algorithm!r}")
    if algorithm == "direct" or device.type != "cpu" or precision == "bf16":
        if algorithm == "winograd" and (device.type != "cpu" or precision == "bf16"):
            raise ValueError("algorithm='winograd' needs a CPU device and fp32/tf32 precision")
        return False
    if not _nnpack_ok():
        if algorithm == "winograd":
            raise RuntimeError("algorithm='winograd' needs a torch build with NNPACK")
        return False
    if algorithm == "winograd":
        return True
    return npix >= _WINOGRAD_MIN_PIXELS and torch.get_num_threads() == 1


def resolve_algorithm(
    algorithm: Algorithm, device: torch.device | str | None, precision: Precision,
    shape: tuple[int, int], *, single_threaded: bool = True,
) -> Literal["winograd", "direct"]:
    """What ``algorithm`` means for tilts of ``shape`` on ``device``: ``"winograd"`` or
    ``"direct"``.

    ``"auto"`` is resolved as :func:`stylise` resolves it when torch runs single-threaded
    (``single_threaded=True``, as inside a Dask task of the style-transfer stage) or with the
    current thread count (``False``). The Dask stage fixes the result when it builds the graph,
    so every task uses the same arithmetic whatever its worker's thread count.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    npix = int(shape[0]) * int(shape[1])
    if precision not in ("fp32", "tf32", "bf16"):
        raise ValueError(f"precision must be 'fp32', 'tf32' or 'bf16', got {precision!r}")
    if algorithm == "auto" and single_threaded:
        ok = (dev.type == "cpu" and precision != "bf16" and npix >= _WINOGRAD_MIN_PIXELS
              and _nnpack_ok())
        return "winograd" if ok else "direct"
    return "winograd" if _use_winograd(algorithm, dev, precision, npix) else "direct"


def _plan(vgg: nn.Module, device: torch.device, winograd: bool = False,
          memory_format: torch.memory_format = torch.contiguous_format) -> _Plan:
    """Weights of ``vgg`` as plain tensors on ``device`` (cached per module and settings).

    With ``winograd``, the convs from ``features`` index :data:`WINOGRAD_FROM` on run through
    NNPACK (see :func:`stylise`, ``algorithm``).
    """
    key = (str(device), winograd, str(memory_format))
    with _PLAN_LOCK:
        per = _PLANS.setdefault(vgg, {})
        if key in per:
            return per[key]
        ops: list[_Op] = []
        for i, m in enumerate(vgg):
            if i > LAST_LAYER:
                break
            if isinstance(m, nn.Conv2d):
                if (m.kernel_size != (3, 3) or m.stride != (1, 1) or m.padding != (1, 1)
                        or m.dilation != (1, 1) or m.groups != 1):
                    raise ValueError(f"layer {i}: only VGG 3x3/stride 1/pad 1 convs supported")
                if m.padding_mode not in ("zeros", "replicate"):
                    raise ValueError(f"layer {i}: padding_mode {m.padding_mode!r} unsupported")
                w = m.weight.detach().to(device, torch.float32)
                wino = winograd and i >= WINOGRAD_FROM and m.padding_mode == "zeros"
                wt = w.transpose(0, 1).flip(2, 3).contiguous() if wino else None
                ops.append(_Op("conv", w.contiguous(memory_format=memory_format),
                               m.bias.detach().to(device, torch.float32).contiguous(),
                               m.padding_mode == "replicate", wt, wino))
            elif isinstance(m, nn.ReLU):
                ops.append(_Op("relu"))
            elif isinstance(m, nn.MaxPool2d):
                if _pair(m.kernel_size) != (2, 2) or _pair(m.stride) != (2, 2) or m.ceil_mode \
                        or _pair(m.padding) != (0, 0) or _pair(m.dilation) != (1, 1):
                    raise ValueError(f"layer {i}: only 2x2/stride 2 max pooling supported")
                ops.append(_Op("pool"))
            else:
                raise ValueError(f"layer {i}: unsupported module {type(m).__name__}")
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        plan = _Plan(tuple(ops), device, mean, std, memory_format)
        per[key] = plan
        return plan


def _make_plan(vgg: nn.Module, device: torch.device, precision: Precision,
               algorithm: Algorithm, npix: int) -> _Plan:
    wino = _use_winograd(algorithm, device, precision, npix)
    # channels_last only where tensor cores want it; on CPU plain NCHW oneDNN convolutions are
    # several times more accurate than its channels_last kernels (measured: 3e-7 vs 2e-6
    # relative), which keeps sign flips of tiny gradients (see module docstring) rarer.
    cl = device.type == "cuda" and precision == "bf16"
    return _plan(vgg, device, wino, torch.channels_last if cl else torch.contiguous_format)


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


def _nnpack_conv(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    # NNPACK's batched path is several times slower than its single-image (inference) path.
    if h.shape[0] == 1:
        return torch._nnpack_spatial_convolution(h.contiguous(), w, b, [1, 1])
    return torch.cat([torch._nnpack_spatial_convolution(h[i:i + 1].contiguous(), w, b, [1, 1])
                      for i in range(h.shape[0])])


def _conv(plan: _Plan, op: _Op, h: torch.Tensor) -> torch.Tensor:
    if op.replicate:
        return F.conv2d(F.pad(h, (1, 1, 1, 1), mode="replicate"), op.weight, op.bias)
    if op.winograd:
        return _nnpack_conv(h, op.weight, op.bias)
    return F.conv2d(h, op.weight, op.bias, padding=1)


def _conv_input_grad(plan: _Plan, op: _Op, g: torch.Tensor, x: torch.Tensor | None
                     ) -> torch.Tensor:
    """Gradient w.r.t. the conv input: the adjoint of the (stride-1, 3×3) convolution."""
    if op.replicate:
        # Adjoint of pad(replicate) ∘ conv(valid): full transpose, then fold the border back.
        gp = F.conv_transpose2d(g, op.weight)
        return torch.ops.aten.replication_pad2d_backward(gp, x.to(gp.dtype), [1, 1, 1, 1])
    if op.winograd:  # the adjoint of a 3x3 'same' conv is the conv with W flipped, Cin<->Cout
        return _nnpack_conv(g, op.weight_t, None)
    return F.conv_transpose2d(g, op.weight, padding=1)


# --------------------------------------------------------------------------------------------
# Precision and device helpers
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _precision(precision: Precision, device: torch.device) -> Iterator[None]:
    """fp32: IEEE float32 everywhere (TF32 off on CUDA); tf32: TF32 allowed on CUDA (no-op on
    CPU); bf16: autocast to bfloat16 for convolutions and matmuls (CPU or CUDA)."""
    if precision not in ("fp32", "tf32", "bf16"):
        raise ValueError(f"precision must be 'fp32', 'tf32' or 'bf16', got {precision!r}")
    if device.type != "cuda":
        if precision == "bf16":
            with torch.autocast(device.type, dtype=torch.bfloat16):
                yield
        else:
            yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    allow = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    try:
        if precision == "bf16":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, enabled=False)


def _as_stack(a: np.ndarray | torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(a)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"{name}: expected (tilts, y, x), got shape {tuple(t.shape)}")
    return t.to(device=device, dtype=torch.float32)


def _resolve_device(vgg: nn.Module, device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else _module_device(vgg)


def default_batch(shape: tuple[int, int], device: torch.device | str | None = None) -> int:
    """Tilts per pass when ``batch`` is not given: ``max(1, P // (H·W))`` with ``P = 2**16``
    on CPU (one tilt at 256², 16 at 64²) and ``2**20`` on CUDA.

    Memory: :func:`stylise` holds ~2.6 kB per pixel and tilt of the batch at its peak
    (measured at 256² on CPU: +270 MB for 1 tilt, +685 MB for 4; the autograd reference
    +316 MB for its single tilt).
    """
    kind = torch.device(device).type if device is not None else "cpu"
    budget = _DEFAULT_BATCH_PIXELS.get(kind, _DEFAULT_BATCH_PIXELS["cpu"])
    return max(1, budget // (int(shape[0]) * int(shape[1])))


_THREADS_LOCK = threading.Lock()
_THREADS_STATE = {"users": 0, "saved": 1}


@contextlib.contextmanager
def _single_threaded_torch() -> Iterator[None]:
    """torch intra-op threads = 1 while any caller is inside (reference counted, so that
    concurrent calls restore the caller's setting only when the last one leaves).

    torch's OpenMP/MKL thread counts are per OS thread (a thread takes the process-wide value
    only at its first parallel op), so every entering thread sets its own: a reused thread,
    such as a Dask worker's, would otherwise keep its old count. A thread that leaves while
    others are still inside keeps one thread until something sets it again.
    """
    with _THREADS_LOCK:
        if _THREADS_STATE["users"] == 0:
            _THREADS_STATE["saved"] = torch.get_num_threads()
        if _THREADS_STATE["users"] == 0 or torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        _THREADS_STATE["users"] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_STATE["users"] -= 1
            if _THREADS_STATE["users"] == 0:
                torch.set_num_threads(_THREADS_STATE["saved"])


#: Public name of the reference-counted single-thread context (used by the Dask stage: its
#: tasks run the kernel with one torch thread so results do not depend on the worker's threads).
single_threaded_torch = _single_threaded_torch


def _n_streams(streams: int | None, device: torch.device, n_blocks: int) -> int:
    if device.type != "cpu":
        return 1
    if streams is None:
        streams = torch.get_num_threads() if _THREADS_STATE["users"] == 0 else 1
    if streams < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")
    return max(1, min(int(streams), n_blocks))


# --------------------------------------------------------------------------------------------
# Loss pieces (closed forms, per image of the batch)
# --------------------------------------------------------------------------------------------
_SMSE_EPS = 1e-8


def _gram(f: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, C, C) = F Fᵀ / (h w), float32."""
    m = f.flatten(2)
    if m.dtype != torch.float32:
        m = m.float()
    return torch.bmm(m, m.transpose(1, 2)) / m.shape[-1]


def _smse_and_grad(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image ScaledMSE ``Σ(a−b)²/(Σ|a−b|+eps)`` (B,) and its gradient w.r.t. ``a``.

    ``d/da = 2(a−b)/S1 − S2·sign(a−b)/S1²`` with ``S1 = Σ|a−b| + eps`` and ``S2 = Σ(a−b)²``,
    summed over all but the first axis (the same terms autograd forms).
    """
    d = a - b
    dims = tuple(range(1, d.ndim))
    s1 = d.abs().sum(dims, keepdim=True).add_(_SMSE_EPS)
    s2 = d.square().sum(dims, keepdim=True)
    return (s2 / s1).flatten(), _smse_grad_given(d, s1, s2)


def _smse_grad_given(d: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """Gradient of ScaledMSE w.r.t. ``a`` given ``d = a − b`` and *global* S1 (with eps), S2
    of shape (B, 1, ...) — used where ``d`` is one tile of a larger map."""
    grad = d * (2.0 / s1)
    grad.addcmul_(torch.sign(d), -(s2 / (s1 * s1)))
    return grad


def _style_tap_grad(
    f: torch.Tensor, target: torch.Tensor, weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted style loss (B,) at one layer and its gradient w.r.t. the features ``f``."""
    g = _gram(f)
    loss, dg = _smse_and_grad(g, target)
    return weight * loss, _gram_backward(f, dg, weight)


def _gram_backward(f: torch.Tensor, dg: torch.Tensor, weight: float, n: int | None = None
                   ) -> torch.Tensor:
    """``weight · (dG + dGᵀ) F / n``, laid out like ``f`` (NCHW or channels_last).

    ``n`` is the pixel count the Gram was normalised with (default: ``f``'s own; a tile of a
    larger map passes the whole map's).
    """
    b, c, h, w = f.shape
    m = f.flatten(2)
    if m.dtype != torch.float32:
        m = m.float()
    sym = (dg + dg.transpose(1, 2)) * (weight / (n or h * w))
    if f.is_contiguous():
        return torch.bmm(sym, m).view(b, c, h, w).to(f.dtype)
    # (B, hw, C) = Fᵀ·sym is the channels_last memory layout of (B, C, h, w): no transposes.
    out = torch.bmm(m.transpose(1, 2), sym)
    return out.view(b, h, w, c).permute(0, 3, 1, 2).to(f.dtype)


def _tv_and_grad(x: torch.Tensor, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Crowson's L2 total variation (mean over c, h, w of each image) and its gradient."""
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        p = F.pad(xx, (0, 1, 0, 1), mode="replicate")
        dx = p[..., :-1, 1:] - p[..., :-1, :-1]
        dy = p[..., 1:, :-1] - p[..., :-1, :-1]
        tv = (dx.square() + dy.square()).mean((1, 2, 3)) * weight
        (g,) = torch.autograd.grad(tv.sum(), xx)
    return tv.detach(), g


# --------------------------------------------------------------------------------------------
# Forward passes
# --------------------------------------------------------------------------------------------
def _to_input(img: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """(B, H, W) in [0, 1] -> ImageNet-normalised (B, 3, H, W), channels_last."""
    x = img[:, None].expand(-1, 3, -1, -1)
    return ((x - plan.mean) / plan.std).contiguous(memory_format=plan.memory_format)


def _features(plan: _Plan, xn: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Inference forward of a normalised input; returns the requested ``features`` outputs."""
    want = set(layers)
    out: dict[int, torch.Tensor] = {}
    h = xn
    for i in range(max(want) + 1):
        op = plan.ops[i]
        if op.kind == "conv":
            h = _conv(plan, op, h)
        elif op.kind == "relu":
            h = h.relu_()
        else:
            h = F.max_pool2d(h, 2, 2)
        if i in want:
            out[i] = h
    return out


def _targets(
    plan: _Plan, content: torch.Tensor | None, style: torch.Tensor | None, p: NSTParams
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Content features and style Grams of a batch of [0, 1] images (no autograd)."""
    cf: dict[int, torch.Tensor] = {}
    sg: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        if content is not None and p.content_layers:
            cf = _features(plan, _to_input(content, plan), p.content_layers)
        if style is not None and p.style_layers:
            feats = _features(plan, _to_input(style, plan), p.style_layers)
            with _no_autocast(plan.device):
                sg = {l: _gram(feats.pop(l)) for l in p.style_layers}
    # inference tensors cannot be saved for autograd (TV uses autograd): plain clones are cheap
    return ({l: v.clone() for l, v in cf.items()}, {l: v.clone() for l, v in sg.items()})


TapFn = Callable[[int, torch.Tensor], "torch.Tensor | None"]


def _backprop(plan: _Plan, xn: torch.Tensor, last: int, tap_fn: TapFn) -> torch.Tensor:
    """Reverse mode over the VGG ops of a normalised input ``xn`` (B, 3, H, W).

    ``tap_fn(i, F_i)`` returns the loss gradient w.r.t. the output ``F_i`` of ``features[i]``
    (or None); it is called during the forward pass, so only ReLU masks (bool), pooling
    indices and these tap gradients are held for the backward. Returns dLoss/d``xn``.
    """
    saved: list[Any] = [None] * (last + 1)
    tap_grad: dict[int, torch.Tensor] = {}
    h = xn
    with torch.no_grad():
        for i in range(last + 1):
            op = plan.ops[i]
            if op.kind == "conv":
                h = _conv(plan, op, h)
            elif op.kind == "relu":
                h = h.relu_()
                saved[i] = h > 0
            else:
                shape = h.shape[-2:]
                h, idx = F.max_pool2d_with_indices(h, 2, 2)
                saved[i] = (idx, shape)
            with _no_autocast(plan.device):
                g_tap = tap_fn(i, h)
            if g_tap is not None:
                tap_grad[i] = g_tap.to(h.dtype).contiguous(memory_format=plan.memory_format)
        del h
        g: torch.Tensor | None = None
        for i in range(last, -1, -1):
            if i in tap_grad:
                t = tap_grad.pop(i)
                g = t if g is None else g.add_(t)
            if g is None:
                continue
            op = plan.ops[i]
            if op.kind == "relu":
                g = g.mul_(saved[i])
            elif op.kind == "pool":
                idx, shape = saved[i]
                g = F.max_unpool2d(g, idx, 2, 2, output_size=shape)
            else:
                g = _conv_input_grad(plan, op, g, xn if op.replicate else None)
            saved[i] = None
    if g is None:
        return torch.zeros_like(xn)
    return g.float()


def _loss_and_grad(
    plan: _Plan,
    x: torch.Tensor,
    content_feats: Mapping[int, torch.Tensor],
    grams: Mapping[int, torch.Tensor],
    p: NSTParams,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image loss (B,) and its gradient w.r.t. the [0, 1] image ``x`` (B, 3, H, W)."""
    ctaps, staps = p.content_taps(), p.style_taps()
    xn = ((x - plan.mean) / plan.std).contiguous(memory_format=plan.memory_format)
    loss = torch.zeros(x.shape[0], device=plan.device)

    def tap_fn(i: int, h: torch.Tensor) -> torch.Tensor | None:
        nonlocal loss
        g_tap = None
        if i in ctaps:
            l_c, g_c = _smse_and_grad(h.float(), content_feats[i].float())
            loss = loss + ctaps[i] * l_c
            g_tap = g_c.mul_(ctaps[i])
        if i in staps:
            l_s, g_s = _style_tap_grad(h, grams[i], staps[i])
            loss = loss + l_s
            g_tap = g_s if g_tap is None else g_tap.add_(g_s)
        return g_tap

    gx = (_backprop(plan, xn, p.last_layer, tap_fn) / plan.std).contiguous()
    if p.tv_weight:
        l_tv, g_tv = _tv_and_grad(x, p.tv_weight)
        loss = loss + l_tv
        gx += g_tv
    return loss, gx


# --------------------------------------------------------------------------------------------
# Adam + EMA (bit-for-bit the arithmetic of torch.optim.Adam's single-tensor path and of the
# original EMA module)
# --------------------------------------------------------------------------------------------
class _AdamEMA:
    """Adam on ``x`` (in place, clamped to [0, 1] after each step) plus the bias-corrected EMA
    of the iterates started at ``x0``; the first step is ``x0 − lr·g/(|g| + eps)``."""

    def __init__(self, x: torch.Tensor, p: NSTParams) -> None:
        self.p = p
        self.x = x
        self.step = 0
        self.m = torch.zeros_like(x)
        self.v = torch.zeros_like(x)
        # EMA as Crowson's `EMA` module: float32 buffers value/decay/accum, updated with x0.
        self.decay = torch.tensor(p.ema_decay, dtype=torch.float32)
        self.accum = torch.tensor(1.0, dtype=torch.float32)
        self.avg = torch.zeros_like(x)
        self._ema_update()

    def _ema_update(self) -> None:
        self.accum *= self.decay
        self.avg *= self.decay.to(self.avg.device)
        self.avg += (1 - self.decay).to(self.avg.device) * self.x

    def update(self, grad: torch.Tensor) -> None:
        b1, b2 = self.p.betas
        self.step += 1
        self.m.lerp_(grad, 1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad.conj(), value=1 - b2)
        bc1 = 1 - b1**self.step
        bc2 = 1 - b2**self.step
        step_size = self.p.lr / bc1
        denom = (self.v.sqrt() / (bc2**0.5)).add_(self.p.eps)
        self.x.addcdiv_(self.m, denom, value=-step_size)
        self.x.clamp_(0, 1)
        self._ema_update()

    def result(self) -> torch.Tensor:
        """(B, H, W): the bias-corrected average, clamped to [0, 1], mean over channels."""
        return (self.avg / (1 - self.accum).to(self.avg.device)).clamp_(0, 1).mean(1)


# --------------------------------------------------------------------------------------------
# Public kernels
# --------------------------------------------------------------------------------------------
def normalise(
    stack: np.ndarray | torch.Tensor, vmin: float | None = None, vmax: float | None = None
) -> np.ndarray:
    """Min–max normalise a whole stack to [0, 1] (METHOD §4: over the stack, not per tilt).

    Parameters
    ----------
    stack : array (t, H, W)
        Any real values.
    vmin, vmax : float, optional
        The *global* extrema of the full stack (the Dask stage passes them so that every block
        uses the same scale); default: of ``stack`` itself.

    Returns
    -------
    numpy.ndarray (t, H, W) float32
        ``(stack − vmin) / (vmax − vmin)``, computed in float32 like the original.
    """
    a = np.asarray(stack, dtype=np.float32)
    lo = np.float32(a.min() if vmin is None else vmin)
    hi = np.float32(a.max() if vmax is None else vmax)
    if not hi > lo:
        raise ValueError("cannot min-max normalise a constant stack")
    return (a - lo) / (hi - lo)


def match_mean_std(
    out: np.ndarray | torch.Tensor,
    target_mean: np.ndarray | Sequence[float],
    target_std: np.ndarray | Sequence[float],
) -> np.ndarray:
    """Give every tilt of ``out`` the mean and std of the matching tilt of the style stack.

    Parameters
    ----------
    out : array (t, H, W)
        Stylised tilts (normalised units).
    target_mean, target_std : array (t,)
        Per-tilt mean and population std (``ddof=0``) of the original, un-normalised style
        stack (the golden file is matched with ``ddof=0`` on both sides; with one ddof used
        consistently the result is the same).

    Returns
    -------
    numpy.ndarray (t, H, W) float32
        ``(out_i − mean(out_i)) / std(out_i) · target_std_i + target_mean_i``, in float64
        internally.
    """
    a = np.asarray(out.detach().cpu() if isinstance(out, torch.Tensor) else out, np.float64)
    if a.ndim == 2:
        a = a[None]
    mu = np.asarray(target_mean, np.float64).reshape(-1, 1, 1)
    sd = np.asarray(target_std, np.float64).reshape(-1, 1, 1)
    if mu.shape[0] != a.shape[0] or sd.shape[0] != a.shape[0]:
        raise ValueError(f"{a.shape[0]} tilts but {mu.shape[0]} means / {sd.shape[0]} stds")
    m = a.mean(axis=(1, 2), keepdims=True)
    s = a.std(axis=(1, 2), keepdims=True)
    s = np.where(s > 0, s, 1.0)  # a constant tilt stays constant (at the target mean)
    return ((a - m) / s * sd + mu).astype(np.float32)


def _is_grams(style: Any) -> bool:
    return isinstance(style, (list, tuple)) and all(isinstance(g, torch.Tensor) for g in style)


def style_grams(
    vgg: nn.Module,
    style: np.ndarray | torch.Tensor,
    *,
    params: NSTParams | None = None,
    batch: int | None = None,
    precision: Precision = "fp32",
    algorithm: Algorithm = "auto",
    device: torch.device | str | None = None,
    tile: int | None = None,
    **overrides: Any,
) -> list[torch.Tensor]:
    """Gram matrices of the style tilts at the style layers (compute once, reuse).

    Parameters
    ----------
    vgg : torch.nn.Module
        From :func:`build_vgg` / :func:`get_vgg`.
    style : array (t, H, W) float
        Style tilts normalised to [0, 1] (:func:`normalise` with the stack's extrema).
    params, **overrides
        :class:`NSTParams` (only ``style_layers`` is used).
    batch : int, optional
        Tilts per forward pass (default :func:`default_batch`).
    precision : {"fp32", "tf32", "bf16"}
    algorithm : {"auto", "winograd", "direct"}
        As in :func:`stylise` (use the same for the Grams and the stylisation).
    device : torch device, optional
        Default: the device of ``vgg``.
    tile : int, optional
        Compute the Grams tile by tile (a multiple of 16), summing ``F Fᵀ`` over tiles as
        :func:`stylise_tiled` does, so a large tilt's activations are never held whole; the
        result is then exactly the Grams :func:`stylise_tiled` computes for itself (same
        ``batch``).

    Returns
    -------
    list of torch.Tensor
        One float32 ``(t, C_l, C_l)`` tensor per ``params.style_layers`` entry, in that order,
        on ``device``; ``G = F Fᵀ / (H_l W_l)`` of the (unweighted) features.
    """
    p = _params(params, overrides)
    dev = _resolve_device(vgg, device)
    s = _as_stack(style, "style", dev)
    h, w = s.shape[-2:]
    plan = _make_plan(vgg, dev, precision, algorithm, h * w)
    if tile is not None:
        if tile <= 0 or tile % 16:
            raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
        halo_f = tile_halo(p, backward=False)
        tiles = _tiles(h, w, tile)
        crop = (min(h, tile + 2 * tile_halo(p, backward=True)),
                min(w, tile + 2 * tile_halo(p, backward=True)))
        b = batch or default_batch(crop, dev)
    else:
        b = batch or default_batch(s.shape[-2:], dev)
    parts: dict[int, list[torch.Tensor]] = {l: [] for l in p.style_layers}
    with _precision(precision, dev):
        for i0 in range(0, s.shape[0], b):
            if not p.style_layers:
                break
            if tile is not None:
                sg = _tiled_grams(plan, s[i0:i0 + b], tiles, halo_f, p.style_layers)
            else:
                _, sg = _targets(plan, None, s[i0:i0 + b], p)
            for l in p.style_layers:
                parts[l].append(sg[l])
    return [torch.cat(parts[l]) for l in p.style_layers]


def stylise(
    vgg: nn.Module,
    content: np.ndarray | torch.Tensor,
    init: np.ndarray | torch.Tensor,
    style: np.ndarray | torch.Tensor | Sequence[torch.Tensor],
    *,
    params: NSTParams | None = None,
    batch: int | None = None,
    precision: Precision = "fp32",
    algorithm: Algorithm = "auto",
    streams: int | None = None,
    device: torch.device | str | None = None,
    **overrides: Any,
) -> np.ndarray:
    """Style-transfer a block of tilts (METHOD §4): the fast path.

    Parameters
    ----------
    vgg : torch.nn.Module
        From :func:`build_vgg` / :func:`get_vgg` (read only).
    content, init : array (t, H, W) float
        CONTENT and NOISY tilts, each min–max normalised to [0, 1] over its whole stack.
    style : array (t, H, W) float, or list of tensors
        Normalised style tilts (tilt i styles tilt i), or their :func:`style_grams` (one
        ``(t, C, C)`` tensor per style layer, same ``style_layers``).
    params : NSTParams, optional
        Method settings; ``**overrides`` replace single fields (``lr=0.1``, ``iterations=2``).
    batch : int, optional
        Tilts per pass (default :func:`default_batch`). Changes only the rounding (each
        tilt's gradient agrees to ~1e-6 relative), as does torch's thread count.
    precision : {"fp32", "tf32", "bf16"}
        ``fp32`` (default) is IEEE float32 throughout. ``tf32`` allows TF32 on CUDA (no-op on
        CPU); ``bf16`` autocasts convolutions/matmuls to bfloat16 (losses stay float32). Both
        flip the sign of small gradient elements and so change some pixels by ±lr/(3·1.99).
    algorithm : {"auto", "winograd", "direct"}
        How the 3×3 convolutions are computed. ``direct``: oneDNN/cuDNN direct convolution,
        as the original (on CPU it reproduces :func:`stylise_reference` to ~1e-4 on all but a
        handful of pixels). ``winograd`` (CPU, fp32/tf32): the convs from conv3_1 on (74 % of
        the multiply-adds) through NNPACK's Winograd transform, ~2× faster per conv
        single-threaded, relative error ~1e-5 instead of ~3e-7; measured to flip no more
        gradient signs than ``direct`` (module docstring). ``auto`` (default): ``winograd``
        on CPU when torch runs single-threaded (one thread per Dask worker, or in
        ``streams``), the tilt has ≥ 192² pixels and NNPACK is available; else ``direct``.
    streams : int, optional
        CPU only: process blocks of tilts in this many threads at once, each running torch
        single-threaded (the process-wide torch thread count is set to 1 for the duration of
        the call and restored after). Tilt-level parallelism scales better than torch's
        intra-op threads here (measured at 2 threads: 1.5× instead of ~1×) and lets ``auto``
        use Winograd. Default: ``torch.get_num_threads()`` on CPU (capped at the number of
        blocks); ``1`` keeps the caller's threading untouched. The result is bit-identical
        to ``streams=1`` run with one torch thread (same ``algorithm``).
    device : torch device, optional
        Default: the device of ``vgg``.

    Returns
    -------
    numpy.ndarray (t, H, W) float32
        The stylised tilts in normalised units ([0, 1]), before :func:`match_mean_std`.

    Notes
    -----
    NNPACK sizes its thread pool once per process from ``torch.get_num_threads()`` at its first
    use: run the first Winograd call single-threaded (Dask workers with one thread do, and so
    does ``streams``), or its pool serialises concurrent calls.
    """
    p = _params(params, overrides)
    dev = _resolve_device(vgg, device)
    c = _as_stack(content, "content", dev)
    x0 = _as_stack(init, "init", dev)
    if c.shape != x0.shape:
        raise ValueError(f"content {tuple(c.shape)} and init {tuple(x0.shape)} differ")
    grams_in = _is_grams(style)
    if grams_in:
        if len(style) != len(p.style_layers):
            raise ValueError(f"{len(style)} Gram tensors for {len(p.style_layers)} style layers")
        grams_all = [g.to(dev) for g in style]
        if any(g.shape[0] != c.shape[0] for g in grams_all):
            raise ValueError("style Grams and content have different tilt counts")
        s = None
    else:
        s = _as_stack(style, "style", dev)
        if s.shape[0] != c.shape[0]:
            raise ValueError(f"{s.shape[0]} style tilts for {c.shape[0]} content tilts")
    t = c.shape[0]
    b = batch or default_batch(c.shape[-2:], dev)
    blocks = [slice(i0, min(i0 + b, t)) for i0 in range(0, t, b)]
    n_streams = _n_streams(streams, dev, len(blocks))
    out = np.empty(tuple(c.shape), np.float32)

    def run(sl: slice) -> None:
        # autocast and inference mode are per thread: enter them in the thread that computes
        with _precision(precision, dev):
            plan = _make_plan(vgg, dev, precision, algorithm, c.shape[-1] * c.shape[-2])
            cf, sg = _targets(plan, c[sl], None if grams_in else s[sl], p)
            if grams_in:
                sg = {l: g[sl] for l, g in zip(p.style_layers, grams_all)}
            x = x0[sl, None].expand(-1, 3, -1, -1).clone()
            opt = _AdamEMA(x, p)
            for _ in range(p.iterations):
                _, grad = _loss_and_grad(plan, x, cf, sg, p)
                opt.update(grad)
            out[sl] = opt.result().float().cpu().numpy()

    if n_streams == 1:
        for sl in blocks:
            run(sl)
    else:
        with _single_threaded_torch(), ThreadPoolExecutor(n_streams) as pool:
            for _ in pool.map(run, blocks):  # re-raises the first error
                pass
    return out


def stylise_reference(
    vgg: nn.Module,
    content: np.ndarray | torch.Tensor,
    init: np.ndarray | torch.Tensor,
    style: np.ndarray | torch.Tensor,
    *,
    params: NSTParams | None = None,
    device: torch.device | str | None = None,
    **overrides: Any,
) -> np.ndarray:
    """The straightforward per-tilt loop (the oracle): autograd and ``torch.optim.Adam``.

    One tilt at a time, 3-channel images, style Grams recomputed for every tilt, the VGG
    module called layer by layer as Crowson's ``VGGFeatures`` does; IEEE float32. Same
    parameters and result as :func:`stylise` (normalised units, (t, H, W) float32).
    """
    p = _params(params, overrides)
    dev = _resolve_device(vgg, device)
    c_all = _as_stack(content, "content", dev)
    x_all = _as_stack(init, "init", dev)
    s_all = _as_stack(style, "style", dev)
    mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
    ctaps, staps = p.content_taps(), p.style_taps()

    def feats(img: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        h = (img - mean) / std
        out = {}
        for i in range(max(layers) + 1):
            h = vgg[i](h)
            if i in layers:
                out[i] = h
        return out

    def gram(f: torch.Tensor) -> torch.Tensor:
        m = f.flatten(-2)
        return m @ m.transpose(-2, -1) / m.shape[-1]

    def smse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = a - b
        return d.pow(2).sum() / d.abs().sum().add(_SMSE_EPS)

    res = np.empty(tuple(c_all.shape), np.float32)
    with _precision("fp32", dev):
        for i in range(c_all.shape[0]):
            c = c_all[i][None, None].repeat(1, 3, 1, 1)
            s = s_all[i][None, None].repeat(1, 3, 1, 1)
            x = x_all[i][None, None].repeat(1, 3, 1, 1)
            ct = feats(c, list(ctaps)) if ctaps else {}
            st = feats(s, list(staps)) if staps else {}
            sg = {l: gram(st[l]) for l in staps}
            x.requires_grad_(True)
            opt = torch.optim.Adam([x], lr=p.lr, betas=p.betas, eps=p.eps)
            decay = torch.tensor(p.ema_decay)
            accum = torch.tensor(1.0)
            avg = torch.zeros_like(x)
            accum *= decay
            avg *= decay
            avg += (1 - decay) * x.detach()
            for _ in range(p.iterations):
                f = feats(x, sorted({*ctaps, *staps}))
                loss = sum(w * smse(f[l], ct[l]) for l, w in ctaps.items())
                loss = loss + sum(w * smse(gram(f[l]), sg[l]) for l, w in staps.items())
                if p.tv_weight:
                    pad = F.pad(x, (0, 1, 0, 1), mode="replicate")
                    dx = pad[..., :-1, 1:] - pad[..., :-1, :-1]
                    dy = pad[..., 1:, :-1] - pad[..., :-1, :-1]
                    loss = loss + p.tv_weight * (dx**2 + dy**2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
                accum *= decay
                avg *= decay
                avg += (1 - decay) * x.detach()
            res[i] = (avg / (1 - accum)).clamp(0, 1)[0].mean(0).cpu().numpy()
    return res


def style_transfer_stack(
    content: np.ndarray | torch.Tensor,
    style: np.ndarray | torch.Tensor,
    init: np.ndarray | torch.Tensor,
    vgg: nn.Module,
    *,
    params: NSTParams | None = None,
    batch: int | None = None,
    tile: int | None = None,
    precision: Precision = "fp32",
    algorithm: Algorithm = "auto",
    streams: int | None = None,
    device: torch.device | str | None = None,
    **overrides: Any,
) -> np.ndarray:
    """The whole in-memory FakET style transfer of one tilt-series (METHOD §4).

    Parameters
    ----------
    content, style, init : array (t, H, W)
        CONTENT, STYLE (measured reference of another tomogram) and NOISY stacks in their
        original units.
    vgg : torch.nn.Module
        From :func:`build_vgg` / :func:`get_vgg`.
    params, batch, precision, algorithm, streams, device, **overrides
        As in :func:`stylise` (``streams`` is not used with ``tile``).
    tile : int, optional
        Use :func:`stylise_tiled` with this tile size (pixels, a multiple of 16).

    Returns
    -------
    numpy.ndarray (t, H, W) float32
        Stylised tilts with each tilt's mean/std equal to the style tilt's (``ddof=0``).
    """
    s_raw = np.asarray(style.detach().cpu() if isinstance(style, torch.Tensor) else style)
    c, s, x = normalise(content), normalise(s_raw), normalise(init)
    if tile is None:
        out = stylise(vgg, c, x, s, params=params, batch=batch, precision=precision,
                      algorithm=algorithm, streams=streams, device=device, **overrides)
    else:
        out = stylise_tiled(vgg, c, x, s, tile=tile, params=params, precision=precision,
                            algorithm=algorithm, device=device, **overrides)
    s64 = s_raw.astype(np.float64)
    return match_mean_std(out, s64.mean(axis=(1, 2)), s64.std(axis=(1, 2)))


# --------------------------------------------------------------------------------------------
# Tiled variant (large tilts)
# --------------------------------------------------------------------------------------------
def _vgg19_kinds() -> list[str]:
    """Op kinds of torchvision's VGG-19 ``features`` (config "E")."""
    kinds: list[str] = []
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"):
        kinds += ["pool"] if v == "M" else ["conv", "relu"]
    return kinds


def _strides(last: int) -> list[int]:
    """Input pixels per feature of each ``features`` output up to ``last``."""
    out, s = [], 1
    for k in _vgg19_kinds()[: last + 1]:
        s *= 2 if k == "pool" else 1
        out.append(s)
    return out


def tile_halo(params: NSTParams | None = None, *, backward: bool = True, **overrides: Any) -> int:
    """Margin (pixels, a multiple of 16) around a tile that makes tiled results exact.

    A tile is processed on a crop that extends ``halo`` pixels beyond it (less at the image
    border). At the crop's artificial edges the convolutions see padding instead of the
    neighbouring pixels; this *contamination* grows by one feature per 3×3 conv and halves
    (rounding up) at each 2×2 pooling. ``backward=False``: the margin after which every
    tap-layer feature of the tile is exact (pass 1, statistics). ``backward=True``: the margin
    after which the gradient w.r.t. every tile pixel is exact, i.e. the contamination plus the
    backward reach of the deepest tap (pass 2). Derived by propagating the contaminated prefix
    through the layer sequence; for FakET's layers: 80 and 160 pixels.
    """
    p = _params(params, overrides)
    last = p.last_layer
    kinds = _vgg19_kinds()[: last + 1]
    strides = _strides(last)
    taps = set(p.content_layers) | set(p.style_layers)
    contam: list[int] = []  # contaminated features from the crop edge after each op
    c = 0
    for k in kinds:
        c = c + 1 if k == "conv" else (c + 1) // 2 if k == "pool" else c
        contam.append(c)
    if not backward:
        need = max(contam[l] * strides[l] for l in taps)
    else:
        w = 0  # wrong gradient elements from the crop edge, at the current op's output
        for i in range(last, -1, -1):
            if i in taps or kinds[i] == "relu":  # tap gradients / ReLU masks of bad features
                w = max(w, contam[i])
            if kinds[i] == "pool":  # unpooling spreads each wrong element over its window
                w = 2 * max(w, contam[i])
            elif kinds[i] == "conv":  # the adjoint reaches one further, and misses the outside
                w = w + 1
        need = w
    return -(-need // 16) * 16


def _tiles(h: int, w: int, tile: int) -> list[tuple[int, int, int, int]]:
    return [(y0, min(y0 + tile, h), x0, min(x0 + tile, w))
            for y0 in range(0, h, tile) for x0 in range(0, w, tile)]


def _crop(t: tuple[int, int, int, int], halo: int, h: int, w: int, align: int = 16
          ) -> tuple[int, int, int, int]:
    """Crop of tile ``t`` with margin ``halo``; its origin a multiple of ``align`` (16: pooling
    windows coincide with the whole image's; 96 with Winograd, whose 6×6 output tiles, at
    1/4 … 1/16 resolution, then also coincide, so the crop's arithmetic is the image's)."""
    y0, y1, x0, x1 = t
    return (max(0, (y0 - halo) // align * align), min(h, y1 + halo),
            max(0, (x0 - halo) // align * align), min(w, x1 + halo))


def _align(plan: _Plan) -> int:
    return 96 if any(op.winograd for op in plan.ops) else 16


def _interior(f: torch.Tensor, t: tuple[int, int, int, int], crop: tuple[int, int, int, int],
              stride: int) -> torch.Tensor:
    """The features of tile ``t`` in the map ``f`` computed on ``crop`` (offsets are
    multiples of 16, so pooling windows coincide with the whole image's)."""
    y0, y1, x0, x1 = t
    cy, _, cx, _ = crop
    return f[..., (y0 - cy) // stride:(y1 - cy) // stride, (x0 - cx) // stride:(x1 - cx) // stride]


def _tiled_grams(plan: _Plan, imgs: torch.Tensor, tiles: list, halo: int,
                 layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Whole-image Grams of ``imgs`` (B, H, W) from tile crops: Σ_tiles F_t F_tᵀ / (H_l W_l)."""
    h, w = imgs.shape[-2:]
    strides = _strides(max(layers))
    acc: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        for t in tiles:
            cr = _crop(t, halo, h, w, _align(plan))
            feats = _features(plan, _to_input(imgs[:, cr[0]:cr[1], cr[2]:cr[3]], plan), layers)
            with _no_autocast(plan.device):
                for l in layers:
                    m = _interior(feats.pop(l), t, cr, strides[l]).float().flatten(2)
                    g = torch.bmm(m, m.transpose(1, 2)).double()
                    acc[l] = g if l not in acc else acc[l].add_(g)
    return {l: (acc[l] / ((h // strides[l]) * (w // strides[l]))).float() for l in layers}


def _tiled_loss_and_grad(
    plan: _Plan, x: torch.Tensor, content: torch.Tensor, grams: Mapping[int, torch.Tensor],
    p: NSTParams, tiles: list, halo_f: int, halo_b: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_loss_and_grad` computed tile by tile (two passes, see :func:`stylise_tiled`)."""
    ctaps, staps = p.content_taps(), p.style_taps()
    taps = sorted(set(ctaps) | set(staps))
    last = p.last_layer
    strides = _strides(last)
    b, _, h, w = x.shape
    dev = plan.device
    ones = (b,) + (1,) * 3
    # Pass 1: the global sums each ScaledMSE needs (content: Σ|d|, Σd² over the whole map;
    # style: the whole Gram, a sum of per-tile F Fᵀ).
    s1 = {l: torch.zeros(b, dtype=torch.float64, device=dev) for l in ctaps}
    s2 = {l: torch.zeros(b, dtype=torch.float64, device=dev) for l in ctaps}
    gx: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        for t in tiles:
            cr = _crop(t, halo_f, h, w, _align(plan))
            xn = ((x[..., cr[0]:cr[1], cr[2]:cr[3]] - plan.mean) / plan.std).contiguous(
                memory_format=plan.memory_format)
            feats = _features(plan, xn, taps)
            cfeats = (_features(plan, _to_input(content[:, cr[0]:cr[1], cr[2]:cr[3]], plan),
                                list(ctaps)) if ctaps else {})
            with _no_autocast(dev):
                for l in ctaps:
                    d = (_interior(feats[l], t, cr, strides[l]).float()
                         - _interior(cfeats[l], t, cr, strides[l]).float())
                    s1[l] += d.abs().sum((1, 2, 3)).double()
                    s2[l] += d.square().sum((1, 2, 3)).double()
                for l in staps:
                    m = _interior(feats[l], t, cr, strides[l]).float().flatten(2)
                    g = torch.bmm(m, m.transpose(1, 2)).double()
                    gx[l] = g if l not in gx else gx[l].add_(g)
            del feats, cfeats
    loss = torch.zeros(b, dtype=torch.float64, device=dev)
    cs1, cs2, dgs = {}, {}, {}
    for l, wt in ctaps.items():
        loss += wt * s2[l] / (s1[l] + _SMSE_EPS)
        cs1[l] = (s1[l] + _SMSE_EPS).float().view(ones)
        cs2[l] = s2[l].float().view(ones)
    for l, wt in staps.items():
        n = (h // strides[l]) * (w // strides[l])
        l_s, dgs[l] = _smse_and_grad((gx.pop(l) / n).float(), grams[l])
        loss += wt * l_s.double()

    # Pass 2: every tile's gradient, given the global terms, on a crop wide enough that all
    # features reaching the tile's pixels are exact.
    grad = torch.empty_like(x)
    for t in tiles:
        cr = _crop(t, halo_b, h, w, _align(plan))
        xn = ((x[..., cr[0]:cr[1], cr[2]:cr[3]] - plan.mean) / plan.std).contiguous(
            memory_format=plan.memory_format)
        if ctaps:
            with torch.inference_mode():
                cf = _features(plan, _to_input(content[:, cr[0]:cr[1], cr[2]:cr[3]], plan),
                               list(ctaps))
            cf = {l: v.clone() for l, v in cf.items()}

        def tap_fn(i: int, f: torch.Tensor) -> torch.Tensor | None:
            g_tap = None
            if i in ctaps:
                d = f.float() - cf[i].float()
                g_tap = _smse_grad_given(d, cs1[i], cs2[i]).mul_(ctaps[i])
            if i in staps:
                n = (h // strides[i]) * (w // strides[i])
                g_s = _gram_backward(f, dgs[i], staps[i], n)
                g_tap = g_s if g_tap is None else g_tap.add_(g_s)
            return g_tap

        g = _backprop(plan, xn, last, tap_fn) / plan.std
        y0, y1, x0, x1 = t
        grad[..., y0:y1, x0:x1] = g[..., y0 - cr[0]:y1 - cr[0], x0 - cr[2]:x1 - cr[2]]
    loss = loss.float()
    if p.tv_weight:  # local (one pixel): on the whole image directly
        l_tv, g_tv = _tv_and_grad(x, p.tv_weight)
        loss = loss + l_tv
        grad += g_tv
    return loss, grad


def stylise_tiled(
    vgg: nn.Module,
    content: np.ndarray | torch.Tensor,
    init: np.ndarray | torch.Tensor,
    style: np.ndarray | torch.Tensor | Sequence[torch.Tensor],
    *,
    tile: int = 512,
    params: NSTParams | None = None,
    batch: int | None = None,
    precision: Precision = "fp32",
    algorithm: Algorithm = "auto",
    device: torch.device | str | None = None,
    **overrides: Any,
) -> np.ndarray:
    """:func:`stylise` for tilts too large for the VGG activations to fit in memory at once.

    Each tilt is processed in ``tile × tile`` tiles, each on a crop with a margin
    (:func:`tile_halo`), in two passes per Adam iteration:

    1. per tile (margin 80 px), the tile's exact features give its share of the global sums
       the loss needs: Σ|d| and Σd² of the content term, F Fᵀ of every style layer;
    2. per tile (margin 160 px), the loss gradient w.r.t. the tile's pixels, with the global
       terms: for ScaledMSE with global ``S1 = Σ|a−b| + eps``, ``S2 = Σ(a−b)²`` it is
       ``2(a−b)/S1 − S2·sign(a−b)/S1²``, and through a Gram ``(dG + dGᵀ) F / n``.

    Style Grams are likewise summed over tiles. Tile offsets are multiples of 16, so every
    pooling window of a crop is one of the whole image's, and the crop's interior is computed
    exactly as in the whole image (up to float rounding of the sums). Peak memory follows the
    crop, about ``(tile + 320)²`` pixels per tilt of ``batch`` (origins are aligned to 16, or
    96 with Winograd), not the tilt; the cost is about ``(1 + 320/tile)²`` times that of
    :func:`stylise` for the backward pass, so use the largest tile that fits.

    Parameters
    ----------
    vgg, content, init, style, params, precision, algorithm, device, **overrides
        As in :func:`stylise` (``algorithm="auto"`` decides by the whole tilt's size).
    tile : int
        Tile edge in pixels, a multiple of 16.
    batch : int, optional
        Tilts processed together (default: as many as :func:`default_batch` allows for one
        crop).

    Returns
    -------
    numpy.ndarray (t, H, W) float32
        As :func:`stylise`: equal up to isolated flipped sign steps (module docstring).
    """
    p = _params(params, overrides)
    if tile <= 0 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
    dev = _resolve_device(vgg, device)
    c = _as_stack(content, "content", dev)
    x0 = _as_stack(init, "init", dev)
    if c.shape != x0.shape:
        raise ValueError(f"content {tuple(c.shape)} and init {tuple(x0.shape)} differ")
    t, h, w = c.shape
    plan = _make_plan(vgg, dev, precision, algorithm, h * w)
    grams_in = _is_grams(style)
    if grams_in:
        if len(style) != len(p.style_layers):
            raise ValueError(f"{len(style)} Gram tensors for {len(p.style_layers)} style layers")
        grams_all = [g.to(dev) for g in style]
        s = None
    else:
        s = _as_stack(style, "style", dev)
        if s.shape != c.shape:
            raise ValueError(f"style {tuple(s.shape)} and content {tuple(c.shape)} differ")
    halo_f = tile_halo(p, backward=False)
    halo_b = tile_halo(p, backward=True)
    tiles = _tiles(h, w, tile)
    b = batch or default_batch((min(h, tile + 2 * halo_b), min(w, tile + 2 * halo_b)), dev)
    out = np.empty((t, h, w), np.float32)
    with _precision(precision, dev):
        for i0 in range(0, t, b):
            sl = slice(i0, min(i0 + b, t))
            if grams_in:
                sg = {l: g[sl] for l, g in zip(p.style_layers, grams_all)}
            elif p.style_layers:
                sg = _tiled_grams(plan, s[sl], tiles, halo_f, p.style_layers)
            else:
                sg = {}
            x = x0[sl, None].expand(-1, 3, -1, -1).clone()
            opt = _AdamEMA(x, p)
            for _ in range(p.iterations):
                _, grad = _tiled_loss_and_grad(plan, x, c[sl], sg, p, tiles, halo_f, halo_b)
                opt.update(grad)
            out[sl] = opt.result().float().cpu().numpy()
    return out
