"""Peak-memory sampling of a command and all its child processes (benchmarks only)."""
from __future__ import annotations

import subprocess
import threading
import time

import psutil


def run_sampled(cmd: list[str], interval_s: float = 0.02, **kwargs) -> dict:
    """Run ``cmd``; sample the RSS of its whole process tree every ``interval_s``.

    Returns wall time, exit code, peak of the summed RSS of the tree and the largest single
    process's peak (bytes). Summing counts shared library pages once per process, so it is an
    upper bound on the tree's real footprint.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, **kwargs)
    root = psutil.Process(proc.pid)
    peak_total = 0
    peak_single: dict[int, int] = {}
    names: dict[int, str] = {}
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_total
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                if p.pid not in names:
                    try:
                        names[p.pid] = " ".join(p.cmdline())[-60:]
                    except psutil.Error:
                        names[p.pid] = "?"
                peak_single[p.pid] = max(peak_single.get(p.pid, 0), rss)
            peak_total = max(peak_total, total)
            time.sleep(interval_s)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = proc.wait()
    done.set()
    th.join()
    return {
        "seconds": round(time.perf_counter() - t0, 3),
        "returncode": rc,
        "peak_rss_total_MB": round(peak_total / 2**20, 1),
        "peak_rss_largest_process_MB": round(max(peak_single.values(), default=0) / 2**20, 1),
        "processes": len(peak_single),
        "per_process_peak_MB": {
            names.get(pid, str(pid)): round(v / 2**20, 1) for pid, v in sorted(peak_single.items())
        },
    }
