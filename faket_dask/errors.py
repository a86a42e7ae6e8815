"""User-facing errors.

Every problem a user can cause (bad file, bad option, existing output) is raised as
:class:`FaketError` with a one-line message naming the file and the problem; the CLI prints it
without a traceback and exits with status 2.
"""
from __future__ import annotations


class FaketError(Exception):
    """A user-facing error with a one-line message (no traceback is shown by the CLI)."""


class InputError(FaketError, ValueError):
    """An input file, array or option is unusable (wrong shape, NaN, unreadable, ...)."""


class OutputExistsError(FaketError, FileExistsError):
    """The output exists and ``overwrite`` was not given."""
