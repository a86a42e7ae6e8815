"""MRC2014 data I/O that never holds a whole stack in memory.

Reading: :class:`MrcArray` maps only the requested slice (a fresh ``np.memmap`` per access,
released afterwards), so a Dask graph over it reads chunk by chunk and a worker's RSS stays
bounded by the chunks in flight, not by the file size. It pickles as a path, so workers open
the file themselves. How a header is read (IMOD mode 0, machine stamps, origin) is
:mod:`faket_dask.formats.mrc_header`; ``.tlt`` angle files are :mod:`faket_dask.formats.tlt`.
Their public names are importable from here too, the one namespace of MRC I/O.

Writing: :func:`write_mrc` writes the header with mrcfile, then streams blocks with plain file
writes (not a writable memmap, whose dirty pages would count against RSS) into ``DEST.part``,
fills the header statistics from running sums, and renames to ``DEST`` only on success.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import mrcfile
import numpy as np

from ..errors import InputError, OutputExistsError
from ..params import MIB
from .mrc_header import (  # noqa: F401 - re-exported: the one namespace of MRC I/O
    HEADER_BYTES,
    IMOD_FLAG_ORIGIN_INVERTED,
    IMOD_FLAG_SIGNED_BYTES,
    IMOD_STAMP,
    VOXEL_RTOL,
    MrcInfo,
    header_pixel_size,
    read_info,
)
from .tlt import ANGLE_ATOL, check_angles, read_tlt, write_tlt  # noqa: F401 - re-exported, as above


class MrcArray:
    """A lazily read, picklable, array-like view of an MRC file's data as float32.

    Each ``__getitem__`` maps the file, copies the slice out and unmaps, so nothing stays
    resident. Suitable for ``dask.array.from_array(MrcArray(path), chunks=...)``. Values are
    the ones IMOD shows: mode-0 bytes are read as ``uint8`` or ``int8`` (+ 128 for IMOD signed
    bytes) by :func:`read_info`'s rules, in the byte order of the header; every supported
    mode (int8, uint8, int16, uint16, float16, float32) is exact in float32.
    """

    def __init__(self, path: str | Path, info: MrcInfo | None = None) -> None:
        self.info = info or read_info(path)
        self.path = self.info.path
        self.shape = self.info.shape
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)

    def __dask_tokenize__(self) -> tuple:
        st = self.path.stat()
        return ("MrcArray", str(self.path.resolve()), st.st_size, st.st_mtime_ns)

    def __getitem__(self, key) -> np.ndarray:
        mm = np.memmap(
            self.path, dtype=self.info.file_dtype, mode="r", offset=self.info.data_offset, shape=self.shape
        )
        try:
            out = np.array(mm[key], dtype=np.float32)
        finally:
            del mm
        if self.info.value_shift:
            out += np.float32(self.info.value_shift)  # int8 + 128: exact in float32
        return out

    def iter_blocks(self, rows: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)`` over the first axis, ``rows`` planes at a time."""
        for start in range(0, self.shape[0], rows):
            yield start, self[start : start + rows]


