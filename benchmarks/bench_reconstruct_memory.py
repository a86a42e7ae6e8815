"""Peak memory of the reconstruction stage vs detector height (issue: reconstruction).

Builds run stores holding random 61 × Y × X tilt-series (written chunk by chunk), runs
``faket-dask reconstruct`` on each in a subprocess with 2 worker processes, samples the RSS of
the whole process tree, and prints JSON. Memory should not grow with Y: slab tasks see
``cy`` rows whatever the height.

    python benchmarks/bench_reconstruct_memory.py --heights 512 2048 --width 512
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import dask.array as da

sys.path.insert(0, str(Path(__file__).parent))
from _memory import run_sampled  # noqa: E402


def make_store(path: Path, tilts: int, ny: int, nx: int) -> None:
    import faket_dask as fd
    from faket_dask import chunking

    cy = chunking.choose_cy(ny, nx, tilts)
    data = da.random.default_rng(0).standard_normal((tilts, ny, nx), chunks=(1, cy, nx), dtype="f4")
    ts = fd.tiltseries(data, fd.angles_from_range(-60, 60, 120 / (tilts - 1)), 10.0)
    fd.save(ts, path, "tomo_000/tiltseries", name="faket")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tilts", type=int, default=61)
    ap.add_argument("--heights", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    exe = str(Path(sys.executable).with_name("faket-dask"))
    work = Path(tempfile.mkdtemp(prefix="bench_rec_mem_"))
    runs = []
    try:
        for ny in args.heights:
            store = work / f"run_{ny}.zarr"
            make_store(store, args.tilts, ny, args.width)
            res = run_sampled(
                [exe, "reconstruct", str(store), "--modality", "faket", "--workers", str(args.workers)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=dict(os.environ, FAKET_PROGRESS="0"),
            )
            res.pop("per_process_peak_MB", None)
            runs.append({"shape": [args.tilts, ny, args.width], **res})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = runs[0]
    result = {
        "benchmark": "reconstruct-stage-memory",
        "machine": f"{platform.node()} {platform.machine()} cores={os.cpu_count()}",
        "runs": runs,
        "ratio_largest_process_vs_first": [
            round(r["peak_rss_largest_process_MB"] / base["peak_rss_largest_process_MB"], 3) for r in runs
        ],
        "ratio_total_vs_first": [round(r["peak_rss_total_MB"] / base["peak_rss_total_MB"], 3) for r in runs],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
