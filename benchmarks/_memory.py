"""Peak-memory sampling of a command and all its child processes (benchmarks only)."""
from __future__ import annotations

import subprocess
import threading
import time

import psutil


def run_sampled(cmd: list[str], interval_s: float = 0.02, tree_every_s: float = 0.5,
                **kwargs) -> dict:
    """Run ``cmd``; sample the RSS of its whole process tree every ``interval_s``.

    Returns wall time, exit code, peak of the summed RSS of the tree and the largest single
    process's peak (bytes). Summing counts shared library pages once per process, so it is an
    upper bound on the tree's real footprint.

    The tree itself (``psutil``'s walk over every process of the machine) is refreshed every
    ``tree_every_s`` only: walked every 20 ms it cost the sampler ~15 % of a core with one child
    and more with a cluster's processes, CPU the measured command lacked on 2 cores (the
    demo ran ~20 % slower under it; session 15).
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
        procs: list[psutil.Process] = [root]
        walked = -1e9
        while not done.is_set():
            if time.perf_counter() - walked >= tree_every_s:
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    break
                walked = time.perf_counter()
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
