"""Reconstruction speed and memory: faket-dask kernels vs the original FakET path, same run.

For each size N, a synthetic T x N x N float32 tilt-series is reconstructed three times, each in
its own fresh process (multiprocessing "spawn"), so that each gets its own peak RSS:

- ours:     bin_tilts(factor) -> approx_shrec_filter + apply_fourier_filter ->
            backproject_slab over the whole stack (one slab, cy = all rows);
- api:      the public API, ``fd.reconstruct(ts, binning=b).compute()`` (Dask graph on the
            threaded scheduler, ``--threads`` workers; warm after the warm-up run): what a user
            calls; ``speedup_api`` = original / api, ``api_equals_kernels`` its bits vs ours;
- original: per-tilt scipy.ndimage.zoom(1/factor, order=3) -> numpy FFT filter ->
            radontea.backproject_3d(filtering=None, weight_angles=False, padding=False,
            ncpus=threads) -> flip of axis 0 (what FakET runs; see docs/method.md §5).
            If radontea is not installed, a plain numpy implementation of the same formula
            (np.interp per row and tilt) is used instead and labelled "numpy-fallback".

Each process first runs its path once on a tiny input (warm-up: thread pools, FFT plans,
imports), then times ``--repeats`` full runs (compute only; data generation excluded). Printed
JSON per size: seconds (min and all), speedup = original / ours (min times), memory, and
the agreement of the two volumes (Pearson, relative L2). The machine's load average is
recorded before and after: on a shared machine, a loaded run is not a fair figure.

Memory fields per path: ``peak_rss_MB`` (``ru_maxrss`` of the process over its life: imports,
warm-up, input, compute; torch alone is ~400 MB of it for "ours"), ``rss_before_compute_MB``,
``compute_peak_rss_MB`` (peak during the timed runs, Linux ``VmHWM`` reset just before) and
``compute_extra_MB`` (their difference: what the algorithm itself adds on top of its input);
for the original also ``workers_peak_rss_MB``, the largest radontea worker process.

    python benchmarks/bench_reconstruct.py --sizes 256 512 --tilts 61 --threads 2
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _peak_rss_mb(who: int) -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return round(resource.getrusage(who).ru_maxrss * scale / 2**20, 1)


def _reset_hwm() -> bool:
    """Reset this process's peak-RSS mark (Linux ≥ 4.0), so it measures the compute only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_mb(field: str) -> float | None:
    """``VmHWM`` (peak RSS) or ``VmRSS`` (current RSS) of this process, MB (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _make_input(tilts: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(size)
    proj = rng.standard_normal((tilts, size, size), dtype=np.float32)
    # A few bright discs so the volumes have structure to correlate, not only noise.
    yy, xx = np.mgrid[0:size, 0:size]
    for cy, cx in rng.uniform(0.2 * size, 0.8 * size, (8, 2)):
        proj -= 3.0 * ((yy - cy) ** 2 + (xx - cx) ** 2 < (0.03 * size) ** 2)
    angles = np.linspace(-60.0, 60.0, tilts)
    return proj, angles


def _ours(proj: np.ndarray, angles: np.ndarray, binning: int) -> np.ndarray:
    from faket_dask.kernels.backprojection import backproject_slab
    from faket_dask.kernels.filters import apply_fourier_filter, approx_shrec_filter, bin_tilts

    binned = bin_tilts(proj, binning)
    filtered = apply_fourier_filter(binned, approx_shrec_filter(*binned.shape[1:]))
    return backproject_slab(filtered, angles)


def _api(proj: np.ndarray, angles: np.ndarray, binning: int, threads: int) -> np.ndarray:
    """The public API as a user calls it: ``fd.reconstruct(ts, binning=b).compute()`` on Dask's
    threaded scheduler with ``threads`` workers (graph, tasks and all)."""
    import dask
    import dask.array as da

    import faket_dask as fd

    ts = fd.tiltseries(da.from_array(proj, chunks=(1, *proj.shape[1:]), name="bench-input"),
                       angles_deg=angles, pixel_size_A=10.0, name="bench")
    with dask.config.set(scheduler="threads", num_workers=threads):
        return fd.reconstruct(ts, binning=binning).values


def _numpy_backproject_3d(filtered: np.ndarray, angles_rad: np.ndarray) -> np.ndarray:
    """Fallback reference: docs/method.md §5.3 with np.interp, row by row (float64, like radontea)."""
    t, ny, n = filtered.shape
    x = np.linspace(-n / 2, n / 2, n, endpoint=False) + 0.5
    xv, zv = np.meshgrid(x, x)
    out = np.zeros((n, ny, n))
    for y in range(ny):
        rows = filtered[:, y, :].astype(np.float64)
        rows = rows - rows.mean(axis=1, keepdims=True)
        acc = np.zeros((n, n))
        for p, phi in zip(rows, angles_rad):
            acc += np.interp(xv * np.cos(phi) + zv * np.sin(phi), x, p, left=0.0, right=0.0)
        out[:, y, :] = acc * np.pi / t
    return out


def _original_filter(ny: int, nx: int) -> np.ndarray:
    """approxShrec as in the original (docs/method.md §5.2), numpy only, so this process never
    imports torch and its RSS is the original's own."""
    size = max(ny, nx)
    nyq = size // 2
    r = np.arange(-size // 2 + 1, size // 2 + 1)
    yy, xx = np.meshgrid(r, r, indexing="ij")
    sx, sy = int(0.34 * size), int(0.20 * size)
    gauss = np.exp(-(xx**2 / (2 * sx**2) + yy**2 / (2 * sy**2))) + 0.33
    ramp = np.minimum(np.abs(np.arange(size) - nyq) / int(0.61 * nyq), 1.0)[None, :]
    m = np.arange(size) - nyq
    mask = np.sqrt(m[None, :] ** 2 + m[:, None] ** 2) < nyq + 1
    f = gauss * ramp * mask
    f = np.fft.ifftshift(f / f.max())
    y0, x0 = (size - ny) // 2, (size - nx) // 2
    return f[y0 : y0 + ny, x0 : x0 + nx]


def _original(proj: np.ndarray, angles: np.ndarray, binning: int, threads: int) -> np.ndarray:
    import scipy.ndimage as ndi

    if binning > 1:
        proj = np.stack([ndi.zoom(t, 1.0 / binning, order=3) for t in proj])
    filt = _original_filter(*proj.shape[1:])
    filtered = np.real(np.fft.ifft2(np.fft.fft2(proj) * filt))
    try:
        import radontea
    except ImportError:
        vol = _numpy_backproject_3d(filtered, np.deg2rad(angles))
    else:
        vol = radontea.backproject_3d(
            filtered, np.deg2rad(angles), filtering=None, weight_angles=False,
            padding=False, ncpus=threads,
        )
    return vol[::-1]


def _reference_name() -> str:
    try:
        import radontea
    except ImportError:
        return "numpy-fallback (radontea not installed)"
    return f"radontea {radontea.__version__}"


def _worker(which: str, tilts: int, size: int, binning: int, threads: int, repeats: int,
            out_path: str, queue: mp.Queue) -> None:
    if which in ("ours", "api"):
        sys.path.insert(0, str(REPO))
        import torch

        torch.set_num_threads(threads)
        if which == "ours":
            run = lambda p, a: _ours(p, a, binning)  # noqa: E731
        else:
            run = lambda p, a: _api(p, a, binning, threads)  # noqa: E731
    else:
        run = lambda p, a: _original(p, a, binning, threads)  # noqa: E731
    small, small_angles = _make_input(tilts, 32)
    run(small, small_angles)  # warm-up
    proj, angles = _make_input(tilts, size)
    rss_before = _status_mb("VmRSS")  # imports + input, before any timed work
    times, vol = [], None
    hwm_reset = _reset_hwm()
    for _ in range(repeats):
        vol = None
        t0 = time.perf_counter()
        vol = run(proj, angles)
        times.append(round(time.perf_counter() - t0, 3))
    compute_peak = _status_mb("VmHWM") if hwm_reset else None
    np.save(out_path, np.ascontiguousarray(vol, dtype=np.float32))
    extra = {}
    if which == "original":
        # Largest ru_maxrss among radontea's finished worker processes. Each is a fork of this
        # process, so it includes the pages it shares with it.
        extra["workers_peak_rss_MB"] = _peak_rss_mb(resource.RUSAGE_CHILDREN)
    queue.put({
        "seconds": min(times),
        "seconds_all": times,
        # ru_maxrss of this process over its whole life (imports, warm-up, input, compute).
        "peak_rss_MB": _peak_rss_mb(resource.RUSAGE_SELF),
        "rss_before_compute_MB": rss_before,
        # Peak RSS during the timed runs only (VmHWM reset just before; Linux).
        "compute_peak_rss_MB": compute_peak,
        "compute_extra_MB": (round(compute_peak - rss_before, 1)
                             if compute_peak is not None and rss_before is not None else None),
        **extra,
        "output_shape": list(vol.shape),
    })


def _spawn(which: str, args: argparse.Namespace, size: int, out_path: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_worker, args=(which, args.tilts, size, args.binning, args.threads,
                                          args.repeats, out_path, queue))
    p.start()
    result = queue.get()
    p.join()
    if p.exitcode:
        raise RuntimeError(f"{which} benchmark process failed with exit code {p.exitcode}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512],
                    help="detector sizes N (tilts are N x N before binning)")
    ap.add_argument("--tilts", type=int, default=61)
    ap.add_argument("--threads", type=int, default=2, help="threads / processes for each path")
    ap.add_argument("--binning", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per path (min reported)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # inherited by the spawned processes
    if _reference_name().startswith("numpy-fallback"):
        # the fallback is faster than radontea (7.1 s vs 11.2 s at 512², session 17), so its
        # ratio understates the speed-up against the original: say so before the run
        print("bench_reconstruct: radontea is not installed, so 'original' is the numpy "
              "fallback, not FakET's path (pip install -e '.[bench]')", file=sys.stderr)

    # Versions without importing torch here: a spawned child starts as a fork of this process,
    # and Linux carries the forked image's peak RSS into the child's ru_maxrss.
    from importlib.metadata import version

    report: dict = {
        "benchmark": "reconstruct",
        "ours": "bin_tilts -> approx_shrec -> backproject_slab (faket_dask.kernels)",
        "reference": _reference_name() + " path: scipy zoom + numpy FFT filter + backprojection",
        "tilts": args.tilts, "binning": args.binning, "threads": args.threads,
        "repeats": args.repeats,
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "numpy": np.__version__,
        "scipy": version("scipy"), "torch": version("torch"),
        "loadavg_before": [round(v, 2) for v in os.getloadavg()],
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench_reconstruct_") as tmp:
        for size in args.sizes:
            ours_path, ref_path = f"{tmp}/ours_{size}.npy", f"{tmp}/ref_{size}.npy"
            ref = _spawn("original", args, size, ref_path)
            ours = _spawn("ours", args, size, ours_path)
            api = _spawn("api", args, size, f"{tmp}/api_{size}.npy")
            api_equals_kernels = bool(np.array_equal(np.load(f"{tmp}/api_{size}.npy"), np.load(ours_path)))
            a = np.load(ours_path).astype(np.float64)
            b = np.load(ref_path).astype(np.float64)
            a0, b0 = a - a.mean(), b - b.mean()
            report["results"].append({
                "size": size,
                "binned_size": ours["output_shape"][-1],
                "ours": ours,
                "original": ref,
                "speedup": round(ref["seconds"] / ours["seconds"], 2),
                "api": api,
                "speedup_api": round(ref["seconds"] / api["seconds"], 2),
                "api_equals_kernels": api_equals_kernels,
                "pearson": float(a0.ravel() @ b0.ravel()
                                 / np.sqrt((a0.ravel() @ a0.ravel()) * (b0.ravel() @ b0.ravel()))),
                "rel_l2": float(np.linalg.norm(a - b) / np.linalg.norm(b)),
                "max_abs_diff": float(np.abs(a - b).max()),
            })
    report["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
