"""Particle-list exports: SHREC ``particle_locations.txt``, a RELION 5 ``.star``, ``.csv`` and
CZ cryoET Data Portal ``.ndjson`` annotations (:mod:`faket_dask.stages.portal_export`).

``faket-dask export-particles`` validates the destination (:func:`check_export_path`,
:func:`check_tomo_name`) before it reads anything, reads the table with
:func:`faket_dask.stages.particles.open_particles` and writes it with :func:`export_particles`.

Orientations: the table's ``rot, tilt, psi`` turn the template into the particle by the active
rotation ``M = Rz(rot) Ry(tilt) Rz(psi)`` on ``(x, y, z)`` column vectors
(:mod:`faket_dask.kernels.specimen_placement`). Each format states that rotation in its own
convention (sources in :func:`relion_angles`, :func:`shrec_angles` and
:mod:`~faket_dask.stages.portal_export`); ``tests/test_orientations.py`` re-renders the particles
from each exported file alone and matches the specimen.
"""
from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from ..errors import InputError
from ..kernels.specimen_placement import COLUMNS, EXTRA_COLUMNS
from ..store.layout import tomo_name as default_tomo_name
from .particles import CENTRED_COLUMNS, CORNER_COLUMNS, add_physical_coordinates

if TYPE_CHECKING:
    import pandas as pd

#: Characters allowed in a tomogram name (rlnTomoName), see :func:`check_tomo_name`.
_TOMO_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
#: Suffixes :func:`export_particles` writes.
FORMATS = (".txt", ".star", ".csv", ".ndjson")


