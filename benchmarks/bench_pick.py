"""Peak memory of ``faket-dask pick`` vs tomogram size (issue: picking, "memory flat in tomogram size").

Writes MRC tomograms of Z × N × N voxels for each N (smooth random data, written plane by
plane), makes a random-weights picker (DeepFinder's architecture with ``--filters`` per level,
its head biases balanced so every class wins somewhere: many components, many pieces on block
faces), and picks each tomogram with :func:`faket_dask.pick` on a LocalCluster of one worker
process with one thread (a fresh cluster per size). A thread samples the worker process's RSS
every 20 ms (psutil); JSON with the peak per size, the ratio largest / first (acceptance:
≤ 1.3 for 4× the voxels in x and y), wall times, picks, machine and load average is printed
and written to ``--out``.

A non-flat implementation (the tomogram, its probabilities or its labels held whole) would
add ≥ (4 + 4 · channels) bytes per voxel: ≥ 96 MiB at 64 × 256 × 256 and ≥ 384 MiB at
64 × 512 × 512 with 5 channels, well above the 30 % allowed over a worker's ~0.5 GiB.

    python benchmarks/bench_pick.py --z 64 --sizes 256 512 --out pick_memory.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def write_tomogram(path: Path, z: int, n: int, voxel_A: float) -> None:
    """A smooth random Z × N × N float32 MRC, written plane by plane through a memory map."""
    import mrcfile
    from scipy import ndimage

    rng = np.random.default_rng(n)
    with mrcfile.new_mmap(path, shape=(z, n, n), mrc_mode=2, overwrite=True) as mrc:
        for k in range(z):
            mrc.data[k] = ndimage.gaussian_filter(rng.standard_normal((n, n), dtype=np.float32), 2)
        mrc.voxel_size = voxel_A
        mrc.update_header_stats()


def make_picker(path: Path, classes: int, filters: tuple[int, ...], sample: Path) -> None:
    """Random weights, head biases minus each channel's median logit on a corner of ``sample``."""
    import mrcfile
    import torch

    from faket_dask.kernels.picker_net import PickerUNet, save_picker

    torch.manual_seed(0)
    model = PickerUNet(classes + 1, filters).eval()
    with mrcfile.mmap(sample, mode="r") as mrc:
        crop = np.array(mrc.data[:32, :64, :64], np.float32)
    crop = (crop - crop.mean()) / crop.std()
    with torch.inference_mode():
        logits = model(torch.from_numpy(crop)[None, None])[0].reshape(classes + 1, -1)
        model.head.bias -= logits.median(dim=1).values
    names = ["background"] + [f"class{k}" for k in range(1, classes + 1)]
    save_picker(path, model, names, filters, {"pixel_size_A": 10.0})


def pick_sampled(mrc: Path, picker: Path, out: Path, block: int) -> dict:
    """Pick ``mrc`` on a fresh 1-worker, 1-thread LocalCluster; the worker's peak RSS."""
    import psutil

    import faket_dask as fd

    with fd.connect(workers=1, threads_per_worker=1, dashboard=None, quiet=True) as client:
        pid = next(iter(client.run(os.getpid).values()))
        proc = psutil.Process(pid)
        start = proc.memory_info().rss
        peak = start
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                try:
                    peak = max(peak, proc.memory_info().rss)
                except psutil.Error:
                    break
                time.sleep(0.02)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t0 = time.perf_counter()
        try:
            table = fd.pick(mrc, picker, out, block=block, overwrite=True)
        finally:
            wall = time.perf_counter() - t0
            done.set()
            th.join()
    return {"worker_rss_at_start_MiB": round(start / 2**20, 1), "peak_rss_MiB": round(peak / 2**20, 1),
            "wall_s": round(wall, 1), "picks": len(table)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--z", type=int, default=64)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="N of the Z × N × N tomograms")
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--filters", type=int, nargs=3, default=[8, 8, 8])
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("FAKET_PROGRESS", "0")
    work = Path(tempfile.mkdtemp(prefix="bench_pick_"))
    runs = []
    load = [round(v, 2) for v in os.getloadavg()]
    try:
        mrcs = []
        for n in args.sizes:
            mrcs.append(work / f"tomo_{n}.mrc")
            write_tomogram(mrcs[-1], args.z, n, 10.0)
        picker = work / "picker.pt"
        make_picker(picker, args.classes, tuple(args.filters), mrcs[0])
        for n, mrc in zip(args.sizes, mrcs):
            res = pick_sampled(mrc, picker, work / f"picks_{n}.csv", args.block)
            runs.append({"shape_zyx": [args.z, n, n], **res})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    first = runs[0]["peak_rss_MiB"]
    result = {
        "benchmark": "pick-memory",
        "machine": f"{platform.node()} {platform.machine()} cores={os.cpu_count()} {platform.processor()}".strip(),
        "settings": {"classes": args.classes, "filters": args.filters, "block": args.block,
                     "workers": 1, "threads_per_worker": 1, "voxel_A": 10.0},
        "sizes": [r["shape_zyx"] for r in runs],
        "peak_rss_MiB": [r["peak_rss_MiB"] for r in runs],
        "ratio_vs_first": [round(r["peak_rss_MiB"] / first, 3) for r in runs],
        "wall_s": [r["wall_s"] for r in runs],
        "runs": runs,
        "load_average_before": load,
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
