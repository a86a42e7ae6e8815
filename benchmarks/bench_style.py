"""Benchmark of the style-transfer kernels (``docs/method.md §4``), before/after and vs the oracle.

For a stack of ``--tilts`` × ``--size``² (random VGG-19 weights, seeded structured random
content/init/style stacks already normalised to [0, 1]) it times, each in its own process:

* ``fast``: :func:`faket_dask.kernels.nst.stylise` given the style tilts (hand-written reverse
  pass, ``--batch`` tilts per pass, ``--algorithm``: "auto" is the direct convolutions);
* ``fast-direct``: the same with ``algorithm="direct"`` (what the Winograd backend buys);
* ``forward``: one forward pass of the VGG-19 prefix (through relu5_1) over the content tilts,
  no autograd: the machine's roofline for this network (``*_over_forward`` ratios);
* ``grams``: :func:`faket_dask.kernels.nst.style_grams` of the style tilts;
* ``step``: the NST step as the pipeline's ``faket`` stage runs it — ``stylise`` given the style
  Grams, which the ``style_grams`` stage computed and cached (computed here before the clock
  starts); ``fast`` = ``grams`` + ``step``, and its output equals ``step``'s bit for bit;
* ``reference``: :func:`faket_dask.kernels.nst.stylise_reference` (one tilt at a time,
  autograd, ``torch.optim.Adam``, Grams recomputed per tilt), the way the original FakET runs;
* ``before`` (with ``--compare-with PATH``): ``stylise`` of another checkout of faket-dask at
  PATH (e.g. a git worktree of the previous commit), same settings as ``fast``; its outputs are
  compared with ``fast`` bit for bit.

With ``--grad-memory SIZE`` it also measures the memory of one loss gradient of one SIZE² tilt
(``algorithm="direct"``): the hand-written reverse pass (:func:`~faket_dask.kernels.nst.
loss_and_grad`) vs plain autograd through the VGG module, each in its own process.

Memory (MiB): ``call_peak_over_before_MiB`` is the RSS high-water mark of the call alone above
the RSS before it (``VmHWM`` after resetting it through ``/proc/self/clear_refs``, Linux);
``peak_rss_MiB`` the process's ``ru_maxrss``. Wall and CPU time are reported (CPU time is less
disturbed by other processes; the load average before/after is recorded). ``--threads 1`` is
the Dask worker's setting (one torch thread per task). Prints JSON.

    python benchmarks/bench_style.py --tilts 61 --size 256 --threads 2 --compare-with /tmp/headwt \\
        --grad-memory 512 --out bench_style.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
# The checkout whose faket_dask a worker process imports (this one unless --compare-with).
_TREE = os.environ.get("FAKET_BENCH_TREE", str(_REPO))
if _TREE not in sys.path:
    sys.path.insert(0, _TREE)


def _rss_MiB() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_MiB() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _reset_hwm() -> bool:
    """Reset the kernel's RSS high-water mark (Linux), so VmHWM measures only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _hwm_MiB() -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return None


def _kernel_module():
    """The NST kernels of the tree on sys.path: ``kernels.nst`` (after the split of issue 14)
    or ``kernels.style_transfer`` (before); the names used here exist in both."""
    try:
        from faket_dask.kernels import nst as k
    except ImportError:
        from faket_dask.kernels import style_transfer as k
    return k


def _measure(fn) -> tuple[object, dict]:
    """Run ``fn()`` and return its result with wall/CPU time and memory of the call."""
    rss0 = _rss_MiB()
    res: dict = {"rss_before_MiB": round(rss0, 1)}
    hwm_ok = _reset_hwm()
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    res["time_s"] = round(time.perf_counter() - w0, 3)
    res["cpu_s"] = round(time.process_time() - c0, 3)
    # ru_maxrss: the whole process (VGG build included); VmHWM after the reset: the call alone
    res["peak_rss_MiB"] = round(_peak_rss_MiB(), 1)
    hwm = _hwm_MiB() if hwm_ok else None
    if hwm is not None:
        res["call_peak_rss_MiB"] = round(hwm, 1)
        res["call_peak_over_before_MiB"] = round(hwm - rss0, 1)
    return out, res


