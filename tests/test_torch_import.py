"""Torch is imported in every process of a run before any task needs it
(``faket_dask/torch_import.py``: a process importing torch while another of its threads runs
SciPy's array-API type checks fails with "partially initialized module 'torch'")."""
from __future__ import annotations

import sys

from distributed import Client, LocalCluster

from faket_dask.torch_import import TORCH_MODULES, TorchImportPlugin, import_torch_everywhere


def _imported() -> dict[str, bool]:
    # fully imported: the module is there and has finished executing (torch.Tensor exists)
    torch = sys.modules.get("torch")
    return {"torch": torch is not None and hasattr(torch, "Tensor"),
            **{m: m in sys.modules for m in TORCH_MODULES[1:]}}


def test_workers_import_torch_before_any_task_and_so_do_later_workers():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        before = client.run(_imported)
        assert all(not any(v.values()) for v in before.values()), before  # a fresh worker has no torch
        import_torch_everywhere(client)
        assert all(all(v.values()) for v in client.run(_imported).values())
        assert all(_imported().values())  # the client too
        cluster.scale(2)
        client.wait_for_workers(2)
        after = client.run(_imported)  # the new worker ran the plugin when it registered
        assert len(after) == 2 and all(all(v.values()) for v in after.values()), after
        plugins = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))
        assert TorchImportPlugin.name in plugins
        import_torch_everywhere(client)  # again: harmless
