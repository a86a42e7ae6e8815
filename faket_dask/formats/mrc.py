"""MRC2014 and IMOD ``.tlt`` I/O that never holds a whole stack in memory.

Reading: :class:`MrcArray` maps only the requested slice (a fresh ``np.memmap`` per access,
released afterwards), so a Dask graph over it reads chunk by chunk and a worker's RSS stays
bounded by the chunks in flight, not by the file size. It pickles as a path, so workers open
the file themselves.

Writing: :func:`write_mrc` writes the header with mrcfile, then streams blocks with plain file
writes (not a writable memmap, whose dirty pages would count against RSS) into ``DEST.part``,
fills the header statistics from running sums, and renames to ``DEST`` only on success.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import mrcfile.constants
import mrcfile.utils
import numpy as np

from ..errors import InputError, OutputExistsError

HEADER_BYTES = 1024


@dataclass(frozen=True)
class MrcInfo:
    """What the header of an MRC file says."""

    path: Path
    shape: tuple[int, ...]
    file_dtype: np.dtype
    data_offset: int
    voxel_size_A: tuple[float, float, float]  # (x, y, z)
    is_image_stack: bool


def read_info(path: str | Path) -> MrcInfo:
    """Read and check the header of an MRC file (data not read).

    Raises
    ------
    InputError
        Missing or unreadable file, not an MRC file, corrupt header, or truncated data.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not an MRC file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: not readable (permission denied)")
    try:
        with mrcfile.open(p, mode="r", header_only=True, permissive=False) as mrc:
            header = mrc.header
            shape = tuple(int(s) for s in mrcfile.utils.data_shape_from_header(header))
            dtype = mrcfile.utils.data_dtype_from_header(header)
            offset = HEADER_BYTES + int(header.nsymbt)
            vs = mrc.voxel_size
            voxel = (float(vs.x), float(vs.y), float(vs.z))
            stack = int(header.ispg) == mrcfile.constants.IMAGE_STACK_SPACEGROUP
    except (ValueError, OSError, EOFError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{p}: not a valid MRC file ({msg})") from None
    needed = offset + int(np.prod(shape)) * dtype.itemsize
    size = p.stat().st_size
    if size < needed:
        raise InputError(f"{p}: truncated MRC file ({size} bytes, header promises {needed})")
    if dtype.kind == "c":
        raise InputError(f"{p}: complex MRC data (mode {dtype}) is not supported")
    return MrcInfo(p, shape, dtype, offset, voxel, stack)


class MrcArray:
    """A lazily read, picklable, array-like view of an MRC file's data as float32.

    Each ``__getitem__`` maps the file, copies the slice out and unmaps, so nothing stays
    resident. Suitable for ``dask.array.from_array(MrcArray(path), chunks=...)``.
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
            return np.array(mm[key], dtype=np.float32)
        finally:
            del mm

    def iter_blocks(self, rows: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)`` over the first axis, ``rows`` planes at a time."""
        for start in range(0, self.shape[0], rows):
            yield start, self[start : start + rows]


def check_finite(arr: MrcArray, *, planes_per_block: int | None = None) -> None:
    """Raise :class:`InputError` naming the file and plane if the data hold NaN or inf."""
    if arr.info.file_dtype.kind in "iu":
        return
    plane = int(np.prod(arr.shape[1:])) * 4
    rows = planes_per_block or max(1, (16 * 2**20) // max(plane, 1))
    for start, block in arr.iter_blocks(rows):
        bad = ~np.isfinite(block)
        if bad.any():
            where = start + int(np.argmax(bad.reshape(block.shape[0], -1).any(axis=1)))
            raise InputError(f"{arr.path}: contains NaN or inf values (first in plane {where})")


def read_tlt(path: str | Path) -> np.ndarray:
    """Read an IMOD ``.tlt`` file: one tilt angle (degrees) per line."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    try:
        lines = [ln.strip() for ln in p.read_text().splitlines()]
        angles = np.array([float(ln.split()[0]) for ln in lines if ln], dtype=np.float64)
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{p}: not a tilt-angle file (one number per line expected)") from None
    if angles.size == 0:
        raise InputError(f"{p}: contains no tilt angles")
    if not np.isfinite(angles).all():
        raise InputError(f"{p}: contains NaN or inf angles")
    return angles


def write_tlt(path: str | Path, angles_deg: np.ndarray) -> None:
    """Write an IMOD ``.tlt`` file, one angle (degrees) per line.

    Angles are written in their shortest exact decimal form (``repr``) rather than IMOD's
    usual ``%.2f`` so that a round trip keeps them bit for bit; IMOD reads either.
    """
    text = "".join(f"{float(a)!r}\n" for a in np.asarray(angles_deg))
    Path(path).write_text(text)


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
        Pixel / voxel size in Å written to the header.
    image_stack : bool
        True for a tilt-series (space group 0), False for a volume (space group 1).
    overwrite : bool
        Replace an existing ``dest``.
    """
    dest = check_output(dest, overwrite=overwrite)
    tmp = dest.with_name(dest.name + ".part")
    nz, ny, nx = shape
    try:
        with mrcfile.new_mmap(tmp, shape=shape, mrc_mode=2, fill=None, overwrite=True) as mrc:
            mrc.voxel_size = voxel_size_A
            if image_stack:
                mrc.set_image_stack()
            else:
                mrc.set_volume()
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
