"""fd.project on a real cluster: golden radon, chunk-size invariance, layout."""
from __future__ import annotations

import numpy as np

import faket_dask as fd
from faket_dask.chunking import small_tilts_per_task
from faket_dask.kernels.projection import radon_skimage_reference


def _rel_l2(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_project_reproduces_golden_and_is_chunk_invariant(client, golden):
    g = golden("radon")
    vol = fd.volume(g["volume_zyx"], pixel_size_A=10.0)
    a = fd.project(vol, g["theta_deg"], cy=5)
    b = fd.project(vol, g["theta_deg"], cy=64)
    assert a.dims == ("tilt", "y", "x") and a.data.chunksize == (1, 5, 64)
    np.testing.assert_array_equal(a["tilt"].values, g["theta_deg"])
    av, bv = a.values, b.values
    assert _rel_l2(av, g["projections"]) < 1e-2
    assert np.array_equal(av, bv)
    # one slab covers the detector: small whole tilts several to a chunk (the per-tilt stages'
    # batches), the values the same
    k = small_tilts_per_task((len(g["theta_deg"]), 64, 64))
    assert k > 1 and b.data.chunks[1:] == ((64,), (64,)) and b.data.chunksize[0] == k


def test_project_non_cubic_asymmetric_angles(client):
    rng = np.random.default_rng(3)
    data = rng.random((24, 10, 36), dtype=np.float32)
    angles = [-47.5, -3.0, 0.0, 12.0, 58.25]
    vol = fd.volume(data, pixel_size_A=4.0)
    out = fd.project(vol, angles, cy=3).values
    assert out.shape == (5, 10, 36)
    assert _rel_l2(out, radon_skimage_reference(data, angles)) < 1e-2
