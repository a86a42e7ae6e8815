"""Benchmark of the projection kernel against FakET's original scikit-image projection.

For each size N, a smooth random N³ volume is projected at ``--tilts`` angles (-60…+60°) by

* ``project_slab`` (faket_dask.kernels.projection), the whole volume as one slab: ``cold`` is a
  fresh process's first call (includes building the sparse operator), ``warm`` the best of
  ``--repeats`` further calls (operator cached), ``slabs`` the whole volume again as consecutive
  y-slabs of ``--slab-cy`` (best of ``--repeats``), which is how the Dask stage calls it (one
  operator build per worker process, then one sparse product per slab);
* ``api``: the public API, ``fd.project(volume, angles).compute()`` on Dask's threaded scheduler
  (``--threads`` workers), best of ``--repeats`` warm calls: what a user calls
  (``speedup_api``; ``api_equals_kernel`` compares its bits with ``project_slab``);
* ``radon_skimage_reference``: scikit-image ``radon`` per y-slice, as the original FakET does.

Each implementation runs in its own spawned process so that peak RSS (``ru_maxrss``) belongs to
it alone; the volume is handed over as a .npy file so its creation does not count. Prints JSON.

    python benchmarks/bench_project.py --sizes 128 256 --tilts 61 --threads 2 --out bench.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# Run from a checkout without installing: make `faket_dask` importable here and in the spawned
# workers (spawn hands sys.path to the children).
_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))


def _rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # Linux fallback
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB else


def _worker(
    impl: str, vol_path: str, out_path: str, tilts: int, threads: int, slab_cy: int, repeats: int
) -> dict:
    """Runs in a spawned process: time one implementation, save its output, report."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from faket_dask.kernels.projection import project_slab, radon_skimage_reference

    angles = np.linspace(-60.0, 60.0, tilts)
    vol = np.load(vol_path)
    rss0 = _rss_mb()
    res: dict = {"rss_before_mb": round(rss0, 1)}
    if impl == "project_slab":
        t0 = time.perf_counter()
        out = project_slab(vol, angles)
        res["cold_s"] = time.perf_counter() - t0
        warm = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = project_slab(vol, angles)
            warm.append(time.perf_counter() - t0)
        res["warm_s"] = min(warm)
        res["warm_median_s"] = float(np.median(warm))
        res["peak_rss_mb"] = round(_peak_rss_mb(), 1)  # before the slab loop adds its copies
        ny = vol.shape[1]
        slabs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            parts = [project_slab(vol[:, y:y + slab_cy], angles) for y in range(0, ny, slab_cy)]
            slabs.append(time.perf_counter() - t0)
        res["slabs_s"] = min(slabs)
        res["slab_cy"] = slab_cy
        res["slabs_bit_identical"] = bool(np.array_equal(np.concatenate(parts, axis=1), out))
    elif impl == "api":
        # the public API as a user calls it: fd.project(volume, angles).compute() on Dask's
        # threaded scheduler (graph, slab tasks, tilt chunks), warm after one call
        import dask
        import dask.array as da

        import faket_dask as fd

        v = fd.volume(da.from_array(vol, chunks=vol.shape, name="bench-volume"), 10.0)
        with dask.config.set(scheduler="threads", num_workers=threads):
            out = fd.project(v, angles).values
            warm = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                out = fd.project(v, angles).values
                warm.append(time.perf_counter() - t0)
        res["time_s"] = min(warm)
        res["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    else:
        t0 = time.perf_counter()
        out = radon_skimage_reference(vol, angles)
        res["time_s"] = time.perf_counter() - t0
        res["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    res["peak_over_before_mb"] = round(res["peak_rss_mb"] - rss0, 1)
    np.save(out_path, out)
    return res


def _smooth_volume(n: int, seed: int = 0) -> np.ndarray:
    """Smooth positive random N³ volume (float32): structure at a few voxels, like a specimen."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    vol = gaussian_filter(rng.standard_normal((n, n, n), dtype=np.float32), sigma=2.0)
    vol -= vol.min()
    return vol.astype(np.float32)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="volume edge N")
    ap.add_argument("--tilts", type=int, default=61, help="number of tilts over -60…+60°")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for each implementation")
    ap.add_argument("--slab-cy", type=int, default=32, help="y-slab size for the 'slabs' timing")
    ap.add_argument("--repeats", type=int, default=3,
                    help="warm project_slab timings to take (min and median reported)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    # Thread pools read these at import time: set them before spawning.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np
    import torch

    ctx = mp.get_context("spawn")
    report: dict = {
        "benchmark": "projection (docs/method.md §1)",
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": args.threads,
        },
        "tilts": args.tilts,
        "results": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            load_before = os.getloadavg()[0]  # other processes on the machine skew timings
            vol_path = os.path.join(tmp, f"vol{n}.npy")
            np.save(vol_path, _smooth_volume(n))
            timings = {}
            outs = {}
            for impl in ("project_slab", "api", "skimage"):
                out_path = os.path.join(tmp, f"{impl}{n}.npy")
                job = (impl, vol_path, out_path, args.tilts, args.threads, args.slab_cy,
                       args.repeats)
                with ctx.Pool(1) as pool:  # a fresh process per implementation: separate peaks
                    timings[impl] = pool.apply(_worker, job)
                outs[impl] = np.load(out_path)
            diff = outs["project_slab"].astype(np.float64) - outs["skimage"]
            ref = timings["skimage"]["time_s"]
            ps = timings["project_slab"]
            report["results"].append({
                "size": n,
                "project_slab": {k: round(v, 4) if isinstance(v, float) else v
                                 for k, v in ps.items()},
                "skimage": {k: round(v, 4) if isinstance(v, float) else v
                            for k, v in timings["skimage"].items()},
                "speedup_cold": round(ref / ps["cold_s"], 2),
                "speedup_warm": round(ref / ps["warm_s"], 2),
                "speedup_slabs": round(ref / ps["slabs_s"], 2),
                "api": {k: round(v, 4) if isinstance(v, float) else v for k, v in timings["api"].items()},
                "speedup_api": round(ref / timings["api"]["time_s"], 2),
                "api_equals_kernel": bool(np.array_equal(outs["api"], outs["project_slab"])),
                "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "max_abs_diff": float(np.abs(diff).max()),
                "max_abs_ref": float(np.abs(outs["skimage"]).max()),
                "rel_l2": float(np.linalg.norm(diff) / np.linalg.norm(outs["skimage"])),
            })
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
