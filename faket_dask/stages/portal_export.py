"""CZ cryoET Data Portal point annotations: NDJSON ``point`` / ``orientedPoint`` records.

``faket-dask export-particles STORE --tomo N OUT.ndjson`` writes **one file per class** next to
``OUT.ndjson`` (which itself is not written: its name is the stem),
``OUT_<class>_orientedpoint.ndjson`` or ``OUT_<class>_point.ndjson`` — the portal's own
suffixes (its ingestion names a file ``<prefix>_<shape lowercased>.ndjson``, and its
validation globs ``*_point.ndjson`` / ``*_orientedpoint.ndjson``), because one portal
annotation holds one object type.

Record schema (CZ cryoET Data Portal documentation, "Annotation Download Options":
"the JSON entries have a ``type`` field with instancePoint, orientedPoint, and point [...] and a
``location`` field with the x, y, z coordinates [...] For Oriented Points, there is also an
``xyz_rotation_matrix`` field with a 3x3 rotation matrix"; the records the portal's ingestion
writes, ``cryoet-data-portal-backend`` ``ingestion_tools/scripts/common/point_converter.py``,
``Point.to_dict`` / ``OrientedPoint.to_dict``)::

    {"type": "point", "location": {"x": X, "y": Y, "z": Z}}
    {"type": "orientedPoint", "location": {"x": X, "y": Y, "z": Z},
     "xyz_rotation_matrix": [[r00, r01, r02], [r10, r11, r12], [r20, r21, r22]]}

Conventions, with their sources:

* ``location``: voxels of the tomogram the annotation belongs to, x y z, voxel ``i`` centred at
  ``i`` (the portal's validation requires ``0 <= x <= size_x - 1``,
  ``data_validation/.../annotation/helper_point.py``, ``contained_in_tomo``). That is the table's
  own convention, so the values are the table's ``x, y, z`` on the chosen grid (``--grid
  tomogram``: voxels of the binned tomogram, the volume a portal annotation refers to).
* ``xyz_rotation_matrix``: the **active** rotation taking the reference (the class's template)
  to the particle, acting on ``(x, y, z)`` **column** vectors: a template point ``p`` lies at
  ``location + R @ p`` (voxels, template centred on its origin). Rows and columns in x, y, z
  order (the ingestion's ``order="zyx"`` option flips both to reach this). Source: the portal's
  ingestion converts RELION Euler angles with
  ``Rotation.from_euler("ZYZ", [rot, tilt, psi]).inv().as_matrix()`` (``_from_relion4_star``),
  i.e. RELION's ``Euler_angles2matrix(rot, tilt, psi)``, which RELION applies as reference →
  particle (its projector samples the reference at ``A⁻¹ k``; RELION 5's
  ``ParticleSet::getMatrix4x4`` "maps coordinates from particle space to tomogram space"), and
  copies a copick pick's ``transformation_[:3, :3]`` unchanged (``_from_copick``), which copick
  defines as object space → tomogram space (copick ``docs/geometry.md`` §2.2). In FakET's terms
  ``R = Rz(rot) Ry(tilt) Rz(psi)`` of the table's angles
  (:func:`~faket_dask.kernels.specimen_placement.rotation_matrices`).

Which classes are oriented: a class is written as ``orientedPoint`` when its orientation changes
what was rendered — proteins (atoms or maps) and vesicles (an ellipsoidal vesicle's semi-axes
``shell_radius_A, shell_b_A, shell_c_A`` lie along the template x, y, z: the matrix's columns
give their directions). It is written as ``point`` when the orientation means nothing: gold
fiducials (balls: the renderer ignores the angles), filaments (a bent path, not a rigid copy of
a template: the location is the path's midpoint; the path itself is in the store, dim
``filament_point`` of ``tomo_NNN/particles``, and in a copick export),
and every class of a table derived from label masks (orientations unknown, the zeros are
placeholders; ``attrs["orientations"]``).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import InputError, OutputExistsError
from ..kernels.specimen_placement import rotation_matrices

#: Record ``type`` and file-name suffix of the two shapes.
POINT, ORIENTED = "point", "orientedPoint"
_SUFFIX = {POINT: "point", ORIENTED: "orientedpoint"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")


def _class_kind(particles: xr.Dataset, rows: np.ndarray) -> str:
    """``point`` or ``orientedPoint`` for the class made of table rows ``rows`` (module docstring)."""
    if "unknown" in str(particles.attrs.get("orientations", "")):
        return POINT
    for col in ("bead_radius_A", "length_A"):               # gold beads, filaments
        if col in particles and np.any(np.asarray(particles[col].values)[rows] > 0):
            return POINT
    return ORIENTED


def portal_annotation_files(particles: xr.Dataset, path: str | Path) -> dict[str, tuple[Path, str]]:
    """The file and record type of every class: ``{class name: (path, "point"|"orientedPoint")}``.

    ``OUT.ndjson`` → ``OUT_<class>_<point|orientedpoint>.ndjson`` in the same directory, in the
    order of first appearance in the table; characters other than letters, digits and
    ``_ . + -`` in a class name become ``_``.

    Raises
    ------
    InputError
        Two class names that give the same file name.
    """
    path = Path(path)
    names = np.asarray(particles["class_name"].values).astype(str)
    out: dict[str, tuple[Path, str]] = {}
    seen: dict[Path, str] = {}
    for name in dict.fromkeys(names.tolist()):
        kind = _class_kind(particles, np.flatnonzero(names == name))
        f = path.with_name(f"{path.stem}_{_UNSAFE.sub('_', name)}_{_SUFFIX[kind]}.ndjson")
        if f in seen:
            raise InputError(f"{path}: classes {seen[f]!r} and {name!r} would both be written to {f.name}")
        seen[f] = name
        out[name] = (f, kind)
    return out


def portal_records(particles: xr.Dataset) -> dict[str, list[dict]]:
    """The NDJSON records of every class (``{class name: [record, ...]}``, table order).

    Parameters
    ----------
    particles : xarray.Dataset
        A particle table (``class_name``, ``x, y, z`` in voxels of its grid, ``rot, tilt, psi``).

    Returns
    -------
    dict of list of dict
        ``{"type", "location": {"x", "y", "z"}}`` (+ ``"xyz_rotation_matrix"``, 3 lists of 3
        floats, for oriented classes): plain Python floats, ready for ``json.dumps``.
    """
    names = np.asarray(particles["class_name"].values).astype(str)
    xyz = np.stack([np.asarray(particles[a].values, np.float64) for a in "xyz"], 1)
    euler = np.stack([np.asarray(particles[a].values, np.float64) for a in ("rot", "tilt", "psi")], 1)
    mats = rotation_matrices(euler) if len(euler) else np.zeros((0, 3, 3))
    out: dict[str, list[dict]] = {}
    for name in dict.fromkeys(names.tolist()):
        rows = np.flatnonzero(names == name)
        kind = _class_kind(particles, rows)
        recs = []
        for r in rows:
            rec: dict = {"type": kind, "location": {"x": float(xyz[r, 0]), "y": float(xyz[r, 1]),
                                                    "z": float(xyz[r, 2])}}
            if kind == ORIENTED:
                rec["xyz_rotation_matrix"] = [[float(v) for v in row] for row in mats[r]]
            recs.append(rec)
        out[name] = recs
    return out


def write_portal_annotations(particles: xr.Dataset, path: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write one portal NDJSON file per class (names: :func:`portal_annotation_files`).

    Every destination is checked before any is written; each file is written under a temporary
    name and renamed, so a failure leaves no partial file.

    Parameters
    ----------
    particles : xarray.Dataset
        A particle table with at least one row.
    path : path
        ``OUT.ndjson``: the stem of the per-class files (not written itself).
    overwrite : bool
        Replace existing per-class files.

    Returns
    -------
    list of Path
        The files written, one per class.

    Raises
    ------
    InputError
        Empty table, missing directory, clashing class file names.
    OutputExistsError
        A per-class file exists and ``overwrite`` is false (nothing is written).
    """
    path = Path(path)
    if particles.sizes.get("particle", 0) == 0:
        raise InputError(f"{path}: the particle table is empty; nothing written")
    if not path.parent.is_dir():
        raise InputError(f"{path}: directory {path.parent} does not exist")
    files = portal_annotation_files(particles, path)
    existing = [f.name for f, _ in files.values() if f.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{path.parent / existing[0]}"
                                f"{f' and {len(existing) - 1} more' if len(existing) > 1 else ''}: "
                                f"exist{'s' if len(existing) == 1 else ''}; pass --overwrite to replace "
                                f"{'it' if len(existing) == 1 else 'them'} (nothing written)")
    records = portal_records(particles)
    tmps = {name: f.with_name(f".{f.name}.part") for name, (f, _) in files.items()}
    try:
        for name, recs in records.items():
            with open(tmps[name], "w") as fh:
                fh.writelines(json.dumps(rec) + "\n" for rec in recs)
        for name, (f, _) in files.items():
            os.replace(tmps[name], f)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
    return [f for f, _ in files.values()]
