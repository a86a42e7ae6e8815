"""Checks of a run's input files, all made before any stage runs (``simulate``'s plan).

Each check reads only what it must (headers, angle files, and one streaming pass over a
stack's values) and raises one :class:`~faket_dask.errors.InputError` line that names the
user's file — never an internal store path — and the setting that fixes it, when one does.
Tilts are numbered from 1, with their angle, as IMOD and SerialEM users count them.
"""
from __future__ import annotations

from collections.abc import Sequence
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
    angles_deg: np.ndarray      # of the kept tilts, in the file's order
    pixel_size_A: float
    shape: tuple[int, int, int]  # the file's, excluded tilts included
    notices: tuple[str, ...] = ()   # what was assumed reading its header (and its .mdoc)
    kept: np.ndarray | None = None  # file positions of angles_deg (None: every tilt)


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


def check_values(path: Path, angles_deg: np.ndarray | None = None, *,
                 kept: np.ndarray | None = None) -> None:
    """One streaming pass over an MRC stack: refuse NaN/inf and constant (blank) planes.

    Parameters
    ----------
    path : path
        The MRC file (any mode the reader supports).
    angles_deg : array (T,), optional
        Angles in the file's order, named in the message (of the ``kept`` tilts when given).
    kept : array of int, optional
        File positions of the tilts to check (excluded views are not read: they may be the
        blank ones); default every tilt.

    Raises
    ------
    InputError
        ``FILE: tilt 5 of 5 (30°) is constant (all 0: a blank or dark image)``, and likewise
        for NaN/inf, 1-based.
    """
    from .formats.mrc import MrcArray

    arr = MrcArray(path)
    n = arr.shape[0]
    if kept is not None:
        kept = np.asarray(kept, np.int64)
        if angles_deg is not None:  # angles by file position, for the message
            full = np.full(n, np.nan)
            full[kept] = angles_deg
            angles_deg = full
    plane = int(np.prod(arr.shape[1:])) * 4
    rows = max(1, _BLOCK_BYTES // max(plane, 1))
    blocks = arr.iter_blocks(rows) if kept is None else ((int(i), arr[int(i): int(i) + 1]) for i in kept)
    for start, block in blocks:
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
    angles_file: Path | None,
    *,
    key: str,
    content_angles_deg: np.ndarray,
    content_pixel_size_A: float,
    pixel_size_A: float | None,
    match_angles: str,
    pixel_size_rtol: float,
    mdoc: Path | None = None,
    exclude_tilts: Sequence[int] = (),
) -> StyleFile:
    """Every check of one imported style stack (``style_data.files[k]``).

    Header (3D, pixel size), its angles — the ``.tlt`` ``angles_file`` or the SerialEM ``.mdoc``
    ``mdoc``, exactly one (count, at least two distinct angles among the kept tilts, angles
    pairing with the content's by angle under ``match_angles``) —, ``exclude_tilts`` in range,
    pixel size (entry, else header, else the ``.mdoc``'s ``PixelSpacing``) against the
    content's, then the values of the kept tilts (NaN/inf, blank tilts).

    Parameters
    ----------
    path : Path
        The stack (``KEY.measured``).
    angles_file, mdoc : Path or None
        ``KEY.angles_file`` / ``KEY.mdoc``, resolved; one of them.
    exclude_tilts : sequence of int
        ``KEY.exclude_tilts``: 0-based file positions dropped before the checks.

    Returns
    -------
    StyleFile
        ``angles_deg`` of the kept tilts (file order), ``kept`` their positions; ``notices``
        hold what the header and ``.mdoc`` left to assumption.

    Raises
    ------
    InputError
        One line naming the file (or its angle file / ``.mdoc``) and the fix.
    """
    from .formats.mdoc import check_sections, kept_views, mdoc_pixel_size, read_mdoc
    from .formats.mrc import check_angles, read_tlt

    info = mrc_info(path, f"{key}.measured")
    if len(info.shape) != 3:
        raise InputError(f"{path}: a style tilt-series must be 3D (tilts, y, x), got {info.shape}")
    notices = list(info.notices)
    if (angles_file is None) == (mdoc is None):
        raise InputError(f"{path}: give its tilt angles by {key}.angles_file or {key}.mdoc, one of them")
    if mdoc is not None:
        if not mdoc.is_file():
            raise InputError(f"{mdoc}: .mdoc ({key}.mdoc) not found")
        tilts = read_mdoc(mdoc)
        check_sections(tilts, info)
        angles, source = tilts.angles_deg, mdoc
        px, px_notices = mdoc_pixel_size(info, tilts, pixel_size_A, hint=entry_hint(key))
        notices += list(tilts.notices) + list(px_notices)
    else:
        assert angles_file is not None
        if not angles_file.is_file():
            raise InputError(f"{angles_file}: angles file ({key}.angles_file) not found")
        angles, source = read_tlt(angles_file), angles_file
        if len(angles) != info.shape[0]:
            raise InputError(f"{angles_file}: {len(angles)} angles for the {info.shape[0]} tilts of {path}")
        px = pixel_size(info, pixel_size_A, key, kind="tiltseries")
    kept = kept_views(exclude_tilts, info.shape[0], path, option=f"{key}.exclude_tilts")
    angles = check_angles(angles[kept], f"{source}" + (" (kept tilts)" if kept.size < info.shape[0] else ""))
    match_tilts(content_angles_deg, angles, target="the content (acquisition)",
                source=f"{path} ({source.name})", mode=match_angles,
                option=MATCH_OPTION)
    check_pixel_match(px, content_pixel_size_A, pixel_size_rtol, path, key)
    every = kept.size == info.shape[0]
    check_values(path, angles, kept=None if every else kept)
    return StyleFile(path, angles, px, tuple(int(s) for s in info.shape), tuple(notices),
                     None if every else kept)


def check_noiseless_partner(path: Path, measured: StyleFile, key: str) -> tuple[str, ...]:
    """The noiseless projections of an imported style stack: same shape, sane values.

    Returns the notices of its header."""
    info = mrc_info(path, f"{key}.noiseless")
    if tuple(info.shape) != measured.shape:
        raise InputError(f"{path}: noiseless shape {tuple(info.shape)} differs from "
                         f"{measured.path} {measured.shape}")
    check_values(path, measured.angles_deg, kept=measured.kept)
    return tuple(info.notices)

