"""Particle-list exports: SHREC ``particle_locations.txt``, a RELION 5 ``.star``, ``.csv``.

``faket-dask export-particles`` validates the destination (:func:`check_export_path`,
:func:`check_tomo_name`) before it reads anything, reads the table with
:func:`faket_dask.stages.particles.open_particles` and writes it with :func:`export_particles`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from ..errors import InputError
from ..kernels.specimen_placement import COLUMNS
from ..store.layout import tomo_name as default_tomo_name
from .particles import CENTRED_COLUMNS, CORNER_COLUMNS, add_physical_coordinates

if TYPE_CHECKING:
    import pandas as pd

#: Characters allowed in a tomogram name (rlnTomoName), see :func:`check_tomo_name`.
_TOMO_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


def check_export_path(path: str | Path, *, overwrite: bool) -> Path:
    """Validate an export destination before anything is read or written.

    Raises
    ------
    InputError
        Unknown suffix (not ``.txt``, ``.star``, ``.csv``) or missing directory.
    OutputExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    from ..errors import OutputExistsError

    path = Path(path)
    if path.suffix.lower() not in (".txt", ".star", ".csv"):
        raise InputError(f"{path}: unknown particle-list format (use .txt, .star or .csv)")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise InputError(f"{path}: directory {path.parent} does not exist")
    return path


def check_tomo_name(name: str) -> str:
    """``name`` if it is a usable ``rlnTomoName`` (letters, digits, ``_ . + -``), else InputError."""
    if not _TOMO_NAME.match(name):
        raise InputError(f"--tomo-name {name!r}: use letters, digits and _ . + - (a RELION rlnTomoName)")
    return name


def relion_star_tables(particles: xr.Dataset, tomo_name: str, tilt_series_pixel_size_A: float) -> dict[str, pd.DataFrame]:
    """The ``optics`` and ``particles`` blocks of a RELION 5 tomography particle set.

    Conventions (checked against RELION 5's source, ``src/jaz/tomography/particle_set.cpp``,
    ``ParticleSet::read`` and ``getParticleCoordDecenteredPixel``):

    * RELION 5 positions a particle by ``rlnCenteredCoordinate{X,Y,Z}Angst``: Å from the centre
      of the tomogram; internally ``pixel = Å / rlnTomoTiltSeriesPixelSize + size / 2`` with
      the tomogram size of ``tomograms.star`` (``rlnTomoSize{X,Y,Z}``, unbinned pixels). We
      write the physical offset from the specimen's centre (= the tilt axis of the projections,
      see :func:`add_physical_coordinates`), so set ``rlnTomoSize{X,Y,Z}`` to the specimen's
      ``X Y Z``. Note: RELION places the tilt axis at pixel ``W // 2`` of a tilt image
      (``Tomogram::setProjectionMatrix``) while FakET's projector uses the geometric centre
      ``(W - 1) / 2``; for sub-pixel work give the imported FakET tilt-series a shift of
      −0.5 pixel in x and y (``rlnTomoXShiftAngst = rlnTomoYShiftAngst = −0.5 · pixel``).
    * The optics block must carry ``rlnTomoTiltSeriesPixelSize`` (RELION refuses a particle set
      without it); ``rlnOpticsGroup``/``rlnOpticsGroupName`` = 1 / the tomogram name, as RELION
      makes them itself (one group per tomogram). ``rlnImagePixelSize`` is left out: in RELION 5
      it is the pixel size of *extracted* subtomograms (tilt-series pixel × binning), written by
      the extraction job.
    * ``rlnAngleRot/Tilt/Psi``: ZYZ Euler angles in degrees, RELION's convention (see
      :mod:`faket_dask.kernels.specimen`). ``rlnTomoParticleName`` is ``TOMO/INDEX`` as RELION
      names particles itself.
    * ``rlnCoordinate{X,Y,Z}`` (voxels of the table's grid, voxel ``i`` centred at ``i``) are kept
      for RELION 4 era tools; RELION 5 ignores them when the centred labels are present.
    * ``rlnClassName`` is not a RELION label (RELION warns and ignores it); it keeps the class name.

    Returns
    -------
    dict of pandas.DataFrame
        ``{"optics": 1 row, "particles": one row per particle}``.
    """
    import pandas as pd

    n = particles.sizes["particle"]
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": [tomo_name],
                           "rlnTomoTiltSeriesPixelSize": [float(tilt_series_pixel_size_A)]})
    ids = np.asarray(particles["particle"].values) if "particle" in particles.coords else np.arange(1, n + 1)
    star = pd.DataFrame({
        "rlnTomoName": [tomo_name] * n,
        "rlnTomoParticleName": [f"{tomo_name}/{int(i)}" for i in ids],
        "rlnCenteredCoordinateXAngst": particles["x_centred_A"].values,
        "rlnCenteredCoordinateYAngst": particles["y_centred_A"].values,
        "rlnCenteredCoordinateZAngst": particles["z_centred_A"].values,
        "rlnCoordinateX": particles["x"].values, "rlnCoordinateY": particles["y"].values,
        "rlnCoordinateZ": particles["z"].values,
        "rlnAngleRot": particles["rot"].values, "rlnAngleTilt": particles["tilt"].values,
        "rlnAnglePsi": particles["psi"].values,
        "rlnOpticsGroup": np.ones(n, dtype=int),
        "rlnClassNumber": np.asarray(particles["class_id"].values).astype(int),
        "rlnClassName": np.asarray(particles["class_name"].values).astype(str),
    })
    return {"optics": optics, "particles": star}


