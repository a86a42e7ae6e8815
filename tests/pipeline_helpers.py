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


def synthetic_tiltseries(
    n_particles: int = 40, shape_zyx: tuple[int, int, int] = (64, 96, 96), seed: int = 0,
    angles_deg: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Analytic projections of isotropic Gaussian blobs in a volume, negated (dark particles).

    A 3D Gaussian of width s at (z, y, x) projects along a ray at tilt θ (about y) to a 2D
    Gaussian of the same width at u = (x - X/2) cos θ - (z - Z/2) sin θ, so the stack is exact
    without a projector. Returns ``(stack (T, Y, X) float32, angles_deg)``.
    """
    rng = np.random.default_rng(seed)
    if angles_deg is None:
        angles_deg = np.arange(-60.0, 61.0, 2.0)
    nz, ny, nx = shape_zyx
    pos = rng.uniform([0.3 * nz, 0.1 * ny, 0.2 * nx], [0.7 * nz, 0.9 * ny, 0.8 * nx], (n_particles, 3))
    width = rng.uniform(1.5, 4.0, n_particles)
    mass = rng.uniform(0.5, 2.0, n_particles)
    yy = np.arange(ny)[:, None]
    xx = np.arange(nx)[None, :]
    out = np.zeros((len(angles_deg), ny, nx), np.float64)
    for t, a in enumerate(np.deg2rad(angles_deg)):
        for (z, y, x), s, m in zip(pos, width, mass):
            u = (x - nx / 2) * np.cos(a) - (z - nz / 2) * np.sin(a) + nx / 2
            out[t] -= m * np.exp(-((yy - y) ** 2 + (xx - u) ** 2) / (2 * s * s))
    return out.astype(np.float32), np.asarray(angles_deg)
