"""Benchmark of the noise stage (``fd.add_noise``) against the in-memory numpy reference.

For each size N, a smooth random noiseless tilt-series of ``--tilts`` × N² is prepared (untimed)
as a Zarr store and as a .npy file, with the noise model estimated from the golden SHREC pair
(61 tilts; other tilt counts get the golden curves resampled). Then, in the same run, each in
its own process with the RSS of its whole process tree sampled every 20 ms:

* ``stage``: a LocalCluster (``--workers`` single-threaded worker processes, the project's
  default) runs ``fd.add_noise(open_var(noiseless), model, seed)`` and ``fd.save`` writes NOISY
  into the store: Zarr in, Zarr out, chunk by chunk.
* ``stage_mmap_fix``: the same with ``MALLOC_MMAP_THRESHOLD_`` set for the workers (see the
  note printed in the JSON: Dask's ``MALLOC_TRIM_THRESHOLD_`` disables glibc's dynamic mmap
  threshold, so every ≥128 kB temporary is a fresh mmap and page-faults; the Philox field
  generator allocates 256 kB temporaries).
* ``numpy``: the straightforward path on a whole in-memory stack, pure numpy: ``np.load``, the
  whole field ``normal_block(seed, 0, all tilts, impl="numpy")``,
  ``kernels.noise.add_noise_reference`` (docs/method.md §3 literally, float64), ``np.save``.
* ``numpy_compiled_field``: the same with the stage's compiled field generator (numba Philox):
  shows how much of the stage's gain is the field alone.

``compute_s`` is the work (stage: build + compute + write; numpy: field + formula), ``wall_s``
the whole process (interpreter and cluster start included). The stage runs twice on its cluster:
``compute_s`` is the first run (fresh workers: they import zarr/xarray and load the compiled
kernels during it), ``compute_warm_s`` the second (workers as a pipeline's later stages find
them), written to ``noisy_warm`` and compared with the first. Outputs are compared. Prints JSON.

    python benchmarks/bench_noise.py --sizes 512 1024 --tilts 61 --out bench_noise.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SEED = 1234
MMAP_FIX = {"MALLOC_MMAP_THRESHOLD_": str(16 * 2**20)}


def _model(tilts: int):
    """Noise model of the golden SHREC pair (resampled over the tilt index if tilts != 61)."""
    import numpy as np

    from faket_dask.kernels import noise as nz
    from faket_dask.noise_model import NoiseModel

    golden = Path(os.environ.get("FAKET_GOLDEN_DIR", _REPO / "tests" / "golden"))
    with np.load(golden / "noise_estimation.npz") as g:
        raw = nz.curves_from_arrays(g["measured"], g["noiseless"])
    if tilts != 61:
        src = np.linspace(0, 1, 61)
        dst = np.linspace(0, 1, tilts)
        raw = {k: np.interp(dst, src, v) for k, v in raw.items()}
    return NoiseModel.from_raw([raw], 2, angles_deg=np.linspace(-60, 60, tilts))


def _prepare(tmp: Path, n: int, tilts: int) -> dict:
    """Write the noiseless stack (Zarr + .npy) and the model JSON; untimed."""
    import dask
    import dask.array as da
    import numpy as np
    from scipy import ndimage

    from faket_dask import chunking, store
    from faket_dask.datamodel import tiltseries

    rng = np.random.default_rng(0)
    stack = np.empty((tilts, n, n), np.float32)
    for t in range(tilts):
        stack[t] = ndimage.gaussian_filter(rng.standard_normal((n, n), dtype=np.float32), 3.0) * 50 - 2
    np.save(tmp / "noiseless.npy", stack)
    cy = chunking.choose_cy(n, n, tilts)
    arr = tiltseries(da.from_array(stack, chunks=(1, cy, n)), np.linspace(-60, 60, tilts), 10.0, name="noiseless")
    with dask.config.set(scheduler="threads"):
        store.save(arr, tmp / "run.zarr", "tomo_000/tiltseries")
    _model(tilts).to_json(tmp / "model.json")
    return {"chunks": [1, cy, n], "input_MB": round(stack.nbytes / 2**20, 1)}


def _run_stage(tmp: Path, workers: int, mmap_fix: bool) -> dict:
    import dask

    import faket_dask as fd
    from faket_dask.noise_model import NoiseModel
    from faket_dask.stages.noise import open_input

    if mmap_fix:
        dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in MMAP_FIX.items()})
    t0 = time.perf_counter()
    with fd.connect(workers=workers, dashboard=":0", quiet=True) as client:
        t_up = time.perf_counter() - t0
        env = client.run(lambda: os.environ.get("MALLOC_MMAP_THRESHOLD_"))
        model = NoiseModel.from_json(tmp / "model.json")
        times = []
        for name in ("noisy", "noisy_warm"):
            t1 = time.perf_counter()
            # as the pipeline and `noise apply` read it: whole tilts when a tilt fits one task
            ts = open_input(tmp / "run.zarr", "tomo_000/tiltseries/noiseless")
            out = fd.add_noise(ts, model, seed=SEED)
            fd.save(out, tmp / "run.zarr", "tomo_000/tiltseries", name=name, overwrite=True)
            times.append(time.perf_counter() - t1)
    return {"cluster_start_s": round(t_up, 3), "compute_s": round(times[0], 3),
            "compute_warm_s": round(times[1], 3),
            "workers_mmap_threshold": sorted(set(map(str, env.values())))}


def _run_numpy(tmp: Path, field_impl: str) -> dict:
    import numpy as np

    from faket_dask.kernels import noise as nz
    from faket_dask.noise_model import NoiseModel

    model = NoiseModel.from_json(tmp / "model.json")
    t0 = time.perf_counter()
    p = np.load(tmp / "noiseless.npy")
    t1 = time.perf_counter()
    t, ny, nx = p.shape
    from faket_dask.kernels.noise_rng import normal_block

    z = normal_block(SEED, 0, range(t), 0, ny, nx, impl=field_impl)
    t2 = time.perf_counter()
    out = nz.add_noise_reference(p, *(model.curve(k) for k in ("r", "sigma", "mean", "std")), z, 1.0)
    t3 = time.perf_counter()
    np.save(tmp / f"noisy_{field_impl}.npy", out)
    t4 = time.perf_counter()
    return {"load_s": round(t1 - t0, 3), "field_s": round(t2 - t1, 3), "formula_s": round(t3 - t2, 3),
            "save_s": round(t4 - t3, 3), "compute_s": round(t3 - t1, 3)}


def _child(argv: list[str]) -> None:
    """Entry of the measured subprocesses: prints one JSON line."""
    impl, tmp, workers = argv[0], Path(argv[1]), int(argv[2])
    if impl.startswith("numpy"):
        res = _run_numpy(tmp, "compiled" if impl == "numpy_compiled_field" else "numpy")
    else:
        res = _run_stage(tmp, workers, impl == "stage_mmap_fix")
    print("RESULT " + json.dumps(res), flush=True)


def _measure(impl: str, tmp: Path, workers: int) -> dict:
    import subprocess

    from _memory import run_sampled

    out = tmp / f"{impl}.log"
    with open(out, "w") as fh:
        mem = run_sampled([sys.executable, __file__, "--child", impl, str(tmp), str(workers)],
                          stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ, FAKET_PROGRESS="0"))
    text = out.read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    if mem["returncode"] != 0 or not lines:
        raise RuntimeError(f"{impl} failed:\n{text[-3000:]}")
    res = json.loads(lines[-1][7:])
    res.update({"wall_s": mem["seconds"], "peak_rss_total_MB": mem["peak_rss_total_MB"],
                "peak_rss_largest_process_MB": mem["peak_rss_largest_process_MB"], "processes": mem["processes"]})
    return res


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _child(argv[1:])
        return {}
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="detector edge N")
    ap.add_argument("--tilts", type=int, default=61)
    ap.add_argument("--workers", type=int, default=2, help="worker processes of the stage's LocalCluster")
    ap.add_argument("--impls", nargs="+", default=["stage", "numpy", "numpy_compiled_field"])
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    import numpy as np
    import zarr

    report: dict = {
        "benchmark": "add_noise (docs/method.md §3): stage on a LocalCluster vs in-memory numpy reference",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "numpy": np.__version__},
        "workers": args.workers,
        "tilts": args.tilts,
        "note_mmap_fix": f"stage_mmap_fix sets {MMAP_FIX} for the worker processes",
        "results": [],
    }
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench_noise_") as td:
            tmp = Path(td)
            entry: dict = {"size": n, "load_before": [round(v, 2) for v in os.getloadavg()]}
            entry.update(_prepare(tmp, n, args.tilts))
            for impl in args.impls:
                entry[impl] = _measure(impl, tmp, args.workers)
            entry["load_after"] = [round(v, 2) for v in os.getloadavg()]
            if "numpy" in args.impls and any(i.startswith("stage") for i in args.impls):
                ref = np.load(tmp / "noisy_numpy.npy")
                if "numpy_compiled_field" in args.impls:
                    entry["numpy_paths_identical"] = bool(np.array_equal(ref, np.load(tmp / "noisy_compiled.npy")))
                got = np.asarray(zarr.open_group(str(tmp / "run.zarr"), mode="r")["tomo_000/tiltseries/noisy"][...])
                entry["max_abs_diff_over_max_abs"] = float(np.abs(got.astype(np.float64) - ref).max() / np.abs(ref).max())
                entry["identical_pixels_fraction"] = float(np.mean(got == ref))
                if "stage" in args.impls:
                    warm = np.asarray(zarr.open_group(str(tmp / "run.zarr"), mode="r")["tomo_000/tiltseries/noisy_warm"][...])
                    entry["warm_run_identical"] = bool(np.array_equal(warm, got))
                    entry["speedup_stage_warm_vs_numpy"] = round(
                        entry["numpy"]["compute_s"] / entry["stage"]["compute_warm_s"], 2)
                for impl in args.impls:
                    if impl.startswith("stage"):
                        entry[f"time_ratio_{impl}_over_numpy"] = round(entry[impl]["compute_s"] / entry["numpy"]["compute_s"], 2)
                        # issue 15 asks the stage to be >= 3x faster than the pure-numpy path
                        entry[f"speedup_{impl}_vs_numpy"] = round(entry["numpy"]["compute_s"] / entry[impl]["compute_s"], 2)
                        if "numpy_compiled_field" in args.impls:
                            entry[f"time_ratio_{impl}_over_numpy_compiled_field"] = round(
                                entry[impl]["compute_s"] / entry["numpy_compiled_field"]["compute_s"], 2)
                        entry[f"peak_rss_ratio_{impl}_over_numpy"] = round(
                            entry[impl]["peak_rss_total_MB"] / entry["numpy"]["peak_rss_total_MB"], 2)
            report["results"].append(entry)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
