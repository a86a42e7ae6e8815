"""NST through the stage at two detector sizes: untiled when it fits, time linear in pixels.

For each ``--sizes`` N, ``--tilts`` random smooth N² tilts (content, init, style) are styled
through the public stage (``fd.style_grams_dataset`` then ``fd.style_transfer(..., tile="auto")``,
random VGG-19 weights: the same cost as ImageNet's) on the project's LocalCluster
(``fd.connect``) of ``--workers`` single-threaded worker processes, the default. The stage's attrs say which tile it
chose (``nst_tile``: None = untiled) from the memory one task has on the workers
(``nst_task_memory_MiB``). Reported per size: Grams and NST seconds per tilt (wall / tilts,
i.e. with the workers' parallelism), and for every size after the first the ratio of its NST
per-tilt time to ``(N / N0)²`` × the first size's (1.0 = linear in pixels; issue 15 asks ≤ 1.2
for 1024² against 256²). Prints JSON.

    python benchmarks/bench_nst_scaling.py --sizes 256 1024 --tilts 61 --out nst_scaling.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))


def _stack(t: int, n: int, seed: int, where: Path):
    """``t`` smooth random n² tilts, written to a Zarr array chunked by tilt (as a run store's
    tilt-series: the workers read them, nothing is shipped in the graph), opened lazily."""
    import dask.array as da
    import numpy as np
    import zarr
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    tilt = gaussian_filter(rng.standard_normal((n, n)).astype(np.float32), 3.0)
    z = zarr.create_array(str(where / f"s{t}-{n}-{seed}.zarr"), shape=(t, n, n), chunks=(1, n, n),
                          dtype="float32", overwrite=True)
    for i in range(t):
        z[i] = np.roll(tilt, 7 * i, axis=1) + 0.1 * i
    return da.from_zarr(z)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--tilts", type=int, default=61)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import tempfile

    import numpy as np

    import faket_dask as fd

    where = Path(tempfile.mkdtemp(prefix="bench_nst_scaling_"))

    angles = np.linspace(-60, 60, args.tilts)
    report: dict = {"benchmark": "NST through the stage vs detector size", "tilts": args.tilts,
                    "workers": args.workers, "machine": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "load_1min_before": round(os.getloadavg()[0], 2),
                    "results": []}
    # the project's own cluster (fd.connect): its worker environment (threads, malloc settings)
    with fd.connect(workers=args.workers, dashboard=None, quiet=True):
        # warm the workers (torch import, VGG) on a tiny stack, untimed
        tiny = [fd.tiltseries(_stack(2, 64, s, where), angles[:2], 10.0, name=nm)
                for s, nm in enumerate(("content", "style", "noisy"))]
        fd.style_transfer(tiny[0], tiny[1], tiny[2], weights="random", seed=0).compute()
        for n in args.sizes:
            c, s, x = (fd.tiltseries(_stack(args.tilts, n, k, where), angles, 10.0, name=nm)
                       for k, nm in enumerate(("content", "style", "noisy")))
            t0 = time.perf_counter()
            grams = fd.style_grams_dataset(s, weights="random", seed=0, tile="auto").persist()
            grams = grams.compute()
            t1 = time.perf_counter()
            out = fd.style_transfer(c, grams, x, weights="random", seed=0, tile="auto")
            t2 = time.perf_counter()
            out.data.compute()
            t3 = time.perf_counter()
            report["results"].append({
                "size": n, "nst_tile": out.attrs["nst_tile"],
                "nst_task_memory_MiB": out.attrs["nst_task_memory_MiB"],
                "nst_batch": out.attrs["nst_batch"], "nst_algorithm": out.attrs["nst_algorithm"],
                "grams_s": round(t1 - t0, 2), "nst_build_s": round(t2 - t1, 2),
                "nst_compute_s": round(t3 - t2, 2),
                "grams_per_tilt_s": round((t1 - t0) / args.tilts, 4),
                "nst_per_tilt_s": round((t3 - t1) / args.tilts, 4),
            })
            print(json.dumps(report["results"][-1]), file=sys.stderr, flush=True)
    import shutil

    shutil.rmtree(where, ignore_errors=True)
    first = report["results"][0]
    for r in report["results"][1:]:
        scale = (r["size"] / first["size"]) ** 2
        r["nst_per_tilt_over_linear"] = round(r["nst_per_tilt_s"] / (scale * first["nst_per_tilt_s"]), 3)
        r["grams_per_tilt_over_linear"] = round(r["grams_per_tilt_s"] / (scale * first["grams_per_tilt_s"]), 3)
    report["load_1min_after"] = round(os.getloadavg()[0], 2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
