"""MRC2014 headers as IMOD and SerialEM write them: the reading rules in one place.

:func:`read_info` reads and checks an MRC header (no data) into an :class:`MrcInfo`: the shape,
dtype and byte order to map the data with, the voxel size and origin in Å, and notices on what
was assumed. :func:`header_pixel_size` turns it into the one pixel size the data model needs.

Header rules (details and sources in ``docs/formats.md``):

- Mode 0 (8-bit) follows IMOD ("The MRC file format used by IMOD", ``mrc_format.txt``): with
  the IMOD stamp (1146047817 at byte 152), bit 0 of ``imodFlags`` (byte 156) set means signed
  bytes shown as ``stored + 128``, clear means unsigned bytes. Without the stamp MRC2014 says
  signed int8; the header's ``dmin``/``dmax`` overrule that when only unsigned bytes fit them.
- Machine stamps IMOD and SerialEM write (``0x44 0x20 0x20 0x20``, ``0x44 0x00 0x00 0x00``)
  are read: the byte order comes from the stamp's first byte (MRC2014: ``0x44`` little-endian,
  ``0x11`` big-endian).
- ``imodFlags`` bit 2 (origin stored with inverted sign) is undone, so ``origin_A`` is always
  the MRC2014 origin.
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mrcfile
import mrcfile.constants
import mrcfile.utils
import numpy as np

from ..errors import InputError

#: Size of the MRC2014 main header (bytes); the extended header (``nsymbt`` bytes) follows it.
HEADER_BYTES = 1024

#: IMOD's header stamp (bytes 152-155, int32): "file was created by IMOD or other software
#: that uses bit flags in the following field" (IMOD ``mrc_format.txt``).
IMOD_STAMP = 1146047817
#: ``imodFlags`` bit 0: "bytes are stored as signed" (IMOD ``mrc_format.txt``).
IMOD_FLAG_SIGNED_BYTES = 1
#: ``imodFlags`` bit 2: "origin is stored with sign inverted" (IMOD ``mrc_format.txt``).
IMOD_FLAG_ORIGIN_INVERTED = 4
# mrcfile 1.5 has no imod_stamp/imod_flags fields: they sit inside its 84-byte ``extra2``
# field (file bytes 112-195), at these offsets into it.
_EXTRA2_START = 112
_IMOD_STAMP_AT = 152 - _EXTRA2_START
#: Relative tolerance for "x and y voxel sizes are equal" (0.1 %).
VOXEL_RTOL = 1e-3


@dataclass(frozen=True)
class MrcInfo:
    """What the header of an MRC file says, after the IMOD / machine-stamp rules.

    Attributes
    ----------
    path : Path
        The file.
    shape : tuple of int
        Data shape, ``(nz, ny, nx)`` for 3D data.
    file_dtype : numpy.dtype
        dtype the data bytes are mapped with, in the file's byte order: mode 0 is ``uint8``
        when read unsigned, ``int8`` otherwise (see ``value_shift``).
    data_offset : int
        Byte offset of the data block (1024 + extended header).
    voxel_size_A : tuple of float
        ``(x, y, z)`` voxel size in Å, ``cella / (mx, my, mz)``; 0 where the header has none.
    is_image_stack : bool
        Space group 0 (MRC2014: a stack of 2D images).
    mode : int
        MRC mode number.
    byte_order : {"<", ">"}
        Byte order of header and data.
    value_shift : int
        Added to every stored value (128 for IMOD signed bytes, otherwise 0).
    mode0 : str or None
        For mode 0, how the bytes were read and why (recorded as attr ``mrc_mode0``).
    origin_A : tuple of float
        ``(x, y, z)`` header origin in Å (MRC2014 sign convention).
    imod_flags : int or None
        ``imodFlags`` when the IMOD stamp is present, else None.
    notices : tuple of str
        One-line notices ``"FILE: ..."`` on what was assumed (printed by ``import-mrc``).
    """

    path: Path
    shape: tuple[int, ...]
    file_dtype: np.dtype
    data_offset: int
    voxel_size_A: tuple[float, float, float]  # (x, y, z)
    is_image_stack: bool
    mode: int = 2
    byte_order: str = "<"
    value_shift: int = 0
    mode0: str | None = None
    origin_A: tuple[float, float, float] = (0.0, 0.0, 0.0)
    imod_flags: int | None = None
    notices: tuple[str, ...] = field(default=())


def _first_line(exc: BaseException | Warning) -> str:
    s = str(exc)
    return s.splitlines()[0] if s else type(exc).__name__


def _stamp_byte_order(machst: np.ndarray) -> str | None:
    """Byte order from a machine stamp's first byte (MRC2014: 0x44 little, 0x11 big)."""
    first = int(machst[0])
    return {0x44: "<", 0x11: ">"}.get(first)


