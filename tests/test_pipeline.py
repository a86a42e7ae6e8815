"""`faket-dask simulate`: outputs, labels, resume after SIGKILL, a killed worker, loopback cluster."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import faket_dask as fd
from faket_dask import store as st

from pipeline_helpers import EXE, assert_same_arrays, cli, env, read_arrays, write_config


def test_run_produces_everything(reference_run):
    out = reference_run["out"]
    store = out / "run.zarr"
    assert "Dask dashboard: http" in reference_run["stderr"]
    # every modality of every tomogram, finite, FAKET not NOISY
    for i in range(2):
        ts = fd.open(store, st.tomo_group(i, "tiltseries"))
        assert set(ts.data_vars) == {"noiseless", "measured", "noisy", "content", "baseline", "faket"}
        for v in ts.data_vars:
            assert np.isfinite(ts[v].values).all(), v
        assert not np.array_equal(ts["faket"].values, ts["noisy"].values)
        assert ts["faket"].attrs["style"] == f"tomo_{(i + 1) % 2:03d}/tiltseries/measured"
        tomo = fd.open(store, st.tomo_group(i, "tomogram"))
        assert {"noiseless", "measured", "noisy", "baseline", "faket"} <= set(tomo.data_vars)
        assert tomo["faket"].shape == (24, 16, 24)  # thickness = binned width
        assert np.isfinite(tomo["faket"].values).all()
        labels = fd.open(store, st.tomo_group(i, "labels"))
        assert labels["class_mask"].shape == tomo["faket"].shape
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_tomograms"] == 2 and summary["n_tilts"] == 21
    assert summary["noise_model"]["method"] == "paired" and len(summary["noise_model"]["r"]) == 21
    assert all(s["status"] == "done" and s["seconds"] >= 0 for s in summary["stages"].values())
    assert summary["peak_memory_MiB"]["worker"] > 50
    figs = {p.name for p in (out / "figures").glob("*.png")}
    assert "noise_curves.png" in figs
    for i in range(2):
        assert f"tomo_{i:03d}_power_spectra.png" in figs
        assert f"tomo_{i:03d}_central_slices.png" in figs
        assert f"tomo_{i:03d}_montage_faket.png" in figs


def test_labels_sit_on_the_particles_in_the_tomogram(reference_run):
    """The mapped class mask marks where the noiseless tomogram shows density, not its mirror."""
    store = reference_run["out"] / "run.zarr"
    for i in range(2):
        vol = fd.open(store, st.tomo_group(i, "tomogram"))["noiseless"].values.astype(np.float64)
        mask = fd.open(store, st.tomo_group(i, "labels"))["class_mask"].values > 0
        assert mask.any()
        contrast = {}
        for dz in range(-3, 4):  # the mask in place beats every shifted copy (z flip included)
            for dx in range(-3, 4):
                m = np.roll(mask, (dz, dx), axis=(0, 2))
                contrast[dz, dx] = abs(vol[m].mean() - vol[~m].mean()) / vol.std()
        assert max(contrast, key=contrast.get) == (0, 0) and contrast[0, 0] > 1
        m = mask[::-1]
        assert contrast[0, 0] > abs(vol[m].mean() - vol[~m].mean()) / vol.std()
        parts = fd.open(store, st.tomo_group(i, "labels_particles"))
        z, y, x = (parts[c].values for c in ("z", "y", "x"))
        assert (z > -1).all() and (z < vol.shape[0]).all() and (x < vol.shape[2]).all()


def test_rerun_skips_every_stage(reference_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference_run["out"], out)
    cfg = write_config(tmp_path / "run.yaml", output="copy")
    local_yaml = Path(__file__).resolve().parents[1] / "cluster" / "local.yaml"
    proc = cli("simulate", cfg, "--cluster", local_yaml)  # --cluster FILE works
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[run ]" not in proc.stdout and proc.stdout.count("[skip]") >= 10
    assert_same_arrays(read_arrays(out / "run.zarr"), reference_run["arrays"])


def test_a_finished_run_is_consolidated_at_its_end_with_every_group(reference_run):
    """The pipeline consolidates the store once, after its last stage (not after each stage):
    the snapshot exists and holds the last stage's groups, so plain ``xr.open_zarr`` is quiet
    and complete."""
    import json

    store = reference_run["out"] / "run.zarr"
    snapshot = json.loads((store / "zarr.json").read_text()).get("consolidated_metadata")
    assert snapshot is not None
    last = max(int(k.split("/")[0][5:]) for k in snapshot["metadata"] if k.startswith("tomo_"))
    assert f"tomo_{last:03d}/tomogram/faket" in snapshot["metadata"]
    stages = json.loads((store / "zarr.json").read_text())["attributes"]["stages"]
    assert stages[f"pipeline/reconstruct_faket/{last:03d}"]["status"] == "complete"
    assert "consolidate_after" not in stages[f"pipeline/reconstruct_faket/{last:03d}"]


def _wait_for_stage(store: Path, key: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        assert proc.poll() is None, "the run ended before the kill point"
        try:
            if st.stage_status(store).get(f"pipeline/{key}", {}).get("status") == "running":
                return
        except Exception:  # the store may not exist yet or be mid-write
            pass
        time.sleep(0.05)
    raise AssertionError(f"stage {key} never started")


@pytest.mark.slow
def test_sigkill_at_any_point_then_rerun_is_bit_identical(reference_run, tmp_path):
    cfg = write_config(tmp_path / "run.yaml")
    store = tmp_path / "out" / "run.zarr"
    # kill the whole process tree (client, scheduler, worker processes) at two points
    for kill_at, delay in (("noise/000", 0.5), ("faket/000", 1.0)):
        proc = subprocess.Popen([EXE, "simulate", str(cfg), "--workers", "2"], env=env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _wait_for_stage(store, kill_at, proc)
            time.sleep(delay)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    final = cli("simulate", cfg, "--workers", "2")
    assert final.returncode == 0, final.stderr[-3000:]
    assert "[skip] specimen/000 (complete)" in final.stdout
    assert "[skip] noise_model (complete)" in final.stdout
    assert "[run ] faket/000" in final.stdout
    assert_same_arrays(read_arrays(store), reference_run["arrays"])


@pytest.mark.slow
def test_killing_a_worker_during_nst_still_gives_identical_output(reference_run, tmp_path):
    from distributed import Client, LocalCluster

    from faket_dask.pipeline import simulate
    from faket_dask.torch_import import TorchImportPlugin

    cfg = write_config(tmp_path / "run.yaml")
    store = tmp_path / "out" / "run.zarr"
    result: dict = {}
    killed: list[str] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      env={"OMP_NUM_THREADS": "1"}) as cluster, Client(cluster) as client:

        def killer() -> None:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 300 and not killed and "done" not in result:
                for addr, keys in client.processing().items():
                    if any("stylise" in str(k) or "style-transfer" in str(k) for k in keys):
                        pid = client.run(os.getpid, workers=[addr])[addr]
                        os.kill(pid, signal.SIGKILL)
                        killed.append(addr)
                        return
                time.sleep(0.02)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            simulate(cfg, log=lambda s: None)
        finally:
            result["done"] = True
            thread.join()
        # the run imported torch on every worker before its first stage (torch_import.py)
        plugins = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))
    assert TorchImportPlugin.name in plugins
    assert killed, "no NST task was seen running"
    assert_same_arrays(read_arrays(store), reference_run["arrays"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_loopback_scheduler_and_two_workers(reference_run, tmp_path):
    port = _free_port()
    bindir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", ":0"], env=env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen(
                [str(bindir / "dask"), "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1",
                 "--nworkers", "1", "--no-dashboard"],
                env=env(OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True))
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout="60s") as c:
            c.wait_for_workers(2, timeout=120)
        cfg = write_config(tmp_path / "run.yaml")
        proc = cli("simulate", cfg, "--scheduler", f"tcp://127.0.0.1:{port}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert summary["cluster"]["n_workers"] == 2
        assert_same_arrays(read_arrays(tmp_path / "out" / "run.zarr"), reference_run["arrays"])
    finally:
        for p in procs:
            with __import__("contextlib").suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


@pytest.mark.slow
def test_imported_specimens_and_measured_style_stacks(tmp_path):
    """`source: import` for both: grandmodels with class masks, measured stacks without partners."""
    from scipy.ndimage import gaussian_filter

    from conftest import write_mrc

    rng = np.random.default_rng(5)
    dens = np.zeros((24, 32, 48), np.float32)
    mask = np.zeros(dens.shape, np.uint8)
    for z, y, x in ((8, 10, 12), (14, 20, 30), (12, 8, 36)):
        dens[z - 3:z + 3, y - 3:y + 3, x - 3:x + 3] = 1.0
        mask[z - 3:z + 3, y - 3:y + 3, x - 3:x + 3] = 2
    write_mrc(tmp_path / "model.mrc", dens, stack=False)
    write_mrc(tmp_path / "mask.mrc", mask, stack=False)
    angles = np.linspace(-60, 60, 21)
    files = []
    for k in range(2):
        signal = gaussian_filter(rng.normal(size=(21, 32, 48)), (0, 3, 3))
        meas = (signal / signal.std() + rng.normal(size=signal.shape)).astype(np.float32) + 100
        write_mrc(tmp_path / f"ts{k}.mrc", meas)
        (tmp_path / f"ts{k}.tlt").write_text("\n".join(f"{a:g}" for a in angles) + "\n")
        files.append({"measured": f"ts{k}.mrc", "angles_file": f"ts{k}.tlt"})
    cfg = write_config(
        tmp_path / "run.yaml",
        specimens={"source": "import", "files": [{"density": "model.mrc", "class_mask": "mask.mrc"}] * 3},
        style_data={"source": "import", "files": files},
    )
    proc = cli("simulate", cfg, "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = tmp_path / "out" / "run.zarr"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_tomograms"] == 3 and summary["noise_model"]["method"] != "paired"
    assert summary["style_pairing"] == {"tomo_000": "reference/style_001/measured",
                                        "tomo_001": "reference/style_000/measured",
                                        "tomo_002": "reference/style_001/measured"}
    ts = fd.open(store, "tomo_002/tiltseries")
    assert {"noiseless", "noisy", "content", "baseline", "faket"} == set(ts.data_vars)
    assert np.isfinite(ts["faket"].values).all()
    np.testing.assert_array_equal(fd.open_var(store, "reference/style_000/measured").values,
                                  np.asarray(__import__("mrcfile").read(tmp_path / "ts0.mrc")))
    labels = fd.open(store, "tomo_000/labels")["class_mask"].values
    assert set(np.unique(labels)) == {0, 2}
