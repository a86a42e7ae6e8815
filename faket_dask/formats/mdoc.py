"""SerialEM ``.mdoc`` metadata of a tilt-series stack, read with the ``mdocfile`` package.

A SerialEM ``.mdoc`` (an IMOD autodoc) has global ``key = value`` lines, ``[T = ...]`` titles and
one ``[ZValue = N]`` section per image, ``N`` being the image's 0-based position in the MRC
stack. From it faket-dask takes, per section, ``TiltAngle`` (degrees, required),
``ExposureDose`` (e/Å² of that image) and ``PriorRecordDose`` (e/Å² of the Record images taken
before it in the series), the acquisition order (``DateTime``, else the ZValue order) and the
pixel size (``PixelSpacing``, Å). What is stored, and the rules, are in ``docs/formats.md``
("SerialEM .mdoc").

Sources: SerialEM's "File Formats" help page (``about_formats.htm``: the ``.mdoc`` is an
autodoc whose sections are ``[ZValue = N]``, numbered from 0) and ``mdocfile``
(teamtomo), whose pydantic models parse the file.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import InputError
from .mrc_header import MrcInfo, header_pixel_size

#: Relative difference of the header's and the ``.mdoc``'s pixel sizes above which a notice says
#: which one is used.
PIXEL_RTOL = 0.01
#: ``DateTime`` as SerialEM writes it (``01-Dec-26  10:00:05``; runs of blanks count as one).
_DATETIME_FORMATS = ("%d-%b-%y %H:%M:%S", "%d-%b-%Y %H:%M:%S")
_OPTION = "--exclude-tilts"

#: Names of the tilt-dim coordinates an ``.mdoc`` import stores.
DOSE = "dose_e_per_A2"
PRIOR_DOSE = "prior_dose_e_per_A2"
SECTION_INDEX = "section_index"


@dataclass(frozen=True)
class MdocTilts:
    """Per-image metadata of one ``.mdoc``, in stack (ZValue) order: entry ``i`` is image ``i``.

    Attributes
    ----------
    path : Path
        The ``.mdoc`` file.
    angles_deg : ndarray (N,), float64
        ``TiltAngle`` of each section, degrees.
    acquisition_index : ndarray (N,), int64
        0-based position of each image in the acquisition order: by ``DateTime`` when every
        section has a readable one (equal times keep ZValue order), else the ZValue order.
    order_from : {"DateTime", "ZValue"}
        Where the acquisition order came from.
    dose_e_per_A2 : ndarray (N,), float64, or None
        ``ExposureDose`` (e/Å²); None unless every section has one.
    prior_dose_e_per_A2 : ndarray (N,), float64, or None
        ``PriorRecordDose`` (e/Å²); None unless every section has one.
    pixel_size_A : float or None
        ``PixelSpacing`` (Å): the global value, else the sections' common one.
    notices : tuple of str
        What was assumed or left out (partial ``DateTime`` / dose keys), one line each.
    """

    path: Path
    angles_deg: np.ndarray
    acquisition_index: np.ndarray
    order_from: str
    dose_e_per_A2: np.ndarray | None
    prior_dose_e_per_A2: np.ndarray | None
    pixel_size_A: float | None
    notices: tuple[str, ...] = ()

    @property
    def n_sections(self) -> int:
        """Number of ``[ZValue = N]`` sections (images)."""
        return int(self.angles_deg.size)


@contextlib.contextmanager
def _quiet_mdocfile() -> Iterator[None]:
    """mdocfile logs every key it does not model (``TimeStamp``, ...) at WARNING level, which
    Python prints on stderr when nothing configured logging; those keys are not errors here."""
    log = logging.getLogger("mdocfile")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        err = errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        return f"{where} = {err.get('input')!r}: {err.get('msg')}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _per_section(sections: list, key: str, p: Path, notices: list[str]) -> np.ndarray | None:
    """``key`` of every section as float64; None (with a notice if some have it) otherwise."""
    vals = [getattr(s, key) for s in sections]
    have = [v is not None for v in vals]
    if not any(have):
        return None
    if not all(have):
        missing = [i for i, h in enumerate(have) if not h]
        notices.append(f"{p}: {key} is missing in {len(missing)} of {len(vals)} sections "
                       f"(first [ZValue = {missing[0]}]); it is not stored")
        return None
    a = np.asarray(vals, np.float64)
    bad = np.flatnonzero(~np.isfinite(a) | (a < 0))
    if bad.size:
        raise InputError(f"{p}: {key} = {a[bad[0]]:g} in [ZValue = {int(bad[0])}]; "
                         "a dose is a finite number >= 0 (e/Å²)")
    return a


def _acquisition_order(sections: list, p: Path, notices: list[str]) -> tuple[np.ndarray, str]:
    n = len(sections)
    times = []
    for i, s in enumerate(sections):
        text = " ".join(str(s.DateTime or "").split())
        t = None
        for fmt in _DATETIME_FORMATS:
            with contextlib.suppress(ValueError):
                t = datetime.strptime(text, fmt)
                break
        if t is None:
            if any(x.DateTime for x in sections):
                why = "missing" if not text else f"'{text}' unreadable"
                notices.append(f"{p}: DateTime {why} in [ZValue = {i}]; acquisition order taken "
                               "as the ZValue (stack) order")
            return np.arange(n, dtype=np.int64), "ZValue"
        times.append(t.timestamp())
    order = np.lexsort((np.arange(n), np.asarray(times)))  # by time, ties in ZValue order
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    return rank, "DateTime"


def read_mdoc(path: str | Path) -> MdocTilts:
    """Read a SerialEM tilt-series ``.mdoc``: angles, doses, acquisition order, pixel size.

    Parameters
    ----------
    path : path
        The ``.mdoc`` file (``[ZValue = N]`` sections, one per image of the stack).

    Returns
    -------
    MdocTilts
        Per-section values in ZValue (stack) order.

    Raises
    ------
    InputError
        ``FILE: problem``: a missing file; text mdocfile cannot read (the key and value
        named); no ``[ZValue = N]`` sections (a montage or frame-set ``.mdoc`` has other ones);
        ZValues that are not 0..N-1 once each; a section without ``TiltAngle``; a negative or
        non-finite dose.
    """
    from mdocfile.data_models import Mdoc

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        with _quiet_mdocfile():
            doc = Mdoc.from_file(str(p))
    except (ValueError, TypeError, UnicodeDecodeError) as exc:  # pydantic's ValidationError is a ValueError
        raise InputError(f"{p}: not a readable SerialEM .mdoc ({_first_error(exc)})") from None
    sections = list(doc.section_data)
    if not sections or any(s.ZValue is None for s in sections):
        other = [s for s in sections if s.MontSection is not None or s.FrameSet is not None]
        what = "montage or frame-set sections" if other else "no [ZValue = N] sections"
        raise InputError(f"{p}: {what}; a tilt-series .mdoc has one [ZValue = N] section per image")
    z = [int(s.ZValue) for s in sections]
    if sorted(z) != list(range(len(z))):
        dup = sorted({v for v in z if z.count(v) > 1})
        why = f"ZValue {dup[0]} occurs twice" if dup else f"ZValues {min(z)}..{max(z)} are not 0..{len(z) - 1}"
        raise InputError(f"{p}: {why}; each image of the stack needs one [ZValue = N] section, N from 0")
    sections = [sections[i] for i in np.argsort(z)]
    missing = [i for i, s in enumerate(sections) if s.TiltAngle is None]
    if missing:
        raise InputError(f"{p}: no TiltAngle in [ZValue = {missing[0]}] ({len(missing)} of "
                         f"{len(sections)} sections lack one); give the angles in an IMOD .tlt instead "
                         "(--angles-file, or angles_file in a run config)")
    notices: list[str] = []
    rank, order_from = _acquisition_order(sections, p, notices)
    dose = _per_section(sections, "ExposureDose", p, notices)
    prior = _per_section(sections, "PriorRecordDose", p, notices)
    px = doc.global_data.PixelSpacing
    if px is None or not px > 0:
        spacing = {float(s.PixelSpacing) for s in sections if s.PixelSpacing}
        px = spacing.pop() if len(spacing) == 1 else None
    return MdocTilts(p, np.asarray([s.TiltAngle for s in sections], np.float64), rank, order_from,
                     dose, prior, None if px is None else float(px), tuple(notices))


def check_sections(tilts: MdocTilts, info: MrcInfo) -> None:
    """Refuse an ``.mdoc`` whose section count is not the stack's tilt count.

    Raises
    ------
    InputError
        ``FILE.mdoc: 41 sections ([ZValue = 0..40]) but STACK has 40 tilts``.
    """
    n = int(info.shape[0])
    if tilts.n_sections != n:
        raise InputError(f"{tilts.path}: {tilts.n_sections} sections ([ZValue = 0.."
                         f"{tilts.n_sections - 1}]) but {info.path} has {n} tilts; "
                         "is it the .mdoc of this stack?")


def parse_exclude_tilts(text: str | None) -> tuple[int, ...]:
    """``"0,5,7"`` -> ``(0, 5, 7)``: the ``--exclude-tilts`` option (blanks ignored).

    Raises
    ------
    InputError
        A part that is not an integer.
    """
    if text is None or not text.strip():
        return ()
    try:
        return tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise InputError(f"{_OPTION} '{text}': give 0-based tilt indices separated by commas, "
                         "e.g. 0,5,7") from None


def kept_views(exclude: Sequence[int], n_tilts: int, stack: str | Path, *, option: str = _OPTION) -> np.ndarray:
    """The stack positions kept once ``exclude`` is dropped, ascending.

    Parameters
    ----------
    exclude : sequence of int
        0-based positions in the stack's (file, ZValue) order; repeats count once.
    n_tilts : int
        Tilts in the stack.
    stack : path
        The stack, named in the message.
    option : str
        The option or config key named in the message.

    Returns
    -------
    ndarray (K,), int64

    Raises
    ------
    InputError
        An index outside ``0..n_tilts-1``.
    """
    ex = sorted({int(i) for i in exclude})
    bad = [i for i in ex if not 0 <= i < n_tilts]
    if bad:
        raise InputError(f"{stack}: {option} index {bad[0]} is out of range; the stack has "
                         f"{n_tilts} tilts, indices 0..{n_tilts - 1} in file order (0-based)")
    return np.setdiff1d(np.arange(n_tilts, dtype=np.int64), np.asarray(ex, np.int64))


def mdoc_pixel_size(info: MrcInfo, tilts: MdocTilts, override: float | None, *,
                    hint: str = "pass --pixel-size-A") -> tuple[float, tuple[str, ...]]:
    """The pixel size (Å) of a stack with an ``.mdoc``, and a notice saying where it came from.

    ``override`` wins; else the header's (a header with a pixel size wins over the ``.mdoc``,
    with a notice if the two differ by more than 1 %: a stack binned after acquisition keeps
    the unbinned ``PixelSpacing``); else the ``.mdoc``'s ``PixelSpacing`` (with a notice).

    Raises
    ------
    InputError
        Neither has a pixel size, or the header's is anisotropic
        (:func:`~.mrc_header.header_pixel_size`).
    """
    if override is not None:
        return float(override), ()
    mpx = tilts.pixel_size_A
    if info.voxel_size_A[0] > 0 or mpx is None:
        px = header_pixel_size(info, kind="tiltseries", hint=hint)
        if mpx is not None and abs(px - mpx) > PIXEL_RTOL * px:
            note = (f"{info.path}: header pixel size {px:g} Å differs from PixelSpacing "
                    f"{mpx:g} Å in {tilts.path.name}; the header's is used ({hint} to choose)")
            return px, (note,)
        return px, ()
    note = f"{info.path}: the header has no pixel size; {mpx:g} Å from PixelSpacing in {tilts.path.name}"
    return mpx, (note,)


def mdoc_coords(tilts: MdocTilts, file_pos: np.ndarray) -> dict[str, xr.Variable]:
    """Tilt-dim coordinates of the stored tilts, stored tilt ``k`` being image ``file_pos[k]``.

    Returns
    -------
    dict of xarray.Variable
        ``acquisition_index`` (int64, the tilt's 0-based place in the acquisition order of all
        the file's images, excluded ones included), ``section_index`` (int64, its ZValue: the
        0-based position in the file), and when every section has them ``dose_e_per_A2``
        (``ExposureDose``) and ``prior_dose_e_per_A2`` (``PriorRecordDose``), float64 e/Å².
    """
    pos = np.asarray(file_pos, np.int64)
    src = f"{tilts.path.name}"
    out = {
        "acquisition_index": xr.Variable("tilt", tilts.acquisition_index[pos], {
            "long_name": f"position of the tilt in the acquisition order (0-based; from "
                         f"{tilts.order_from} in {src})"}),
        SECTION_INDEX: xr.Variable("tilt", pos.copy(), {
            "long_name": f"position of the tilt in the source file (0-based ZValue of {src})"}),
    }
    if tilts.dose_e_per_A2 is not None:
        out[DOSE] = xr.Variable("tilt", tilts.dose_e_per_A2[pos], {
            "units": "e/Å²", "long_name": f"exposure dose of this tilt (ExposureDose in {src})"})
    if tilts.prior_dose_e_per_A2 is not None:
        out[PRIOR_DOSE] = xr.Variable("tilt", tilts.prior_dose_e_per_A2[pos], {
            "units": "e/Å²",
            "long_name": f"dose of the Record images taken before this tilt (PriorRecordDose in {src})"})
    return out