def _euler(euler_zyz_deg: np.ndarray, *, invert: bool, seq: str) -> np.ndarray:
    """The rotations of the table's angles (optionally inverted) as Euler angles ``seq`` (degrees).

    Angles where the decomposition is not unique (tilt 0 or 180°) get scipy's choice (third angle
    0) without scipy's gimbal-lock warning: any equivalent triple is the same rotation."""
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("ZYZ", np.reshape(euler_zyz_deg, (-1, 3)), degrees=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Gimbal lock detected")
        return (rot.inv() if invert else rot).as_euler(seq, degrees=True)


def relion_angles(euler_zyz_deg: np.ndarray) -> np.ndarray:
    """RELION ``rlnAngleRot, rlnAngleTilt, rlnAnglePsi`` (degrees) of the table's orientations.

    RELION's ``Euler_angles2matrix(rot, tilt, psi)`` (``src/euler.cpp``) is
    ``A = Rz(-psi) Ry(-tilt) Rz(-rot)`` in active-rotation notation, and RELION applies ``A`` as
    the *active* rotation reference → particle: its projector samples the reference at ``A⁻¹ k``
    for the image's Fourier coordinate ``k`` (``src/projector.cpp``, ``Projector::project``:
    "Use the inverse matrix"), and RELION 5's ``ParticleSet::getMatrix4x4``
    (``src/jaz/tomography/particle_set.cpp``) "maps coordinates from particle space to tomogram
    space" with ``A``. copick's conversion (``docs/geometry.md`` §5.2,
    ``R = (Rz(φ) Ry(θ) Rz(ψ))⁻¹``) and the CZ cryoET Data Portal's ingestion
    (``Rotation.from_euler("ZYZ", ...).inv()``) read RELION's angles the same way. As
    ``Euler_angles2matrix(a, b, c) = (Rz(a) Ry(b) Rz(c))ᵀ``, RELION's ``A`` is the table's ``M``
    when the angles written are the intrinsic ZYZ angles of ``M⁻¹``: ``(-psi, -tilt, -rot)``,
    in scipy's canonical form (tilt in [0°, 180°]). (Until ``tests/test_orientations.py``
    proved it, the table's angles were written unchanged, which RELION reads as the inverse.)

    Parameters
    ----------
    euler_zyz_deg : ndarray, shape (N, 3)
        The table's ``rot, tilt, psi`` (degrees).

    Returns
    -------
    ndarray, shape (N, 3)
        ``rlnAngleRot, rlnAngleTilt, rlnAnglePsi`` (degrees).
    """
    return _euler(euler_zyz_deg, invert=True, seq="ZYZ")


def shrec_angles(euler_zyz_deg: np.ndarray) -> np.ndarray:
    """SHREC 2021 ``rotation_Z1 rotation_X rotation_Z2`` (degrees) of the table's orientations.

    The SHREC 2021 models were made by PyTom's simulator (``pytom/simulation/
    MicrographModeller.py``, ``generate_model``), which rotates each particle with voltools'
    ``transform(volume, rotation=p_angles, rotation_order='szxz')`` on PyTom's ``[x, y, z]``
    arrays and writes ``p_angles`` as the three angle columns of ``particle_locations.txt``.
    voltools (``voltools/utils/matrices.py``: the static-frame ``szxz`` matrix of the negated
    angles, applied by ``scipy.ndimage.affine_transform`` as output → input) turns the template
    into the particle by the active rotation ``Rz(Z1) Rx(X) Rz(Z2)`` on ``(x, y, z)``, i.e.
    intrinsic ZXZ of the same active rotation ``M`` — checked numerically against voltools' code.

    Parameters
    ----------
    euler_zyz_deg : ndarray, shape (N, 3)
        The table's ``rot, tilt, psi`` (degrees).

    Returns
    -------
    ndarray, shape (N, 3)
        ``Z1, X, Z2`` (degrees) with ``M = Rz(Z1) Rx(X) Rz(Z2)``.
    """
    return _euler(euler_zyz_deg, invert=False, seq="ZXZ")


def check_export_path(path: str | Path, *, overwrite: bool, formats: tuple[str, ...] = FORMATS) -> Path:
    """Validate an export destination before anything is read or written.

    ``.ndjson`` is the stem of one file per class (:mod:`~faket_dask.stages.portal_export`),
    not written itself: those files are checked once the table (its classes) is read.

    Parameters
    ----------
    path : path
        The destination.
    overwrite : bool
        Whether an existing file may be replaced.
    formats : tuple of str
        The suffixes accepted (default :data:`FORMATS`; ``faket-dask pick`` writes all but
        ``.ndjson``).

    Raises
    ------
    InputError
        Unknown suffix (not one of ``formats``) or missing directory.
    OutputExistsError
        ``path`` exists and ``overwrite`` is false.
    """
    from ..errors import OutputExistsError

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in formats:
        listed = ", ".join(formats[:-1]) + f" or {formats[-1]}" if len(formats) > 1 else formats[0]
        raise InputError(f"{path}: unknown particle-list format (use {listed})")
    if suffix != ".ndjson" and path.exists() and not overwrite:
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
    * ``rlnAngleRot/Tilt/Psi``: ZYZ Euler angles in degrees in RELION's convention, which is
      the *inverse* of the table's ``rot, tilt, psi`` (:func:`relion_angles`: RELION's matrix
      ``Euler_angles2matrix(rot, tilt, psi)`` rotates the reference into the particle).
      ``rlnTomoParticleName`` is ``TOMO/INDEX`` as RELION names particles itself.
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
    angles = relion_angles(np.stack([np.asarray(particles[a].values, np.float64)
                                     for a in ("rot", "tilt", "psi")], 1))
    star = pd.DataFrame({
        "rlnTomoName": [tomo_name] * n,
        "rlnTomoParticleName": [f"{tomo_name}/{int(i)}" for i in ids],
        "rlnCenteredCoordinateXAngst": particles["x_centred_A"].values,
        "rlnCenteredCoordinateYAngst": particles["y_centred_A"].values,
        "rlnCenteredCoordinateZAngst": particles["z_centred_A"].values,
        "rlnCoordinateX": particles["x"].values, "rlnCoordinateY": particles["y"].values,
        "rlnCoordinateZ": particles["z"].values,
        "rlnAngleRot": angles[:, 0], "rlnAngleTilt": angles[:, 1], "rlnAnglePsi": angles[:, 2],
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
      the same active rotation (``Rz(Z1) Rx(X) Rz(Z2)``), which is SHREC's convention
      (:func:`shrec_angles`, with its source).
    * ``.star``: a RELION 5 tomography particle set: ``data_optics`` and ``data_particles``
      with ``rlnTomoName``, ``rlnCenteredCoordinate{X,Y,Z}Angst`` and the rest of
      :func:`relion_star_tables` (conventions and sources there).
    * ``.csv``: ``particle`` and every table column, with ``x_A, y_A, z_A`` (Å from the volume's
      corner, voxel ``i`` at ``(i + 0.5)·pixel``, as the store's coordinates) and
      ``x_centred_A, ...`` (Å from the specimen centre) — see :func:`add_physical_coordinates`.
    * ``.ndjson``: CZ cryoET Data Portal ``point`` / ``orientedPoint`` records, one file per
      class, ``OUT_<class>_<point|orientedpoint>.ndjson`` beside ``OUT.ndjson``
      (:func:`~faket_dask.stages.portal_export.write_portal_annotations`); ``path`` is returned.

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
        ``path`` (for ``.ndjson``: any per-class file) exists and ``overwrite`` is false.
    """
    import pandas as pd

    path = check_export_path(path, overwrite=overwrite)
    suffix = path.suffix.lower()
    if particles.sizes.get("particle", 0) == 0:
        raise InputError(f"{path}: the particle table is empty; nothing written")
    if suffix == ".ndjson":
        from .portal_export import write_portal_annotations

        write_portal_annotations(particles, path, overwrite=overwrite)
        return path
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
    with atomic_file(path) as tmp:
        if suffix == ".csv":
            df.insert(0, "particle", np.asarray(particles["particle"].values))
            extra = tuple(c for c in EXTRA_COLUMNS + ("n_voxels",) if c in particles)
            for c in extra + CORNER_COLUMNS + CENTRED_COLUMNS:
                df[c] = np.asarray(particles[c].values)
            df.to_csv(tmp, index=False)
        elif suffix == ".star":
            import starfile

            ts_px = particles.attrs.get("specimen_pixel_size_A", particles.attrs.get("pixel_size_A"))
            starfile.write(relion_star_tables(particles, tomo_name, float(ts_px)), tmp, overwrite=True)
        else:
            write_shrec(tmp, df["class_name"], df[["x", "y", "z"]].to_numpy(),
                        shrec_angles(df[["rot", "tilt", "psi"]].to_numpy()))
    return path


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (``.NAME.part``); on success it replaces ``path``.

    A failure (or an exception in the block) leaves ``path`` untouched and no temporary file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_shrec(path: str | Path, class_names, xyz: np.ndarray, angles_zxz: np.ndarray | None = None) -> None:
    """Write SHREC 2021 ``particle_locations.txt`` lines: ``class x y z [Z1 X Z2]``.

    Parameters
    ----------
    path : path
        The file (overwritten).
    class_names : sequence of str, length N
    xyz : ndarray (N, 3)
        Voxel positions (centre of voxel i at i), written with 3 decimals.
    angles_zxz : ndarray (N, 3), optional
        :func:`shrec_angles` (degrees); without it, lines have no angles (picks).
    """
    with open(path, "w") as f:
        for k, (name, (x, y, z)) in enumerate(zip(class_names, np.asarray(xyz, np.float64))):
            line = f"{name} {x:.3f} {y:.3f} {z:.3f}"
            if angles_zxz is not None:
                a, b, c = angles_zxz[k]
                line += f" {a:.3f} {b:.3f} {c:.3f}"
            f.write(line + "\n")
