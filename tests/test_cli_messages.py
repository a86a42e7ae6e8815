"""What the CLI prints besides results: storage errors as one line, warnings as one line each.

Real commands in subprocesses, real failing file operations; no Python traceback, no
``FILE:LINE:`` warning locations.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import write_mrc
from faket_dask.messages import format_warning, storage_error_line
from pipeline_helpers import cli

# What Python's default warning format looks like: "path/file.py:123: UserWarning: ..."
RAW_WARNING = re.compile(r"\.py:\d+: \w*Warning")


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return [line for line in proc.stderr.splitlines() if line.startswith("faket-dask: error:")]


# -- storage errors --------------------------------------------------------------------------
def test_file_where_a_directory_is_expected_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("not a directory")
    store = tmp_path / "afile" / "run.zarr"
    proc = cli("specimen", store, "--shape", "16", "16", "16", "--particles", "2", "--vesicles", "0",
               "--fiducials", "0")
    assert proc.returncode == 2, proc.stderr[-3000:]
    [line] = error_lines(proc)
    assert "afile" in line and "not a directory" in line.lower(), line


@pytest.fixture()
def small_store(tmp_path) -> Path:
    ts = write_mrc(tmp_path / "ts.mrc", np.random.default_rng(0).random((3, 8, 8), dtype=np.float32))
    store = tmp_path / "run.zarr"
    proc = cli("import-mrc", ts, store, "tomo_000/tiltseries/measured", "--angles", "-2", "2", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return store


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (not writable even for root)")
def test_unwritable_export_destination_is_one_line(small_store):
    dest = "/proc/faket-dask-test.mrc"
    proc = cli("export-mrc", small_store, "tomo_000/tiltseries/measured", dest)
    assert proc.returncode == 2
    [line] = error_lines(proc)
    assert line.startswith(f"faket-dask: error: {dest}") and line.endswith("No such file or directory"), line
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr

    # FAKET_DEBUG=1 keeps the traceback for whoever debugs it
    debug = cli("export-mrc", small_store, "tomo_000/tiltseries/measured", dest, extra_env={"FAKET_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr


def test_storage_error_line_names_the_path(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError) as exc:
        (tmp_path / "afile" / "sub").mkdir()
    assert storage_error_line(exc.value) == f"{tmp_path / 'afile' / 'sub'}: Not a directory"

    with pytest.raises(OSError) as exc:
        os.rename(tmp_path / "missing", tmp_path / "target")
    assert storage_error_line(exc.value) == (
        f"{tmp_path / 'missing'} -> {tmp_path / 'target'}: No such file or directory")

    with pytest.raises(OSError) as exc:  # zarr's own FileNotFoundError, without strerror
        zarr.open_group(str(tmp_path / "nothing.zarr"), mode="r")
    assert storage_error_line(exc.value) == f"{tmp_path / 'nothing.zarr'} does not exist"

    zarr.create_array(str(tmp_path / "array.zarr"), shape=(2,), dtype="f4")
    with pytest.raises(zarr.errors.ContainsArrayError) as exc:  # a ValueError, not an OSError
        zarr.open_group(str(tmp_path / "array.zarr"), mode="r")
    line = storage_error_line(exc.value)
    assert line and "array.zarr" in line and "\n" not in line

    assert storage_error_line(ValueError("a bug, not storage")) is None
    assert storage_error_line(KeyError("x")) is None


# -- warnings --------------------------------------------------------------------------------
def test_format_warning_is_one_line():
    assert format_warning(UserWarning("Port 8787 is already in use.\nPerhaps ...\n"), UserWarning) == (
        "faket-dask: warning: Port 8787 is already in use. Perhaps ...")
    assert format_warning(RuntimeWarning("divide by zero"), RuntimeWarning) == (
        "faket-dask: warning: RuntimeWarning: divide by zero")


def test_installed_format_replaces_python_s(tmp_path):
    script = ("import warnings\nfrom faket_dask.messages import install_warning_format\n"
              "install_warning_format()\nwarnings.warn('two\\nlines')\n"
              "import numpy as np\nnp.log(np.zeros(1))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [
        "faket-dask: warning: two lines",
        "faket-dask: warning: RuntimeWarning: divide by zero encountered in log",
    ]


@pytest.fixture()
def busy_dashboard_port():
    """A loopback port held by this test, the dashboard address the CLI is told to use.

    Not 8787 itself: the test processes run side by side, and another test's cluster may take or
    release 8787 at any moment (its TIME_WAIT alone made binding it here fail while the CLI,
    which sets SO_REUSEADDR, still got it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock.getsockname()[1]
    sock.close()


def test_command_warnings_are_one_line_each(tmp_path, busy_dashboard_port):
    # distributed warns (warnings.warn, three lines) that the dashboard's port is taken.
    port = busy_dashboard_port
    proc = cli("specimen", tmp_path / "run.zarr", "--shape", "16", "16", "16", "--particles", "2",
               "--vesicles", "0", "--fiducials", "0",
               extra_env={"FAKET_DASHBOARD_ADDRESS": f"127.0.0.1:{port}"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings_ = [line for line in proc.stderr.splitlines() if line.startswith("faket-dask: warning:")]
    assert any(re.fullmatch(rf"faket-dask: warning: Port {port} is already in use\. .* on port \d+ instead", w)
               for w in warnings_), proc.stderr
    assert not RAW_WARNING.search(proc.stderr) and "warnings.warn(" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_worker_plugin_formats_warnings_in_worker_processes():
    # A real LocalCluster: the warning is raised in a spawned worker process, whose stderr is ours.
    # dashboard on a free port: None means distributed's default 8787, and when another test's
    # cluster holds it, distributed warns "Port 8787 is already in use" (a raw warning) here.
    script = """
import warnings
from distributed import Client, LocalCluster
from faket_dask.messages import WarningFormatPlugin

def warn():
    warnings.warn("raised in a worker")
    return 1

if __name__ == "__main__":
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \\
            Client(cluster) as client:
        client.register_plugin(WarningFormatPlugin())
        assert client.submit(warn, pure=False).result() == 1
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "faket-dask: warning: raised in a worker" in proc.stderr.splitlines(), proc.stderr
    assert not RAW_WARNING.search(proc.stderr), proc.stderr
