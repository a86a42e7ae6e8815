"""Tests of the projection kernel (docs/method.md §1) against the golden file and scikit-image.

Tests whose kernel takes a device run on every device here (:data:`DEVICES`); the property
tests and the CPU block-width test run on the CPU.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from faket_dask.kernels.projection import (
    clear_operator_cache,
    column_block_width,
    detector_size,
    project_slab,
    radon_skimage_reference,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

ASYMMETRIC = [-47.5, -3.0, 0.0, 12.0, 58.25]
# Unsorted, beyond ±90°, exact multiples of 45° (rays parallel to axes and diagonals) included.
AWKWARD = [200.0, -90.0, 12.0, 45.0, 0.0, 90.0, -45.0, 135.0, -3.0, 58.25, 12.0]


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


def smooth_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Random blobs on a low background: structured like a specimen, positive, float32."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    vol = gaussian_filter(rng.random(shape), sigma=1.5) + 0.1 * rng.random(shape)
    return vol.astype(np.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_golden_radon(golden, device):
    g = golden("radon")
    got = project_slab(g["volume_zyx"], g["theta_deg"], device=device)
    assert got.shape == g["projections"].shape == (61, 64, 64)
    assert got.dtype == np.float32
    # Measured: 8.3e-7 (float32 rounding of weights and sums; the formula itself gives 8.2e-7).
    assert rel_l2(got, g["projections"]) < 1e-5


@pytest.mark.parametrize(
    ("shape", "angles"),
    [
        ((40, 7, 52), ASYMMETRIC),
        ((64, 3, 48), ASYMMETRIC),
        ((33, 2, 33), AWKWARD),  # odd sizes
        ((50, 4, 41), AWKWARD),  # X odd, Z even: detector crop off-centre by one pixel
        ((17, 1, 64), [7.0]),  # flat slab, single angle
        ((1, 2, 9), AWKWARD),  # degenerate thickness
    ],
)
@pytest.mark.parametrize("device", DEVICES)
def test_against_skimage_reference(shape, angles, device):
    vol = smooth_volume(shape)
    got = project_slab(vol, angles, device=device)
    ref = radon_skimage_reference(vol, angles)
    assert got.shape == ref.shape == (len(angles), shape[1], shape[2])
    # Measured: 2.0e-7 … 2.9e-7 for these cases.
    assert rel_l2(got, ref) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_explicit_formula_small(device):
    """The §1 formula written out loop by loop in float64, on a tiny non-cubic case."""
    nz, cy, nx = 7, 2, 10
    vol = smooth_volume((nz, cy, nx), seed=3).astype(np.float64)
    angles = [-31.0, 0.0, 77.7]
    d = detector_size(nz, nx)
    assert d == math.ceil(math.sqrt(2) * 10)

    def f(plane: np.ndarray, z: float, x: float) -> float:
        z0, x0 = math.floor(z), math.floor(x)
        acc = 0.0
        for zi, wz in ((z0, 1 - (z - z0)), (z0 + 1, z - z0)):
            for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                if 0 <= zi < nz and 0 <= xi < nx:
                    acc += wz * wx * plane[zi, xi]
        return acc

    expected = np.zeros((len(angles), cy, nx))
    for k, th in enumerate(np.deg2rad(angles)):
        for y in range(cy):
            for i in range(nx):
                u = i + (d - nx) // 2 - d // 2
                expected[k, y, i] = -sum(
                    f(vol[:, y, :], nz // 2 - u * math.sin(th) + t * math.cos(th),
                      nx // 2 + u * math.cos(th) + t * math.sin(th))
                    for t in range(-(d // 2), d - d // 2)
                )
    got = project_slab(vol.astype(np.float32), angles, device=device)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "angles"), [((40, 23, 52), AWKWARD), ((64, 30, 48), ASYMMETRIC)]
)
@pytest.mark.parametrize("device", DEVICES)
def test_bit_identical_across_y_splits(shape, angles, device):
    vol = smooth_volume(shape, seed=1)
    whole = project_slab(vol, angles, device=device)
    cy = shape[1]
    splits = [
        [1] * cy,
        [cy // 2, cy - cy // 2],
        [3, 5, 8, cy - 16],
        [7, cy - 7],
        [cy - 1, 1],
    ]
    for sizes in splits:
        edges = np.cumsum([0, *sizes])
        parts = [project_slab(vol[:, a:b], angles, device=device) for a, b in zip(edges[:-1], edges[1:])]
        assert np.array_equal(np.concatenate(parts, axis=1), whole), sizes
    # Neither the operator cache nor the tilt batching changes a single bit.
    clear_operator_cache()
    assert np.array_equal(project_slab(vol, angles, cache=False, max_batch_elems=5000, device=device), whole)
    # Unsorted / repeated angles: each tilt's result does not depend on the others.
    single = np.concatenate([project_slab(vol, [a], device=device) for a in angles], axis=0)
    assert np.array_equal(single, whole)


def test_cpu_column_blocks():
    """The block width is fixed, so any y-split gives the same bits at either width; blocks of
    16 columns agree with the default 32 to float32 rounding. (Bit-identity across *widths*
    was asserted once but does not hold with torch 2.14.1's CSR × dense kernel on this CPU,
    whose rounding depends on the dense width; chunk invariance only needs a fixed width.)"""
    vol = smooth_volume((24, 40, 20), seed=2)
    splits = ((0, 5), (5, 19), (19, 40))
    assert column_block_width(24, 20) == 32
    whole = project_slab(vol, AWKWARD)  # blocks 32 + 8 (padded to 32)
    parts = [project_slab(vol[:, a:b], AWKWARD) for a, b in splits]
    assert np.array_equal(np.concatenate(parts, axis=1), whole)
    assert np.array_equal(project_slab(vol, AWKWARD, block_width=32), whole)
    narrow = project_slab(vol, AWKWARD, block_width=16)  # blocks 16 + 16 + 8 (padded)
    np.testing.assert_allclose(narrow, whole, rtol=0, atol=2e-6 * np.abs(whole).max())
    parts = [project_slab(vol[:, a:b], AWKWARD, block_width=16) for a, b in splits]
    assert np.array_equal(np.concatenate(parts, axis=1), narrow)
    with pytest.raises(ValueError, match="block_width"):
        project_slab(vol, AWKWARD, block_width=0)


@pytest.mark.parametrize("device", DEVICES)
def test_device_matches_cpu_and_is_split_invariant(device):
    vol = smooth_volume((48, 70, 40), seed=4)
    cpu = project_slab(vol, AWKWARD)
    got = project_slab(vol, AWKWARD, device=device)
    assert rel_l2(got, cpu) < 1e-5
    parts = [project_slab(vol[:, a:b], AWKWARD, device=device) for a, b in ((0, 9), (9, 70))]
    assert np.array_equal(np.concatenate(parts, axis=1), got)


def test_inputs_and_edge_cases():
    vol = smooth_volume((12, 3, 10))
    expected = project_slab(vol, ASYMMETRIC)
    assert np.array_equal(project_slab(torch.from_numpy(vol), ASYMMETRIC), expected)
    assert np.array_equal(project_slab(vol, np.asarray(ASYMMETRIC), device="cpu"), expected)
    assert np.array_equal(project_slab(vol.astype(np.float64), ASYMMETRIC), expected)
    ro = vol.copy()
    ro.flags.writeable = False
    assert np.array_equal(project_slab(ro, ASYMMETRIC), expected)
    assert project_slab(vol, []).shape == (0, 3, 10)
    assert project_slab(vol[:, :0], ASYMMETRIC).shape == (5, 0, 10)
    with pytest.raises(ValueError, match="3-D"):
        project_slab(vol[0], ASYMMETRIC)
    with pytest.raises(ValueError, match="NaN"):
        project_slab(vol, [0.0, float("nan")])


# --- properties ----------------------------------------------------------------------------

dims = st.integers(min_value=1, max_value=24)
angle_lists = st.lists(
    st.floats(min_value=-180, max_value=180, allow_nan=False), min_size=1, max_size=4
)


@settings(max_examples=25, deadline=None)
@given(nz=dims, cy=st.integers(1, 3), nx=dims, angles=angle_lists)
def test_zero_volume_projects_to_positive_zero(nz, cy, nx, angles):
    out = project_slab(np.zeros((nz, cy, nx), np.float32), angles, cache=False)
    assert out.shape == (len(angles), cy, nx)
    assert not out.any() and not np.signbit(out).any()  # "0 - radon": no -0.0


@settings(max_examples=25, deadline=None)
@given(nz=dims, nx=dims, angles=angle_lists, seed=st.integers(0, 2**16), a=st.floats(-3, 3))
def test_linearity(nz, nx, angles, seed, a):
    rng = np.random.default_rng(seed)
    v1 = rng.random((nz, 2, nx), dtype=np.float32)
    v2 = rng.random((nz, 2, nx), dtype=np.float32)
    lhs = project_slab(a * v1 + v2, angles, cache=False)
    rhs = a * project_slab(v1, angles, cache=False) + project_slab(v2, angles, cache=False)
    scale = np.abs(project_slab(np.abs(a) * v1 + v2, angles, cache=False)).max() + 1e-6
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=1e-5 * scale)


@settings(max_examples=25, deadline=None)
@given(nz=dims, nx=dims, seed=st.integers(0, 2**16))
def test_mass_conservation_at_zero_degrees(nz, nx, seed):
    """At 0° every sample is exactly on a voxel: -p sums each x-column of the plane. Keep a
    one-voxel empty border so the (possibly off-centre by one) detector crop sees all mass."""
    rng = np.random.default_rng(seed)
    vol = np.zeros((nz + 2, 2, nx + 2), np.float32)
    vol[1:-1, :, 1:-1] = rng.random((nz, 2, nx))
    out = project_slab(vol, [0.0], cache=False)
    np.testing.assert_allclose(-out.sum(axis=(0, 2)), vol.sum(axis=(0, 2)), rtol=1e-5)
