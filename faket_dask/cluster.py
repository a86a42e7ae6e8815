"""The Dask client every computing command runs on.

Order of choice: ``--scheduler ADDRESS`` (join an existing cluster), ``--cluster FILE`` (a YAML
description: local, dask-cuda or dask-jobqueue SLURM), ``--gpus`` (dask-cuda
``LocalCUDACluster``, one worker per GPU, each with the resource ``GPU=1``), else a
``LocalCluster`` sized to the machine. Worker processes get as many torch threads as Dask
threads so they do not oversubscribe the CPU.

A cluster started here listens on loopback only: the scheduler and workers on 127.0.0.1
(distributed's default for local clusters) and the dashboard on ``127.0.0.1:8787`` (distributed
alone would put it on every interface). Reach it from another machine through an SSH tunnel
(``ssh -L 8787:localhost:8787 HOST``), or set the environment variable
``FAKET_DASHBOARD_ADDRESS`` (:data:`DASHBOARD_ENV`): ``0.0.0.0:8787`` listens on every
interface, ``:9000`` on loopback port 9000, ``none`` turns the dashboard off
(:func:`dashboard_address`). A joined (``--scheduler``) cluster keeps its own settings.

A SLURM cluster (dask-jobqueue) must be reachable from the compute nodes, so its scheduler
listens on every interface; it uses TLS with temporary credentials made for the run, so only
its own workers and client get in (:func:`_slurm_cluster`). Its dashboard stays on loopback.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .errors import FaketError, InputError

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

#: Environment variable that replaces the default dashboard address (see :func:`dashboard_address`).
DASHBOARD_ENV = "FAKET_DASHBOARD_ADDRESS"
#: The dashboard address :func:`connect` uses unless told otherwise (port 8787, on loopback).
DEFAULT_DASHBOARD = ":8787"

#: Scheduler settings of the clusters :func:`connect` starts (a joined cluster keeps its own).
#: ``worker-saturation: inf`` sends every ready task to a worker at once, where tasks run in
#: priority order, instead of holding root tasks (reads) on the scheduler until a worker has
#: fewer than ~1 task per thread assigned. Why: the pipeline's stages run side by side
#: (pipeline/run.py), and a worker with a queue of NST tasks assigned counts as full, so a
#: short stage's reads waited on the scheduler until the NST queue drained, whatever their
#: priority: in the demo the style min/max of a stack took 14.5 s instead of 0.3 s, and the
#: pipeline 109 s instead of 94 s (docs/benchmarks.md). The graphs here do not need the
#: queueing for memory: reads are fused with their per-tilt work, and large stacks go through
#: per-tilt tasks and scratch arrays (``benchmarks/bench_noise.py`` and
#: ``bench_reconstruct_memory.py`` measure it).
SCHEDULER_CONFIG: dict[str, Any] = {
    "distributed.scheduler.worker-saturation": "inf",
    # Monitoring at distributed's default rates cost an idle 2-worker cluster ~0.2 cores of
    # 2 (measured on the 2-core VM, session 15): each worker's statistical profiler samples
    # every thread's stack every 10 ms, every server ticks every 20 ms, the nannies check
    # memory every 100 ms and the system monitors sample every 500 ms. Off or slower: ~0.03 cores.
    # The dashboard keeps its task stream, progress, memory and CPU pages (sampled every 2 s);
    # only its "Profile" page stays empty (a cluster of your own, joined with --scheduler,
    # keeps its own settings).
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "250ms",
    "distributed.admin.system-monitor.interval": "2s",
}
_LOOPBACK = "127.0.0.1"
#: Where a SLURM cluster writes its workers' temporary TLS credentials unless its file sets
#: ``options.shared_temp_directory``: a directory the compute nodes must also see.
DEFAULT_TLS_DIR = "~/.faket-dask/tls"


def dashboard_address(dashboard: str | None = DEFAULT_DASHBOARD) -> str | None:
    """The address the dashboard of a cluster started here binds to: loopback unless asked.

    Parameters
    ----------
    dashboard : str or None
        ``HOST:PORT``, ``:PORT`` or ``PORT`` (port 0: any free one); ``None``: no dashboard.
        When it is the default (``":8787"``), the environment variable ``FAKET_DASHBOARD_ADDRESS``
        replaces it if set (``none``, ``off`` or empty: no dashboard).

    Returns
    -------
    str or None
        ``HOST:PORT``; a missing host is ``127.0.0.1`` (distributed would bind ``:PORT`` to
        every interface, 0.0.0.0, while the scheduler listens on 127.0.0.1 only). A host given
        explicitly (``0.0.0.0:8787``, ``[::1]:8787``) is kept.
    """
    if dashboard == DEFAULT_DASHBOARD and DASHBOARD_ENV in os.environ:
        dashboard = os.environ[DASHBOARD_ENV].strip()
        if dashboard.lower() in ("", "none", "off"):
            return None
    if dashboard is None:
        return None
    host, sep, port = str(dashboard).rpartition(":")
    if not sep:
        host, port = "", str(dashboard)
    return f"{host or _LOOPBACK}:{port}"


def available_cores() -> int:
    """CPU cores this process may use (respects affinity / cgroup-restricted CPU sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_torch_threads(n: int | None = None) -> None:
    """Match torch's intra-op threads to this Dask worker's threads (or ``n``).

    Called at the start of every torch task: cheap when already set, and correct even if torch
    was imported after the worker started.
    """
    import torch

    if n is None:
        try:
            from distributed import get_worker

            n = get_worker().state.nthreads
        except (ImportError, ValueError):
            n = available_cores()
    n = max(int(n), 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _local_cluster(
    workers: int | None, threads_per_worker: int | None, dashboard: str | None, processes: bool = True
):
    from distributed import LocalCluster

    cores = available_cores()
    if not processes:
        # One in-process worker whose threads share the GIL-free I/O and compression work.
        return LocalCluster(
            n_workers=1,
            threads_per_worker=threads_per_worker or cores,
            processes=False,
            dashboard_address=dashboard,
            # an in-process worker has no host of its own (inproc://), so its HTTP server
            # (health, metrics) would listen on every interface: keep it on loopback
            worker_dashboard_address=f"{_LOOPBACK}:0",
            silence_logs=logging.ERROR,
        )
    threads = threads_per_worker or 1
    n = workers or max(1, cores // threads)
    env = {v: str(threads) for v in _THREAD_VARS}
    return LocalCluster(
        n_workers=n,
        threads_per_worker=threads,
        processes=True,
        dashboard_address=dashboard,
        env=env,
        silence_logs=logging.ERROR,
    )


def _cuda_cluster(dashboard: str | None, **kwargs: Any):
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise FaketError("--gpus needs dask-cuda: pip install 'faket-dask[gpu]'") from None
    import torch

    if not torch.cuda.is_available():
        raise FaketError("--gpus: no CUDA GPU is visible to torch on this machine")
    kwargs.setdefault("resources", {"GPU": 1})
    return LocalCUDACluster(dashboard_address=dashboard, silence_logs=logging.ERROR, **kwargs)


def _slurm_cluster(p: Path, options: dict[str, Any], jobs: int, dashboard: str | None):
    """A dask-jobqueue ``SLURMCluster`` that only holders of its TLS credentials can join.

    ``options.security`` (default ``true``): temporary TLS credentials made for this run
    (``distributed.Security.temporary()``); the workers' copies are written, readable by their
    owner only, to ``options.shared_temp_directory`` (default :data:`DEFAULT_TLS_DIR`), which
    the compute nodes must see. A mapping: ``distributed.Security`` arguments (a site's own
    certificate files). ``false``: plain TCP, anyone who reaches the scheduler's port can run
    code on it. The dashboard listens on :func:`dashboard_address` (loopback of this machine)
    unless ``options.scheduler_options.dashboard_address`` says otherwise.
    """
    import shutil

    try:
        from dask_jobqueue import SLURMCluster
        from distributed.security import Security
    except ImportError:
        raise FaketError(f"{p}: type slurm needs dask-jobqueue: pip install 'faket-dask[hpc]'") from None
    if shutil.which("sbatch") is None:
        raise InputError(f"{p}: type slurm needs SLURM's sbatch, which is not on PATH "
                         "(run this on a login node of the cluster)")
    security = options.pop("security", True)
    if security is True:
        try:
            security = Security.temporary()
        except ImportError:
            raise FaketError(f"{p}: TLS (options.security, on by default) needs cryptography: "
                             "pip install 'faket-dask[hpc]'") from None
        tls_dir = str(options.setdefault("shared_temp_directory", DEFAULT_TLS_DIR))
        try:
            Path(os.path.expandvars(tls_dir)).expanduser().mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{p}: cannot create shared_temp_directory {tls_dir} ({exc.strerror})") from None
    elif isinstance(security, dict):
        try:
            security = Security(**security)
        except TypeError as exc:
            raise InputError(f"{p}: options.security: {exc}") from None
    elif security is False or security is None:
        security = None
    else:
        raise InputError(f"{p}: options.security must be true, false or a mapping of distributed.Security "
                         "arguments (tls_ca_file, tls_client_cert, ...)")
    scheduler_options = dict(options.pop("scheduler_options", None) or {})
    if dashboard is None:
        scheduler_options.setdefault("dashboard", False)
    scheduler_options.setdefault("dashboard_address", dashboard)
    try:
        cluster = SLURMCluster(security=security, scheduler_options=scheduler_options, **options)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{p}: options: {str(exc).strip().splitlines()[0]}") from None
    refusal = _sbatch_test_only(cluster.job_script())
    if refusal:
        with contextlib.suppress(Exception):
            cluster.close()
        raise InputError(f"{p}: SLURM refuses the worker job ({refusal})")
    cluster.scale(jobs=jobs)
    return cluster


def _remove_worker_credentials(cluster: Any) -> None:
    """Delete the files dask-jobqueue wrote the workers' temporary TLS credentials to, now.

    They are ``NamedTemporaryFile`` objects held by the cluster (deleted when closed), which
    would otherwise wait for the cluster object to be garbage-collected.
    """
    for name in ("_job_ca_file", "_job_cert", "_job_key"):
        f = getattr(cluster, name, None)
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()


def _sbatch_test_only(script: str) -> str | None:
    """Why SLURM would refuse this job script (``sbatch --test-only``), or None if it accepts it.

    dask-jobqueue submits jobs in the background, where a refusal (a wrong partition, account
    or memory request) is a traceback in the event loop and a run waiting for workers forever.
    """
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="faket-dask-job-") as f:
        f.write(script)
        f.flush()
        try:
            proc = subprocess.run(["sbatch", "--test-only", f.name], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"sbatch --test-only: {exc}"
    if proc.returncode == 0:
        return None
    why = [ln.strip() for ln in proc.stderr.splitlines() if "error:" in ln]
    return "; ".join(why or proc.stderr.strip().splitlines()[-1:] or [f"sbatch exit code {proc.returncode}"])


def cluster_from_file(path: str | Path, dashboard: str | None = ":8787"):
    """Start the cluster described by a YAML file (see ``cluster/README.md``).

    The file has ``type: local | cuda | slurm``, optional ``options`` (keyword arguments of the
    cluster class) and, for SLURM, ``jobs`` (how many jobs to request). A local or cuda
    cluster's dashboard listens on :func:`dashboard_address` ``(dashboard)``.
    """
    dashboard = dashboard_address(dashboard)
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such cluster file")
    try:
        spec = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    unknown = set(spec) - {"type", "options", "jobs", "workers", "threads_per_worker"}
    if unknown:
        raise InputError(f"{p}: unknown key '{sorted(unknown)[0]}'")
    kind = spec.get("type", "local")
    options = dict(spec.get("options") or {})
    if kind == "local":
        return _local_cluster(spec.get("workers"), spec.get("threads_per_worker"), dashboard)
    if kind == "cuda":
        return _cuda_cluster(dashboard, **options)
    if kind == "slurm":
        return _slurm_cluster(p, options, int(spec.get("jobs", 1)), dashboard)
    raise InputError(f"{p}: unknown cluster type '{kind}' (local, cuda or slurm)")


def _quiet_worker_logs() -> None:
    """Run on each worker before a cluster started here closes: log only critical messages."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def _dashboard_link(client: Any, bound: str | None) -> str:
    """The dashboard URL to print: on the loopback host it is bound to, when it is.

    distributed names the host of the scheduler's address, which for an in-process cluster
    (``inproc://``) is the machine's network address, where a loopback dashboard is not.
    """
    from urllib.parse import urlsplit

    link = client.dashboard_link
    host = (bound or "").rpartition(":")[0]
    if link and host in (_LOOPBACK, "localhost", "[::1]"):
        u = urlsplit(link)
        if u.port is not None:
            link = u._replace(netloc=f"{host}:{u.port}").geturl()
    return link


@contextlib.contextmanager
def connect(
    scheduler: str | None = None,
    *,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    gpus: bool = False,
    cluster_file: str | Path | None = None,
    dashboard: str | None = ":8787",
    quiet: bool = False,
    processes: bool = True,
    connect_timeout_s: float = 10.0,
) -> Iterator[Any]:
    """Start or join a Dask cluster and yield a ``distributed.Client`` set as default.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler, e.g. ``tcp://10.0.0.1:8786``.
    workers, threads_per_worker : int, optional
        Size of the default LocalCluster (default: one single-threaded worker per core).
    gpus : bool
        Start a dask-cuda ``LocalCUDACluster`` (one worker per GPU, resource ``GPU=1``).
    cluster_file : path, optional
        YAML cluster description (``cluster/*.yaml``).
    dashboard : str or None
        Dashboard address of a cluster started here (``":0"`` for any free port); a missing
        host is 127.0.0.1, and the default yields to ``FAKET_DASHBOARD_ADDRESS``
        (:func:`dashboard_address`). ``None``: no dashboard.
    quiet : bool
        Do not print the dashboard URL.
    processes : bool
        For the default local cluster only: worker processes (compute) or, when false, one
        in-process multi-threaded worker (I/O-bound commands such as ``import-mrc``; it saves
        the ~200 MB per worker process that bounded-memory conversion cannot afford).
    connect_timeout_s : float
        How long to try reaching ``scheduler``.
    """
    from distributed import Client

    chosen = [bool(scheduler), bool(cluster_file), bool(gpus)]
    if sum(chosen) > 1:
        raise InputError("choose one of --scheduler, --cluster and --gpus")
    cluster = None
    dashboard = dashboard_address(dashboard)
    try:
        if scheduler:
            try:
                client = Client(scheduler, timeout=f"{connect_timeout_s}s")
            except (OSError, TimeoutError) as exc:
                raise FaketError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from None
        else:
            import dask

            # the scheduler reads it when it starts (SCHEDULER_CONFIG's docstring says why)
            with dask.config.set(SCHEDULER_CONFIG):
                if cluster_file:
                    cluster = cluster_from_file(cluster_file, dashboard)
                elif gpus:
                    cluster = _cuda_cluster(dashboard)
                else:
                    cluster = _local_cluster(workers, threads_per_worker, dashboard, processes)
            client = Client(cluster)
            # warnings raised in our worker processes: one line each, like the CLI's
            from .messages import WarningFormatPlugin

            client.register_plugin(WarningFormatPlugin())
            if processes or cluster_file or gpus:
                # page faults of task threads in distributed's allocator settings (allocator.py)
                from .allocator import AllocatorPlugin

                client.register_plugin(AllocatorPlugin())
        if not quiet:
            print(f"Dask dashboard: {_dashboard_link(client, dashboard if cluster else None)}",
                  file=sys.stderr, flush=True)
        with client.as_current():
            yield client
        if cluster is not None:
            # Closing races the workers' heartbeats; distributed then logs "Failed to
            # communicate with scheduler during heartbeat" with a traceback at ERROR level.
            # The run is over and its errors have reached the client, so quiet the workers.
            with contextlib.suppress(Exception):
                client.run(_quiet_worker_logs)
        client.close()
    finally:
        if cluster is not None:
            cluster.close()
            _remove_worker_credentials(cluster)
