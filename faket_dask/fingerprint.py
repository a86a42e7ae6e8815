"""Fingerprints of the user's input files, so a resumed run notices a changed input.

A completed stage records the fingerprint of every file it read (size, modification time in
ns and the SHA-256 of the content). On resume a file is unchanged when size and mtime are
unchanged (cheap, as make and rsync decide), or when only the mtime changed and the content
hash is still the same (a ``touch`` or a copy with new times). Anything else — a stack
re-exported under the same name, a replaced angle file — is a changed input, and the stage
is run again with everything after it (``docs/architecture.md``, "Resume").
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_BLOCK = 1 << 22  # 4 MiB reads: streaming, memory flat in file size


def sha256_file(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]


def fingerprint(paths: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """``{resolved path: {"size", "mtime_ns", "sha256"}}`` of files (a directory: its files).

    Parameters
    ----------
    paths : iterable of path
        Input files or directories (e.g. a templates folder); missing ones are recorded with
        ``{"missing": True}``.

    Returns
    -------
    dict
        JSON-serialisable; stored with the stage's completion record.
    """
    out: dict[str, dict[str, Any]] = {}
    for p in paths:
        p = Path(p).resolve()
        if not p.exists():
            out[str(p)] = {"missing": True}
            continue
        for f in _files(p):
            s = f.stat()
            out[str(f)] = {"size": s.st_size, "mtime_ns": s.st_mtime_ns, "sha256": sha256_file(f)}
    return out


def changed(recorded: dict[str, dict[str, Any]], paths: Iterable[str | Path]) -> list[str]:
    """The files among ``paths`` whose content differs from ``recorded`` (empty: unchanged).

    Size and mtime equal ⇒ unchanged without reading the file; otherwise the SHA-256 decides.
    New or vanished files count as changed.
    """
    now: dict[str, Path] = {}
    for p in paths:
        p = Path(p).resolve()
        if not p.exists():
            now[str(p)] = p
            continue
        for f in _files(p):
            now[str(f)] = f
    out = sorted(set(recorded) ^ set(now))
    for key, f in now.items():
        rec = recorded.get(key)
        if rec is None:
            continue
        if not f.exists():
            if not rec.get("missing"):
                out.append(key)
            continue
        if rec.get("missing"):
            out.append(key)
            continue
        s = f.stat()
        if s.st_size == rec.get("size") and s.st_mtime_ns == rec.get("mtime_ns"):
            continue
        if s.st_size != rec.get("size") or sha256_file(f) != rec.get("sha256"):
            out.append(key)
    return sorted(set(out))
