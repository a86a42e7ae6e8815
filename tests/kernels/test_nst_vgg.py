"""The NST network and settings (``docs/method.md §4`` item 2): VGG-19 construction, weights
sources, the per-process cache, and the torch-free parameter tables of ``faket_dask.params.nst``.

Random weights and local files only (no downloads).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from faket_dask.kernels import nst
from faket_dask.params.nst import LAST_LAYER, NSTParams, layer_channels, layer_kinds, layer_strides

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def vgg():
    return nst.get_vgg("random", seed=0)


@pytest.fixture(scope="module")
def torchvision_vgg19():
    """``torch.manual_seed(0); torchvision.models.vgg19(weights=None)``, the golden's recipe."""
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torchvision.models.vgg19(weights=None)


def test_random_vgg_matches_golden_weights(vgg, golden):
    gold = golden("style_transfer")
    w = vgg[0].weight.detach().cpu().numpy()
    np.testing.assert_array_equal(w, gold["vgg19_conv1_1_weight"])
    assert vgg[0].padding_mode == "replicate"
    assert len(vgg) == LAST_LAYER + 1 and isinstance(vgg[29], torch.nn.ReLU)
    assert all(isinstance(vgg[i], torch.nn.MaxPool2d) for i in (4, 9, 18, 27))
    assert not any(p.requires_grad for p in vgg.parameters()) and not vgg.training


def test_build_vgg_keeps_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    nst.build_vgg("random", seed=0)
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())


@pytest.mark.parametrize("device", DEVICES)
def test_get_vgg_is_cached(vgg, device):
    if device == "cpu":
        assert nst.get_vgg("random", 0) is vgg
    m = nst.get_vgg("random", 0, device=device)
    assert nst.get_vgg("random", 0, device=device) is m
    assert next(m.parameters()).device.type == device
    torch.testing.assert_close(m[28].weight.cpu(), vgg[28].weight, rtol=0, atol=0)


def test_random_vgg_equals_torchvision_construction(vgg, torchvision_vgg19):
    """The classifier-free build draws exactly torchvision's conv weights."""
    full = torchvision_vgg19.features[:30]
    for (k, a), b in zip(vgg.state_dict().items(), full.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    other = nst.build_vgg("random", seed=1)
    assert not torch.equal(other[0].weight, vgg[0].weight)


def test_random_weights_file_cache(tmp_path, monkeypatch, torchvision_vgg19):
    """The disk cache of random weights holds exactly the drawn values; a bad file is redrawn."""
    from faket_dask.kernels.nst.vgg import CACHE_ENV, random_weights_cache_path

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    path = random_weights_cache_path(0)
    assert path.parent == tmp_path and not path.exists()
    drawn = nst.build_vgg("random", seed=0)             # draws, writes the file
    assert path.is_file()
    loaded = nst.build_vgg("random", seed=0)            # reads it back
    assert same(drawn, loaded)
    full = torchvision_vgg19.features[: LAST_LAYER + 1]
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), full.parameters()))
    path.write_bytes(b"not a state dict")
    assert same(nst.build_vgg("random", seed=0), drawn)  # redrawn and rewritten
    assert same(nst.build_vgg("random", seed=0), drawn)
    monkeypatch.setenv(CACHE_ENV, "none")
    assert random_weights_cache_path(0) is None and same(nst.build_vgg("random", seed=0), drawn)