def _open_header(p: Path) -> tuple[np.recarray, list[str]]:
    """The header of ``p`` (a copy, in the right byte order) and notices about the stamp.

    A strict mrcfile open is tried first. If it fails *only* because the machine stamp is not
    one of MRC2014's three, the header is read again with mrcfile's permissive mode, the byte
    order is taken from the stamp's first byte, and any other problem is still an error.
    """
    try:
        with mrcfile.open(p, mode="r", header_only=True, permissive=False) as mrc:
            return mrc.header.copy(), []
    except (ValueError, OSError, EOFError) as exc:
        strict_error = exc
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with mrcfile.open(p, mode="r", header_only=True, permissive=True) as mrc:
                header = mrc.header.copy()
    except (ValueError, OSError, EOFError):
        raise InputError(f"{p}: not a valid MRC file ({_first_line(strict_error)})") from None
    machst = np.asarray(header.machst)
    pretty = mrcfile.utils.pretty_machine_stamp(machst)
    try:
        mrcfile.utils.byte_order_from_machine_stamp(machst)
        stamp_ok = True
    except ValueError:
        stamp_ok = False
    if stamp_ok:  # the strict open failed on something else: report that
        raise InputError(f"{p}: not a valid MRC file ({_first_line(strict_error)})")
    # mrcfile's stamp complaints are expected here; anything else (no "MAP " id, short
    # extended header) is a real fault.
    for w in caught:
        msg = str(w.message)
        if "machine stamp" in msg.lower() or "apparent byte order" in msg:
            continue
        raise InputError(f"{p}: not a valid MRC file ({_first_line(w.message)})")
    order = _stamp_byte_order(machst)
    if order is None:
        raise InputError(f"{p}: not a valid MRC file (machine stamp {pretty} gives no byte order; "
                         "MRC2014 stamps start with 0x44 (little-endian) or 0x11 (big-endian))")
    header.dtype = header.dtype.newbyteorder(order)
    kind = "little" if order == "<" else "big"
    return header, [f"{p}: non-standard machine stamp {pretty} (as IMOD/SerialEM write it); "
                    f"read as {kind}-endian from its first byte"]


def _imod_stamp_flags(header: np.recarray) -> int | None:
    """``imodFlags`` if the header carries the IMOD stamp, else None (IMOD ``mrc_format.txt``)."""
    names = header.dtype.names
    if "imod_stamp" in names and "imod_flags" in names:  # newer mrcfile releases
        stamp, flags = int(header.imod_stamp), int(header.imod_flags)
    else:
        raw = bytes(np.asarray(header.extra2).tobytes())[_IMOD_STAMP_AT : _IMOD_STAMP_AT + 8]
        i4 = np.dtype("i4").newbyteorder(header.mode.dtype.byteorder)
        stamp, flags = (int(v) for v in np.frombuffer(raw, dtype=i4))
    return flags if stamp == IMOD_STAMP else None


def _mode0_rule(p: Path, header: np.recarray, imod_flags: int | None) -> tuple[str, str, str | None]:
    """How to read mode-0 bytes: ``(kind, why, notice)``, kind in unsigned / signed / signed+128.

    Rules: IMOD ``mrc_format.txt`` ("0 = unsigned or signed bytes depending on flag in
    imodStamp"; signed bytes are shifted by 128 to 0..255 on reading) when the IMOD stamp is
    present; otherwise MRC2014 ("0 8-bit signed integer"), unless the header's ``dmin``/``dmax``
    only fit unsigned bytes (a writer that meant 0..255 but left no stamp).
    """
    if imod_flags is not None:
        if imod_flags & IMOD_FLAG_SIGNED_BYTES:
            return "signed+128", "signed bytes + 128 (IMOD stamp, signed flag set)", None
        return "unsigned", "unsigned (IMOD stamp, signed flag clear)", None
    dmin, dmax = float(header.dmin), float(header.dmax)
    rng = f"header dmin {dmin:g}, dmax {dmax:g}"
    if np.isfinite([dmin, dmax]).all() and 0 <= dmin <= dmax and 127 < dmax <= 255:
        why = f"unsigned (no IMOD stamp; {rng} fit only unsigned bytes)"
        return "unsigned", why, f"{p}: mode 0 without IMOD stamp read as unsigned bytes 0..255 ({rng})"
    if np.isfinite([dmin, dmax]).all() and -128 <= dmin <= dmax <= 127:
        note = f"{rng} agree"
    else:
        note = f"{rng} do not help"
    why = f"signed (no IMOD stamp; MRC2014 default, {note})"
    return "signed", why, f"{p}: mode 0 without IMOD stamp read as signed bytes -128..127 (MRC2014; {note})"


