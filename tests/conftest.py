"""Shared fixtures: the golden reference files of the original FakET implementation (``tests/golden``)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
#: The original FakET's reference inputs and outputs (``tests/golden/README.md`` says what each
#: file holds); ``FAKET_GOLDEN_DIR`` points the tests at another copy.
GOLDEN_DIR = Path(os.environ.get("FAKET_GOLDEN_DIR", REPO / "tests" / "golden"))


def pytest_collection_modifyitems(config, items):
    """Files with a ``slow`` test run first (stable: each file's tests stay together, in order).

    ``make test`` hands whole files to its pytest-xdist processes in collection order; a long
    file collected last left one core idle for minutes at the end of the run.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session")
def golden():
    """Return a loader ``golden("radon")`` -> dict of arrays from ``tests/golden/radon.npz``."""

    def load(name: str) -> dict[str, np.ndarray]:
        path = GOLDEN_DIR / f"{name}.npz"
        if not path.exists():
            pytest.fail(f"golden file missing: {path} (set FAKET_GOLDEN_DIR)")
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    return load


@pytest.fixture(scope="session")
def client():
    """A real LocalCluster with 2 single-threaded worker processes, shared by the session."""
    from faket_dask.cluster import connect

    with connect(workers=2, dashboard=":0", quiet=True) as c:
        yield c


def write_mrc(path, data, *, voxel_size=10.0, stack=True):
    """Write a small MRC test file with mrcfile (the field's own library)."""
    import mrcfile

    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data))
        mrc.voxel_size = voxel_size
        if stack and np.asarray(data).ndim == 3:
            mrc.set_image_stack()
    return path


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """One uninterrupted run of the tiny config on a 2-worker LocalCluster (via the CLI)."""
    from pipeline_helpers import cli, read_arrays, write_config

    base = tmp_path_factory.mktemp("reference")
    cfg = write_config(base / "run.yaml")
    proc = cli("simulate", cfg, "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = base / "out"
    return {"config": cfg, "out": out, "stdout": proc.stdout, "stderr": proc.stderr,
            "arrays": read_arrays(out / "run.zarr")}
