"""SLURM for real: ``faket-dask simulate --cluster`` with its workers submitted through ``sbatch``.

A one-node SLURM (``scripts/slurm_one_node.sh``: munged, slurmctld, slurmd) is started in a
directory of this test session, on free ports and with its own munged socket; the clients find it
through ``SLURM_CONF``. The daemons stopped at the end are the ones started here (the script's pid
files in that directory), also when a test fails. Needs root and Debian's ``slurm-wlm`` and
``munge`` (``make slurm`` installs them); without them the tests skip, saying so loudly.

The cluster file is the shipped ``cluster/slurm.yaml`` with the overrides a user of a CPU
partition makes (partition, cores, memory, walltime, no GPU), and TLS as shipped: on, with
temporary credentials.
"""
from __future__ import annotations

import contextlib
import gc
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml
from pipeline_helpers import EXE, assert_same_arrays, env, read_arrays, write_config

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm_one_node.sh"
SHIPPED = REPO / "cluster" / "slurm.yaml"
PARTITION = "debug"  # the script's one partition
NEEDED = ("sbatch", "squeue", "scontrol", "munge", "/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _skip_loudly(why: str) -> None:
    pytest.skip(f"!!! SLURM NOT TESTED: {why}; the dask-jobqueue path (cluster/slurm.yaml, TLS) "
                "went unchecked !!!")


@pytest.fixture(scope="module")
def slurm():
    """``{"env": ..., "dir": ...}`` of a running one-node SLURM, stopped after the module."""
    if os.geteuid() != 0:
        _skip_loudly("not root (slurmd and munged need it)")
    missing = [b for b in NEEDED if shutil.which(b) is None]
    if missing:
        _skip_loudly(f"{', '.join(missing)} missing (make slurm installs slurm-wlm and munge, as root with apt-get)")
    pytest.importorskip("dask_jobqueue")
    # not under pytest's private (0700) temp directory: munged wants its socket reachable by all
    d = Path(tempfile.mkdtemp(prefix="faket-slurm-"))
    script_env = dict(os.environ, FAKET_SLURM_DIR=str(d), FAKET_SLURM_CTLD_PORT=str(_free_port()),
                      FAKET_SLURM_SLURMD_PORT=str(_free_port()))
    try:
        t0 = time.monotonic()
        start = subprocess.run(["bash", SCRIPT, "start"], env=script_env, capture_output=True, text=True, timeout=60)
        assert start.returncode == 0, start.stdout + start.stderr
        print(f"one-node SLURM up in {time.monotonic() - t0:.1f} s")
        yield {"env": {"SLURM_CONF": str(d / "slurm.conf")}, "dir": d}
    finally:
        stop = subprocess.run(["bash", SCRIPT, "stop"], env=script_env, capture_output=True, text=True, timeout=60)
        status = subprocess.run(["bash", SCRIPT, "status"], env=script_env, capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0 and "running (pid" not in status.stdout, stop.stdout + stop.stderr + status.stdout
        shutil.rmtree(d, ignore_errors=True)


def _cluster_file(tmp_path: Path, **options) -> Path:
    """The shipped slurm.yaml, with what a user of this CPU partition would change."""
    spec = yaml.safe_load(SHIPPED.read_text())
    spec["jobs"] = 2
    spec["options"].update({"queue": PARTITION, "cores": 1, "memory": "3GB", "walltime": "00:15:00",
                            "job_extra_directives": [], "worker_extra_args": [],
                            "log_directory": str(tmp_path / "dask-logs"), **options})
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _squeue(slurm) -> list[tuple[str, str, str]]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], env=env(**slurm["env"]),
                         capture_output=True, text=True, timeout=30).stdout
    return [tuple(line.split()) for line in out.splitlines() if line.strip()]


def _jobs_left(slurm, ids=None, timeout: float = 15) -> list:
    """Jobs still in squeue (of ``ids``, else any) once they had ``timeout`` s to go."""
    t0 = time.monotonic()
    while True:
        left = [j for j in _squeue(slurm) if ids is None or j[0] in ids]
        if not left or time.monotonic() - t0 > timeout:
            return left
        time.sleep(0.2)


def _probe_scheduler(address: str, ca: str, cert: str, key: str) -> dict[str, str]:
    """Connect as an outsider three ways (each must be refused), then with the workers' credentials."""
    from distributed import Client
    from distributed.security import Security

    refused = {}
    foreign = Security.temporary()
    attempts = {
        "no credentials": (address, {}),
        "plain tcp": (address.replace("tls://", "tcp://"), {}),
        # trusts the scheduler's CA, but shows a certificate of its own: the scheduler decides
        "foreign certificate": (address, {"security": Security(
            tls_ca_file=ca, tls_client_cert=foreign.tls_client_cert, tls_client_key=foreign.tls_client_key,
            require_encryption=True)}),
    }
    for name, (addr, kw) in attempts.items():
        with _no_gc_inside():
            with pytest.raises(Exception) as exc:  # refused as TypeError, OSError, ...
                Client(addr, timeout=5, **kw).close()
        first_line = (str(exc.value).splitlines() or [""])[0]  # some refusals carry no message
        refused[name] = f"{exc.type.__name__}: {first_line[:160]}"
        del exc  # its traceback holds the refused Client
    insider = Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True)
    with _no_gc_inside():
        c = Client(address, timeout=10, security=insider)  # the address and credentials are right
    with c:
        c.wait_for_workers(2, timeout=60)  # the jobs' workers register over TLS
        refused["insider sees workers"] = str(len(c.scheduler_info()["workers"]))
    return refused


