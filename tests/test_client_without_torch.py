"""The client builds the pipeline's graphs without importing torch (``kernels/nst/sizing.py``,
``kernels/nst/__init__.py``, ``kernels/reconstruction_shapes.py``, ``meta=`` on every
``map_blocks`` of a torch kernel): each run's start no longer pays a third torch import on 2
cores, and no stage thread imports torch beside another's SciPy (``torch_import.py``).

Checked in a fresh interpreter (this test process may have imported torch already): the Gram,
style-transfer, projection and reconstruction graphs (both reconstruction paths: in memory and
through a scratch store) of small stacks are built there, with ``tile="auto"``, and torch must
not be in ``sys.modules`` afterwards; computing them then imports it, as a worker does.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

_BUILD = textwrap.dedent("""
    import json, sys
    import numpy as np, xarray as xr
    import faket_dask.kernels.nst as nst
    from faket_dask.kernels.nst.budget import auto_tile
    from faket_dask.stages.style_grams import style_grams_dataset
    from faket_dask.stages.style_transfer import style_transfer

    rng = np.random.default_rng(0)
    def stack(seed):
        a = np.random.default_rng(seed).random((3, 32, 32), dtype=np.float32)
        return xr.DataArray(a, dims=("tilt", "y", "x"),
                            coords={"tilt": [-2.0, 0.0, 2.0]}).chunk({"tilt": 1})
    kw = dict(weights="random", seed=0, device="cpu", precision="fp32", tile="auto",
              params=None, batch=None)
    grams = style_grams_dataset(stack(1), **kw)
    out = style_transfer(stack(2), grams, stack(3), **kw)
    import tempfile
    import faket_dask as fd
    ts = fd.tiltseries(np.random.default_rng(4).random((5, 32, 32), dtype=np.float32),
                       [-4.0, -2.0, 0.0, 2.0, 4.0], 10.0)
    graphs = [fd.project(fd.volume(np.ones((8, 32, 32), np.float32), 10.0), [-2.0, 0.0, 2.0]),
              fd.reconstruct(ts, z_valid=(0.25, 0.75)),
              fd.reconstruct(ts, scratch_dir=tempfile.mkdtemp())]
    built = "torch" in sys.modules
    names = {"tile_halo": nst.tile_halo(), "auto_tile": auto_tile((32, 32), 1e12)}
    attrs = {k: out.attrs[k] for k in ("nst_algorithm", "nst_tile", "nst_batch")}
    values = out.values  # the tasks run here (local scheduler): they import torch
    shapes = [list(g.compute().shape) for g in graphs]
    print(json.dumps({"torch_after_build": built, "torch_after_compute": "torch" in sys.modules,
                      "torch_version": grams.attrs["torch"], "names": names, "attrs": attrs,
                      "finite": bool(np.isfinite(values).all()), "shapes": shapes}))
""")


@pytest.fixture(scope="module")
def built() -> dict:
    proc = subprocess.run([sys.executable, "-c", _BUILD], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_graphs_are_built_without_torch_and_computed_with_it(built):
    assert built["torch_after_build"] is False
    assert built["torch_after_compute"] is True
    assert built["finite"]
    # projection (3 tilts of the 32² detector), reconstructions binned by 2 (z kept: a half)
    assert built["shapes"][0] == [3, 32, 32]
    assert built["shapes"][1][1:] == built["shapes"][2][1:] == [16, 16]


def test_what_the_client_records_is_what_torch_says(built):
    import torch

    # the release from the distribution's metadata: torch.__version__ without its "+cu…" part
    assert built["torch_version"] == torch.__version__.split("+")[0]
    assert built["attrs"] == {"nst_algorithm": "direct", "nst_tile": None, "nst_batch": 64}
    assert built["names"] == {"tile_halo": 160, "auto_tile": None}


def test_every_public_name_is_the_function_even_after_its_modules_are_imported():
    import importlib
    import types

    import faket_dask.kernels.nst as nst

    # what a worker imports first (torch_import.py); a submodule named like a function would
    # then hide the function behind the package attribute the import system sets
    for module in nst.TORCH_SUBMODULES:
        importlib.import_module(module)
    for name in nst.__all__:
        value = getattr(nst, name)
        assert not isinstance(value, types.ModuleType), name
    assert callable(nst.stylise) and nst.stylise.__module__ == "faket_dask.kernels.nst.transfer"
