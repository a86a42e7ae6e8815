"""Computing dask graphs with a console progress bar.

The bar goes to stderr (stdout stays for results) and appears only for work that lasts more
than :data:`DELAY_S` seconds, so quick commands stay quiet. ``FAKET_PROGRESS=0`` turns it off.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

import dask

DELAY_S = 1.5


def _enabled() -> bool:
    return os.environ.get("FAKET_PROGRESS", "1") not in ("0", "false", "no")


def current_client() -> Any | None:
    """The active ``distributed.Client``, or None when running on a local dask scheduler."""
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

        bar = ProgressBar(minimum=DELAY_S, out=sys.stderr) if _enabled() else contextlib.nullcontext()
        with bar:
            return dask.compute(obj)[0]
    from distributed import wait
    from distributed.diagnostics.progressbar import progress

    futures = client.compute(obj)
    try:
        wait(futures, timeout=DELAY_S)
    except TimeoutError:
        if _enabled():
            print(f"{label} ...", file=sys.stderr, flush=True)
            # distributed's text bar writes to sys.stdout; keep stdout for results
            with contextlib.redirect_stdout(sys.stderr):
                progress(futures, notebook=False)  # no ipywidgets: a text bar in Jupyter too
            print(file=sys.stderr, flush=True)
    return client.gather(futures)
