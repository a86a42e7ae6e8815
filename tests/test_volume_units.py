"""Imported volumes in declared units (``import-mrc --kind volume --units``, config ``units:``)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

import faket_dask as fd
from faket_dask.kernels.potential import ice_potential_V, interaction_constant, protein_potential_V
from faket_dask.stages.microscope import specimen_phase

EXE = str(Path(sys.executable).with_name("faket-dask"))


def run_cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, FAKET_PROGRESS="0")
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=180)


def _write(path: Path, data: np.ndarray, voxel: float = 10.0) -> Path:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data.astype(np.float32))
        m.voxel_size = voxel
    return path


@pytest.mark.parametrize("angle", [0.0, 60.0])
def test_slab_in_volts_imported_gives_the_physical_phase(tmp_path, angle):
    """A homogeneous slab of V0 = 1.5 V, t = 300 Å, imported in volts: phase σ_e V0 t / cos θ."""
    vol = np.zeros((96, 6, 160), np.float32)
    vol[33:63] = 1.5                                    # 30 voxels of 10 Å
    src = _write(tmp_path / "slab.mrc", vol)
    store = tmp_path / "run.zarr"
    proc = run_cli("import-mrc", src, store, "tomo_000/specimen/density", "--kind", "volume",
                   "--units", "V", "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    dens = fd.open_var(store, "tomo_000/specimen/density")
    assert dens.attrs["units"] == "V"
    ph = specimen_phase(fd.project(dens, [angle])).values[0]
    expect = interaction_constant(300) * 1.5 * 300.0 / math.cos(math.radians(angle))
    np.testing.assert_allclose(ph[:, 60:100], expect, rtol=0.01)


def test_normalised_volume_is_scaled_to_protein_contrast(tmp_path):
    rng = np.random.default_rng(0)
    vol = np.zeros((40, 40, 40), np.float32)
    zz, yy, xx = np.mgrid[:40, :40, :40]
    for c in rng.uniform(8, 32, (6, 3)):
        vol[((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) < 25] = 7.0
    vol += rng.normal(0, 0.3, vol.shape).astype(np.float32)     # noise around 0 and 7
    src = _write(tmp_path / "model.mrc", vol)
    store = tmp_path / "run.zarr"
    proc = run_cli("import-mrc", src, store, "tomo_000/specimen/density", "--kind", "volume",
                   "--units", "normalised", "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    d = fd.open_var(store, "tomo_000/specimen/density").values
    inside = vol > 3.5
    assert d[inside].mean() == pytest.approx(protein_potential_V() - ice_potential_V(), rel=0.02)
    assert d.min() >= 0                                         # negatives clipped


def test_bad_units_one_line_nothing_written(tmp_path):
    src = _write(tmp_path / "v.mrc", np.ones((8, 8, 8)))
    store = tmp_path / "run.zarr"
    proc = run_cli("import-mrc", src, store, "tomo_000/specimen/density", "--kind", "volume",
                   "--units", "eV", "--workers", 1)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "unknown units 'eV'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not store.exists()
    proc = run_cli("import-mrc", src, store, "tomo_000/specimen/density", "--kind", "volume",
                   "--units", "normalised", "--workers", 1)
    # an all-constant positive volume is fine; an all-zero one is not
    assert proc.returncode == 0, proc.stderr
    z = _write(tmp_path / "z.mrc", np.zeros((8, 8, 8)))
    proc = run_cli("import-mrc", z, tmp_path / "r2.zarr", "tomo_000/specimen/density", "--kind",
                   "volume", "--units", "normalised", "--workers", 1)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "z.mrc" in proc.stderr
