"""Picks and true particles as tables of positions (Å): :class:`PointTable` and :func:`read_points`.

:func:`read_points` reads a ``.csv`` (ours: ``class_name, x_A, y_A, z_A``; a picker's
``class_name, x, y, z, x_A, y_A, z_A, size, score``; a CZII submission ``experiment,
particle_type, x, y, z``), a RELION ``.star`` or a SHREC ``particle_locations.txt``; a run
store's table is :func:`faket_dask.stages.scoring_truth.truth_from_store`, and
:func:`faket_dask.stages.scoring.score_files` reconciles and scores the two.

Frames (``docs/scoring.md``): ``corner`` = Å from the volume's corner, voxel ``i`` at
``(i + 0.5) · pixel`` (our ``x_A``); ``centred`` = Å from the specimen centre (RELION 5's
``rlnCenteredCoordinate*Angst``, our ``x_centred_A``). Voxel positions become ``corner`` with
``pixel_size_A``; CZII/copick Å (voxel ``i`` at ``i · spacing``) become ``corner`` by adding half
a voxel. Picks and truth are compared in ``corner`` when both have it, else in ``centred``
(:data:`FRAMES`, in that order).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..store.layout import tomo_name

#: Suffixes :func:`read_points` reads.
POINT_FORMATS = (".csv", ".star", ".txt")
#: Columns naming a row's class, first found wins.
CLASS_COLUMNS = ("class_name", "particle_type", "rlnClassName", "class")
#: Columns naming a row's tomogram, first found wins (integers n mean ``tomo_NNN``).
TOMO_COLUMNS = ("tomo", "tomo_name", "rlnTomoName", "experiment", "run_name", "run")
#: The frames of positions, in the order of preference for comparing picks and truth.
FRAMES = ("corner", "centred")


@dataclass
class OccupancySource:
    """Where the occupancy ids of one tomogram's true particles are (a run store's specimen)."""

    store: str
    tomo: int
    name: str
    shape_zyx: tuple[int, int, int]
    pixel_size_A: float
    #: xyz Å added to a position of each frame to get Å from the specimen volume's corner
    shift: dict[str, np.ndarray]
    #: occupancy id -> row of the truth table
    rows: dict[int, int]


@dataclass
class PointTable:
    """Positions (Å) of picks or true particles, with their classes, tomograms and radii."""

    source: str
    class_name: np.ndarray | None                 # str (M,); None when the file has only class ids
    frames: dict[str, np.ndarray]                 # frame -> (M, 3) xyz Å
    tomo: np.ndarray | None = None                # str (M,), None: not given
    radius_A: np.ndarray | None = None
    class_id: np.ndarray | None = None
    tomograms: list[str] | None = None            # the tomograms a run store truth covers
    occupancy: list[OccupancySource] = field(default_factory=list)

    def __len__(self) -> int:
        return len(next(iter(self.frames.values()))) if self.frames else 0

    def select(self, mask: np.ndarray) -> PointTable:
        """The rows where ``mask`` is true (an occupancy source keeps the rows it still maps)."""
        mask = np.asarray(mask, dtype=bool)
        new_row = np.cumsum(mask) - 1
        occ = [replace(o, rows={i: int(new_row[r]) for i, r in o.rows.items() if mask[r]})
               for o in self.occupancy]
        pick = (lambda a: None if a is None else a[mask])
        return replace(self, class_name=pick(self.class_name), frames={k: v[mask] for k, v in self.frames.items()},
                       tomo=pick(self.tomo), radius_A=pick(self.radius_A), class_id=pick(self.class_id),
                       occupancy=occ)


def _tomo_label(v) -> str:
    s = str(v).strip()
    try:
        f = float(s)
    except ValueError:
        return s
    return tomo_name(int(f)) if f.is_integer() and f >= 0 else s


def _numbers(path: Path, df, cols: Sequence[str]) -> np.ndarray:
    import pandas as pd

    try:
        a = np.stack([pd.to_numeric(df[c]).to_numpy(dtype=np.float64) for c in cols], axis=1) if len(df) \
            else np.zeros((0, len(cols)))
    except (ValueError, TypeError):
        raise InputError(f"{path}: columns {', '.join(cols)} must be numbers") from None
    if not np.all(np.isfinite(a)):
        raise InputError(f"{path}: columns {', '.join(cols)} have empty or non-finite values")
    return a


def _need_pixel(path: Path, what: str) -> InputError:
    return InputError(f"{path}: positions only in {what}; give --pixel-size-A (the voxel size in Å)")


def _from_frame(path: Path, df, *, pixel_size_A: float | None, classes: Sequence[str] = CLASS_COLUMNS,
                tomos: Sequence[str] = TOMO_COLUMNS) -> PointTable:
    """A PointTable from a DataFrame (CSV columns or a STAR block)."""
    cols = set(df.columns)
    frames: dict[str, np.ndarray] = {}
    corner, centred = ("x_A", "y_A", "z_A"), ("x_centred_A", "y_centred_A", "z_centred_A")
    star_centred = ("rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst")
    star_voxels = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
    if set(corner) <= cols:
        frames["corner"] = _numbers(path, df, corner)
    for c3 in (centred, star_centred):
        if set(c3) <= cols:
            frames["centred"] = _numbers(path, df, c3)
            break
    czii = "particle_type" in cols and "class_name" not in cols     # a CZII submission: x, y, z in Å
    if "corner" not in frames:
        for c3 in (("x", "y", "z"), star_voxels):
            if not set(c3) <= cols:
                continue
            xyz = _numbers(path, df, c3)
            if pixel_size_A is not None:
                px = float(pixel_size_A)
                frames["corner"] = xyz + 0.5 * px if (czii and c3[0] == "x") else (xyz + 0.5) * px
            elif not frames:
                raise _need_pixel(path, "CZII/copick Å (voxel i at i · spacing)" if czii and c3[0] == "x"
                                  else f"voxels ({', '.join(c3)})")
            break
    if not frames:
        raise InputError(f"{path}: no positions (columns x_A, y_A, z_A; x, y, z; or RELION "
                         "rlnCenteredCoordinate*Angst / rlnCoordinate*)")
    names = ids = None
    for c in classes:
        if c in cols:
            names = np.array([str(v).strip() for v in df[c]], dtype=object)
            break
    for c in ("class_id", "rlnClassNumber"):
        if c in cols:
            ids = _numbers(path, df, (c,))[:, 0].astype(np.int64)
            break
    if names is None and ids is None:
        raise InputError(f"{path}: no class column ({', '.join(classes)}, class_id or rlnClassNumber)")
    tomo = None
    for c in tomos:
        if c in cols:
            tomo = np.array([_tomo_label(v) for v in df[c]], dtype=object)
            break
    radius = _numbers(path, df, ("radius_A",))[:, 0] if "radius_A" in cols else None
    return PointTable(str(path), names, frames, tomo=tomo, radius_A=radius, class_id=ids)


def _read_csv(path: Path):
    import pandas as pd

    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: empty file (a CSV needs at least its header line)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None


def _read_star(path: Path):
    import starfile

    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as e:  # noqa: BLE001 - starfile raises anything on a malformed file
        raise InputError(f"{path}: not a readable STAR file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    frames = {k: v for k, v in blocks.items() if hasattr(v, "columns")}
    if "particles" in frames:
        return frames["particles"]
    for df in frames.values():
        if {"rlnCoordinateX", "rlnCenteredCoordinateXAngst"} & set(df.columns):
            return df
    raise InputError(f"{path}: not a readable STAR file (no data block with rlnCoordinateX or "
                     "rlnCenteredCoordinateXAngst)")


def _read_shrec(path: Path, pixel_size_A: float | None) -> PointTable:
    names, xyz = [], []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a SHREC particle list (not text)") from None
    for n, line in enumerate(lines, 1):
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        try:
            if len(f) < 4:
                raise ValueError
            p = [float(v) for v in f[1:4]]
            if not all(np.isfinite(p)):
                raise ValueError
        except ValueError:
            raise InputError(f"{path}:{n}: not a SHREC particle line 'class x y z [angles]': {line.strip()[:60]!r}") from None
        names.append(f[0])
        xyz.append(p)
    if pixel_size_A is None:
        raise _need_pixel(path, "voxels (SHREC particle_locations.txt)")
    a = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    return PointTable(str(path), np.array(names, dtype=object), {"corner": (a + 0.5) * float(pixel_size_A)})


def read_points(path: str | Path, *, pixel_size_A: float | None = None) -> PointTable:
    """Read picks or true particles from a ``.csv``, RELION ``.star`` or SHREC ``.txt`` file.

    * Classes: column ``class_name`` (ours), ``particle_type`` (CZII), ``rlnClassName`` or
      ``class``; else class ids (``class_id``, ``rlnClassNumber``), named later from the truth's ids.
    * Positions: ``x_A, y_A, z_A`` (corner Å), ``x_centred_A, ...`` or RELION 5's
      ``rlnCenteredCoordinate{X,Y,Z}Angst`` (centred Å); without corner Å, ``x, y, z`` or
      ``rlnCoordinate{X,Y,Z}`` are voxels (centre of voxel ``i`` at ``i``) — in a CZII submission
      (``particle_type`` and no ``class_name``) ``x, y, z`` are Å with voxel ``i`` at ``i · spacing``
      — and need ``pixel_size_A``. SHREC: ``class x y z [angles]`` per line, voxels.
    * Tomograms: column ``tomo``, ``tomo_name``, ``rlnTomoName``, ``experiment``, ``run_name`` or
      ``run`` (an integer ``n`` means ``tomo_NNN``). Radii: ``radius_A``.

    Raises
    ------
    InputError
        Missing file, a format that cannot be read, no class or position columns, non-numeric
        positions, voxel-only positions without ``pixel_size_A``.
    """
    path = Path(path)
    if pixel_size_A is not None and not (np.isfinite(pixel_size_A) and pixel_size_A > 0):
        raise InputError(f"--pixel-size-A must be > 0, got {pixel_size_A}")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix not in POINT_FORMATS:
        raise InputError(f"{path}: cannot read particles from this file (use .csv, RELION .star or SHREC "
                         ".txt; a run store only as the truth)")
    if suffix == ".txt":
        return _read_shrec(path, pixel_size_A)
    df = _read_csv(path) if suffix == ".csv" else _read_star(path)
    return _from_frame(path, df, pixel_size_A=pixel_size_A)
