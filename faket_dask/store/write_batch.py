"""Several writes of the run store computed in one graph (:func:`one_graph`).

Why: a stage that writes several variables (the noise step's three modalities, the
reconstruction's volumes and labels) computed them one by one, each a round trip through the
scheduler. With stages side by side, each round trip waited for a worker to finish a long task
of another stage (an NST batch, ~1.7 s in the demo): the demo's first reconstruction took 26 s
for ~3 s of work. In one graph the stage waits once, and the writes run in parallel.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["compute_or_defer", "one_graph"]


@dataclass
class _Pending:
    store: str | Path
    path: str
    work: Any
    mark: Callable[..., None]  # run_store.mark_stage
    undo: Callable[..., None]  # run_store.undo_member
    info: dict[str, Any] = field(default_factory=dict)


# The pending writes of this thread's open :func:`one_graph` block (None outside one); per
# thread, as stages run in threads side by side (pipeline/run.py).
_BATCH: contextvars.ContextVar[list[_Pending] | None] = contextvars.ContextVar(
    "faket_dask_write_batch", default=None)


def compute_or_defer(store: str | Path, path: str, work: Any, *, label: str,
                     info: dict[str, Any] | None, mark: Callable[..., None],
                     undo: Callable[..., None]) -> None:
    """Compute ``work`` (the lazy write of member ``path``) and ``mark`` the member
    ``complete``; inside a :func:`one_graph` block, leave both to the end of the block (which
    calls ``undo`` on the member if the block fails). ``mark`` and ``undo`` are the store's
    (:func:`~faket_dask.store.mark_stage`, ``undo_member``), passed in so that this module
    does not import the store module that imports it.

    Raises
    ------
    Exception
        Whatever computing ``work`` raises (outside a block; the caller rolls back).
    """
    from ..progress import compute

    batch = _BATCH.get()
    if batch is not None:
        batch.append(_Pending(store, path, work, mark, undo, dict(info or {})))
        return
    compute(work, label=label)
    mark(store, path, status="complete", **(info or {}))


@contextlib.contextmanager
def one_graph(label: str) -> Iterator[None]:
    """In this block (this thread), :func:`~faket_dask.store.save` and
    :func:`~faket_dask.store.save_image` prepare their writes; all are computed in one graph
    when the block ends, then marked ``complete``.

    If the block or the computation fails, every member prepared in the block is removed and
    marked ``failed`` (as a single failed ``save`` is), and the error is raised.

    Parameters
    ----------
    label : str
        Progress label of the one computation.
    """
    from ..progress import compute

    pending: list[_Pending] = []
    token = _BATCH.set(pending)
    try:
        try:
            yield
        finally:
            _BATCH.reset(token)
        if pending:
            compute([p.work for p in pending], label=label)
    except BaseException:
        for p in pending:
            p.undo(p.store, p.path, **p.info)
        raise
    for p in pending:
        p.mark(p.store, p.path, status="complete", **p.info)