def export_particles(
    particles: xr.Dataset,
    path: str | Path,
    *,
    overwrite: bool = False,
    tomo_name: str | None = None,
    shape_zyx: tuple[int, int, int] | None = None,
) -> Path:
    """Write the particle table in the format chosen by the suffix of ``path``.

    * ``.txt``: SHREC 2021 ``particle_locations.txt``: one line per particle,
      ``class_name x y z rotation_Z1 rotation_X rotation_Z2``, space-separated; ``x y z`` in
      voxels (centre of voxel i is i), angles in degrees as intrinsic **ZXZ** Euler angles of
      the same active rotation (``Rz(Z1) Rx(X) Rz(Z2)``), which is SHREC's convention.
    * ``.star``: a RELION 5 tomography particle set: ``data_optics`` and ``data_particles``
      with ``rlnTomoName``, ``rlnCenteredCoordinate{X,Y,Z}Angst`` and the rest of
      :func:`relion_star_tables` (conventions and sources there).
    * ``.csv``: ``particle`` and every table column, with ``x_A, y_A, z_A`` (Å from the volume's
      corner, voxel ``i`` at ``(i + 0.5)·pixel``, as the store's coordinates) and
      ``x_centred_A, ...`` (Å from the specimen centre) — see :func:`add_physical_coordinates`.

    The file is written under a temporary name and renamed, so a failure leaves nothing.

    Parameters
    ----------
    particles : xarray.Dataset
        A table from :func:`open_particles` (or :func:`particles_dataset` plus ``shape_zyx``).
    path : path
        Output file; its suffix picks the format.
    overwrite : bool
        Replace an existing file.
    tomo_name : str, optional
        ``rlnTomoName`` (default ``tomo_NNN`` from ``attrs["tomo"]``); must match the name in
        RELION's ``tomograms.star``.
    shape_zyx : (int, int, int), optional
        Volume shape, when the table has no Å columns yet (needed for ``.star`` and ``.csv``).

    Raises
    ------
    InputError
        Unknown suffix, missing directory, empty table, bad tomogram name, unknown volume shape.
    OutputExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    import os

    import pandas as pd

    path = check_export_path(path, overwrite=overwrite)
    suffix = path.suffix.lower()
    if particles.sizes.get("particle", 0) == 0:
        raise InputError(f"{path}: the particle table is empty; nothing written")
    if suffix in (".star", ".csv") and not all(c in particles for c in CENTRED_COLUMNS):
        shape = shape_zyx if shape_zyx is not None else particles.attrs.get("volume_shape_zyx")
        if shape is None:
            raise InputError(f"{path}: the volume shape is unknown (needed for Å coordinates); "
                             "pass shape_zyx= or read the table with open_particles")
        particles = add_physical_coordinates(particles, tuple(shape))
    if tomo_name is None:
        tomo_name = default_tomo_name(int(particles.attrs.get("tomo", 0)))
    check_tomo_name(tomo_name)
    df = pd.DataFrame({c: np.asarray(particles[c].values) for c in COLUMNS})
    df["class_name"] = df["class_name"].astype(str)
    tmp = path.with_name(f".{path.name}.part")
    try:
        if suffix == ".csv":
            df.insert(0, "particle", np.asarray(particles["particle"].values))
            for c in CORNER_COLUMNS + CENTRED_COLUMNS + (("n_voxels",) if "n_voxels" in particles else ()):
                df[c] = np.asarray(particles[c].values)
            df.to_csv(tmp, index=False)
        elif suffix == ".star":
            import starfile

            ts_px = particles.attrs.get("specimen_pixel_size_A", particles.attrs.get("pixel_size_A"))
            starfile.write(relion_star_tables(particles, tomo_name, float(ts_px)), tmp, overwrite=True)
        else:
            from scipy.spatial.transform import Rotation

            zxz = Rotation.from_euler("ZYZ", df[["rot", "tilt", "psi"]].to_numpy(), degrees=True).as_euler(
                "ZXZ", degrees=True)
            with open(tmp, "w") as f:
                for (_, row), (a, b, c) in zip(df.iterrows(), zxz):
                    f.write(f"{row['class_name']} {row['x']:.3f} {row['y']:.3f} {row['z']:.3f} "
                            f"{a:.3f} {b:.3f} {c:.3f}\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