def _worker(job: dict) -> dict:
    """Runs in its own process: build the VGG, time one implementation, save its output."""
    import numpy as np
    import torch

    torch.set_num_threads(job["threads"])
    k = _kernel_module()
    data = job["data"]
    c, x, s = (np.load(os.path.join(data, f"{n}.npy")) for n in ("content", "init", "style"))
    t0 = time.perf_counter()
    vgg = k.build_vgg("random", seed=0)
    res: dict = {"kernel_module": k.__name__, "tree": _TREE,
                 "build_vgg_s": round(time.perf_counter() - t0, 3)}
    impl = job["impl"]

    def style_grams():
        return k.style_grams(vgg, s, batch=job["batch"], precision=job["precision"],
                             algorithm=job["algorithm"])

    if impl == "forward":
        # the roofline: one forward pass of the VGG-19 prefix (through relu5_1) over the same
        # tilts, batch by batch as the fast path, no autograd; the input as the kernel makes it
        import torch

        batch = job["batch"] or k.default_batch(c.shape[-2:])
        inp = torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32))[:, None].expand(-1, 3, -1, -1)

        def forward():
            with torch.no_grad():
                for i in range(0, c.shape[0], batch):
                    vgg(inp[i:i + batch].contiguous())
            return np.zeros(1, np.float32)
        out, m = _measure(forward)
        res.update(batch=batch)
    elif impl == "grams":
        out, m = _measure(lambda: np.concatenate([t.numpy().ravel() for t in style_grams()]))
        res.update(batch=job["batch"] or k.default_batch(c.shape[-2:]), algorithm=job["algorithm"])
    elif impl == "reference":
        out, m = _measure(lambda: k.stylise_reference(vgg, c, x, s))
    else:
        alg = "direct" if impl == "fast-direct" else job["algorithm"]
        style = style_grams() if impl == "step" else s  # step: the Grams before the clock starts
        out, m = _measure(lambda: k.stylise(vgg, c, x, style, batch=job["batch"],
                                            precision=job["precision"], algorithm=alg))
        res.update(batch=job["batch"] or k.default_batch(c.shape[-2:]), algorithm=alg,
                   precision=job["precision"], streams="auto (torch threads)")
    res.update(m)
    res["per_tilt_s"] = round(res["time_s"] / c.shape[0], 4)
    np.save(job["out"], out)
    return res


def _grad_worker(job: dict) -> dict:
    """One loss gradient of one tilt: the hand-written reverse pass or plain autograd."""
    import numpy as np
    import torch

    from faket_dask.kernels import nst
    from faket_dask.params.nst import IMAGENET_MEAN, IMAGENET_STD, NSTParams

    torch.set_num_threads(job["threads"])
    n = job["size"]
    st = _stacks(1, n, seed=1)
    c, x0, s = (torch.from_numpy(st[k]) for k in ("content", "init", "style"))
    vgg = nst.build_vgg("random", seed=0)
    p = NSTParams()
    dev = torch.device("cpu")
    plan = nst.make_plan(vgg, dev, "fp32", "direct", n * n)
    cf, sg = nst.loss_targets(plan, c, s, p)
    x = x0[:, None].expand(-1, 3, -1, -1).clone()

    def reverse():
        return nst.loss_and_grad(plan, x, cf, sg, p)[1]

    def autograd():
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        xa = x.clone().requires_grad_(True)
        h, loss = (xa - mean) / std, 0.0
        ctaps, staps = p.content_taps(), p.style_taps()
        for i in range(p.last_layer + 1):
            h = vgg[i](h)
            if i in ctaps:
                d = h - cf[i]
                loss = loss + ctaps[i] * d.square().sum() / (d.abs().sum() + 1e-8)
            if i in staps:
                m = h.flatten(2)
                d = torch.bmm(m, m.transpose(1, 2)) / m.shape[-1] - sg[i]
                loss = loss + staps[i] * d.square().sum() / (d.abs().sum() + 1e-8)
        loss.backward()
        return xa.grad

    g, res = _measure(reverse if job["impl"] == "grad-reverse" else autograd)
    res["size"] = n
    np.save(job["out"], g.numpy())
    return res


def _stacks(t: int, n: int, seed: int = 0) -> dict:
    """Structured random [0, 1] stacks: smooth blobs + fine texture; init = content + noise."""
    import numpy as np
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)

    def field(sigma: float) -> np.ndarray:
        f = gaussian_filter(rng.standard_normal((t, n, n)), sigma=(0, sigma, sigma))
        return f / f.std()

    content = field(6.0) + 0.3 * field(1.0)
    init = content + 0.8 * rng.standard_normal((t, n, n))
    style = field(3.0) + 0.6 * rng.standard_normal((t, n, n))

    def mm(a: np.ndarray) -> np.ndarray:
        return ((a - a.min()) / (a.max() - a.min())).astype(np.float32)

    return {"content": mm(content), "init": mm(init), "style": mm(style)}


