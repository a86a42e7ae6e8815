"""`faket-dask demo OUT_DIR` (what `make demo` runs): the whole pipeline, everything the issue lists."""
from __future__ import annotations

import json

import numpy as np
import pytest

import faket_dask as fd
from faket_dask import store as st

from pipeline_helpers import cli


@pytest.mark.slow
def test_demo_end_to_end_then_resumes(tmp_path):
    out = tmp_path / "demo"
    proc = cli("demo", out, "--workers", "2", timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"demo output in {out.resolve()}" in proc.stdout
    assert "Dask dashboard: http" in proc.stderr
    # stages run side by side in threads: no warning the store silences may leak from one
    # thread's filters to another's (catch_warnings is not thread-safe)
    # (the dashboard's "port in use" notice is about the machine, not the store: allowed)
    warnings = [ln for ln in proc.stderr.splitlines()
                if "faket-dask: warning" in ln and "already in use" not in ln]
    assert not warnings, proc.stderr[-3000:]
    assert "stage" in proc.stdout and "peak worker" in proc.stdout  # the summary table
    store = out / "run.zarr"
    # every array of every stage is compressed with the project's codec (store.codecs.BLOSC)
    from zarr.codecs import BloscCodec
    import zarr

    def arrays(g, pre=""):
        for k, v in g.members():
            yield from (arrays(v, f"{pre}{k}/") if isinstance(v, zarr.Group) else [(pre + k, v)])

    listed = list(arrays(zarr.open_group(str(store), mode="r")))
    other = [p for p, a in listed if not any(isinstance(c, BloscCodec) and c.cname.value == "lz4"
                                             for c in a.metadata.codecs)]
    assert len(listed) > 200 and not other, other
    # tilt-series are stored one tilt per chunk, whatever grouping the stages read them in
    tilted = [(p, a.chunks) for p, a in listed if "/tiltseries/" in p and a.ndim == 3]
    assert len(tilted) >= 15 and all(c[0] == 1 for _, c in tilted), tilted
    for i in range(3):
        ts = fd.open(store, st.tomo_group(i, "tiltseries"))
        assert ts["faket"].shape == (61, 128, 128)
        for v in ts.data_vars:
            assert np.isfinite(ts[v].values).all()
        assert not np.array_equal(ts["faket"].values, ts["noisy"].values)
        tomo = fd.open(store, st.tomo_group(i, "tomogram"))
        assert tomo["faket"].shape == (64, 64, 64)
        assert all(np.isfinite(tomo[v].values).all() for v in tomo.data_vars)
    figs = {p.name for p in (out / "figures").glob("*.png")}
    expected = {"noise_curves.png"} | {
        f"tomo_{i:03d}_{kind}.png" for i in range(3)
        for kind in ("power_spectra", "central_slices", "montage_faket", "montage_noisy", "montage_baseline")
    }
    assert expected <= figs
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_tomograms"] == 3 and summary["peak_memory_MiB"]["worker"] > 0
    assert summary["stages"]["faket/000"]["seconds"] > 0 and summary["noise_model"]["r"]
    # the same command again completes at once: every stage is reported as skipped
    again = cli("demo", out, "--workers", "1", timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "[run ]" not in again.stdout and "[skip] faket/002 (complete)" in again.stdout