def test_weights_file(tmp_path, vgg, golden, torchvision_vgg19):
    """A torchvision VGG-19 state dict (full or features-only) gives the same network."""
    gold = golden("style_transfer")
    path = tmp_path / "vgg19_random.pth"
    torch.save(torchvision_vgg19.state_dict(), path)
    feats_path = tmp_path / "vgg19_features.pth"
    torch.save(vgg.state_dict(), feats_path)  # features-only keys, our truncated model
    c, x, s = (nst.normalise(gold[k])[:1] for k in ("content", "init", "style"))
    expected = nst.stylise(vgg, c, x, s)
    for p in (path, str(feats_path)):
        m = nst.build_vgg(p)
        for a, b in zip(m.state_dict().values(), vgg.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        np.testing.assert_array_equal(nst.stylise(m, c, x, s), expected)
    assert nst.get_vgg(path) is nst.get_vgg(str(path))
    assert nst.weights_key(str(path)) == str(path.resolve()) and nst.weights_key("random") == "random"
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(nst.WeightsUnavailableError, match="bad.pth"):
        nst.build_vgg(bad)
    with pytest.raises(nst.WeightsUnavailableError, match="not found"):
        nst.build_vgg(tmp_path / "missing.pth")


def test_imagenet_without_cache_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_download(*args, **kwargs):  # the kernel must never try the network
        raise AssertionError("attempted a download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    with pytest.raises(nst.WeightsUnavailableError) as info:
        nst.build_vgg("imagenet")
    msg = str(info.value)
    assert "faket-dask fetch-weights" in msg and str(tmp_path) in msg
    assert nst.imagenet_weights_path().is_relative_to(tmp_path)


def test_imagenet_from_cache(tmp_path, monkeypatch, vgg):
    """A state dict at torchvision's cache path is picked up offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = nst.imagenet_weights_path()
    path.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in vgg.state_dict().items()}, path)
    m = nst.build_vgg("imagenet")
    torch.testing.assert_close(m[28].weight, vgg[28].weight, rtol=0, atol=0)


def test_params_from_config():
    from faket_dask.config import RunConfig

    p = NSTParams.from_config(RunConfig().style)
    assert p == NSTParams() and nst.NSTParams is NSTParams
    assert p.style_taps()[1] == pytest.approx(256 / 341)
    assert p.content_taps() == {8: 1.0}
    assert p.replace() is p and p.replace(lr=0.1).lr == 0.1
    with pytest.raises(TypeError):
        nst.stylise(None, np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), np.zeros((1, 4, 4)),
                    learning_rate=1.0)
    with pytest.raises(ValueError, match="differ in length"):
        NSTParams(style_layers=(1, 6))


def test_layer_tables(vgg):
    """The torch-free tables agree with the network torchvision builds."""
    kinds = layer_kinds()
    for i, m in enumerate(vgg):
        want = {torch.nn.Conv2d: "conv", torch.nn.ReLU: "relu", torch.nn.MaxPool2d: "pool"}[type(m)]
        assert kinds[i] == want, i
    x = torch.zeros(1, 3, 32, 32)
    with torch.no_grad():
        for i, m in enumerate(vgg):
            x = m(x)
            assert layer_channels(i) == x.shape[1], i
            assert layer_strides()[i] == 32 // x.shape[-1], i
    with pytest.raises(ValueError, match="beyond"):
        layer_channels(LAST_LAYER + 1)
    assert (nst.tile_halo(), nst.tile_halo(backward=False)) == (160, 80)


def test_skeleton_is_torchvisions_layout_and_building_skips_torchvision(tmp_path):
    """Our VGG-19 ``features`` layout is torchvision's ``make_layers(cfgs["E"])`` module by
    module, and building the network from the random-weights cache or a state-dict file does
    not import torchvision (~1.9 s per worker process)."""
    from torchvision.models import vgg as tv_vgg

    from faket_dask.kernels.nst.vgg import VGG19_LAYOUT, _vgg19_features_skeleton

    ours, theirs = _vgg19_features_skeleton(), tv_vgg.make_layers(tv_vgg.cfgs["E"], batch_norm=False)
    assert tuple(tv_vgg.cfgs["E"]) == VGG19_LAYOUT
    assert [repr(m) for m in ours] == [repr(m) for m in theirs]
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    path = tmp_path / "w.pt"
    torch.save(theirs.state_dict(), path)
    env = dict(os.environ, FAKET_CACHE_DIR=str(tmp_path / "cache"))
    draw = "import faket_dask.kernels.nst as nst; nst.build_vgg('random', seed=5)"
    subprocess.run([sys.executable, "-c", draw], check=True, env=env)  # draws and caches
    build = ("import sys, faket_dask.kernels.nst as nst\n"
             f"nst.build_vgg({str(path)!r}); nst.build_vgg('random', seed=5)\n"
             "assert 'torchvision' not in sys.modules, 'torchvision was imported'\n")
    subprocess.run([sys.executable, "-c", build], check=True, env=env)


def test_params_are_torch_free():
    """``faket_dask.params.nst`` is what config and the CLI import: it must not pull torch in."""
    code = "import sys, faket_dask.params.nst; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("env", [{}, {"XDG_CACHE_HOME": "xdg"}, {"TORCH_HOME": "th"},
                                 {"TORCH_HOME": "th", "XDG_CACHE_HOME": "xdg"}])
def test_torch_free_weights_path_is_torchs(tmp_path, monkeypatch, env):
    """params.nst's path rule (no torch import) = torch.hub.get_dir() + torchvision's file name."""
    import os

    from torchvision.models import VGG19_Weights

    from faket_dask.params.nst import IMAGENET_VGG19_URL, imagenet_weights_path

    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for k, v in env.items():
        monkeypatch.setenv(k, str(tmp_path / v))
    assert IMAGENET_VGG19_URL == VGG19_Weights.IMAGENET1K_V1.url
    want = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(VGG19_Weights.IMAGENET1K_V1.url)
    assert imagenet_weights_path() == want == nst.imagenet_weights_path()
    assert want.is_relative_to(tmp_path)
