"""The FakET paper's Table 1 in small: train a picker on each modality, test on held-out *measured* data.

FakET (Harar et al.) judges every modality by what a DeepFinder picker trained on it achieves on a
reference tomogram (Table 1: localisation F1 and classification macro-F1 of DeepFinder trained on
BENCHMARK, FAKET, BASELINE, NOISY, and noiseless as the ceiling). Here, with the project's own
commands only (``faket-dask simulate / compare / train-picker / pick / score``, run as
subprocesses, exactly what a user types):

1. simulate K tomograms (``--tomograms``, the demo's specimens: 10 % proteins by volume, a
   vesicle, actin, a microtubule, gold; 61 tilts; the reference microscope as the style data;
   tomograms of 128³ at 10 Å, SHREC's voxel size, or with ``--binning 2`` the paper's 2×
   binning of 10 Å projections, 64³ at 20 Å), or reuse a run (``--store``);
2. ``compare`` the simulated modalities with ``measured`` on the test tomogram (item 1 of the
   issue: spectrum, histogram, noise σ and correlation distances);
3. for each modality and ``--seeds`` seed: ``train-picker`` on tomograms 0..K−3 (validate on
   K−2), ``pick`` the held-out tomogram K−1 in its *measured* modality (noiseless: in its
   noiseless modality — the ceiling), ``score`` with the SHREC'21 rules on the protein classes;
4. a table of mean ± sd of localisation F1 and classification macro-F1 per modality, as JSON
   (``--out``) and as Markdown (``--markdown``, pasted into ``docs/fidelity.md``).

``measured`` plays BENCHMARK (the microscope stand-in's output, the data we test on), so its row
is the in-domain reference and ``noiseless`` the ceiling. VGG-19 weights: ImageNet when cached
(``faket-dask fetch-weights``), otherwise random (the JSON says which).

``--quick`` (a few minutes; the test suite runs it on its small session run): tiny pickers
(patch 8, 2 epochs of 3 steps: untrained, F1 ≈ 0; it checks the wiring, not the numbers), one
seed. With a 2-tomogram ``--store`` it trains on tomogram 0 and validates and tests on
tomogram 1 (stated in the JSON's ``note``).

    python benchmarks/bench_fidelity.py --work /tmp/fidelity --out fidelity.json --markdown table.md
    python benchmarks/bench_fidelity.py --quick --store run.zarr --work /tmp/fq
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

_REPO = Path(__file__).resolve().parents[1]
#: The console script next to this interpreter (the venv's), else the one on PATH.
EXE = str(Path(sys.executable).with_name("faket-dask")) if Path(sys.executable).with_name("faket-dask").exists() \
    else "faket-dask"
#: Training tomograms' modalities, in the paper's Table 1 order; measured = BENCHMARK.
MODALITIES = ("measured", "faket", "baseline", "noisy", "noiseless")
#: Classes that are not proteins (left out of the score, as SHREC'21 leaves out vesicles and gold).
NON_PROTEIN = ("vesicle", "fiducial", "actin", "microtubule")


def _weights() -> str:
    """``imagenet`` when its weights are cached here, else ``random`` (nothing is downloaded)."""
    from faket_dask.kernels.nst.vgg import imagenet_weights_path

    return "imagenet" if imagenet_weights_path().is_file() else "random"


def fidelity_config(tomograms: int, seed: int, binning: int = 2) -> dict:
    """The simulation of the full run: the demo's specimens (``faket_dask/demo.py``), K tomograms;
    tomograms binned ``binning`` (2: the paper's recipe, 64³ of 20 Å; 1: 128³ of 10 Å, SHREC's
    voxel size)."""
    return {"seed": seed, "style": {"weights": _weights()}, "reconstruction": {"binning": binning},
            "specimens": {"source": "generate", "count": tomograms, "shape_zyx": [128, 128, 128],
                          "volume_fraction": 0.1, "vesicles": 1, "fiducials": 3, "actin": 1,
                          "microtubules": 1},
            "style_data": {"source": "microscope"}, "output": "sim"}


def quick_config(seed: int) -> dict:
    """A tiny simulation for ``--quick`` without ``--store``: 3 tomograms of 32×64×64, 31 tilts."""
    return {"seed": seed, "acquisition": {"tilt_start_deg": -60, "tilt_stop_deg": 60, "tilt_step_deg": 4},
            "specimens": {"count": 3, "shape_zyx": [32, 64, 64], "particles": 12, "vesicles": 0,
                          "fiducials": 1},
            "style": {"weights": "random"}, "output": "sim"}


#: Picker settings (train-picker options) of the full run and of --quick.
FULL_PICKER = {"patch": 32, "batch": 4, "epochs": 6, "steps": 25, "lr": 1e-3, "val_patches": 16}
QUICK_PICKER = {"patch": 8, "batch": 2, "epochs": 2, "steps": 3, "lr": 1e-3, "val_patches": 4}


def run(*args: str, log: Path) -> str:
    """Run the console script; on failure print its stderr and stop (a benchmark must not guess)."""
    env = dict(os.environ, FAKET_PROGRESS=os.environ.get("FAKET_PROGRESS", "0"))
    t0 = time.perf_counter()
    proc = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env)
    with log.open("a") as fh:
        fh.write(f"$ faket-dask {' '.join(map(str, args))}  # {time.perf_counter() - t0:.1f} s, rc {proc.returncode}\n")
        fh.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"bench_fidelity: `faket-dask {' '.join(map(str, args))}` failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def store_facts(store: Path) -> tuple[int, list[str], str]:
    """Number of tomograms, the protein classes of the last one, and the style weights used."""
    import zarr

    root = zarr.open_group(str(store), mode="r")
    tomos = sorted(k for k in root.group_keys() if k.startswith("tomo_"))
    names = root[f"{tomos[-1]}/labels_particles/class_name"][...]
    proteins = sorted({str(n) for n in names} - set(NON_PROTEIN))
    run_attrs = dict(root.attrs.get("run", {}) or {})
    weights = str(run_attrs.get("weights", (root.attrs.get("config", {}) or {}).get("style", {}).get("weights", "?")))
    return len(tomos), proteins, weights


def mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def markdown(report: dict) -> str:
    """The Markdown table of ``docs/fidelity.md``."""
    lines = ["| trained on | tested on | localisation F1 | classification macro-F1 |",
             "|---|---|---|---|"]
    for m, row in report["table"].items():
        loc, cls = row["localization_f1"], row["classification_macro_f1"]
        lines.append(f"| {m} | {row['tested_on']} | {loc['mean']:.3f} ± {loc['sd']:.3f} | "
                     f"{cls['mean']:.3f} ± {cls['sd']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="Working folder (simulation, pickers, picks, logs).")
    ap.add_argument("--store", type=Path, default=None, help="Reuse this run store instead of simulating.")
    ap.add_argument("--tomograms", type=int, default=5, help="K tomograms to simulate (train K-2, validate 1, test 1).")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="Picker seeds (default 0 1 2; --quick: 0).")
    ap.add_argument("--modalities", default=",".join(MODALITIES))
    ap.add_argument("--quick", action="store_true", help="Tiny settings (a few minutes).")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="Write the JSON report here.")
    ap.add_argument("--markdown", type=Path, default=None, help="Write the Markdown table here.")
    ap.add_argument("--binning", type=int, default=1, choices=(1, 2),
                    help="Tomogram binning of the simulation (1: 128³ of 10 Å, SHREC's voxel size as in the "
                         "paper's Table 1; 2: 64³ of 20 Å, where proteins of radius < 70 Å are <= 3 voxels).")
    ap.add_argument("--pick-block", type=int, default=128,
                    help="pick --block: 128 (one block for 128³ tomograms: ~8 GB, no cluster start-up).")
    ap.add_argument("--epochs", type=int, default=None, help="Picker epochs (default: FULL_PICKER's).")
    ap.add_argument("--steps", type=int, default=None, help="Picker steps per epoch (default: FULL_PICKER's).")
    ap.add_argument("--reuse-pickers", action="store_true",
                    help="Keep picker_MODALITY_SEED.pt files already in --work (re-pick and re-score only).")
    args = ap.parse_args()

    t_start = time.perf_counter()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    workers = ["--workers", str(args.workers)] if args.workers else []
    picker = dict(QUICK_PICKER if args.quick else FULL_PICKER)
    picker.update({k: v for k, v in (("epochs", args.epochs), ("steps", args.steps)) if v is not None})
    block = ["--block", str(args.pick_block)] if args.pick_block and not args.quick else []
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]

    report: dict = {"benchmark": "FakET Table 1 in small (bench_fidelity.py)", "quick": args.quick,
                    "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "load_1min_before": round(os.getloadavg()[0], 2), "picker": picker, "seeds": seeds}
    t0 = time.perf_counter()
    if args.store is None:
        cfg = quick_config(0) if args.quick else fidelity_config(args.tomograms, 0, args.binning)
        (work / "sim.yaml").write_text(yaml.safe_dump(cfg))
        shutil.rmtree(work / "sim", ignore_errors=True)
        run("simulate", work / "sim.yaml", "--out", work / "sim", *workers, log=log)
        store = work / "sim" / "run.zarr"
        report["simulation"] = cfg
    else:
        store = args.store
    report["simulate_s"] = round(time.perf_counter() - t0, 1)
    n_tomos, proteins, weights = store_facts(store)
    if n_tomos < 2:
        sys.exit(f"bench_fidelity: {store} has {n_tomos} tomogram(s); at least 2 are needed")
    test = n_tomos - 1
    validate = n_tomos - 2 if n_tomos > 2 else test      # 2 tomograms: validate on the test one
    train = list(range(max(n_tomos - 2, 1)))
    import zarr

    test_attrs = dict(zarr.open_group(str(store), mode="r")[f"tomo_{n_tomos - 1:03d}/tomogram/measured"].attrs)
    report["tomogram_pixel_size_A"] = (test_attrs.get("faket_dask_attrs") or {}).get("pixel_size_A")
    report["pick_block"] = None if args.quick else args.pick_block
    report.update(store=str(store), tomograms=n_tomos, train=train, validate=validate, test=test,
                  scored_classes=proteins, vgg_weights=weights,
                  note=("a 2-tomogram store: the test tomogram is also the validation one" if n_tomos == 2 else None))

    t0 = time.perf_counter()
    others = ",".join(m for m in modalities if m != "measured")
    run("compare", store, "--modalities", others, "--reference", "measured", "--tomos", str(test),
        "--out", work / "compare", "--overwrite", *workers, log=log)
    report["compare"] = json.loads((work / "compare" / "compare.json").read_text()).get("pooled")
    report["compare_s"] = round(time.perf_counter() - t0, 1)

    table: dict = {}
    for m in modalities:
        tested_on = "noiseless" if m == "noiseless" else "measured"
        loc, cls, secs = [], [], []
        for seed in seeds:
            t0 = time.perf_counter()
            pt = work / f"picker_{m}_{seed}.pt"
            if not (args.reuse_pickers and pt.is_file()):
                run("train-picker", store, "--modality", m, "--train", ",".join(map(str, train)),
                    "--validate", str(validate), "--out", pt, "--seed", str(seed),
                    "--patch", str(picker["patch"]), "--batch", str(picker["batch"]),
                    "--epochs", str(picker["epochs"]), "--steps", str(picker["steps"]), "--lr", str(picker["lr"]),
                    "--val-patches", str(picker["val_patches"]),
                    "--overwrite", log=log)
            picks = work / f"picks_{m}_{seed}.csv"
            run("pick", store, "--tomo", str(test), "--modality", tested_on, "--picker", pt, "--out", picks,
                "--overwrite", *block, *workers, log=log)
            rep = work / f"score_{m}_{seed}.json"
            run("score", picks, store, "--tomo", str(test), "--tomo-grid", "--classes", ",".join(proteins),
                "--out", rep, "--overwrite", log=log)
            score = json.loads(rep.read_text())
            loc.append(score["localization"]["f1"])
            cls.append(score["classification_macro_f1"])
            secs.append(round(time.perf_counter() - t0, 1))
            print(f"{m} seed {seed}: localisation F1 {loc[-1]:.3f}, classification macro-F1 {cls[-1]:.3f} "
                  f"({secs[-1]} s)", file=sys.stderr, flush=True)
        table[m] = {"tested_on": tested_on, "localization_f1": mean_sd(loc),
                    "classification_macro_f1": mean_sd(cls), "train_pick_score_s": secs}
    report["table"] = table
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    report["load_1min_after"] = round(os.getloadavg()[0], 2)
    text = json.dumps(report, indent=2)
    print(text)
    print(markdown(report))
    if args.out is not None:
        args.out.write_text(text + "\n")
    if args.markdown is not None:
        args.markdown.write_text(markdown(report))


if __name__ == "__main__":
    main()
