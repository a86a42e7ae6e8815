"""How much memory one NST task has: asked of the workers that will run it (Dask wiring).

``tile="auto"`` (the config's default) tiles a tilt only when its untiled NST does not fit in
the memory of one task. That memory is measured where the task runs: each worker reports
:func:`faket_dask.kernels.nst.budget.device_task_bytes` (CPU: its ``memory_limit`` divided by
its threads; CUDA: a share of ``torch.cuda.mem_get_info``), and the smallest report is used
for every task of the stage. One tile for all tasks keeps the graph's arithmetic the same
whichever worker runs a task, and lets the stage record the tile in the output's attrs before
anything runs.

Without a distributed client (Dask's local schedulers) the same measurement is made in this
process, with the local scheduler's thread count.
"""
from __future__ import annotations

import os

__all__ = ["task_bytes"]


def _worker_task_bytes(device: str, dask_worker=None) -> int | None:  # noqa: ANN001 - distributed's
    """On a worker: the memory one of its tasks may use on ``device`` (None: no such device)."""
    from ..kernels.nst.budget import device_task_bytes

    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        return device_task_bytes(device)
    limit = getattr(getattr(dask_worker, "memory_manager", None), "memory_limit", None)
    threads = getattr(getattr(dask_worker, "state", None), "nthreads", None) or 1
    return device_task_bytes(device, memory_limit_bytes=limit, threads=threads)


def _ask_workers(client, device: str, tries: int = 3) -> list[int]:  # noqa: ANN001 - a distributed.Client
    """The workers' reports (None/0 dropped). A worker lost during the broadcast (killed,
    restarted by its nanny) is asked again, up to ``tries`` times in all, then left out: the
    question is asked while other stages run, and a lost worker must not fail the stage that
    asked (tests/test_pipeline.py kills one during NST)."""
    import time

    for attempt in range(1, tries + 1):
        answers = list(client.run(_worker_task_bytes, device, on_error="return").values())
        lost = any(isinstance(a, BaseException) for a in answers)
        if lost and attempt < tries:
            time.sleep(0.5 * attempt)  # the nanny restarts a killed worker in ~1 s
            continue
        break
    return [int(a) for a in answers if a and not isinstance(a, BaseException)]


def task_bytes(device: str) -> int:
    """Memory (bytes) one NST task may use on ``device``: the smallest of the workers' reports.

    Parameters
    ----------
    device : str
        ``"cpu"`` or a CUDA device.

    Returns
    -------
    int
        With a distributed client: the minimum over its workers of :func:`_worker_task_bytes`
        (CUDA: over the workers that have a GPU). Otherwise (local scheduler) the same measure
        here, shared by ``os.cpu_count()`` threads on CPU.
    """
    from ..progress import current_client

    client = current_client()
    if client is not None:
        reports = _ask_workers(client, device)
        if reports:
            return int(min(reports))
    from ..kernels.nst.budget import device_task_bytes

    if device.startswith("cuda"):
        return device_task_bytes(device)
    return device_task_bytes(device, threads=os.cpu_count() or 1)
