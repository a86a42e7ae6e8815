"""Reading picks and true particles for scoring, and writing the score (``faket-dask score``).

The rules are :mod:`faket_dask.kernels.scoring` (no I/O there); this module turns files and run
stores into positions in one frame of Å and writes the results:

* :func:`read_points`: a ``.csv`` (ours: ``class_name, x_A, y_A, z_A``; a picker's ``class_name,
  x, y, z, x_A, y_A, z_A, size, score``; a CZII submission ``experiment, particle_type, x, y,
  z``), a RELION ``.star`` or a SHREC ``particle_locations.txt``.
* :func:`truth_from_store`: the particle table of a run store (specimen or tomogram grid) with,
  for SHREC's rule, the specimen's occupancy volume.
* :func:`score_files`: both, reconciled (classes, tomograms, frame, radii), scored.
* :func:`check_outputs`, :func:`write_report`, :func:`write_confusion_csv`: the outputs.

Frames (``docs/scoring.md``): ``corner`` = Å from the volume's corner, voxel ``i`` at
``(i + 0.5) · pixel`` (our ``x_A``); ``centred`` = Å from the specimen centre (RELION 5's
``rlnCenteredCoordinate*Angst``, our ``x_centred_A``). Voxel positions become ``corner`` with
``pixel_size_A``; CZII/copick Å (voxel ``i`` at ``i · spacing``) become ``corner`` by adding half
a voxel. Picks and truth are compared in ``corner`` when both have it, else in ``centred``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputExistsError
from ..kernels.scoring import (
    HIT_BACKGROUND,
    HIT_BY_RADIUS,
    METRICS,
    ScoreResult,
    cross_neighbours,
    pick_voxels,
    score_picks,
)
from ..store.layout import specimen_group, tomo_name

#: Suffixes :func:`read_points` reads.
POINT_FORMATS = (".csv", ".star", ".txt")
#: Columns naming a row's class, first found wins.
CLASS_COLUMNS = ("class_name", "particle_type", "rlnClassName", "class")
#: Columns naming a row's tomogram, first found wins (integers n mean ``tomo_NNN``).
TOMO_COLUMNS = ("tomo", "tomo_name", "rlnTomoName", "experiment", "run_name", "run")
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


# -- reading -----------------------------------------------------------------------------------
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


def truth_from_store(store: str | Path, tomos: Sequence[int] = (0,), *, grid: str = "specimen") -> PointTable:
    """The particle tables of tomograms ``tomos`` of a run store as one truth table.

    Rows come from :func:`faket_dask.stages.particles.open_particles` (``grid="tomogram"``:
    ``tomo_NNN/labels_particles``, positions from the tomogram's corner); the radius is the
    table's ``radius_A``. Where the specimen has an ``occupancy`` volume and the table is the
    stored one (not derived from masks), SHREC's occupancy rule can be used: occupancy id =
    the table's ``particle`` coordinate (table row + 1).
    """
    from ..store import has_var
    from .particles import open_particles

    names, corner, centred, radius, tnames, occ, cids = [], [], [], [], [], [], []
    have_centred = True
    row0 = 0
    for t in tomos:
        if int(t) < 0:
            raise InputError(f"--tomo must be >= 0, got {t}")
        p = open_particles(store, int(t), grid=grid)  # type: ignore[arg-type]
        n = p.sizes.get("particle", 0)
        name = tomo_name(int(t))
        px = p.attrs.get("pixel_size_A")
        if n and "x_A" in p:
            c = np.stack([p[a].values for a in ("x_A", "y_A", "z_A")], 1).astype(np.float64)
        elif n and px is not None:
            c = (np.stack([p[a].values for a in "xyz"], 1).astype(np.float64) + 0.5) * float(px)
        elif n:
            raise InputError(f"{store}: {name}'s particle table has no pixel size")
        else:
            c = np.zeros((0, 3))
        if n and "x_centred_A" in p:
            centred.append(np.stack([p[a].values for a in ("x_centred_A", "y_centred_A", "z_centred_A")], 1))
        else:
            have_centred = have_centred and n == 0
            centred.append(np.zeros((n, 3)))
        corner.append(c)
        names.append(np.asarray(p["class_name"].values).astype(str).astype(object) if n else np.zeros(0, object))
        radius.append(np.asarray(p["radius_A"].values, np.float64) if n else np.zeros(0))
        cids.append(np.asarray(p["class_id"].values, np.int64) if n else np.zeros(0, np.int64))
        tnames.append(np.full(n, name, dtype=object))
        shape = p.attrs.get("volume_shape_zyx")
        spx = p.attrs.get("specimen_pixel_size_A", px)
        if (n and shape is not None and not p.attrs.get("derived_from") and "x_centred_A" in p
                and has_var(store, f"{specimen_group(int(t))}/occupancy")):
            from ..store import open as open_group

            sshape = tuple(int(s) for s in open_group(store, specimen_group(int(t)))["occupancy"].shape)
            half = np.asarray(sshape[::-1], np.float64) / 2.0 * float(spx)   # specimen corner - centred (xyz)
            to_centred = np.median(centred[-1] - c, axis=0)                    # this grid's corner -> centred
            ids = np.asarray(p["particle"].values, np.int64)
            occ.append(OccupancySource(str(store), int(t), name, sshape, float(spx),
                                       {"centred": half, "corner": to_centred + half},
                                       {int(i): row0 + k for k, i in enumerate(ids)}))
        row0 += n
    frames = {"corner": np.concatenate(corner) if corner else np.zeros((0, 3))}
    if have_centred:
        frames["centred"] = np.concatenate(centred) if centred else np.zeros((0, 3))
    return PointTable(str(store), np.concatenate(names) if names else np.zeros(0, object), frames,
                      tomo=np.concatenate(tnames) if tnames else np.zeros(0, object),
                      radius_A=np.concatenate(radius) if radius else np.zeros(0),
                      class_id=np.concatenate(cids) if cids else np.zeros(0, np.int64), tomograms=[tomo_name(int(t)) for t in tomos], occupancy=occ)


def occupancy_hits(truth: PointTable, xyz: np.ndarray, pick_tomo: np.ndarray, frame: str) -> tuple[np.ndarray, int]:
    """SHREC'21's lookup: the truth row each pick's voxel belongs to in the dilated occupancy.

    Per tomogram with an :class:`OccupancySource`: the pick's voxel in the specimen volume
    (:func:`~faket_dask.kernels.scoring.pick_voxels`, clipped into it), the maximum occupancy id
    over it and its 6 face neighbours (:func:`~faket_dask.kernels.scoring.cross_neighbours`), the
    id's row (ids of rows not in the truth, e.g. other classes, and 0 are background). Only the
    voxels needed are read (dask ``vindex``).

    Returns
    -------
    (ndarray (M,) int64, int)
        Rows (:data:`HIT_BACKGROUND`; :data:`HIT_BY_RADIUS` where the tomogram has no occupancy)
        and the number of picks that lay outside a volume.
    """
    from ..store import open as open_group

    hits = np.full(len(xyz), HIT_BY_RADIUS, dtype=np.int64)
    outside = 0
    for src in truth.occupancy:
        m = np.flatnonzero(pick_tomo == src.name)
        if len(m) == 0:
            continue
        vox, out = pick_voxels(xyz[m] + src.shift[frame], src.pixel_size_A, src.shape_zyx)
        outside += int(out.sum())
        neigh = cross_neighbours(vox, src.shape_zyx).reshape(-1, 3)
        uniq, inv = np.unique(neigh, axis=0, return_inverse=True)
        arr = open_group(src.store, specimen_group(src.tomo))["occupancy"].data
        vals = np.asarray(arr.vindex[uniq[:, 0], uniq[:, 1], uniq[:, 2]].compute(), dtype=np.int64)
        ids = vals[np.asarray(inv).reshape(-1)].reshape(len(m), -1).max(axis=1)
        hits[m] = [src.rows.get(int(i), HIT_BACKGROUND) for i in ids]
    return hits, outside


# -- reconciling and scoring -------------------------------------------------------------------
def _parse_pairs(items: Mapping[str, float] | Sequence[str] | None, option: str) -> dict[str, float]:
    """``["NAME=VALUE", ...]`` (or a mapping) as ``{NAME: float}``."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(k): float(v) for k, v in items.items()}
    out = {}
    for s in items:
        name, sep, value = str(s).rpartition("=")
        try:
            v = float(value)
        except ValueError:
            v = float("nan")
        if not sep or not name.strip() or not np.isfinite(v):
            raise InputError(f"{option} {s!r}: give NAME=NUMBER")
        out[name.strip()] = v
    return out


def _tomograms(picks: PointTable, truth: PointTable, notes: list[str]) -> tuple[PointTable, np.ndarray, np.ndarray]:
    """Each pick's and each true particle's tomogram, and the picks kept (CZII keeps the picks
    of the truth's tomograms only)."""
    t_names = truth.tomograms or (sorted(set(truth.tomo.tolist())) if truth.tomo is not None else None)
    if truth.tomo is None:
        if picks.tomo is not None and len(set(picks.tomo.tolist())) > 1:
            raise InputError(f"{picks.source}: picks in {len(set(picks.tomo.tolist()))} tomograms, but "
                             f"{truth.source} names no tomogram (add a tomo column)")
        return picks, np.full(len(picks), "", object), np.full(len(truth), "", object)
    if picks.tomo is None:
        if len(t_names or []) > 1:
            raise InputError(f"{picks.source}: no tomogram column ({', '.join(TOMO_COLUMNS)}); the truth has "
                             f"{len(t_names or [])} tomograms")
        only = (t_names or [""])[0]
        return picks, np.full(len(picks), only, object), truth.tomo
    keep = np.isin(picks.tomo, list(t_names or []))
    if len(picks) and not keep.any():
        raise InputError(f"{picks.source}: no pick lies in a tomogram of the truth (picks: "
                         f"{', '.join(sorted(set(picks.tomo.tolist()))[:5])}; truth: {', '.join((t_names or [])[:5])})")
    if not keep.all():
        other = sorted(set(picks.tomo[~keep].tolist()))
        notes.append(f"ignored {int((~keep).sum())} picks in tomograms not in the truth: {', '.join(other[:5])}"
                     + (" ..." if len(other) > 5 else ""))
        picks = picks.select(keep)
    return picks, picks.tomo, truth.tomo


def _frame(picks: PointTable, truth: PointTable) -> str:
    for f in FRAMES:
        if f in picks.frames and f in truth.frames:
            return f
    raise InputError(f"{picks.source} has positions in {' and '.join(sorted(picks.frames))} Å, "
                     f"{truth.source} in {' and '.join(sorted(truth.frames))} Å: no common frame "
                     "(give voxel positions with --pixel-size-A, or Å from the volume corner)")


def score_files(
    picks: str | Path,
    truth: str | Path,
    *,
    metric: str = "shrec",
    tomos: Sequence[int] | None = None,
    tomo_grid: bool = False,
    radius: Mapping[str, float] | Sequence[str] | None = None,
    pixel_size_A: float | None = None,
    beta: float = 4.0,
    weights: Mapping[str, float] | Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
) -> tuple[ScoreResult, list[str]]:
    """Read picks and truth, reconcile them and score them (:func:`~faket_dask.kernels.scoring.score_picks`).

    Parameters
    ----------
    picks : path
        ``.csv``, ``.star`` or SHREC ``.txt`` (:func:`read_points`).
    truth : path
        A run store (its particle table, :func:`truth_from_store`) or a file as ``picks``.
    metric : {"shrec", "czii"}
    tomos : list of int, optional
        Tomograms of a run store (default ``[0]``).
    tomo_grid : bool
        The run store's tomogram-grid table (``labels_particles``): positions from the
        reconstructed tomogram's corner, which is where a picker working on it measures.
    radius : mapping or ``["NAME=Å", ...]``, optional
        Class radii replacing the truth's ``radius_A``.
    pixel_size_A : float, optional
        Voxel size of files with voxel positions only.
    beta : float
        β of the per-class F-beta.
    weights : mapping or ``["NAME=w", ...]``, optional
        czii class weights (default 1).
    classes : list of str, optional
        Score these true classes only: other true particles and other picks are dropped (a pick
        on a dropped particle's occupancy counts as background).

    Returns
    -------
    (ScoreResult, list of str)
        The score and notes for the user (picks ignored, picks outside the volume).
    """
    if metric not in METRICS:
        raise InputError(f"--metric must be {' or '.join(METRICS)}, got {metric!r}")
    radius_map = _parse_pairs(radius, "--radius")
    weight_map = _parse_pairs(weights, "--weight")
    if weight_map and metric != "czii":
        raise InputError("--weight applies to --metric czii only")
    bad = [k for k, v in radius_map.items() if v <= 0]
    if bad:
        raise InputError(f"--radius {bad[0]}: the radius must be > 0 Å")
    from ..store import is_store

    tpath = Path(truth)
    if is_store(tpath):
        t = truth_from_store(tpath, list(tomos) if tomos else [0], grid="tomogram" if tomo_grid else "specimen")
    else:
        if tomos or tomo_grid:
            raise InputError(f"{tpath}: --tomo and --tomo-grid apply to a run store truth, not to a file")
        if tpath.is_dir():
            raise InputError(f"{tpath}: not a run store (no zarr.json) and not a particle file")
        t = read_points(tpath, pixel_size_A=pixel_size_A)
        if t.class_name is None:
            raise InputError(f"{tpath}: the truth needs class names (class_name, particle_type or rlnClassName)")
    p = read_points(picks, pixel_size_A=pixel_size_A)
    notes: list[str] = []
    if p.class_name is None:                       # class ids only: named by the truth's ids
        tid = _truth_class_ids(t)
        if tid is None:
            raise InputError(f"{p.source}: has class ids only, and {t.source} has no class ids to name them")
        unknown = sorted(set(p.class_id.tolist()) - set(tid))
        if unknown:
            raise InputError(f"{t.source}: has no class id {', '.join(map(str, unknown))} of {p.source}")
        p = replace(p, class_name=np.array([tid[int(i)] for i in p.class_id], dtype=object))
    t_classes = sorted(set(t.class_name.tolist()))
    if classes:
        unknown = sorted(set(classes) - set(t_classes))
        if unknown:
            raise InputError(f"--classes: {t.source} has no class {', '.join(unknown)} (its classes: {', '.join(t_classes)})")
        t = t.select(np.isin(t.class_name, list(classes)))
        dropped = ~np.isin(p.class_name, list(classes))
        if dropped.any():
            notes.append(f"ignored {int(dropped.sum())} picks of classes not in --classes")
            p = p.select(~dropped)
    unknown = sorted(set(radius_map) - set(t.class_name.tolist()))
    if unknown:
        raise InputError(f"--radius: {t.source} has no class {', '.join(unknown)}")
    r = np.full(len(t), np.nan) if t.radius_A is None else np.asarray(t.radius_A, np.float64).copy()
    for name, v in radius_map.items():
        r[t.class_name == name] = v
    absent = sorted(set(p.class_name.tolist()) - set(t.class_name.tolist()))
    if absent:
        raise InputError(f"{t.source}: has no class {', '.join(absent)} of the picks in {p.source} "
                         f"(its classes: {', '.join(sorted(set(t.class_name.tolist())))})")
    p, ptomo, ttomo = _tomograms(p, t, notes)
    frame = _frame(p, t)
    hits, outside = None, 0
    if metric == "shrec" and t.occupancy and len(p):
        hits, outside = occupancy_hits(t, p.frames[frame], ptomo, frame)
        if outside:
            notes.append(f"{outside} picks lie outside the specimen volume (clipped to its border, as SHREC'21 does)")
    result = score_picks(p.class_name, p.frames[frame], t.class_name, t.frames[frame], r, metric=metric,
                         pick_tomo=ptomo, truth_tomo=ttomo, beta=beta, weights=weight_map or None,
                         hits=hits, outside=outside, labels=(p.source, t.source))
    return result, notes


def _truth_class_ids(t: PointTable) -> dict[int, str] | None:
    if t.class_id is not None and t.class_name is not None:
        return {int(i): str(n) for i, n in zip(t.class_id, t.class_name)}
    return None


# -- outputs -----------------------------------------------------------------------------------
def confusion_png(csv_path: str | Path) -> Path:
    """The figure written beside the confusion CSV (same name, ``.png``)."""
    return Path(csv_path).with_suffix(".png")


def check_outputs(out: str | Path | None, confusion: str | Path | None, *, overwrite: bool) -> None:
    """Refuse outputs that exist (without ``overwrite``), lie in a missing directory, or (the
    confusion matrix) are not ``.csv`` — before anything is read."""
    paths = []
    if out is not None:
        paths.append(Path(out))
    if confusion is not None:
        if Path(confusion).suffix.lower() != ".csv":
            raise InputError(f"--confusion {confusion}: give a .csv path (the figure is written beside it as .png)")
        paths += [Path(confusion), confusion_png(confusion)]
    if len({p.resolve() for p in paths}) < len(paths):
        raise InputError("--out and --confusion must be different files")
    for p in paths:
        if not p.parent.is_dir():
            raise InputError(f"{p}: directory {p.parent} does not exist")
        if p.exists() and not overwrite:
            raise OutputExistsError(f"{p}: exists; pass --overwrite to replace it")


def _atomic_write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.part")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_report(result: ScoreResult, path: str | Path) -> Path:
    """``result.to_dict()`` as indented JSON (``docs/scoring.md`` describes every field)."""
    return _atomic_write(Path(path), json.dumps(result.to_dict(), indent=2) + "\n")


def confusion_table(result: ScoreResult):
    """The confusion matrix as a DataFrame: index ``truth`` (true classes, then ``background``:
    picks on no particle), columns the picked class (then ``background``: never found)."""
    import pandas as pd

    df = pd.DataFrame(result.confusion, index=pd.Index(result.labels, name="truth"), columns=result.labels)
    return df


def write_confusion_csv(result: ScoreResult, path: str | Path) -> Path:
    """Write :func:`confusion_table` as CSV (first column ``truth``)."""
    return _atomic_write(Path(path), confusion_table(result).to_csv())
