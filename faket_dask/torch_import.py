"""Import torch in every process of a run before tasks that need it run beside other tasks.

Why (issue 15, ``../cases`` c17, measured 2026-12-01 on the 2-core VM): importing torch takes
~2 s, and for all that time ``sys.modules["torch"]`` holds a *partially initialised* module.
SciPy's array-API helpers (``scipy._lib.array_api_compat.common._helpers._issubclass_fast``)
look torch up there on every type check they have not cached (``scipy.stats`` does at import,
``scipy.signal`` functions at run time) and then fail with ``AttributeError: partially
initialized module 'torch' has no attribute 'Tensor'``. So a worker thread importing SciPy while
another thread of the same process imports torch fails: in the pipeline, where stages run side by
side, the noise model's first task on a worker met the style Grams' first task there, and a
rerun of the c17 case failed 20 times in 20 on a fresh virtual environment. Python's import lock
does not help (it guards the module being imported, not other modules' look-ups).

The rule this module enforces: torch is imported in every worker process, and in the client,
*before* the first graph that needs it is submitted beside anything else. The workers do it in
a :class:`TorchImportPlugin` (a worker plugin's ``setup`` runs in the worker's event loop, before
it takes tasks; workers that join later run it when they register), the client in the calling
thread at the same time.
"""
from __future__ import annotations

import importlib
import threading
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from .kernels.nst import TORCH_SUBMODULES

__all__ = ["TORCH_MODULES", "TorchImportPlugin", "import_torch_everywhere"]

#: What is imported: torch and the NST kernels' torch modules (the package itself loads them
#: on first use); torchvision is not, nothing of ours imports it and SciPy never looks it up.
TORCH_MODULES = ("torch", *TORCH_SUBMODULES)


def _import_all() -> None:
    for name in TORCH_MODULES:
        importlib.import_module(name)


class TorchImportPlugin(WorkerPlugin):
    """Dask worker plugin: import :data:`TORCH_MODULES` in the worker's process at setup.

    Register it with :func:`import_torch_everywhere` (or ``client.register_plugin``): the call
    returns when every worker has imported torch. Registering it again is harmless (the
    imports are then dictionary look-ups).
    """

    name = "faket-dask-import-torch"

    def setup(self, worker: Any) -> None:
        """Import torch synchronously, in the worker's event loop thread (no task runs)."""
        _import_all()


def import_torch_everywhere(client: Any | None, *, here: bool = True) -> None:
    """Import torch in every worker of ``client`` and (``here``) in this process, all at once.

    Call it before submitting the first graph whose tasks import torch while other graphs may
    run (the pipeline does at the start of a run with style stages; the module docstring says
    why). It costs the import time once per process (~2 s on the 2-core VM, the workers' and
    the client's overlapping), nothing afterwards.

    Parameters
    ----------
    client : distributed.Client or None
        The run's client; None imports in this process only.
    here : bool
        Also import torch in this process. The pipeline passes False when its graphs are built
        without torch (:func:`faket_dask.stages.style_settings.client_needs_torch`): one import
        fewer at the start of a run, where three processes importing torch on 2 cores held
        every stage back by ~6 s (issue 15, 2026-12-02).

    Raises
    ------
    ImportError
        torch cannot be imported (it is a required dependency: a broken installation).
    """
    if client is None:
        if here:
            _import_all()
        return
    failed: list[BaseException] = []

    def register() -> None:
        try:
            client.register_plugin(TorchImportPlugin())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            failed.append(exc)

    t = threading.Thread(target=register, name="faket-import-torch-workers", daemon=True)
    t.start()
    if here:
        _import_all()  # the client's own import, while the workers do theirs
    t.join()
    if failed:
        raise failed[0]
