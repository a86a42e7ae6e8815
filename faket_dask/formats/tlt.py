"""IMOD ``.tlt`` tilt-angle files, and the check every tilt-angle list passes.

A ``.tlt`` file holds one angle (degrees) per line, in the order of the tilts in the stack.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

#: Two tilt angles closer than this (degrees) are the same angle.
ANGLE_ATOL = 1e-6


def check_angles(angles_deg: np.ndarray, what: str, *, lines: np.ndarray | None = None) -> np.ndarray:
    """Refuse tilt-angle lists nothing can be reconstructed from.

    Parameters
    ----------
    angles_deg : array (T,), float, degrees
        Tilt angles in file order.
    what : str
        The file or option named in the message.
    lines : array (T,) of int, optional
        1-based line numbers of the angles in ``what`` (named in the message).

    Returns
    -------
    ndarray (T,), float64
        The angles, unchanged.

    Raises
    ------
    InputError
        NaN/inf; an angle outside the open interval (-90°, 90°) (a projection at ±90° is
        edge-on and the cos/sin geometry degenerates); fewer than two distinct angles (within
        1e-6°) — a repeated 0° (bidirectional series) is legal.
    """
    a = np.asarray(angles_deg, np.float64).ravel()
    if not np.isfinite(a).all():
        raise InputError(f"{what}: contains NaN or inf angles")
    bad = np.flatnonzero(~((a > -90.0) & (a < 90.0)))
    if bad.size:
        i = int(bad[0])
        where = f"line {int(lines[i])}" if lines is not None else f"tilt {i + 1} of {a.size}"
        raise InputError(f"{what}: tilt angle {a[i]:g}° ({where}) is outside (-90°, 90°)")
    s = np.sort(a)
    distinct = 1 + int(np.count_nonzero(np.diff(s) > ANGLE_ATOL)) if a.size else 0
    if distinct < 2:
        held = f"{a.size} tilt angle" + ("s are all" if a.size > 1 else " is")
        raise InputError(f"{what}: {held} {a[0]:g}°; a tilt-series needs at least two distinct angles")
    return a


def read_tlt(path: str | Path) -> np.ndarray:
    """Read an IMOD ``.tlt`` file: one tilt angle (degrees) per line.

    Returns
    -------
    ndarray (T,), float64
        Angles in file order.

    Raises
    ------
    InputError
        Missing file, a line that is not a number, no angles, NaN/inf, angles outside
        (-90°, 90°), or fewer than two distinct angles (see :func:`check_angles`).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    try:
        numbered = [(i + 1, ln.strip()) for i, ln in enumerate(p.read_text().splitlines())]
        numbered = [(i, ln) for i, ln in numbered if ln]
        angles = np.array([float(ln.split()[0]) for _, ln in numbered], dtype=np.float64)
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{p}: not a tilt-angle file (one number per line expected)") from None
    if angles.size == 0:
        raise InputError(f"{p}: contains no tilt angles")
    return check_angles(angles, str(p), lines=np.array([i for i, _ in numbered]))


def write_tlt(path: str | Path, angles_deg: np.ndarray) -> None:
    """Write an IMOD ``.tlt`` file, one angle (degrees) per line.

    Angles are written in their shortest exact decimal form (``repr``) rather than IMOD's
    usual ``%.2f`` so that a round trip keeps them bit for bit; IMOD reads either.
    """
    text = "".join(f"{float(a)!r}\n" for a in np.asarray(angles_deg))
    Path(path).write_text(text)
