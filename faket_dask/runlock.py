"""One run per output directory: the lock file ``OUT/.faket-dask.lock``.

Two ``simulate``/``demo`` processes on one output (a batch job resubmitted while the first
still runs) would write the same store and destroy each other's stages. The first takes the
lock; a second one stops before any work with one line naming the live run.

How the lock works, and why:

- The file is opened and locked with ``fcntl.flock`` on a descriptor kept open for the run's
  lifetime. The kernel drops a flock when its process dies, even by ``SIGKILL``, so a killed
  run never blocks its rerun (kill-and-rerun resumes) and a live one is always seen on one host.
  An ``O_CREAT | O_EXCL`` file alone would survive ``SIGKILL`` and look live forever.
- flock is not reliable on every cluster file system (Lustre mounted ``localflock`` or
  ``noflock``, some NFS set-ups), so the file also records who holds it (pid, process start
  time, host, user, command, start time as JSON). A lock whose flock is free still counts as
  live when its holder might be running: on this host when that pid is alive with the same
  start time (the start time tells a reused pid apart); on another host always, since its
  processes cannot be checked from here (the error then says how to clear it by hand).
- ``SIGTERM`` (``scancel``, a batch time limit) is turned into ``SystemExit`` while the lock is
  held, so the lock is released and the cluster closed as on any other error; this matters
  for a rerun on another node, which cannot tell a dead holder from a live one.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import getpass
import json
import os
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from .errors import FaketError

#: Name of the lock file inside the output directory.
LOCK_NAME = ".faket-dask.lock"

# flock errors that mean "this file system does not support it" (not "someone holds it").
_NO_FLOCK = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


class RunLockedError(FaketError):
    """The output directory is in use by another run (one line naming that run)."""


@dataclass(frozen=True)
class LockInfo:
    """Who holds a run lock, as recorded in the lock file."""

    pid: int
    host: str
    create_time: float
    user: str
    command: str
    started: str

    @classmethod
    def current(cls) -> LockInfo:
        """The record for this process."""
        import psutil

        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # containers without a passwd entry for the uid
            user = str(os.getuid())
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            create_time=psutil.Process().create_time(),
            user=user,
            command=shlex.join(sys.argv),
            started=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        )

    @classmethod
    def parse(cls, text: str) -> LockInfo | None:
        """The record in a lock file's text, or ``None`` if it is empty or not a record."""
        try:
            data = json.loads(text)
            return cls(pid=int(data["pid"]), host=str(data["host"]), create_time=float(data["create_time"]),
                       user=str(data.get("user", "?")), command=str(data.get("command", "")),
                       started=str(data.get("started", "?")))
        except (ValueError, TypeError, KeyError):
            return None

    def describe(self) -> str:
        """``pid 1234 on host h, started 2026-...`` (for one-line messages)."""
        return f"pid {self.pid} on host {self.host}, started {self.started}"

    def on_this_host(self) -> bool:
        """Whether the holder ran on this machine (so its pid can be checked)."""
        return self.host == socket.gethostname()

    def is_running(self) -> bool:
        """Whether the holder may still be running.

        On this host: its pid exists, is not a zombie and started at the recorded time (a pid
        reused by another process has another start time). On another host: always true, as
        nothing there can be checked from here.
        """
        if not self.on_this_host():
            return True
        import psutil

        try:
            proc = psutil.Process(self.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:  # dead, only not yet reaped by its parent
                return False
            # create_time is derived from the boot time and the start tick: stable to the tick
            return abs(proc.create_time() - self.create_time) < 0.05
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return False
        except psutil.AccessDenied:  # exists but hidden from us: assume it runs
            return True


def read_lock(out_dir: str | Path) -> LockInfo | None:
    """The record of the lock file in ``out_dir``, or ``None`` if there is none (or unreadable)."""
    try:
        return LockInfo.parse((Path(out_dir) / LOCK_NAME).read_text())
    except (OSError, UnicodeDecodeError):
        return None


class RunLock:
    """Exclusive use of an output directory by one run, for the lifetime of a ``with`` block.

    Parameters
    ----------
    out_dir : path
        The run's output directory. Created (with missing parents) if needed; directories
        created here are removed again on release if they are still empty, so a run refused
        by later validation leaves nothing behind.
    notify : callable, optional
        Receives the one-line notice printed when the lock of a run that is no longer running
        is taken over (default: print to stderr).

    Raises
    ------
    RunLockedError
        On entering, when another run holds the lock (one line naming pid, host and start).
    OSError
        When the directory or the lock file cannot be created (the CLI prints it as one line).

    Examples
    --------
    >>> with RunLock("out"):           # doctest: +SKIP
    ...     Pipeline(plan).run()
    """

    def __init__(self, out_dir: str | Path, *, notify: Callable[[str], None] | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self.notify = notify or (lambda s: print(s, file=sys.stderr, flush=True))
        self.info: LockInfo | None = None
        self._fd: int | None = None
        self._created_dirs: list[Path] = []
        self._old_sigterm: Any = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    # -- acquiring ----------------------------------------------------------------------------
    def acquire(self) -> RunLock:
        """Take the lock (see the class docstring); returns ``self``."""
        if self.held:
            return self
        try:
            self._make_dirs()
            self._acquire()
        except BaseException:
            self._remove_created_dirs()
            raise
        self._trap_sigterm()
        return self

    def _make_dirs(self) -> None:
        missing: list[Path] = []
        p = self.out_dir
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:  # made concurrently by someone else: not ours to remove
                continue
            self._created_dirs.append(d)

    def _acquire(self) -> None:
        # A few tries: each retry means the file was replaced between open() and flock().
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = self._flock(fd)
                if not locked:
                    held_by = LockInfo.parse(_read_fd(fd))
                    raise RunLockedError(self._busy_message(held_by, flock_held=True))
                if not _same_file(fd, self.path):
                    # The holder released (unlinked) the file after we opened it: our flock is
                    # on an orphan inode nobody else will see. Start again on the new file.
                    os.close(fd)
                    continue
                previous = LockInfo.parse(_read_fd(fd))
                if previous is not None and previous.is_running():
                    # flock is free, yet the holder may run: this file system does not share
                    # flocks with the holder's host (or does not support them at all)
                    raise RunLockedError(self._busy_message(previous, flock_held=False))
                self.info = LockInfo.current()
                data = json.dumps(asdict(self.info), indent=1).encode() + b"\n"
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            if previous is not None:
                self.notify(f"notice: {self.out_dir}: the run that used it ({previous.describe()}) is no longer "
                            "running; taking over its lock")
            return
        raise RunLockedError(f"{self.out_dir}: in use by another run (its lock file {self.path} keeps changing); "
                             "wait for it or stop it")

    @staticmethod
    def _flock(fd: int) -> bool:
        """flock ``fd`` without waiting: true if locked (or flock is unsupported), false if held."""
        import fcntl

        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in _NO_FLOCK:
                return True  # rely on the recorded pid/host alone
            raise
        return True

    def _busy_message(self, holder: LockInfo | None, *, flock_held: bool) -> str:
        out = self.out_dir
        if holder is None:  # the holder has opened the file but not yet written its record
            return f"{out}: in use by another run (just starting); wait for it or stop it"
        msg = f"{out}: in use by another run ({holder.describe()})"
        if not holder.on_this_host():
            return (f"{msg}; wait for it or stop it (if it is no longer running on {holder.host}, "
                    f"delete {self.path})")
        if flock_held and not holder.is_running():
            # pid gone, yet the flock is held: a process it started (and that inherited the
            # descriptor) still runs
            return (f"{msg}; that process has exited but one it started still holds {self.path}; "
                    f"stop it (`fuser {self.path}` names it)")
        return f"{msg}; wait for it or stop it"

    # -- SIGTERM -------------------------------------------------------------------------------
    def _trap_sigterm(self) -> None:
        # Only the main thread may set handlers; only replace the default (which would exit
        # without running any cleanup), never a handler someone else installed.
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        self._old_sigterm = signal.signal(signal.SIGTERM, on_sigterm)

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    # -- releasing ----------------------------------------------------------------------------
    def release(self) -> None:
        """Remove the lock file and drop the lock; no-op when not held. Never raises OSError."""
        fd, self._fd = self._fd, None
        self._restore_sigterm()
        if fd is None:
            return
        # Unlink before closing (while still holding the flock), and only our own file: a
        # waiting run then opens a fresh file and never locks one that is about to vanish.
        with contextlib.suppress(OSError):
            if _same_file(fd, self.path):
                self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(fd)
        self._remove_created_dirs()

    def _remove_created_dirs(self) -> None:
        for d in reversed(self._created_dirs):
            with contextlib.suppress(OSError):  # not empty (the run wrote into it): keep it
                d.rmdir()
        self._created_dirs = []

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _read_fd(fd: int) -> str:
    chunks = []
    offset = 0
    while True:
        chunk = os.pread(fd, 65536, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)
