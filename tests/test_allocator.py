"""Worker processes of clusters started by ``fd.connect`` reuse freed memory instead of
page-faulting every temporary afresh (``faket_dask/allocator.py``)."""
from __future__ import annotations

import platform

import pytest

import faket_dask as fd
from faket_dask.allocator import tune_glibc_malloc

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")


def _faults_of_reused_temporaries(n: int = 60, nbytes: int = 2 * 2**20) -> int:
    """Minor page faults of this thread while allocating, touching and freeing ``n`` temporaries.

    2 MiB: numpy asks for transparent huge pages from 4 MiB on, which (when the kernel has
    some) turns 1024 faults into 2 and would hide the difference.
    """
    import resource

    import numpy as np

    np.ones(nbytes // 8)  # the first one may fault: the heap grows once
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(n):
        np.ones(nbytes // 8).sum()
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before


def test_tune_reports_success_on_glibc():
    assert tune_glibc_malloc() is True


def test_task_threads_of_connected_workers_reuse_freed_memory():
    with fd.connect(workers=1, dashboard=None, quiet=True) as client:
        faults = client.submit(_faults_of_reused_temporaries, pure=False).result()
    assert faults < 2048, faults


def test_without_the_settings_a_task_thread_faults_every_temporary():
    # the same measurement on a bare LocalCluster worker (distributed's MALLOC_TRIM_THRESHOLD_
    # =65536, which also pins glibc's mmap threshold at 128 kB): 60 temporaries of 2 MiB are
    # ~30,720 fresh pages. The test above can fail.
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=":0", processes=True) as cluster, \
            Client(cluster) as client:
        faults = client.submit(_faults_of_reused_temporaries, pure=False).result()
    assert faults > 15_000, faults
