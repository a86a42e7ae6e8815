"""Helpers for the end-to-end tests: a tiny run configuration, the CLI, store comparison."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
import zarr

EXE = str(Path(sys.executable).with_name("faket-dask"))

#: Two small tomograms, 21 tilts: the whole pipeline in ~half a minute on 2 cores.
TINY = {
    "seed": 3,
    "acquisition": {"tilt_start_deg": -60, "tilt_stop_deg": 60, "tilt_step_deg": 6},
    "specimens": {"count": 2, "shape_zyx": [24, 32, 48], "particles": 8, "vesicles": 0, "fiducials": 1},
    "style": {"weights": "random"},
    "output": "out",
}


def write_config(path: Path, data: dict | None = None, **overrides) -> Path:
    """Write a YAML run config (TINY updated with ``overrides`` at the top level)."""
    cfg = dict(TINY if data is None else data)
    cfg.update(overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def env(**extra: str) -> dict[str, str]:
    """Environment of CLI subprocesses: no progress bars, one thread per worker process."""
    return dict(os.environ, FAKET_PROGRESS="0", **extra)


def cli(*args: str, timeout: float = 600, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the real console script."""
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True,
                          env=env(**(extra_env or {})), timeout=timeout)


def read_arrays(store: Path) -> dict[str, np.ndarray]:
    """Every array of a Zarr store, by path (the data a user gets; attributes excluded)."""
    out: dict[str, np.ndarray] = {}

    def walk(group: zarr.Group, prefix: str) -> None:
        for name, member in group.members():
            path = f"{prefix}{name}"
            if isinstance(member, zarr.Group):
                walk(member, path + "/")
            else:
                out[path] = member[...]

    walk(zarr.open_group(str(store), mode="r"), "")
    return out


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Same array paths, and every array bit-identical."""
    assert sorted(a) == sorted(b)
    diff = [k for k in a if not np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind in "fc")]
    assert not diff, f"arrays differ: {diff[:10]}"
