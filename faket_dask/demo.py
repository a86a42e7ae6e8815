"""The embedded demo run by ``make demo`` / ``faket-dask demo OUT_DIR``.

Current scope (foundation): a synthetic tilt-series of Gaussian pseudo-particles is written as
MRC + IMOD .tlt, imported into a run store, listed, exported back and checked bit for bit.
The later pipeline stages extend this into the whole FakET method.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import mrcfile
import numpy as np

from . import store
from .errors import OutputExistsError
from .formats.convert import angles_from_range, export_mrc, import_mrc
from .formats.mrc import write_tlt


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
        angles_deg = angles_from_range(-60, 60, 2)
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


def run_demo(out_dir: str | Path, *, overwrite: bool = False) -> dict:
    """Run the demo into ``out_dir``; returns a summary dict (also printed)."""
    out = Path(out_dir)
    run_store = out / "run.zarr"
    if run_store.exists() and not overwrite:
        raise OutputExistsError(f"{run_store}: exists; pass --overwrite to replace it")
    if overwrite and run_store.exists():
        shutil.rmtree(run_store)
    (out / "input").mkdir(parents=True, exist_ok=True)
    (out / "export").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    stack, angles = synthetic_tiltseries()
    src = out / "input" / "synthetic_ts.mrc"
    with mrcfile.new(src, overwrite=True) as mrc:
        mrc.set_data(stack)
        mrc.voxel_size = 10.0
        mrc.set_image_stack()
    write_tlt(src.with_suffix(".tlt"), angles)
    print(f"wrote synthetic tilt-series {src} {stack.shape}")

    var = store.tomo_group(0, "tiltseries") + "/measured"
    import_mrc(src, run_store, var, kind="tiltseries", angles_file=src.with_suffix(".tlt"))
    print(f"imported -> {run_store}/{var}")
    arr = store.open_var(run_store, var)
    print(f"  {arr.sizes}  chunks {arr.data.chunksize}  pixel {arr.attrs['pixel_size_A']} Å")

    dest = out / "export" / "measured.mrc"
    export_mrc(arr, dest, overwrite=True)
    with mrcfile.open(dest, permissive=False) as mrc:
        same = bool(np.array_equal(mrc.data, stack))
    summary = {
        "store": str(run_store),
        "exported": str(dest),
        "round_trip_identical": same,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    print(f"exported -> {dest} (+ .tlt); round trip identical: {same}")
    print(f"demo output in {out.resolve()}")
    return summary
