"""``faket-dask pick``'s inputs and outputs: the tomogram to pick, the checks, the picks files.

Every check runs before any voxel is read and raises one line naming the file
(:class:`~faket_dask.errors.InputError` / :class:`~faket_dask.errors.OutputExistsError`): an
output with an unknown suffix or that exists, no such store or MRC file, a tomogram index or a
modality the store lacks, a picker whose classes are not the store's.

:func:`open_source` opens a run store's tomogram (``tomo_NNN/tomogram/MODALITY`` at a level)
or an MRC file (memory-mapped block by block, :class:`~faket_dask.formats.mrc.MrcArray`) as a
:class:`Source`: a lazy volume for the statistics and a picklable reader the block tasks
slice themselves. :func:`write_picks` writes the picks as ``.csv``, RELION 5 ``.star`` or SHREC
``.txt`` — files :func:`faket_dask.stages.scoring_points.read_points` reads back.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OutputExistsError
from ..params.picking import PICK_PIXEL_SIZE_RTOL
from ..store.layout import (
    labels_particles_group,
    particles_group,
    tomo_name,
    tomogram_group,
)

#: Columns of a picks table, in the CSV's order: class, centroid (voxels of the picked
#: tomogram, centre of voxel i at i), Å from the tomogram's corner (voxel i at
#: (i + 0.5) · pixel_size_A, the particle tables' ``x_A``), voxels in the component, mean score.
PICK_COLUMNS = ("class_name", "x", "y", "z", "x_A", "y_A", "z_A", "size", "score")
#: Suffixes :func:`write_picks` writes.
PICK_FORMATS = (".csv", ".star", ".txt")
#: Suffixes read as an MRC volume (anything else must be a run store).
MRC_SUFFIXES = (".mrc", ".rec", ".map", ".mrcs", ".st", ".ali")
_TOMO = re.compile(r"^tomo_(\d{3,})$")


@dataclass
class Source:
    """A tomogram to pick.

    Attributes
    ----------
    label : str
        How messages name it (``STORE tomo_000/tomogram/measured`` or the MRC path).
    name : str
        ``rlnTomoName`` of the picks (``tomo_NNN``, or the MRC file's stem).
    volume : xarray.DataArray (z, y, x)
        Lazy (dask), in the source's own chunks; its statistics do not depend on ``--block``.
    reader : object
        Picklable, ``reader[z0:z1, y0:y1, x0:x1]`` → ndarray (a Zarr array or an MrcArray).
    pixel_size_A : float
        Voxel size of ``volume`` (Å).
    tilt_series_pixel_size_A : float
        RELION's ``rlnTomoTiltSeriesPixelSize`` (the store's tilt-series pixel; an MRC's voxel).
    class_names : list of str or None
        The store tomogram's true classes (``labels_particles`` or ``particles``), None if none.
    """

    label: str
    name: str
    volume: Any
    reader: Any
    pixel_size_A: float
    tilt_series_pixel_size_A: float
    class_names: list[str] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.volume.shape)  # type: ignore[return-value]


def check_outputs(out: str | Path | None, segmentation: str | Path | None, *, overwrite: bool) -> Path | None:
    """Refuse a picks file of another suffix, in a missing folder or existing (without
    ``overwrite``), and an existing segmentation store — before anything is read."""
    from .particle_export import check_export_path

    path = None if out is None else check_export_path(out, overwrite=overwrite, formats=PICK_FORMATS)
    if segmentation is not None:
        seg = Path(segmentation)
        if seg.exists() and not overwrite:
            raise OutputExistsError(f"{seg}: exists; pass --overwrite to replace it")
        if not seg.parent.is_dir():
            raise InputError(f"{seg}: directory {seg.parent} does not exist")
    return path


def is_mrc(source: str | Path) -> bool:
    """Whether ``source`` names an MRC file (by suffix; a run store is a folder)."""
    return Path(source).suffix.lower() in MRC_SUFFIXES and not Path(source).is_dir()


def open_source(source: str | Path, *, tomo: int | None = None, modality: str | None = None, level: int = 0,
                pixel_size_A: float | None = None) -> Source:
    """Open the tomogram to pick, reading metadata only.

    Parameters
    ----------
    source : path
        A run store (``tomo_NNN/tomogram/MODALITY``) or an MRC file (``.mrc``, ``.rec``, ...).
    tomo : int, optional
        Store only: tomogram index (default 0).
    modality : str, optional
        Store only: the tomogram's modality (default ``measured``).
    level : int
        Store only: OME-NGFF level (0 = full resolution, k = binned 2**k).
    pixel_size_A : float, optional
        MRC only: voxel size (Å) instead of the header's.

    Raises
    ------
    InputError
        No such store or file, not an MRC file or not 3D (:func:`~faket_dask.formats.convert.load_mrc`),
        no pixel size, ``tomo``/``modality``/``level`` for an MRC file, ``pixel_size_A`` for a
        store, a tomogram index or modality the store lacks, a level its image lacks.
    """
    if is_mrc(source):
        if tomo is not None or modality is not None or level:
            raise InputError(f"{source}: --tomo, --modality and --level apply to a run store, not to an MRC file")
        return _open_mrc(Path(source), pixel_size_A)
    if pixel_size_A is not None:
        raise InputError(f"{source}: --pixel-size-A applies to an MRC file; a run store's tomogram has its own")
    return _open_store(source, 0 if tomo is None else int(tomo), modality or "measured", int(level))


def _open_mrc(path: Path, pixel_size_A: float | None) -> Source:
    from ..formats.convert import load_mrc
    from ..formats.mrc import MrcArray

    vol = load_mrc(path, kind="volume", pixel_size_A=pixel_size_A, check_values=False,
                   pixel_size_hint="pass --pixel-size-A")
    px = float(vol.attrs["pixel_size_A"])
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", path.stem) or "tomogram"
    return Source(str(path), name, vol, MrcArray(path), px, px)


def _open_store(store: str | Path, tomo: int, modality: str, level: int) -> Source:
    import zarr

    from ..store import ngff
    from ..store import open as open_group
    from ..store.run_store import open_root

    open_root(store)                       # InputError: no such store / not a Zarr store
    root = zarr.open_group(str(store), mode="r", use_consolidated=False)
    if tomo < 0:
        raise InputError(f"--tomo must be >= 0, got {tomo}")
    have = sorted(int(m.group(1)) for k in root.group_keys() if (m := _TOMO.match(k)))
    have = [t for t in have if isinstance(root.get(tomogram_group(t)), zarr.Group)]
    if tomo not in have:
        listed = ", ".join(map(str, have)) or "none"
        raise InputError(f"{store}: no tomogram {tomo} (tomo_NNN/tomogram); tomograms: {listed}")
    group = root[tomogram_group(tomo)]
    images = sorted(name for name, g in group.groups() if ngff.is_image(g))
    if modality not in images:
        raise InputError(f"{store}: {tomo_name(tomo)} has no tomogram '{modality}' (has: {', '.join(images) or 'none'})")
    try:
        vol = open_group(store, f"{tomogram_group(tomo)}/{modality}", level=level)[modality]
    except InputError as exc:            # a level the image lacks
        raise InputError(f"{store}: {tomogram_group(tomo)}/{modality}: {exc} (--level)") from None
    reader = group[modality][ngff.levels(group[modality])[level]]
    px = float(vol.attrs["pixel_size_A"])
    binning = float(vol.attrs.get("binning", 1)) * 2 ** level
    return Source(f"{store} {tomogram_group(tomo)}/{modality}", tomo_name(tomo), vol, reader, px, px / binning,
                  _true_classes(root, tomo))


def _true_classes(root: Any, tomo: int) -> list[str] | None:
    """The class list of a store tomogram's particle table (its ``class_names`` attribute, else
    the classes in its rows); None without a table."""
    import zarr

    for group in (labels_particles_group(tomo), particles_group(tomo)):
        g = root.get(group)
        if not isinstance(g, zarr.Group):
            continue
        names = g.attrs.get("class_names")
        if names:
            return [str(n) for n in names]
        if "class_name" in g.array_keys():
            return sorted({str(n) for n in np.asarray(g["class_name"][...]).ravel()})
    return None


def check_picker_classes(picker: str | Path, meta: dict, source: Source, *, any_classes: bool = False,
                         keep: Sequence[str] | None = None) -> list[int]:
    """The picker channels to cluster, after the class and pixel-size checks.

    Parameters
    ----------
    picker : path
        The checkpoint (for messages).
    meta : dict
        :func:`~faket_dask.kernels.picker_net.load_picker`'s ``meta``.
    source : Source
        The tomogram.
    any_classes : bool
        Pick even when the picker's classes are not among the store tomogram's.
    keep : sequence of str, optional
        Only these classes (default: every class of the picker).

    Returns
    -------
    list of int
        Channels (1 … C-1) in the picker's order.

    Raises
    ------
    InputError
        The store tomogram has a particle table and some picker classes are not in its class
        list (a picker trained on another class list; ``any_classes`` skips this), or ``keep``
        names a class the picker does not have.

    Warns
    -----
    UserWarning
        The picker was trained at a voxel size (``config["pixel_size_A"]``) more than
        :data:`~faket_dask.params.picking.PICK_PIXEL_SIZE_RTOL` away from the tomogram's.
    """
    classes = list(meta["class_names"][1:])
    if source.class_names is not None and not any_classes:
        missing = [c for c in classes if c not in source.class_names]
        if missing:
            raise InputError(f"{picker}: picker classes {', '.join(missing)} are not classes of {source.label} "
                             f"({', '.join(source.class_names)}): it was trained on another class list "
                             "(pass --any-classes to pick anyway)")
    if keep is not None:
        unknown = [c for c in keep if c not in classes]
        if unknown or not keep:
            raise InputError(f"--classes {','.join(keep)}: {picker} picks {', '.join(classes)}"
                             + (f", not {', '.join(unknown)}" if unknown else ""))
    trained = meta.get("config", {}).get("pixel_size_A")
    try:
        trained = float(trained) if trained is not None else None
    except (TypeError, ValueError):
        trained = None
    if trained and abs(trained - source.pixel_size_A) > PICK_PIXEL_SIZE_RTOL * trained:
        warnings.warn(f"{picker}: trained on {trained:g} Å voxels, {source.label} has {source.pixel_size_A:g} Å "
                      f"voxels; the picker sees particles at another scale: rebin the tomogram to about {trained:g} Å "
                      "(a store's --level k is binned 2**k)", UserWarning, stacklevel=2)
    return [k + 1 for k, c in enumerate(classes) if keep is None or c in keep]


def picks_dataset(df: Any, shape_zyx: Sequence[int], pixel_size_A: float, class_names: Sequence[str]):
    """A picks DataFrame as a particle table (dim ``particle``) with its Å columns.

    ``x_A …`` and ``x_centred_A …`` come from
    :func:`~faket_dask.stages.particles.add_physical_coordinates` (one owner of both
    conventions); ``class_id`` is the picker channel; ``rot, tilt, psi`` are 0 (a pick has no
    orientation).
    """
    import xarray as xr

    from .particles import add_physical_coordinates

    n = len(df)
    ids = np.asarray([list(class_names).index(c) for c in df["class_name"]], np.int32)
    data = {c: ("particle", np.asarray(df[c].to_numpy(), np.float64)) for c in ("x", "y", "z", "score")}
    data.update(size=("particle", np.asarray(df["size"].to_numpy(), np.int64)),
                class_name=("particle", np.asarray(df["class_name"].to_numpy()).astype(str) if n else np.zeros(0, "<U1")),
                class_id=("particle", ids), **{a: ("particle", np.zeros(n)) for a in ("rot", "tilt", "psi")})
    table = xr.Dataset(data, coords={"particle": np.arange(1, n + 1, dtype=np.uint32)})
    return add_physical_coordinates(table, tuple(shape_zyx), pixel_size_A=pixel_size_A)


def write_picks(df: Any, path: str | Path, *, source: Source, class_names: Sequence[str], overwrite: bool = False) -> Path:
    """Write picks in the format of ``path``'s suffix, atomically (a failure leaves nothing).

    * ``.csv``: exactly the columns :data:`PICK_COLUMNS` (full float precision).
    * ``.star``: a RELION 5 particle set (:func:`~faket_dask.stages.particle_export.relion_star_tables`:
      ``rlnTomoName``, ``rlnCenteredCoordinate{X,Y,Z}Angst`` — Å from the tomogram's centre —,
      ``rlnCoordinate{X,Y,Z}`` in voxels, ``rlnClassNumber`` = picker channel,
      ``rlnClassName``) without angles, plus ``rlnAutopickFigureOfMerit`` = score.
    * ``.txt``: SHREC ``class x y z`` per pick (voxels, 3 decimals; ``score`` needs
      ``--pixel-size-A`` to read it).

    Parameters
    ----------
    df : pandas.DataFrame
        Columns :data:`PICK_COLUMNS` (from :func:`faket_dask.stages.picking.run_pick`).
    path : path
        Output file.
    source : Source
        The picked tomogram (shape, pixel sizes, name).
    class_names : sequence of str
        The picker's channels (background first).
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    InputError, OutputExistsError
        As :func:`check_outputs`.
    """
    from .particle_export import atomic_file, relion_star_tables, write_shrec

    path = check_outputs(path, None, overwrite=overwrite)
    assert path is not None
    suffix = path.suffix.lower()
    with atomic_file(path) as tmp:
        if suffix == ".csv":
            df[list(PICK_COLUMNS)].to_csv(tmp, index=False)
        elif suffix == ".txt":
            write_shrec(tmp, df["class_name"], df[["x", "y", "z"]].to_numpy())
        else:
            import starfile

            table = picks_dataset(df, source.shape, source.pixel_size_A, class_names)
            star = relion_star_tables(table, source.name, source.tilt_series_pixel_size_A)
            parts = star["particles"].drop(columns=["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"])
            parts["rlnAutopickFigureOfMerit"] = table["score"].values
            starfile.write({"optics": star["optics"], "particles": parts}, tmp, overwrite=True)
    return path