def _rows_per_block(arr: MrcArray, planes_per_block: int | None) -> int:
    """Planes per streaming block: ``planes_per_block``, else as many float32 planes as fit in
    16 MiB (at least one), so a check's memory does not grow with the plane size."""
    plane = int(np.prod(arr.shape[1:])) * 4
    return planes_per_block or max(1, (16 * MIB) // max(plane, 1))


def check_finite(arr: MrcArray, *, planes_per_block: int | None = None) -> None:
    """Raise :class:`InputError` naming the file and plane if the data hold NaN or inf."""
    if arr.info.file_dtype.kind in "iu":
        return
    for start, block in arr.iter_blocks(_rows_per_block(arr, planes_per_block)):
        bad = ~np.isfinite(block)
        if bad.any():
            where = start + int(np.argmax(bad.reshape(block.shape[0], -1).any(axis=1)))
            # 1-based, as IMOD numbers sections and views
            what = "tilt" if arr.info.is_image_stack else "section"
            raise InputError(f"{arr.path}: contains NaN or inf values (first in {what} "
                             f"{where + 1} of {arr.shape[0]}, counting from 1)")


def check_labels(arr: MrcArray, *, planes_per_block: int | None = None, max_label: int = 255) -> None:
    """Refuse data that are not integer class labels ``0..max_label`` (one streaming pass).

    Parameters
    ----------
    arr : MrcArray
        The class mask, shape ``(z, y, x)``.
    planes_per_block : int, optional
        Planes read at a time (default: 16 MiB of float32).
    max_label : int
        Largest label allowed (255: the store keeps class masks as uint8).

    Raises
    ------
    InputError
        One line naming the file, the first offending value and its ``(z, y, x)`` position:
        NaN/inf, a non-integer, a negative label or one above ``max_label``.
    """
    p = arr.path
    hint = ""
    if arr.info.mode == 0 and arr.info.mode0:
        hint = f" (mode 0 read as {arr.info.mode0})"
    integer = arr.info.file_dtype.kind in "iu"  # NaN and fractions cannot occur
    rule = f"class labels are integers 0..{max_label}"
    for start, block in arr.iter_blocks(_rows_per_block(arr, planes_per_block)):
        finite = np.isfinite(block)
        checks = [] if integer else [
            (~finite, f"is NaN or inf; {rule}"),
            (finite & (block != np.round(block)), f"is not an integer; {rule}"),
        ]
        checks += [
            (block < 0, f"is negative; {rule}"),
            (block > max_label, f"is above {max_label}; {rule} (stored as uint8)"),
        ]
        for bad, what in checks:
            if bad.any():
                z, y, x = np.unravel_index(int(np.argmax(bad)), block.shape)
                v = float(block[z, y, x])
                raise InputError(f"{p}: class mask value {v:g} at (z={start + z}, y={y}, x={x}) "
                                 f"{what}{hint}")


def check_output(dest: str | Path, *, overwrite: bool) -> Path:
    """Refuse an existing ``dest`` without ``overwrite`` and a missing/unwritable directory."""
    d = Path(dest)
    if d.exists() and not overwrite:
        raise OutputExistsError(f"{d}: exists; pass --overwrite to replace it")
    if d.is_dir():
        raise InputError(f"{d}: is a directory")
    parent = d.absolute().parent
    if not parent.is_dir():
        raise InputError(f"{d}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{d}: directory {parent} is not writable")
    return d


def write_mrc(
    dest: str | Path,
    blocks: Iterator[tuple[tuple[slice, ...], np.ndarray]],
    shape: tuple[int, int, int],
    *,
    voxel_size_A: float,
    image_stack: bool,
    origin_A: tuple[float, float, float] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write float32 MRC2014 data block by block.

    Parameters
    ----------
    dest : path
        Output ``.mrc``.
    blocks : iterator of (index, block)
        ``index`` is a tuple of three slices into ``shape`` (step 1); blocks may come in any
        order but must cover the array exactly once.
    shape : (nz, ny, nx)
        Data shape (tilt or z first).
    voxel_size_A : float
        Pixel / voxel size in Å written to the header: ``mrc.voxel_size`` reads it back in x, y
        and z (for an image stack ``mz = 1``, so ``cella.z`` is one pixel, as IMOD writes it).
    image_stack : bool
        True for a tilt-series (space group 0), False for a volume (space group 1).
    origin_A : (x, y, z), optional
        Header origin in Å (MRC2014 convention); default 0, 0, 0.
    overwrite : bool
        Replace an existing ``dest``.

    Returns
    -------
    Path
        ``dest``.
    """
    dest = check_output(dest, overwrite=overwrite)
    tmp = dest.with_name(dest.name + ".part")
    nz, ny, nx = shape
    try:
        with mrcfile.new_mmap(tmp, shape=shape, mrc_mode=2, fill=None, overwrite=True) as mrc:
            # The stack/volume choice sets mz (1 for a stack, nz for a volume) and the voxel
            # size is stored as cella = m × size, so the space group must be set first.
            if image_stack:
                mrc.set_image_stack()
            else:
                mrc.set_volume()
            mrc.voxel_size = voxel_size_A
            if origin_A is not None:
                mrc.header.origin = tuple(float(o) for o in origin_A)
            offset = HEADER_BYTES + int(mrc.header.nsymbt)
        n = 0
        s1 = s2 = 0.0
        lo, hi = np.inf, -np.inf
        with open(tmp, "r+b") as f:
            for index, block in blocks:
                block = np.ascontiguousarray(block, dtype="<f4")
                z0, y0, x0 = (s.start or 0 for s in index)
                if x0 != 0 or block.shape[2] != nx:
                    raise ValueError("write_mrc: blocks must span whole rows (x)")
                for k in range(block.shape[0]):
                    f.seek(offset + ((z0 + k) * ny + y0) * nx * 4)
                    f.write(block[k].tobytes())
                b64 = block.astype(np.float64)
                n += block.size
                s1 += float(b64.sum())
                s2 += float((b64 * b64).sum())
                lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
        with mrcfile.mmap(tmp, mode="r+") as mrc:
            mean = s1 / max(n, 1)
            mrc.header.dmin, mrc.header.dmax, mrc.header.dmean = lo, hi, mean
            mrc.header.rms = float(np.sqrt(max(s2 / max(n, 1) - mean * mean, 0.0)))
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return dest
