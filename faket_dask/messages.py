"""How the ``faket-dask`` command line shows warnings and storage errors: one line each.

Warnings
--------

Python prints a warning as ``FILE:LINE: Category: message`` followed by the source line that
raised it, which points users at library internals (``distributed/node.py:195 ...
warnings.warn(``) instead of telling them what happened. The CLI replaces that format for the
whole process with :func:`install_warning_format`; :class:`WarningFormatPlugin` does the same
inside Dask worker processes, whose stderr is the terminal too.

Storage errors
--------------
:func:`storage_error_line` turns an ``OSError`` or a Zarr error into ``PATH: reason`` for
``faket-dask: error: ...``.
"""
from __future__ import annotations

import sys
import warnings
from typing import Any, TextIO

PREFIX = "faket-dask: warning: "


def format_warning(message: Warning | str, category: type[Warning]) -> str:
    """The one line shown for a warning (no trailing newline).

    Multi-line messages (distributed's "Port 8787 is already in use.\\nPerhaps ...") are
    joined with spaces so every warning stays one line. The category is named unless it is a
    plain ``UserWarning``, the one libraries use for messages meant for users; for the others
    (``RuntimeWarning: divide by zero ...``) it says what kind of problem it is.
    """
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    if category is not UserWarning:
        text = f"{category.__name__}: {text}"
    return PREFIX + text


def _showwarning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    # Same signature as warnings.showwarning; the location arguments are deliberately unused.
    stream = file if file is not None else sys.stderr
    if stream is None:  # pythonw / closed stderr: nowhere to show it, as in the default
        return
    try:
        stream.write(format_warning(message, category) + "\n")
        stream.flush()
    except OSError:  # e.g. a closed pipe: a warning must never turn into an error
        pass


def install_warning_format() -> None:
    """Show every warning of this process as one ``faket-dask: warning: MESSAGE`` line on stderr.

    Which warnings are shown (filters, once per location) is unchanged; only how they look.
    Idempotent.
    """
    warnings.showwarning = _showwarning


def storage_error_line(exc: BaseException) -> str | None:
    """``PATH: reason`` for a file-system or Zarr error, ``None`` for anything else (a bug).

    A full disk, a read-only or vanished directory, a file where a directory is expected: the
    user can fix these, and the one line names the path; a traceback would only bury it.
    """
    if isinstance(exc, OSError) and exc.strerror:
        if exc.filename is None:
            return exc.strerror
        where = str(exc.filename) if not isinstance(exc.filename, bytes) else exc.filename.decode(errors="replace")
        if exc.filename2 is not None:
            where += f" -> {exc.filename2}"
        return f"{where}: {exc.strerror}"
    # zarr.errors is only checked once zarr was imported: no zarr error can exist before, and
    # importing zarr here would slow down every command (`config`, `--help`).
    zarr_errors = sys.modules.get("zarr.errors")
    if isinstance(exc, OSError) or (zarr_errors is not None and isinstance(exc, zarr_errors.BaseZarrError)):
        lines = str(exc).strip().splitlines()
        return lines[0] if lines else type(exc).__name__
    return None


def __getattr__(name: str) -> Any:
    # WarningFormatPlugin is made on first use (PEP 562): subclassing distributed's WorkerPlugin
    # imports distributed, which would add ~1 s to every CLI start, even `faket-dask config`.
    # Workers unpickle it by reference (faket_dask.messages.WarningFormatPlugin) through here.
    if name == "WarningFormatPlugin":
        from distributed.diagnostics.plugin import WorkerPlugin

        class WarningFormatPlugin(WorkerPlugin):
            """Dask worker plugin: warnings raised in worker processes are one line too.

            Worker processes are spawned interpreters that inherit the terminal's stderr but
            not the CLI's ``warnings.showwarning``; register with
            ``client.register_plugin(WarningFormatPlugin())``. Workers that start later
            (restarts, scaling) get it as well.
            """

            name = "faket-dask-warning-format"

            def setup(self, worker: Any) -> None:
                """Install the one-line warning format in the worker's process."""
                install_warning_format()

        WarningFormatPlugin.__module__ = __name__
        WarningFormatPlugin.__qualname__ = name  # so pickle finds it as a module attribute
        globals()[name] = WarningFormatPlugin
        return WarningFormatPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
