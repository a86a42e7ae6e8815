"""Tests of the style-transfer kernels (``docs/method.md §4``) against the golden file and the
oracle, on every available device.

Random VGG-19 weights only (no downloads). A note on tolerances: Adam's first step is
``lr·g/(|g| + 1e-8)``, a sign step, so two correct float32 implementations differ by a whole
step (±lr/(3·1.99) ≈ 0.025 in normalised units) wherever a gradient element is within rounding
of zero; and by less than that where |g| ~ 1e-8 (the step is not saturated). Comparisons of
outputs therefore bound the *fraction* of pixels that differ, and gradients are compared
directly. Winograd and ``streams`` exist on CPU only; those tests do not loop over devices.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from faket_dask.kernels import nst
from faket_dask.params.nst import IMAGENET_MEAN, IMAGENET_STD, NSTParams

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SIGN_STEP = 0.15 / (3 * 1.99)  # output change of one flipped channel step, normalised units


def _vgg(device: str):
    return nst.get_vgg("random", seed=0, device=device)


@pytest.fixture(scope="module")
def gold(golden):
    return golden("style_transfer")


@pytest.fixture(scope="module")
def normalised(gold):
    return tuple(nst.normalise(gold[k]) for k in ("content", "init", "style"))


def _smooth_stack(t: int, h: int, w: int, seed: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    a = gaussian_filter(rng.standard_normal((t, h, w)), sigma=(0, 2, 2))
    a = a / a.std() + 0.5 * rng.standard_normal((t, h, w))
    return ((a - a.min()) / (a.max() - a.min())).astype(np.float32)


def _algorithms(device: str) -> list[str]:
    return ["direct", "winograd"] if device == "cpu" and nst.nnpack_available() else ["direct"]


@pytest.mark.parametrize("device", DEVICES)
def test_golden_styled(gold, device):
    """style_transfer_stack reproduces the original implementation's output."""
    vgg = _vgg(device)
    for algorithm in _algorithms(device):
        out = nst.style_transfer_stack(gold["content"], gold["style"], gold["init"], vgg,
                                       algorithm=algorithm)
        ref = gold["styled"]
        assert out.shape == ref.shape and out.dtype == np.float32
        tilt_std = ref.std(axis=(1, 2), keepdims=True)
        err = np.abs(out.astype(np.float64) - ref) / tilt_std
        frac_ok = float((err <= 1e-3).mean())
        print(f"golden [{device} {algorithm}]: {frac_ok:.5%} of pixels within 1e-3 std, "
              f"max {err.max():.2e} std, median {np.median(err):.1e} std")
        assert frac_ok >= 0.999
        assert np.median(err) < 1e-5
        # the final matching: every tilt has the style tilt's mean and (population) std
        s = gold["style"].astype(np.float64)
        np.testing.assert_allclose(out.mean(axis=(1, 2)), s.mean(axis=(1, 2)), atol=1e-5)
        np.testing.assert_allclose(out.std(axis=(1, 2)), s.std(axis=(1, 2)), rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_fast_equals_reference(normalised, device):
    """stylise (hand-written backward, batched) == the autograd per-tilt loop."""
    vgg = _vgg(device)
    c, x, s = normalised
    ref = nst.stylise_reference(vgg, c, x, s)
    fast = nst.stylise(vgg, c, x, s, algorithm="direct")
    d = np.abs(fast - ref)
    assert float((d > 1e-4).mean()) <= 1e-3, f"max {d.max():.2e}"
    assert float(np.median(d)) < 1e-6
    assert d.max() <= SIGN_STEP * 1.01  # at worst an isolated flipped channel step


@pytest.mark.parametrize("device", DEVICES)
def test_fast_equals_reference_two_iterations_tv(device):
    """The general path (Adam over 2 iterations, EMA, TV term) agrees with the oracle too."""
    vgg = _vgg(device)
    c, x, s = (_smooth_stack(2, 48, 40, seed) for seed in (1, 2, 3))
    kw = dict(iterations=2, tv_weight=2.0, lr=0.05)
    ref = nst.stylise_reference(vgg, c, x, s, **kw)
    fast = nst.stylise(vgg, c, x, s, algorithm="direct", **kw)
    d = np.abs(fast - ref)
    assert float((d > 1e-4).mean()) <= 2e-3, f"max {d.max():.2e}"


@pytest.mark.parametrize("device", DEVICES)
def test_gradients_batched_equal_single(normalised, device):
    """Per-image normalisers: the batched gradient is each tilt's own gradient."""
    vgg = _vgg(device)
    dev = torch.device(device)
    c, x, s = (torch.from_numpy(a).to(dev) for a in normalised)
    p = NSTParams()
    plan = nst.make_plan(vgg, dev, "fp32", "direct", 64 * 64)
    xx = x[:, None].expand(-1, 3, -1, -1).clone()
    with nst.nst_runtime("fp32", dev, threads=None):
        cf, sg = nst.loss_targets(plan, c, s, p)
        loss, grad = nst.loss_and_grad(plan, xx, cf, sg, p)
        for i in range(c.shape[0]):
            cf1, sg1 = nst.loss_targets(plan, c[i:i + 1], s[i:i + 1], p)
            l1, g1 = nst.loss_and_grad(plan, xx[i:i + 1], cf1, sg1, p)
            torch.testing.assert_close(loss[i:i + 1], l1, rtol=1e-6, atol=0)
            rel = float((grad[i] - g1[0]).abs().max() / g1.abs().max())
            assert rel < 1e-5, rel


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_matches_autograd(normalised, device):
    """The closed-form backward equals autograd's gradient of the method's loss."""
    vgg = _vgg(device)
    dev = torch.device(device)
    c, x, s = (torch.from_numpy(a[:2]).to(dev) for a in normalised)
    p = NSTParams()
    plan = nst.make_plan(vgg, dev, "fp32", "direct", 64 * 64)
    xx = x[:, None].expand(-1, 3, -1, -1).clone()
    with nst.nst_runtime("fp32", dev, threads=None):
        cf, sg = nst.loss_targets(plan, c, s, p)
        loss, grad = nst.loss_and_grad(plan, xx, cf, sg, p)

        mean = torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1)
        xa = xx.clone().requires_grad_(True)
        h, feats = (xa - mean) / std, {}
        for i in range(30):
            h = vgg[i](h)
            feats[i] = h.clone()
        total = 0.0
        for b in range(2):
            d = feats[8][b] - cf[8][b]
            total = total + d.pow(2).sum() / (d.abs().sum() + 1e-8)
            for layer, w in p.style_taps().items():
                m = feats[layer][b].flatten(1)
                g = m @ m.T / m.shape[1]
                dg = g - sg[layer][b]
                total = total + w * dg.pow(2).sum() / (dg.abs().sum() + 1e-8)
        total.backward()
    torch.testing.assert_close(loss.sum(), total.detach(), rtol=1e-5, atol=0)
    rel = float((grad - xa.grad).abs().max() / xa.grad.abs().max())
    assert rel < 1e-4, rel


