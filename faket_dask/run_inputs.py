"""Checks of a run's input files, all made before any stage runs (``simulate``'s plan).

Each check reads only what it must (headers, angle files, and one streaming pass over a
stack's values) and raises one :class:`~faket_dask.errors.InputError` line that names the
user's file — never an internal store path — and the setting that fixes it, when one does.
Tilts are numbered from 1, with their angle, as IMOD and SerialEM users count them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .tilt_pairing import match_tilts, tilt_label

#: How a run config spells nearest-angle pairing (named in refusals).
MATCH_OPTION = "style_data.match_angles: nearest"
_BLOCK_BYTES = 16 * 2**20  # values are scanned 16 MiB at a time: memory flat in file size


@dataclass(frozen=True)
class StyleFile:
    """What the plan knows of one imported style stack after its checks."""

    path: Path
    angles_deg: np.ndarray      # in the file's order
    pixel_size_A: float
    shape: tuple[int, int, int]
    notices: tuple[str, ...] = ()   # what was assumed reading its header


def mrc_info(path: Path, key: str):
    """The header of an input MRC file; one-line error naming the config key when missing."""
    from .formats.mrc import read_info

    if not path.is_file():
        raise InputError(f"{path}: {key} not found")
    return read_info(path)


def pixel_size(info, override: float | None, key: str, *, kind: str) -> float:
    """The pixel size (Å): the config entry's, else the header's (one, isotropic).

    Raises
    ------
    InputError
        The header has no pixel size (0 Å, as ``mrcfile.write`` leaves it) or an anisotropic
        one, and the entry gives none: names the file and the key ``KEY.pixel_size_A`` to set.
    """
    from .formats.mrc import header_pixel_size

    if override is not None:
        return float(override)
    return header_pixel_size(info, kind=kind, hint=entry_hint(key))


def entry_hint(key: str) -> str:
    """The fix for a header without a usable pixel size, in config terms."""
    return f"set pixel_size_A in its config entry ({key}.pixel_size_A)"


def check_pixel_match(px: float, content_px: float, rtol: float, path: Path, key: str) -> None:
    """Refuse a style stack whose pixel size differs from the content's by more than ``rtol``.

    NST and the noise model compare images pixel for pixel; a stack at 85.76 Å/px would give
    10 Å content the texture of another scale.
    """
    if abs(px - content_px) > rtol * content_px:
        raise InputError(
            f"{path}: pixel size {px:g} Å differs from the content's {content_px:g} Å by more than "
            f"{100 * rtol:g} %; bin or rescale the stack to {content_px:g} Å (e.g. IMOD newstack "
            f"-bin or -shrink), or set {key}.pixel_size_A if the header is wrong "
            "(style_data.pixel_size_rtol sets the tolerance)"
        )


def check_values(path: Path, angles_deg: np.ndarray | None = None) -> None:
    """One streaming pass over an MRC stack: refuse NaN/inf and constant (blank) planes.

    Parameters
    ----------
    path : path
        The MRC file (any mode the reader supports).
    angles_deg : array (T,), optional
        Angles in the file's order, named in the message.

    Raises
    ------
    InputError
        ``FILE: tilt 5 of 5 (30°) is constant (all 0: a blank or dark image)``, and likewise
        for NaN/inf, 1-based.
    """
    from .formats.mrc import MrcArray

    arr = MrcArray(path)
    n = arr.shape[0]
    plane = int(np.prod(arr.shape[1:])) * 4
    rows = max(1, _BLOCK_BYTES // max(plane, 1))
    for start, block in arr.iter_blocks(rows):
        flat = block.reshape(block.shape[0], -1)
        for j in range(flat.shape[0]):
            v = flat[j]
            if not np.isfinite(v).all():
                raise InputError(f"{path}: {tilt_label(start + j, n, angles_deg)} has NaN or inf "
                                 "values; remove that view (e.g. IMOD newstack -exclude)")
            if v.min() == v.max():
                raise InputError(f"{path}: {tilt_label(start + j, n, angles_deg)} is constant "
                                 f"(all {float(v[0]):g}: a blank or dark image); remove that view "
                                 "(e.g. IMOD newstack -exclude)")


def check_style_file(
    path: Path,
    angles_file: Path,
    *,
    key: str,
    content_angles_deg: np.ndarray,
    content_pixel_size_A: float,
    pixel_size_A: float | None,
    match_angles: str,
    pixel_size_rtol: float,
) -> StyleFile:
    """Every check of one imported style stack (``style_data.files[k]``).

    Header (3D, pixel size), its angle file (count, at least two distinct angles, angles
    pairing with the content's by angle under ``match_angles``), pixel size against the
    content's, then the values (NaN/inf, blank tilts).

    Raises
    ------
    InputError
        One line naming the file (or its angle file) and the fix.
    """
    from .formats.mrc import read_tlt

    info = mrc_info(path, f"{key}.measured")
    if len(info.shape) != 3:
        raise InputError(f"{path}: a style tilt-series must be 3D (tilts, y, x), got {info.shape}")
    if not angles_file.is_file():
        raise InputError(f"{angles_file}: angles file ({key}.angles_file) not found")
    tlt = read_tlt(angles_file)
    if len(tlt) != info.shape[0]:
        raise InputError(f"{angles_file}: {len(tlt)} angles for the {info.shape[0]} tilts of {path}")
    match_tilts(content_angles_deg, tlt, target="the content (acquisition)",
                source=f"{path} ({angles_file.name})", mode=match_angles,
                option=MATCH_OPTION)
    px = pixel_size(info, pixel_size_A, key, kind="tiltseries")
    check_pixel_match(px, content_pixel_size_A, pixel_size_rtol, path, key)
    check_values(path, tlt)
    return StyleFile(path, tlt, px, tuple(int(s) for s in info.shape), tuple(info.notices))


def check_noiseless_partner(path: Path, measured: StyleFile, key: str) -> tuple[str, ...]:
    """The noiseless projections of an imported style stack: same shape, sane values.

    Returns the notices of its header."""
    info = mrc_info(path, f"{key}.noiseless")
    if tuple(info.shape) != measured.shape:
        raise InputError(f"{path}: noiseless shape {tuple(info.shape)} differs from "
                         f"{measured.path} {measured.shape}")
    check_values(path, measured.angles_deg)
    return tuple(info.notices)

