"""FakET's VGG-19 feature extractor: building it, its weights, and a per-process cache.

``docs/method.md §4`` item 2: torchvision's VGG-19 ``features`` through relu5_1, the first
convolution padding with mode ``replicate`` (same weights), max pooling, frozen. Weights:
torchvision's ``IMAGENET1K_V1`` (from the local torch hub cache only, never downloaded here;
:func:`fetch_imagenet_weights` does that on request), random ones (the paper's ablation), or a
state-dict file.
"""
from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ...params.nst import LAST_LAYER, NAMED_WEIGHTS
from ...params.nst import imagenet_weights_path  # re-exported: the torch-free owner
from .plan import clear_plans

__all__ = ["WeightsSpec", "WeightsUnavailableError", "build_vgg", "clear_vgg_cache",
           "fetch_imagenet_weights", "get_vgg", "imagenet_weights_path", "weights_key"]

WeightsSpec = str | os.PathLike


class WeightsUnavailableError(RuntimeError):
    """The requested VGG-19 weights cannot be loaded without a download."""


#: VGG-19's ``features`` (configuration "E" of Simonyan & Zisserman 2015, as torchvision's
#: ``vgg.cfgs["E"]``): output channels of each 3×3 convolution, ``"M"`` a 2×2 max pooling.
VGG19_LAYOUT: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                       512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def _vgg19_features_skeleton() -> nn.Sequential:
    """VGG-19 ``features`` with throw-away weights, laid out as torchvision's ``make_layers``
    (conv 3×3 padding 1, ReLU(inplace), max pooling 2×2; the same module indices, so the same
    state-dict keys; ``tests/kernels/test_nst_vgg.py`` compares). Why not torchvision's own:
    importing torchvision costs ~1.9 s in every worker process, paid by its first NST task
    (measured in the demo); loading weights needs only the layout."""
    layers: list[nn.Module] = []
    channels = 3
    for v in VGG19_LAYOUT:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = int(v)
    return nn.Sequential(*layers)


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
    from torchvision.models import vgg as tv_vgg

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            features = tv_vgg.make_layers(tv_vgg.cfgs["E"], batch_norm=False)
        except (AttributeError, KeyError):  # torchvision internals moved: the expensive way
            return tv_vgg.vgg19(weights=None).features
        scratch = torch.empty(2**22)
        # fan_in, fan_out of torchvision's classifier: Linear(512·7·7, 4096), (4096, 4096),
        # (4096, 1000); the values are discarded, only the number of draws matters
        for fan_in, fan_out in ((512 * 7 * 7, 4096), (4096, 4096), (4096, 1000)):
            bound = 1.0 / math.sqrt(fan_in)
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


#: Environment variable naming the directory of the random-weights cache
#: (default ``~/.cache/faket-dask``); ``none`` turns the cache off.
CACHE_ENV = "FAKET_CACHE_DIR"
#: Random-weights files kept in the cache (80 MB each), the most recently drawn.
RANDOM_CACHE_FILES = 4


def random_weights_cache_path(seed: int) -> Path | None:
    """The file that caches :func:`_random_vgg19_features` of ``seed`` (None: cache off).

    Keyed by torch's and torchvision's versions, whose RNG and init code make the values.
    """
    root = os.environ.get(CACHE_ENV, "")
    if root.lower() == "none":
        return None
    from importlib.metadata import version

    # the installed distribution's version, not torchvision.__version__: importing
    # torchvision costs ~1.9 s per process, and the key only needs to change with its code
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "faket-dask"
    return base / f"vgg19-random-seed{int(seed)}-torch{torch.__version__}-tv{version('torchvision')}.pt"


def _random_features_cached(seed: int) -> nn.Sequential:
    """:func:`_random_vgg19_features` through a file cache.

    Drawing the weights costs ~1.9 s per process (most of it the classifier's 123 M discarded
    draws, which fix the RNG state the convs are drawn from), paid by every Dask worker that
    uses random weights; reading the 80 MB of ``features`` back costs ~0.1 s. The file holds
    exactly the drawn values (``tests/kernels/test_nst_vgg.py`` compares), written atomically;
    an unreadable file is drawn again and replaced.
    """
    path = random_weights_cache_path(seed)
    if path is not None and path.is_file():
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
            with torch.random.fork_rng(devices=[]):
                features = _vgg19_features_skeleton()
            features.load_state_dict(sd, strict=True)
            return features
        except Exception:  # noqa: BLE001 - a bad cache file is redrawn, never fatal
            pass
    features = _random_vgg19_features(seed)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
            torch.save(features.state_dict(), tmp)
            os.replace(tmp, path)
            # 80 MB a seed: keep the most recently drawn few
            old = sorted(path.parent.glob("vgg19-random-seed*.pt"), key=lambda f: f.stat().st_mtime)
            for f in old[:-RANDOM_CACHE_FILES]:
                f.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only home: no cache, same weights
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


def fetch_imagenet_weights(progress: bool = True) -> Path:
    """Download torchvision's ImageNet VGG-19 weights into the torch hub cache (needs internet).

    Returns
    -------
    Path
        The cached state-dict file (see :func:`imagenet_weights_path`).

    Raises
    ------
    Exception
        Whatever torchvision raises when offline or on a hash mismatch (``URLError``, ...).
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
        pooling, eval mode, ``requires_grad=False``, float32.

    Raises
    ------
    WeightsUnavailableError
        ``"imagenet"`` is not cached, or the file is missing, unreadable or incompatible.
    """
    if isinstance(weights, str) and weights == "random":
        return _finish_features(_random_features_cached(seed), device)

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


def weights_key(weights: WeightsSpec) -> str:
    """``"random"``, ``"imagenet"`` or the resolved path of a weights file."""
    if isinstance(weights, str) and weights in NAMED_WEIGHTS:
        return weights
    return str(Path(weights).expanduser().resolve())


def get_vgg(
    weights: WeightsSpec = "random", seed: int = 0, device: torch.device | str | None = None
) -> nn.Sequential:
    """:func:`build_vgg`, built once per process and ``(weights, seed, device)``.

    A Dask worker calls this in every task; only the first call pays for the build. The
    returned module is shared: treat it as read-only.
    """
    key_w = weights_key(weights)
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
    clear_plans()
