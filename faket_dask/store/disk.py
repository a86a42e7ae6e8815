"""Free disk space: the check a command makes before it writes (pure standard library, so the
store package imports it eagerly)."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import FaketError

__all__ = ["check_disk", "disk_free_bytes"]


def disk_free_bytes(path: str | Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def check_disk(path: str | Path, needed_bytes: int) -> None:
    """Refuse to start when ``needed_bytes`` (uncompressed, an upper bound) exceed free space."""
    free = disk_free_bytes(path)
    if needed_bytes > free:
        raise FaketError(
            f"{path}: too little disk: needs up to {needed_bytes / 2**30:.2f} GiB, "
            f"{free / 2**30:.2f} GiB free"
        )