@contextlib.contextmanager
def _no_gc_inside():
    """Finalise earlier refused Clients here, and let no garbage collection run inside the
    next ``Client(...)``: distributed's ``LoopRunner.start`` holds a class-wide, non-reentrant
    lock, and a collection there that finalises a refused Client (``__del__`` -> ``close`` ->
    ``LoopRunner.stop``, the same lock) deadlocks the test (seen once in a full run)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.slow
def test_simulate_on_slurm_is_identical_to_local_and_tls_only(slurm, reference_run, tmp_path):
    cluster_yaml = _cluster_file(tmp_path)
    cfg = write_config(tmp_path / "run.yaml")
    log_out, log_err = (tmp_path / "stdout.txt").open("w"), (tmp_path / "stderr.txt").open("w")
    t0 = time.monotonic()
    proc = subprocess.Popen([EXE, "simulate", str(cfg), "--cluster", str(cluster_yaml)], cwd=tmp_path,
                            env=env(**slurm["env"]), stdout=log_out, stderr=log_err)
    try:
        # the workers are SLURM jobs: both running, seen by squeue while the run goes on
        jobs: list = []
        while time.monotonic() - t0 < 90:
            assert proc.poll() is None, f"the run ended first: {(tmp_path / 'stderr.txt').read_text()[-3000:]}"
            jobs = [j for j in _squeue(slurm) if j[1] == "dask-worker" and j[2] == "RUNNING"]
            if len(jobs) == 2:
                break
            time.sleep(0.2)
        assert len(jobs) == 2, f"no 2 running dask-worker jobs in squeue: {_squeue(slurm)}"
        # what sbatch was given: the worker command, with the scheduler's address and credentials
        script = subprocess.run(["scontrol", "write", "batch_script", jobs[0][0], "-"], env=env(**slurm["env"]),
                                capture_output=True, text=True, timeout=30).stdout
        address = re.search(r"dask_worker (\S+)", script).group(1)
        assert address.startswith("tls://"), script
        creds = {k: os.path.expanduser(re.search(rf"--tls-{k} (\S+)", script).group(1))
                 for k in ("ca-file", "cert", "key")}
        assert all(Path(f).is_file() for f in creds.values()), creds
        assert all(Path(f).stat().st_mode & 0o077 == 0 for f in creds.values())  # owner only
        probes = _probe_scheduler(address, creds["ca-file"], creds["cert"], creds["key"])
        print(f"scheduler {address}; {probes}")
        assert probes["insider sees workers"] == "2"
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log_out.close()
        log_err.close()
    elapsed = time.monotonic() - t0
    stderr = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert re.search(r"Dask dashboard: http://127\.0\.0\.1:\d+/", stderr), stderr[-1000:]  # loopback
    # bit-identical to the LocalCluster run of the same config
    assert_same_arrays(read_arrays(tmp_path / "out" / "run.zarr"), reference_run["arrays"])
    # the jobs ended (scancel at the end of the run) and are in the job-completion log
    assert not _jobs_left(slurm, {j[0] for j in jobs})
    done = (slurm["dir"] / "log" / "jobcomp.log").read_text()
    for job_id, _, _ in jobs:
        line = re.search(rf"^JobId={job_id} .*$", done, re.MULTILINE)
        assert line and "Name=dask-worker" in line.group(0) and f"WorkDir={tmp_path}" in line.group(0), done
    # the temporary credentials went with the run
    assert not any(Path(f).exists() for f in creds.values())
    print(f"simulate on SLURM: {elapsed:.1f} s, jobs {[j[0] for j in jobs]}")


def test_slurm_cluster_file_rules(slurm, tmp_path, monkeypatch):
    """TLS by default, `security: false` opts out, a job SLURM refuses is a one-line error."""
    from faket_dask.cluster import connect
    from faket_dask.errors import InputError

    monkeypatch.setenv("SLURM_CONF", slurm["env"]["SLURM_CONF"])
    monkeypatch.chdir(tmp_path)
    tls = tmp_path / "shared" / "tls"
    with connect(cluster_file=_cluster_file(tmp_path, shared_temp_directory=str(tls)), dashboard=":0",
                 quiet=True) as c:
        assert c.scheduler.address.startswith("tls://")
        assert tls.stat().st_mode & 0o777 == 0o700 and len(list(tls.iterdir())) == 3  # CA, cert, key
        port = c.cluster.scheduler.http_server.port
        bound = {conn.laddr.ip for conn in psutil.Process().net_connections("tcp")
                 if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port}
        assert bound == {"127.0.0.1"}  # the dashboard: on loopback, like a local cluster's
    assert not list(tls.iterdir())  # the credentials went with the cluster
    spec = yaml.safe_load(_cluster_file(tmp_path).read_text())
    spec["jobs"] = 0
    spec["options"]["security"] = False
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(spec))
    with connect(cluster_file=tmp_path / "plain.yaml", dashboard=":0", quiet=True) as c:
        assert c.scheduler.address.startswith("tcp://")
    bad = _cluster_file(tmp_path, queue="no-such-partition")
    with pytest.raises(InputError, match=r"slurm.yaml: SLURM refuses the worker job \(.*invalid partition"):
        with connect(cluster_file=bad, dashboard=":0", quiet=True):
            pass
    assert not _jobs_left(slurm)


def test_slurm_without_sbatch_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("dask_jobqueue")
    from faket_dask.cluster import cluster_from_file
    from faket_dask.errors import InputError

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch there
    with pytest.raises(InputError) as exc:
        cluster_from_file(SHIPPED)
    assert str(exc.value) == (f"{SHIPPED}: type slurm needs SLURM's sbatch, which is not on PATH "
                              "(run this on a login node of the cluster)")
