"""Whole-pipeline peak memory per worker and time at two detector widths, same depth.

Runs ``faket-dask simulate`` (a fresh LocalCluster each time) on generated specimens of
``depth × height × width`` voxels for every width, with the reconstruction thickness fixed to
the same depth, and reads ``summary.json``: the exact peak RSS of every worker process per stage
(Linux ``VmHWM``, reset before each stage) and the seconds per stage. The claim checked: memory
per worker follows the task budget, not the detector, so the ratio of the peaks at the widest
and the narrowest width stays below 1.5 while the data grow with the width.

Usage::

    python benchmarks/bench_pipeline.py --widths 512 2048 --depth 32 --height 64 --tilts 21
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

import yaml


def run_width(width: int, args: argparse.Namespace, root: Path) -> dict:
    cfg = {
        "seed": 0,
        "acquisition": {"tilt_start_deg": -60, "tilt_stop_deg": 60,
                        "tilt_step_deg": 120 / (args.tilts - 1)},
        "specimens": {"count": 2, "shape_zyx": [args.depth, args.height, width],
                      "particles": max(4, width // 64), "vesicles": 0, "fiducials": 2},
        "style": {"weights": "random"},
        "reconstruction": {"thickness": args.depth},
        "report": {"figures": False},
        "output": f"out-{width}",
    }
    path = root / f"run-{width}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    exe = str(Path(sys.executable).with_name("faket-dask"))
    t0 = time.perf_counter()
    proc = subprocess.run([exe, "simulate", str(path), "--workers", str(args.workers)],
                          capture_output=True, text=True, env=dict(os.environ, FAKET_PROGRESS="0"))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    summary = json.loads((root / f"out-{width}" / "summary.json").read_text())
    stages = summary["stages"]
    return {
        "width": width,
        "shape_zyx": [args.depth, args.height, width],
        "tilts": args.tilts,
        "wall_s": round(wall, 1),
        "pipeline_s": summary["seconds_total_this_invocation"],
        "peak_worker_MiB": summary["peak_memory_MiB"]["worker"],
        "peak_client_MiB": summary["peak_memory_MiB"]["client"],
        "per_stage": {k: {"s": v["seconds"], "peak_worker_MiB": v["peak_worker_MiB"]} for k, v in stages.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--tilts", type=int, default=21)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        runs = [run_width(w, args, Path(tmp)) for w in args.widths]
    lo, hi = runs[0], runs[-1]
    result = {
        "benchmark": "pipeline peak memory per worker vs detector width",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "runs": runs,
        "peak_worker_ratio": round(hi["peak_worker_MiB"] / lo["peak_worker_MiB"], 3),
        "data_ratio": hi["width"] / lo["width"],
        "time_ratio": round(hi["pipeline_s"] / lo["pipeline_s"], 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
