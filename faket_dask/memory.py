"""Peak resident memory of the client and of every Dask worker process, per stage.

Linux keeps a process's peak RSS (``VmHWM`` in ``/proc/self/status``) and lets the process reset
it (writing ``5`` to ``/proc/self/clear_refs``), so a stage's exact peak per worker is: reset on
every worker, run the stage, read. No sampling thread, no polling. Elsewhere the current RSS
(psutil) is reported instead and marked as such.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .params import MIB

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def reset_peak() -> bool:
    """Reset this process's peak-RSS counter; False where the OS does not support it."""
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak RSS of this process since start or the last :func:`reset_peak` (bytes)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return int(psutil.Process(os.getpid()).memory_info().rss)


class PeakMemory:
    """Context manager measuring the peak RSS of the client and each worker over a block.

    Parameters
    ----------
    client : distributed.Client or None
        Workers to watch (None: only this process).

    Attributes
    ----------
    workers_bytes : dict of str to int
        ``{worker address: peak RSS in bytes}`` (workers that died during the block are absent).
    client_bytes : int
        Peak RSS of this process over the block (bytes).
    """

    def __init__(self, client: Any | None) -> None:
        self.client = client
        self.workers_bytes: dict[str, int] = {}
        self.client_bytes = 0

    def __enter__(self) -> "PeakMemory":
        reset_peak()
        if self.client is not None:
            try:
                self.client.run(reset_peak)
            except Exception:  # noqa: BLE001 - measurement must never fail a run
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        self.read()

    def read(self) -> None:
        """Read the peaks since the block began (also done when it ends)."""
        self.client_bytes = peak_rss_bytes()
        if self.client is not None:
            try:
                peaks = self.client.run(peak_rss_bytes)
                self.workers_bytes = {k: int(v) for k, v in peaks.items()}
            except Exception:  # noqa: BLE001
                self.workers_bytes = {}

    @property
    def workers_MiB(self) -> dict[str, float]:
        """``{worker address: peak RSS in MiB}``."""
        return {k: v / MIB for k, v in self.workers_bytes.items()}

    @property
    def client_MiB(self) -> float:
        """Peak RSS of this process over the block (MiB)."""
        return self.client_bytes / MIB

    @property
    def max_worker_MiB(self) -> float:
        """Largest per-worker peak (MiB), 0 when no worker was measured."""
        return max(self.workers_bytes.values(), default=0) / MIB
