"""Cluster set-up and chunk rules."""
from __future__ import annotations

import pytest

from faket_dask import chunking
from faket_dask.cluster import cluster_from_file, connect
from faket_dask.errors import FaketError, InputError


def test_workers_get_matching_torch_threads(client):
    def probe():
        from faket_dask.cluster import set_torch_threads

        set_torch_threads()
        import os

        import torch

        return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")

    workers = list(client.scheduler_info()["workers"])
    assert len(workers) == 2
    for w in workers:
        threads, omp = client.submit(probe, workers=[w], pure=False).result()
        assert threads == 1 and omp == "1"


def test_clusters_started_here_monitor_at_low_rates(client):
    """No statistical profiler in the workers, ticks every second and the system monitors every
    2 s (cluster.SCHEDULER_CONFIG: at distributed's defaults an idle 2-worker cluster used
    ~0.2 of the 2 cores)."""
    def rates(dask_worker):
        return {k: v.callback_time for k, v in dask_worker.periodic_callbacks.items()}

    for cb in client.run(rates).values():
        assert "profile" not in cb and "profile-cycle" not in cb
        assert cb["tick"] == 1000 and cb["monitor"] == 2000 and cb["memory_monitor"] == 250
    sched = client.run_on_scheduler(rates)
    assert sched["tick"] == 1000 and sched["monitor"] == 2000


def test_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(FaketError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        with connect("tcp://127.0.0.1:9", quiet=True, connect_timeout_s=1):
            pass


def test_gpus_without_dask_cuda_or_gpu_is_a_clear_error():
    try:
        import dask_cuda  # noqa: F401
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU and dask-cuda are present")
        expected = "no CUDA GPU"
    except ImportError:
        expected = "needs dask-cuda"
    with pytest.raises(FaketError, match=expected):
        with connect(gpus=True, quiet=True):
            pass


def test_conflicting_cluster_options():
    with pytest.raises(InputError, match="choose one of"):
        with connect("tcp://127.0.0.1:9", gpus=True, quiet=True):
            pass


def test_cluster_file_validation(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("type: local\nworkerz: 2\n")
    with pytest.raises(InputError, match="unknown key 'workerz'"):
        cluster_from_file(f)
    f.write_text("type: mainframe\n")
    with pytest.raises(InputError, match="unknown cluster type 'mainframe'"):
        cluster_from_file(f)


def test_local_cluster_file_runs(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("type: local\nworkers: 1\nthreads_per_worker: 1\n")
    with connect(cluster_file=f, dashboard=":0", quiet=True) as c:
        assert len(c.scheduler_info()["workers"]) == 1
        assert c.submit(sum, [1, 2]).result() == 3


@pytest.mark.parametrize(
    ("ny", "nx", "depth"), [(64, 64, 61), (4096, 4096, 61), (2048, 512, 61), (7, 13, 5), (1000, 3000, 2000)]
)
def test_choose_cy_respects_budgets(ny, nx, depth):
    cy = chunking.choose_cy(ny, nx, depth)
    assert 1 <= cy <= ny
    assert cy == ny or cy * nx * 4 <= chunking.DEFAULT_CHUNK_BYTES
    if cy < ny and cy > 8:
        assert cy % 8 == 0
        assert cy * nx * depth * 4 * chunking.SLAB_OVERHEAD <= chunking.DEFAULT_TASK_BYTES


def test_default_budgets_are_the_params_in_mib():
    from faket_dask.params import CHUNK_MiB, MIB, TASK_MEMORY_MiB

    assert chunking.DEFAULT_CHUNK_BYTES == CHUNK_MiB * MIB == 8 * 2**20
    assert chunking.DEFAULT_TASK_BYTES == TASK_MEMORY_MiB * MIB == 512 * 2**20


def test_chunk_shapes_align():
    assert chunking.tiltseries_chunks((61, 100, 50), 16) == (1, 16, 50)
    cz, cy, cx = chunking.volume_chunks((200, 100, 50), 16)
    assert (cy, cx) == (16, 50) and 1 <= cz <= 200


def test_an_explicit_local_scheduler_wins_over_the_current_client(client):
    import dask

    from faket_dask.progress import compute, current_client

    assert current_client() is client
    with dask.config.set(scheduler="sync"):
        assert current_client() is None
        # computed here, in this thread: a task that reports where it ran
        import threading

        where = compute(dask.delayed(lambda: threading.get_ident())(), label="probe")
        assert where == threading.get_ident()
