"""Computing dask graphs with a console progress bar.

The bar goes to stderr (stdout stays for results) and appears only for work that lasts more
than :data:`DELAY_S` seconds, so quick commands stay quiet. ``FAKET_PROGRESS=0`` turns it off.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from collections.abc import Iterator
from typing import Any

import dask

DELAY_S = 1.5

# False inside stages that run side by side (pipeline/run.py): their bars would overwrite each
# other on one terminal line, so they print only their labels. Per thread (a ContextVar).
_BARS: contextvars.ContextVar[bool] = contextvars.ContextVar("faket_dask_progress_bars", default=True)


@contextlib.contextmanager
def labels_only() -> Iterator[None]:
    """In this block (this thread), long computations print their label line but no bar."""
    token = _BARS.set(False)
    try:
        yield
    finally:
        _BARS.reset(token)


# Scheduling priority of the computations of this thread (distributed's ``priority=``: higher
# first); the pipeline gives each stage its own (pipeline/run.py, :func:`stage_priority`).
_PRIORITY: contextvars.ContextVar[int] = contextvars.ContextVar("faket_dask_priority", default=0)


@contextlib.contextmanager
def priority(value: int) -> Iterator[None]:
    """In this block (this thread), computations on a cluster run with Dask priority ``value``
    (higher first; tasks of equal priority in submission order)."""
    token = _PRIORITY.set(int(value))
    try:
        yield
    finally:
        _PRIORITY.reset(token)


def _enabled() -> bool:
    return os.environ.get("FAKET_PROGRESS", "1") not in ("0", "false", "no")


#: ``dask.config`` ``scheduler`` values that name a local scheduler (dask's own spellings).
_LOCAL_SCHEDULERS = frozenset({"sync", "synchronous", "single-threaded", "threads", "threading",
                               "processes", "multiprocessing"})


def current_client() -> Any | None:
    """The active ``distributed.Client``, or None when running on a local dask scheduler.

    A local scheduler chosen explicitly (``dask.config.set(scheduler="sync")``) wins over a
    client that exists but was not asked for, as it does for ``dask.compute``.
    """
    if dask.config.get("scheduler", None) in _LOCAL_SCHEDULERS:
        return None
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def compute(obj: Any, *, label: str = "computing") -> Any:
    """Compute a dask collection (or delayed) on the active cluster with a progress bar.

    Parameters
    ----------
    obj : dask collection, Delayed, or a list of them
        What to compute.
    label : str
        Printed above the bar.

    Returns
    -------
    The computed result.
    """
    client = current_client()
    if client is None:
        from dask.diagnostics import ProgressBar

        bar = (ProgressBar(minimum=DELAY_S, out=sys.stderr) if _enabled() and _BARS.get()
               else contextlib.nullcontext())
        with bar:
            return dask.compute(obj)[0]
    from distributed import wait
    from distributed.diagnostics.progressbar import progress

    futures = client.compute(obj, priority=_PRIORITY.get())
    try:
        wait(futures, timeout=DELAY_S)
    except TimeoutError:
        if _enabled():
            print(f"{label} ...", file=sys.stderr, flush=True)
        if _enabled() and _BARS.get():
            # distributed's text bar writes to sys.stdout; keep stdout for results
            with contextlib.redirect_stdout(sys.stderr):
                progress(futures, notebook=False)  # no ipywidgets: a text bar in Jupyter too
            print(file=sys.stderr, flush=True)
    return client.gather(futures)
