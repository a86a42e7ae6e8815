"""Smoke test of ``benchmarks/bench_fidelity.py --quick`` on the session's small run.

The full run (the paper's Table 1 in small, ~1 hour) is recorded in ``docs/fidelity.md``; here
the whole chain (compare → train-picker → pick → score, each through the console script) runs on
the reference run's two tomograms with untrained pickers, and the report must have its shape.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_fidelity_quick_runs_the_whole_chain(reference_run, tmp_path):
    store = reference_run["out"] / "run.zarr"
    out = tmp_path / "fidelity.json"
    md = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_fidelity.py"), "--quick",
                           "--store", str(store), "--work", str(tmp_path / "work"), "--modalities",
                           "faket,noiseless", "--out", str(out), "--markdown", str(md)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["quick"] is True and report["train"] == [0] and report["test"] == 1
    assert set(report["table"]) == {"faket", "noiseless"}
    assert report["table"]["noiseless"]["tested_on"] == "noiseless"
    assert report["table"]["faket"]["tested_on"] == "measured"
    for row in report["table"].values():
        for key in ("localization_f1", "classification_macro_f1"):
            assert 0.0 <= row[key]["mean"] <= 1.0 and len(row[key]["values"]) == 1
    # the comparison of the simulated modalities with measured, on the test tomogram
    assert set(report["compare"]) == {"faket", "noiseless"}
    assert report["scored_classes"] and not set(report["scored_classes"]) & {"fiducial", "vesicle"}
    assert md.read_text().startswith("| trained on | tested on |")
    for name in ("picker_faket_0.pt", "picks_faket_0.csv", "score_faket_0.json", "commands.log"):
        assert (tmp_path / "work" / name).is_file()