def read_info(path: str | Path) -> MrcInfo:
    """Read and check the header of an MRC file (data not read).

    Parameters
    ----------
    path : path
        MRC2014 file (modes 0, 1, 2, 6, 12; any byte order).

    Returns
    -------
    MrcInfo
        Shape, dtype and byte order to map the data with, voxel size (Å), origin (Å), the
        mode-0 interpretation and notices (see the module docstring for the rules).

    Raises
    ------
    InputError
        Missing or unreadable file, not an MRC file, corrupt header (a machine stamp with no
        byte order, an unknown mode, permuted axes), complex data, or truncated data. One line
        naming the file.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not an MRC file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: not readable (permission denied)")
    header, notices = _open_header(p)
    try:
        shape = tuple(int(s) for s in mrcfile.utils.data_shape_from_header(header))
        dtype = mrcfile.utils.data_dtype_from_header(header)
    except ValueError as exc:
        raise InputError(f"{p}: not a valid MRC file ({_first_line(exc)})") from None
    if any(s < 1 for s in shape):
        raise InputError(f"{p}: not a valid MRC file (data shape {shape})")
    mode = int(header.mode)
    if dtype.kind == "c":
        raise InputError(f"{p}: complex MRC data (mode {mode}) is not supported")
    axes = (int(header.mapc), int(header.mapr), int(header.maps))
    if sorted(axes) == [1, 2, 3] and axes != (1, 2, 3):
        # a permuted axis order would silently transpose the data; IMOD needs 1, 2, 3 as well
        raise InputError(f"{p}: axis order mapc/mapr/maps = {axes} is not supported "
                         "(only 1, 2, 3: columns x, rows y, sections z)")
    bo = header.mode.dtype.byteorder  # "=" is the machine's own order
    order = ">" if bo == ">" or (bo == "=" and sys.byteorder == "big") else "<"
    offset = HEADER_BYTES + int(header.nsymbt)
    imod_flags = _imod_stamp_flags(header)
    shift, mode0 = 0, None
    if mode == 0:
        kind, mode0, notice = _mode0_rule(p, header, imod_flags)
        if kind == "unsigned":
            dtype = np.dtype(np.uint8)
        elif kind == "signed+128":
            shift = 128
        if notice:
            notices.append(notice)
    with np.errstate(divide="ignore", invalid="ignore"):
        # exactly mrcfile's ``voxel_size`` (cella / m, kept as float32), on the header in the
        # byte order decided above
        vs = np.array([header.cella.x / header.mx, header.cella.y / header.my,
                       header.cella.z / header.mz], dtype=np.float32)
    voxel = tuple(float(v) if np.isfinite(v) else 0.0 for v in vs)
    origin = np.array([header.origin.x, header.origin.y, header.origin.z], np.float64)
    if imod_flags is not None and imod_flags & IMOD_FLAG_ORIGIN_INVERTED:
        origin = -origin
    if not np.isfinite(origin).all():
        notices.append(f"{p}: header origin {tuple(origin.tolist())} is not finite; using 0, 0, 0")
        origin = np.zeros(3)
    stack = int(header.ispg) == mrcfile.constants.IMAGE_STACK_SPACEGROUP
    needed = offset + int(np.prod(shape)) * dtype.itemsize
    size = p.stat().st_size
    if size < needed:
        raise InputError(f"{p}: truncated MRC file ({size} bytes, header promises {needed})")
    return MrcInfo(
        p, shape, dtype, offset, voxel, stack, mode=mode, byte_order=order, value_shift=shift,
        mode0=mode0, origin_A=tuple(float(o) + 0.0 for o in origin), imod_flags=imod_flags,
        notices=tuple(notices),
    )


def header_pixel_size(info: MrcInfo, *, kind: str, hint: str = "pass --pixel-size-A") -> float:
    """The pixel size (Å) an MRC header gives, refusing none and anisotropic ones.

    Parameters
    ----------
    info : MrcInfo
        The file's header.
    kind : {"tiltseries", "volume"}
        For a volume (not an image stack) z must match x as well; a tilt-series' z is the tilt
        axis, whose "spacing" carries no meaning (and old exports wrote tilts × pixel there).
    hint : str
        What fixes it, appended to the message (``"pass --pixel-size-A"`` on the command line).

    Returns
    -------
    float
        ``voxel_size_A[0]`` (x), in Å.

    Raises
    ------
    InputError
        No pixel size (0 Å, as ``mrcfile.write`` leaves it), or x and y (or, for a volume, z)
        voxel sizes differing by more than 0.1 % (the data model has one pixel size).
    """
    vx, vy, vz = info.voxel_size_A
    p = info.path
    if not vx > 0:
        raise InputError(f"{p}: header has no pixel size (0 Å); {hint}")
    if abs(vy - vx) > VOXEL_RTOL * vx:
        raise InputError(f"{p}: anisotropic pixel size in the header (x {vx:g} Å, y {vy:g} Å); "
                         f"one pixel size is needed, {hint} to override")
    if kind == "volume" and not info.is_image_stack and vz > 0 and abs(vz - vx) > VOXEL_RTOL * vx:
        raise InputError(f"{p}: anisotropic voxel size in the header (x {vx:g} Å, z {vz:g} Å); "
                         f"one voxel size is needed, {hint} to override")
    return float(vx)
