"""Peak memory of importing a large MRC tilt-series into a run store (issue: foundation).

Writes a synthetic T x N x N float32 MRC (streamed, never in memory), runs
``faket-dask import-mrc`` on it in a subprocess while sampling the RSS of its whole process
tree, and prints JSON. Reference in the same run: ``mrcfile.read`` of the same file (what a
naive converter does first), also sampled.

    python benchmarks/bench_import.py --tilts 61 --size 2048
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mrcfile
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _memory import run_sampled  # noqa: E402


def make_mrc(path: Path, tilts: int, size: int) -> None:
    """Write a T x N x N float32 tilt-series plane by plane."""
    with mrcfile.new_mmap(path, shape=(tilts, size, size), mrc_mode=2, fill=None, overwrite=True) as mrc:
        mrc.voxel_size = 10.0
        mrc.set_image_stack()
        offset = 1024 + int(mrc.header.nsymbt)
    rng = np.random.default_rng(0)
    with open(path, "r+b") as f:
        f.seek(offset)
        for _ in range(tilts):
            f.write(rng.standard_normal((size, size), dtype=np.float32).tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tilts", type=int, default=61)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_import_"))
    work.mkdir(parents=True, exist_ok=True)
    src = work / "ts.mrc"
    make_mrc(src, args.tilts, args.size)
    exe = str(Path(sys.executable).with_name("faket-dask"))
    store = work / "run.zarr"
    shutil.rmtree(store, ignore_errors=True)
    ours = run_sampled(
        [exe, "import-mrc", str(src), str(store), "tomo_000/tiltseries/measured",
         "--angles", "-60", "60", str(120 / max(args.tilts - 1, 1))],
        stdout=subprocess.DEVNULL,
    )
    ref = run_sampled(
        [sys.executable, "-c", f"import mrcfile; d = mrcfile.read({str(src)!r}); print(d.sum())"],
        stdout=subprocess.DEVNULL,
    )
    result = {
        "benchmark": "import-mrc",
        "machine": f"{platform.node()} {platform.machine()} cores={__import__('os').cpu_count()}",
        "shape": [args.tilts, args.size, args.size],
        "file_MB": round(src.stat().st_size / 2**20, 1),
        "faket_dask_import": ours,
        "reference_mrcfile_read": ref,
        "ratio_peak_total_ours_over_reference": round(
            ours["peak_rss_total_MB"] / ref["peak_rss_total_MB"], 3
        ),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
