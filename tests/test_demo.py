"""`faket-dask demo OUT_DIR` (what `make demo` runs) completes and says where its output is."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import faket_dask as fd


def test_demo_runs_and_refuses_to_overwrite(tmp_path):
    exe = str(Path(sys.executable).with_name("faket-dask"))
    env = dict(os.environ, FAKET_PROGRESS="0")
    out = tmp_path / "demo"
    proc = subprocess.run([exe, "demo", str(out), "--workers", "2"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"demo output in {out.resolve()}" in proc.stdout
    assert "Dask dashboard: http" in proc.stderr
    assert (out / "run.zarr").is_dir()
    assert fd.open(out / "run.zarr", "tomo_000/tiltseries")["measured"].shape[0] == 61
    again = subprocess.run([exe, "demo", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 2 and "--overwrite" in again.stderr
