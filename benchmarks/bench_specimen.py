"""Benchmark of specimen generation: place + render + write a crowded specimen to a Zarr store.

For each shape (Z Y X voxels at ``--pixel-size-A``), in its own process with the RSS of its whole
process tree sampled every 20 ms (``_memory.run_sampled``): a LocalCluster of ``--workers``
single-threaded worker processes (the project's default), ``generate_specimen`` at
``--volume-fraction`` with a few vesicles, fiducials, actin filaments and microtubules
(placement: in the client, timed as ``place_s``), then ``write_specimen`` into a fresh Zarr
store (rendering chunk by chunk on the workers and writing density, absorption, class mask and
occupancy in one ``to_zarr``: ``render_write_s``). The exact peak RSS of every worker is read
from Linux (``VmHWM``, reset before the write; :mod:`faket_dask.memory`), and the peak of the
sampled tree is reported too. Prints JSON (and writes it with ``--out``).

    python benchmarks/bench_specimen.py --shapes 256x512x512 512x1024x1024 --out bench_specimen.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SEED = 1234


def _child(shape: tuple[int, int, int], pixel_A: float, fraction: float, workers: int, store: Path,
           counts: dict) -> dict:
    import warnings

    import faket_dask as fd
    from faket_dask.memory import peak_rss_bytes, reset_peak
    from faket_dask.stages.specimen import generate_specimen, write_specimen

    t0 = time.perf_counter()
    with fd.connect(workers=workers, dashboard=":0", quiet=True) as client:
        t_up = time.perf_counter() - t0
        t1 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            spec, parts = generate_specimen(shape, pixel_A, SEED, volume_fraction=fraction, **counts)
        t_place = time.perf_counter() - t1
        client.run(reset_peak)
        t2 = time.perf_counter()
        write_specimen(spec, parts, store, 0, progress=None)
        t_write = time.perf_counter() - t2
        peaks = client.run(peak_rss_bytes)
    names = list(parts["class_name"].values)
    return {
        "cluster_start_s": round(t_up, 2), "place_s": round(t_place, 2), "render_write_s": round(t_write, 2),
        "total_s": round(t_place + t_write, 2),
        "objects": len(names), "proteins": sum(n not in ("vesicle", "fiducial", "actin", "microtubule") for n in names),
        "placed": {k: names.count(k) for k in ("vesicle", "fiducial", "actin", "microtubule")},
        "volume_fraction_reached": round(float(parts.attrs["volume_fraction"]), 4),
        "chunks_zyx": [int(c[0]) for c in spec["density"].chunks],
        "n_chunks": int(spec["density"].data.npartitions),
        "peak_rss_per_worker_MiB": sorted(round(v / 2**20, 1) for v in peaks.values()),
        "client_peak_rss_MiB": round(peak_rss_bytes() / 2**20, 1),
        "warnings": [str(w.message) for w in caught],
    }


def _measure(shape, args, tmp: Path) -> dict:
    from _memory import run_sampled

    log = tmp / "child.log"
    cmd = [sys.executable, __file__, "--child", "x".join(map(str, shape)), str(args.pixel_size_A),
           str(args.volume_fraction), str(args.workers), str(tmp / "run.zarr"), json.dumps(_counts(args))]
    with open(log, "w") as fh:
        mem = run_sampled(cmd, stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ, FAKET_PROGRESS="0"))
    text = log.read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    if mem["returncode"] != 0 or not lines:
        raise RuntimeError(f"{shape} failed:\n{text[-3000:]}")
    res = json.loads(lines[-1][7:])
    store_bytes = sum(f.stat().st_size for f in (tmp / "run.zarr").rglob("*") if f.is_file())
    res.update({"shape_zyx": list(shape), "voxels": int(shape[0] * shape[1] * shape[2]),
                "store_MiB": round(store_bytes / 2**20, 1), "wall_s": mem["seconds"],
                "peak_rss_tree_MB": mem["peak_rss_total_MB"],
                "peak_rss_largest_process_MB": mem["peak_rss_largest_process_MB"]})
    return res


def _counts(args) -> dict:
    return {"n_vesicles": args.vesicles, "n_fiducials": args.fiducials, "n_actin": args.actin,
            "n_microtubules": args.microtubules}


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        shape = tuple(int(v) for v in argv[1].split("x"))
        res = _child(shape, float(argv[2]), float(argv[3]), int(argv[4]), Path(argv[5]), json.loads(argv[6]))
        print("RESULT " + json.dumps(res), flush=True)
        return {}
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["256x512x512", "512x1024x1024"], help="Z x Y x X voxels")
    ap.add_argument("--pixel-size-A", type=float, default=10.0)
    ap.add_argument("--volume-fraction", type=float, default=0.3)
    ap.add_argument("--vesicles", type=int, default=4)
    ap.add_argument("--fiducials", type=int, default=10)
    ap.add_argument("--actin", type=int, default=10)
    ap.add_argument("--microtubules", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="worker processes (1 thread each)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args(argv)

    import numpy as np

    report: dict = {
        "benchmark": "specimen generation: place + render + write (Zarr) on a LocalCluster",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "numpy": np.__version__},
        "workers": args.workers, "threads_per_worker": 1, "pixel_size_A": args.pixel_size_A,
        "volume_fraction": args.volume_fraction, "counts": _counts(args), "results": [],
    }
    for s in args.shapes:
        shape = tuple(int(v) for v in s.split("x"))
        with tempfile.TemporaryDirectory(prefix="bench_specimen_") as td:
            entry = {"load_before": [round(v, 2) for v in os.getloadavg()]}
            entry.update(_measure(shape, args, Path(td)))
            entry["load_after"] = [round(v, 2) for v in os.getloadavg()]
            report["results"].append(entry)
    if len(report["results"]) >= 2:
        a, b = report["results"][0], report["results"][-1]
        report["ratios_last_over_first"] = {
            "voxels": round(b["voxels"] / a["voxels"], 2),
            "total_s": round(b["total_s"] / a["total_s"], 2),
            "peak_rss_per_worker": round(max(b["peak_rss_per_worker_MiB"]) / max(a["peak_rss_per_worker_MiB"]), 2),
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