@pytest.mark.parametrize("device", DEVICES)
def test_style_grams_reused(normalised, device):
    vgg = _vgg(device)
    c, x, s = normalised
    grams = nst.style_grams(vgg, s)
    assert [tuple(g.shape) for g in grams] == [(5, 64, 64), (5, 128, 128), (5, 256, 256),
                                               (5, 512, 512), (5, 512, 512)]
    assert all(g.device.type == device for g in grams)
    a = nst.stylise(vgg, c, x, grams)
    b = nst.stylise(vgg, c, x, s)
    np.testing.assert_array_equal(a, b)
    # a block of tilts with the matching slice of the Grams
    part = nst.stylise(vgg, c[1:3], x[1:3], [g[1:3] for g in grams], batch=2)
    np.testing.assert_array_equal(part, nst.stylise(vgg, c[1:3], x[1:3], s[1:3], batch=2))


@pytest.mark.parametrize("device", DEVICES)
def test_adam_ema_is_torch_adam(device):
    """AdamEMA's iterates are bit for bit ``torch.optim.Adam``'s (then clamped), and its
    result is the bias-corrected EMA of the iterates (Crowson's ``EMA``)."""
    p = NSTParams(lr=0.15)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 5, 7, generator=gen).to(device)
    grads = [(torch.randn(x0.shape, generator=gen)
              * 10.0 ** torch.randint(-9, 0, x0.shape, generator=gen)).to(device)
             for _ in range(3)]
    x = x0.clone()
    ema = nst.AdamEMA(x, p)
    y = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([y], lr=0.15, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    iterates = [x0.clone()]
    for g in grads:
        ema.update(g)
        y.grad = g.clone()
        opt.step()
        with torch.no_grad():
            y.clamp_(0, 1)
        iterates.append(y.detach().clone())
    torch.testing.assert_close(x, y.detach(), rtol=0, atol=0)
    d = p.ema_decay
    weights = [(1 - d) * d ** (len(iterates) - 1 - k) for k in range(len(iterates))]
    avg = sum(w * it for w, it in zip(weights, iterates)) / sum(weights)
    torch.testing.assert_close(ema.result(), avg.clamp(0, 1).mean(1), rtol=1e-6, atol=1e-7)


def test_match_mean_std():
    rng = np.random.default_rng(0)
    out = rng.random((3, 10, 12)).astype(np.float32)
    mu, sd = np.array([1.0, -2.0, 5.0]), np.array([0.5, 2.0, 3.0])
    got = nst.match_mean_std(out, mu, sd)
    np.testing.assert_allclose(got.mean(axis=(1, 2)), mu, atol=1e-5)
    np.testing.assert_allclose(got.std(axis=(1, 2)), sd, rtol=1e-5)
    with pytest.raises(ValueError):
        nst.match_mean_std(out, mu[:2], sd[:2])


def test_input_validation():
    vgg = _vgg("cpu")
    z = np.zeros((2, 32, 32), np.float32)
    with pytest.raises(ValueError, match="style tilts"):
        nst.stylise(vgg, z, z, z[:1])
    with pytest.raises(ValueError, match="differ"):
        nst.stylise(vgg, z, z[:, :16], z)
    with pytest.raises(ValueError, match="constant"):
        nst.normalise(z)
    with pytest.raises(ValueError, match="precision"):
        nst.stylise(vgg, z + 0.5, z + 0.5, z + 0.5, precision="fp16")
    with pytest.raises(ValueError, match="multiple of 16"):
        nst.stylise_tiled(vgg, z + 0.5, z + 0.5, z + 0.5, tile=24)


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_runs_and_mostly_agrees(normalised, device):
    vgg = _vgg(device)
    c, x, s = (a[:2] for a in normalised)
    ref = nst.stylise(vgg, c, x, s, algorithm="direct")
    try:
        got = nst.stylise(vgg, c, x, s, precision="bf16")
    except RuntimeError as exc:  # pragma: no cover - CPU without bf16 kernels
        pytest.skip(f"bf16 autocast unsupported here: {exc}")
    assert got.dtype == np.float32 and np.isfinite(got).all()
    # bf16 flips many small gradients; most pixels still take the same sign step
    assert float((np.abs(got - ref) < 1e-3).mean()) > 0.7


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape,tile", [((1, 96, 80), 32), ((2, 112, 96), 48)])
def test_tiled_equals_untiled(shape, tile, device):
    vgg = _vgg(device)
    c, x, s = (_smooth_stack(*shape, seed) for seed in (4, 5, 6))
    full = nst.stylise(vgg, c, x, s, algorithm="direct")
    tiled = nst.stylise_tiled(vgg, c, x, s, tile=tile, algorithm="direct")
    std = full.std(axis=(1, 2), keepdims=True)
    d = np.abs(tiled - full) / std
    frac_bad = float((d > 1e-4).mean())
    print(f"tiled {shape} tile {tile} [{device}]: {frac_bad:.3%} of pixels beyond 1e-4 std, "
          f"max {d.max():.2e} std")
    assert frac_bad <= 2e-3
    # tiled Grams are exactly the ones stylise_tiled computes for itself
    grams = nst.style_grams(vgg, s, tile=tile, algorithm="direct")
    np.testing.assert_array_equal(
        nst.stylise_tiled(vgg, c, x, grams, tile=tile, algorithm="direct"), tiled)


@pytest.mark.parametrize("algorithm", ["direct", "winograd"])
def test_streams_do_not_change_the_result(normalised, algorithm):
    """Tilt blocks in concurrent single-threaded streams == one after the other (CPU)."""
    if algorithm == "winograd" and not nst.nnpack_available():
        pytest.skip("torch build without NNPACK")
    vgg = _vgg("cpu")
    c, x, s = (a[:4] for a in normalised)
    threads = torch.get_num_threads()
    # torch's reductions round differently with other thread counts: compare like with like
    with nst.nst_runtime("fp32", "cpu", threads=1):
        one = nst.stylise(vgg, c, x, s, batch=1, streams=1, algorithm=algorithm)
    assert torch.get_num_threads() == threads
    two = nst.stylise(vgg, c, x, s, batch=1, streams=2, algorithm=algorithm)
    np.testing.assert_array_equal(one, two)
    assert torch.get_num_threads() == threads  # the caller's setting is restored


def test_nst_runtime_sets_and_restores():
    """Threads: 1 inside (the stage's setting), restored after; a kernel inside a runtime of
    another precision refuses; TF32 switches are set for CUDA and restored (they are plain
    process flags, settable without a GPU)."""
    vgg = _vgg("cpu")
    z = np.full((1, 32, 32), 0.5, np.float32)
    before = torch.get_num_threads()
    with nst.nst_runtime("fp32", "cpu", threads=1):
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="inside nst_runtime"):
            nst.stylise(vgg, z, z, z, precision="bf16")
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        with nst.nst_runtime("fp32", "cpu", threads=2):
            pass
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with nst.nst_runtime("fp32", "cuda", threads=None):
            assert not torch.backends.cuda.matmul.allow_tf32
            assert not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_nst_runtime_in_reused_threads():
    """torch's thread count is per OS thread: every task thread that enters the runtime runs
    single-threaded, also a reused one that ran torch before (as a Dask worker's threads)."""
    from concurrent.futures import ThreadPoolExecutor

    before = torch.get_num_threads()
    barrier = threading.Barrier(2)

    def warm(_):
        torch.ones(8).sum()
        barrier.wait(timeout=10)  # both pool threads exist and have used torch
        return torch.get_num_threads()

    def inside(_):
        with nst.nst_runtime("fp32", "cpu", threads=1):
            barrier.wait(timeout=10)  # both inside at once
            return torch.get_num_threads()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(warm, range(2)))
        assert list(pool.map(inside, range(2))) == [1, 1]
    assert torch.get_num_threads() == before
