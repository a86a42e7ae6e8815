"""Pairing tilts of two tilt-series by angle (the one owner of that rule).

FakET pairs each content tilt with the style tilt (and the noise-model curve) *of the same
angle*. Stacks in acquisition order (dose-symmetric: 0, 3, −3, −6, 6, …), lamella ranges
(−54…+66) and flat-specimen ranges (−60…+60) of equal count all exist in practice, so pairing
by position is wrong whenever the orders or ranges differ. Every pairing in the package —
style to content, noise curves across references and to a tilt-series, measured to noiseless —
goes through :func:`match_tilts`.
"""
from __future__ import annotations

from typing import Literal

import numpy as np

from .errors import InputError

MatchMode = Literal["exact", "nearest"]
MATCH_MODES: tuple[str, ...] = ("exact", "nearest")


def angle_step(angles_deg: np.ndarray) -> float:
    """The typical angular step (degrees): the median gap between distinct sorted angles.

    A series with a single distinct angle has no step (``inf``).
    """
    u = np.unique(np.round(np.asarray(angles_deg, np.float64), 6))
    if u.size < 2:
        return float("inf")
    return float(np.median(np.diff(u)))


def describe_range(angles_deg: np.ndarray) -> str:
    """``"-60..60 (41 tilts, step 3)"`` for messages."""
    a = np.asarray(angles_deg, np.float64)
    if a.size == 0:
        return "no tilts"
    step = angle_step(a)
    s = f"{a.min():g}..{a.max():g} ({a.size} tilts"
    if np.isfinite(step):
        s += f", step {step:.3g}"
    return s + ")"


def match_tilts(
    target_deg: np.ndarray,
    source_deg: np.ndarray,
    *,
    target: str = "content",
    source: str = "style",
    mode: MatchMode = "exact",
    option: str = "style_data.match_angles: nearest",
) -> np.ndarray:
    """For every target tilt, the index of the source tilt of the same angle.

    Parameters
    ----------
    target_deg : array (T,), float, degrees
        Angles of the tilt-series to be served (e.g. the content), any order.
    source_deg : array (S,), float, degrees
        Angles of the tilt-series that serves (e.g. the style stack), any order.
    target, source : str
        Names used in messages (file names where known).
    mode : {"exact", "nearest"}
        ``"exact"``: the two angle lists must be the same set (equal counts, each sorted pair
        within half a step of the target's series); ``"nearest"``: every target tilt takes the
        source tilt of nearest angle (counts may differ, source tilts may repeat).
    option : str
        The setting that turns on ``"nearest"`` (named in the refusal).

    Returns
    -------
    ndarray (T,), int64
        ``source[idx[i]]`` pairs with ``target[i]``. Repeated angles (a bidirectional series
        with 0° twice) pair in their order of appearance.

    Raises
    ------
    InputError
        ``mode="exact"`` and the counts differ or an angle differs by more than half a step,
        naming both ranges; an unknown ``mode``.
    """
    t = np.asarray(target_deg, np.float64).ravel()
    s = np.asarray(source_deg, np.float64).ravel()
    if mode not in MATCH_MODES:
        raise InputError(f"unknown angle matching '{mode}' (choose from {', '.join(MATCH_MODES)})")
    if s.size == 0:
        raise InputError(f"{source}: no tilts to pair with {target}")
    if mode == "nearest":
        # stable argmin: among equally near source tilts the first is taken
        return np.argmin(np.abs(t[:, None] - s[None, :]), axis=1).astype(np.int64)
    if t.size != s.size:
        raise InputError(
            f"{source} has angles {describe_range(s)} but {target} has {describe_range(t)}; "
            f"tilts are paired by angle ({_advice(option)})"
        )
    ti = np.argsort(t, kind="stable")
    si = np.argsort(s, kind="stable")
    tol = 0.5 * angle_step(t) if np.isfinite(angle_step(t)) else 0.5
    diff = np.abs(t[ti] - s[si])
    if diff.size and diff.max() > tol + 1e-9:
        raise InputError(
            f"{source} has angles {describe_range(s)} but {target} has {describe_range(t)}: "
            f"paired by angle they differ by up to {diff.max():.3g}° (more than half a step); "
            f"{_advice(option)}"
        )
    idx = np.empty(t.size, np.int64)
    idx[ti] = si
    return idx


def _advice(option: str) -> str:
    if option.endswith(" or"):  # no nearest-angle option where the caller has none
        return "use " + option[:-3]
    return f"use stacks with the same angles, or set {option} to pair nearest angles"


def is_identity(idx: np.ndarray) -> bool:
    """Whether a pairing keeps every tilt in place (then nothing needs reordering)."""
    return bool(np.array_equal(idx, np.arange(len(idx))))


def tilt_label(index: int, n_tilts: int, angles_deg: np.ndarray | None = None) -> str:
    """``"tilt 5 of 41 (30°)"``: 1-based, as users count tilts (IMOD numbers views from 1)."""
    s = f"tilt {index + 1} of {n_tilts}"
    if angles_deg is not None and 0 <= index < len(angles_deg):
        s += f" ({float(angles_deg[index]):g}°)"
    return s