def _spawn(job: dict, tree: str, threads: int) -> dict:
    """Run a worker in a fresh interpreter importing faket_dask from ``tree``."""
    env = dict(os.environ, FAKET_BENCH_TREE=tree, PYTHONPATH=tree)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {job['impl']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _diff(a, b) -> dict:
    import numpy as np

    d = np.abs(a.astype(np.float64) - b)
    tilt_std = b.std(axis=(1, 2), keepdims=True)
    return {
        "max_abs": float(d.max()),
        "max_over_tilt_std": float((d / tilt_std).max()),
        "frac_pixels_over_1e-4": float((d > 1e-4).mean()),
        "frac_pixels_over_1e-3_tilt_std": float((d > 1e-3 * tilt_std).mean()),
        # a flipped sign of one channel's Adam step moves the output by lr/(3·1.99) ≈ 0.025
        "frac_pixels_over_0.01": float((d > 0.01).mean()),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tilts", type=int, default=61)
    ap.add_argument("--size", type=int, default=256, help="tilt edge (pixels)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per implementation")
    ap.add_argument("--batch", type=int, default=None, help="tilts per pass of the fast path")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--algorithm", default="auto", choices=["auto", "winograd", "direct"])
    ap.add_argument("--repeats", type=int, default=1, help="runs per implementation (min kept)")
    ap.add_argument("--impls", nargs="+", default=["fast", "reference"],
                    choices=["fast", "fast-direct", "reference", "forward", "grams", "step"])
    ap.add_argument("--compare-with", type=Path, default=None, metavar="PATH",
                    help="another faket-dask checkout: also time its stylise ('before')")
    ap.add_argument("--grad-memory", type=int, default=None, metavar="SIZE",
                    help="also measure one tilt's gradient memory at SIZE², reverse vs autograd")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:  # inside a spawned worker process
        job = json.loads(args.worker)
        fn = _grad_worker if job["impl"].startswith("grad-") else _worker
        print(json.dumps(fn(job)))
        return {}

    import numpy as np
    import torch

    trees = {impl: str(_REPO) for impl in args.impls}
    if args.compare_with is not None:
        trees["before"] = str(args.compare_with.resolve())
    report: dict = {
        "benchmark": "neural style transfer (docs/method.md §4), random VGG-19 weights",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "threads": args.threads},
        "tilts": args.tilts, "size": args.size,
        "load_avg_1min": [round(os.getloadavg()[0], 2)],
    }
    runs: dict[str, list[dict]] = {k: [] for k in trees}
    outs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, v in _stacks(args.tilts, args.size).items():
            np.save(os.path.join(tmp, f"{k}.npy"), v)
        for _ in range(args.repeats):
            for impl, tree in trees.items():  # alternate, so slow phases of other load hit all
                out_path = os.path.join(tmp, f"{impl}.npy")
                job = {"impl": "fast" if impl == "before" else impl, "data": tmp,
                       "out": out_path, "threads": args.threads, "batch": args.batch,
                       "precision": args.precision, "algorithm": args.algorithm}
                runs[impl].append(_spawn(job, tree, args.threads))
                outs[impl] = np.load(out_path)
        if args.grad_memory:
            report["grad_memory"] = {}
            for impl in ("grad-reverse", "grad-autograd"):
                out_path = os.path.join(tmp, f"{impl}.npy")
                job = {"impl": impl, "size": args.grad_memory, "out": out_path,
                       "threads": args.threads}
                report["grad_memory"][impl] = _spawn(job, str(_REPO), args.threads)
                outs[impl] = np.load(out_path)
            g, r = outs["grad-reverse"], outs["grad-autograd"]
            report["grad_memory"]["rel_max_diff"] = float(np.abs(g - r).max() / np.abs(r).max())
    report["load_avg_1min"].append(round(os.getloadavg()[0], 2))
    for impl, rs in runs.items():
        best = min(rs, key=lambda r: r["time_s"])
        report[impl] = dict(best, time_s_all=[r["time_s"] for r in rs],
                            cpu_s_min=min(r["cpu_s"] for r in rs))
    if "fast" in outs and "reference" in outs:
        f, r = report["fast"], report["reference"]
        report["speedup_wall"] = round(r["time_s"] / f["time_s"], 3)
        report["speedup_cpu"] = round(r["cpu_s_min"] / f["cpu_s_min"], 3)
        report["diff"] = _diff(outs["fast"], outs["reference"])
    if "forward" in outs:
        # issue 15: style Grams <= 1.2x and the NST step <= 3.5x one forward pass per tilt
        # (``step``: given the cached Grams, as in the pipeline; ``fast`` includes the Grams)
        fw = report["forward"]["time_s"]
        for impl in ("grams", "step", "fast", "reference"):
            if impl in outs:
                report[f"{impl}_over_forward"] = round(report[impl]["time_s"] / fw, 3)
    if "fast" in outs and "step" in outs:
        report["step_equals_fast_bitwise"] = bool(np.array_equal(outs["fast"], outs["step"]))
    if "fast" in outs and "fast-direct" in outs:
        report["winograd_speedup_wall"] = round(
            report["fast-direct"]["time_s"] / report["fast"]["time_s"], 3)
    if "fast" in outs and "before" in outs:
        report["after_over_before_wall"] = round(
            report["fast"]["time_s"] / report["before"]["time_s"], 3)
        report["after_equals_before_bitwise"] = bool(np.array_equal(outs["fast"], outs["before"]))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
