"""The notebooks of ``notebooks/`` run top to bottom on the reference run's store.

After each notebook's parameters cell (the first code cell, tagged ``parameters``) a cell is
injected that points ``STORE`` at the store of the session's ``reference_run``; the notebook is executed with
nbclient in a ``python3`` kernel that runs this interpreter (checked), outputs are searched for
the figures and dashboard links the notebook promises, and the store is checked untouched.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from pipeline_helpers import assert_same_arrays, read_arrays  # noqa: E402

from faket_dask.store.layout import tiltseries_var  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 300
MARK = "KERNEL_PYTHON="

#: notebook -> strings that must appear in its text outputs
EXPECTED = {
    "01_explore_large_stack.ipynb": ["http", "would load"],
    "02_noise_and_style.ipynb": [f"styled with: {tiltseries_var(1, 'measured')}"],
    "03_scale_out.ipynb": ["http", "max |stored - recomputed|"],
}


def parameterise(nb, **params) -> None:
    """Inject ``params`` after the parameters cell (tag ``parameters``, else the first code cell).

    As papermill does: the notebook's defaults stay, the injected cell overrides some of them.
    It also prints the kernel's interpreter.
    """
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    cell = (tagged or code)[0]
    lines = ["# injected by tests/test_notebooks.py", *(f"{k} = {v!r}" for k, v in params.items()),
             "import sys", f"print({MARK!r} + sys.executable)"]
    injected = nbformat.v4.new_code_cell("\n".join(lines))
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(nb.cells.index(cell) + 1, injected)


def outputs(nb) -> tuple[str, list[str]]:
    """(all text output, MIME types of every rich output) of an executed notebook."""
    text, mimes = [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text.append(out.text)
            elif out.output_type in ("display_data", "execute_result"):
                mimes.extend(out.data.keys())
                text.append(str(out.data.get("text/plain", "")))
                text.append(str(out.data.get("text/html", "")))
    return "\n".join(text), mimes


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs(name, reference_run, tmp_path):
    store = (reference_run["out"] / "run.zarr").resolve()
    path = NOTEBOOKS / name
    nb = nbformat.read(path, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        f"{name}: commit notebooks with outputs cleared"
    )
    parameterise(nb, STORE=str(store), TOMO=0)
    # jupyter_client runs the "python" of the python3 kernelspec as sys.executable (checked below)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / name)  # the executed notebook, for a look after a failure
    text, mimes = outputs(nb)
    assert MARK + sys.executable in text, f"{name}: the kernel did not run {sys.executable}"
    assert "image/png" in mimes, f"{name}: no figure in the outputs"
    for expected in EXPECTED[name]:
        assert expected in text, f"{name}: '{expected}' not in the outputs"
    assert "Traceback" not in text
    # the notebooks only read the run store
    assert_same_arrays(read_arrays(store), reference_run["arrays"])
