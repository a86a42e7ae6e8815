"""Where the NST kernel runs: precision and torch threads, set once per task.

A Dask task of the style-transfer stage enters :func:`nst_runtime` once around its kernel
calls::

    with nst_runtime(precision, device, threads=1):
        out = stylise(vgg, content, init, grams, precision=precision, streams=1, ...)

It sets what is process- or thread-wide: the CUDA TF32 switches (process-wide), bfloat16
autocast (per thread) and, with ``threads=1``, torch's intra-op thread count (per OS thread,
reference counted, see :func:`single_threaded_torch`). The kernels (:func:`kernel_runtime`)
find the runtime active and change nothing; called outside one (in-memory use, tests) a kernel
enters a runtime for the duration of its call with the caller's thread count untouched.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from .sizing import check_precision  # re-exported: torch-free owner

__all__ = ["kernel_runtime", "nst_runtime", "precision_scope", "single_threaded_active",
           "single_threaded_torch"]

_THREADS_LOCK = threading.Lock()
_THREADS_STATE = {"users": 0, "saved": 1}
# the runtime entered by this thread: (precision, device type), or None
_LOCAL = threading.local()


@contextlib.contextmanager
def single_threaded_torch() -> Iterator[None]:
    """torch intra-op threads = 1 while any caller is inside (reference counted, so that
    concurrent calls restore the caller's setting only when the last one leaves).

    torch's OpenMP/MKL thread counts are per OS thread (a thread takes the process-wide value
    only at its first parallel op), so every entering thread sets its own: a reused thread,
    such as a Dask worker's, would otherwise keep its old count. A thread that leaves while
    others are still inside keeps one thread until something sets it again.
    """
    with _THREADS_LOCK:
        if _THREADS_STATE["users"] == 0:
            _THREADS_STATE["saved"] = torch.get_num_threads()
        if _THREADS_STATE["users"] == 0 or torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        _THREADS_STATE["users"] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _THREADS_STATE["users"] -= 1
            if _THREADS_STATE["users"] == 0:
                torch.set_num_threads(_THREADS_STATE["saved"])


def single_threaded_active() -> bool:
    """Whether some caller is inside :func:`single_threaded_torch` (then ``stylise`` runs one
    stream by default: the caller owns the parallelism)."""
    return _THREADS_STATE["users"] > 0


def precision_scope(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The thread-local part of a precision: bfloat16 autocast for ``"bf16"``, else nothing.

    Autocast is per thread, so every thread that computes enters this (``stylise``'s stream
    threads do; a task thread gets it from :func:`nst_runtime`).
    """
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off (losses and Grams stay float32 under ``bf16``)."""
    return torch.autocast(device.type, enabled=False)


@contextlib.contextmanager
def nst_runtime(precision: str = "fp32", device: torch.device | str | None = None, *,
                threads: int | None = 1) -> Iterator[None]:
    """Run NST kernels with ``precision`` on ``device``: enter once per task.

    Parameters
    ----------
    precision : {"fp32", "tf32", "bf16"}
        ``fp32``: IEEE float32 everywhere (TF32 off on CUDA); ``tf32``: TF32 allowed on CUDA
        (no-op on CPU); ``bf16``: convolutions and matmuls autocast to bfloat16 in this thread.
    device : torch device, optional
        Default CPU. Only its type matters (the CUDA switches are process-wide).
    threads : {1, None}
        ``1``: torch runs one intra-op thread in this thread while inside
        (:func:`single_threaded_torch`; the stage's setting, which makes results independent of
        the worker's threads). ``None``: the caller's thread count is left as it is.

    Raises
    ------
    ValueError
        Unknown precision, or ``threads`` other than 1 or None.
    """
    check_precision(precision)
    if threads not in (1, None):
        raise ValueError(f"threads must be 1 or None, got {threads!r}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    prev = getattr(_LOCAL, "active", None)
    with contextlib.ExitStack() as stack:
        if threads == 1:
            stack.enter_context(single_threaded_torch())
        if dev.type == "cuda":
            old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            allow = precision == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = allow
            torch.backends.cudnn.allow_tf32 = allow

            def restore() -> None:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old

            stack.callback(restore)
        stack.enter_context(precision_scope(precision, dev))
        _LOCAL.active = (precision, dev.type)
        try:
            yield
        finally:
            _LOCAL.active = prev


def kernel_runtime(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """What a kernel entry point enters: nothing inside a matching :func:`nst_runtime` of this
    thread, else a runtime for the call (threads untouched).

    Raises
    ------
    ValueError
        Unknown precision, or a runtime of another precision or device type is active.
    """
    check_precision(precision)
    active = getattr(_LOCAL, "active", None)
    if active is None:
        return nst_runtime(precision, device, threads=None)
    if active != (precision, device.type):
        raise ValueError(f"kernel called with precision {precision!r} on {device.type} inside "
                         f"nst_runtime({active[0]!r}) on {active[1]}")
    return contextlib.nullcontext()
