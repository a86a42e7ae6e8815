"""The pieces of a copick project: names, pickable objects, pick transforms, OME-Zarr v2 images.

:mod:`faket_dask.stages.copick_export` plans and writes a project with these. Every convention
is copick's (PyPI ``copick`` 1.31.0: ``copick/models.py``, ``copick/util/escape.py``,
``copick/util/ome.py``, ``copick/impl/filesystem.py``; ``docs/geometry.md`` of
github.com/copick/copick), checked by ``tests/copick_check.py`` with copick itself.

Conventions
-----------
* **Names** (objects, user and session ids): copick's ``sanitize_name`` refuses
  ``< > : " / \\ | ? *``, control characters, white space and ``_`` (file names are
  ``{user}_{session}_{object}.json`` and are split at ``_``); :func:`copick_name` replaces each
  by ``-`` and strips leading/trailing ``-``, exactly as copick does.
* **Locations**: Å from the tomogram corner, array index ``i`` at ``i · voxel_spacing``
  (geometry.md §1.2, §3.2: ``p_physical = p_voxel · s``; the OME-Zarr scale transform; copick's
  portal reader multiplies the portal's voxel coordinates by the spacing). FakET's voxel
  coordinates put voxel ``i``'s centre at ``i`` too, so ``location = x · voxel_spacing``, half a
  voxel less than the table's corner coordinates ``x_A = (x + 0.5) · pixel_size_A``.
* **Transforms**: a 4×4 matrix from object space to tomogram space, ``p_tomo = T · p_obj``
  (``CopickPoint.transformation``, geometry.md §2.2), translation 0 (the centre is the
  location). A template point ``p`` (x, y, z column vector, template centred on its origin) of
  a FakET particle lies at ``location + M p`` with the active rotation
  ``M = Rz(rot) Ry(tilt) Rz(psi)`` (:func:`~faket_dask.kernels.specimen_placement.rotation_matrices`),
  so ``T[:3, :3] = M``.
* **Filaments** (``PickableObject.metadata["copick"]["filament"]``, ``FilamentSpec``; copick
  requires ``is_particle: true`` for them): picks are the path points in order, ``instance_id``
  the filament id, the transform's +Z axis the local tangent in point order (copick's filament
  pick convention) and +X the path's frame normal (the helix phase of the renderer).
"""
from __future__ import annotations

import colorsys
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np

from ..errors import InputError
from ..kernels.specimen_placement import rotation_matrices
from ..store.codecs import BLOSC

if TYPE_CHECKING:
    import xarray as xr

#: Characters copick's ``sanitize_name`` replaces (``copick/util/escape.py``).
_INVALID = re.compile(r'[<>:"/\\|?*\x00-\x1F\x7F\s_]')
#: Object-name endings copick reserves (``copick.util.segmentation.RESERVED_NAME_SUFFIXES``).
RESERVED_SUFFIXES = ("-multilabel",)
#: Chunks of copick's own OME-Zarr writer (``write_ome_zarr_3d``, ``chunk_size=(256, 256, 256)``).
CHUNK = 256


def copick_name(name: str) -> str:
    """``name`` as copick's ``sanitize_name`` makes it (``""`` when nothing is left).

    Examples: ``"1bxn"`` stays, ``"my_protein"`` becomes ``"my-protein"``, ``" a b "`` ``"a-b"``.
    """
    return _INVALID.sub("-", str(name)).strip("-")


def check_copick_id(value: str, option: str) -> str:
    """``value`` if copick accepts it as a user or session id, else :class:`InputError`."""
    if not value or copick_name(value) != value:
        raise InputError(f"{option} {value!r}: copick ids cannot be empty or contain white space, "
                         "'_' or any of <>:\"/\\|?* (copick's sanitize_name)")
    return value


def colour(label: int) -> tuple[int, int, int, int]:
    """A distinct RGBA colour for object ``label`` (golden-ratio hue walk, opaque)."""
    r, g, b = colorsys.hsv_to_rgb((0.1 + 0.618034 * label) % 1.0, 0.65, 0.95)
    return round(255 * r), round(255 * g), round(255 * b), 255


def pickable_object(name: str, label: int, *, is_particle: bool, radius_A: float | None,
                    pdb_id: str | None, filament: dict[str, Any] | None, source_name: str) -> dict[str, Any]:
    """One ``pickable_objects`` entry of the copick config (``copick.models.PickableObject``).

    ``label`` is the class id (the value in the multilabel segmentation, never 0: copick
    reserves 0 for background); ``radius`` the class's bounding-sphere radius in Å (tube
    radius for filaments); ``metadata.faket_dask.class_name`` the name in the run store.
    """
    meta: dict[str, Any] = {"faket_dask": {"class_name": source_name}}
    if filament is not None:
        meta["copick"] = {"filament": filament}
    return {"name": name, "is_particle": bool(is_particle), "label": int(label), "color": list(colour(label)),
            "pdb_id": pdb_id or None, "radius": None if radius_A is None else round(float(radius_A), 4),
            "metadata": meta}


@dataclass(frozen=True)
class ClassInfo:
    """One class of the store as a copick object.

    Attributes: ``store_name`` (the run store's class name), ``name`` (copick's), ``label``
    (class id), ``kind`` (``"protein"``, ``"shell"`` vesicle, ``"ball"`` fiducial,
    ``"filament"``), ``pdb_id`` (or None), ``radius_A`` (or None).
    """

    store_name: str
    name: str
    label: int
    kind: str
    pdb_id: str | None
    radius_A: float | None

    @property
    def is_particle(self) -> bool:
        return self.kind in ("protein", "filament")


def procedural_kinds() -> dict[str, str]:
    """Kind of the classes every generated specimen has (by their name in the store)."""
    from ..kernels.specimen_filaments import actin_class, microtubule_class
    from ..kernels.specimen_membranes import vesicle_class
    from ..kernels.specimen_templates import fiducial_class

    return {c.name: c.kind for c in (vesicle_class(), fiducial_class(), actin_class(), microtubule_class())}


def filament_spec(name: str) -> dict | None:
    """copick ``FilamentSpec`` of a filament class (polar; rise/twist for a one-start helix)."""
    from ..kernels.specimen_filaments import ACTIN, MICROTUBULE, actin_class, microtubule_class

    geom = {actin_class().name: ACTIN, microtubule_class().name: MICROTUBULE}.get(name)
    if geom is None:
        return None
    spec: dict = {"polar": True}
    if geom.n_pf == 1:
        spec.update(helical_rise_a=float(geom.rise_A), helical_twist_deg=float(geom.twist_deg))
    return spec


def class_infos(names: list[str], pdb_ids: list[str], tables: list[xr.Dataset], notices: list[str],
                store: Path) -> list[ClassInfo]:
    """copick objects of the store's classes (label = class id), renamed as copick would rename them.

    Parameters
    ----------
    names, pdb_ids : list of str
        The store's class names and PDB ids (``""``: none), class id ``k`` at ``k - 1``.
    tables : list of xarray.Dataset
        The exported particle tables (for the radii: largest ``radius_A`` of the class).
    notices : list of str
        Appended: one line per renamed class.
    store : Path
        Named in the messages.

    Raises
    ------
    InputError
        A name with nothing copick allows, two classes on one name, a name ending in
        ``-multilabel``.
    """
    kinds = procedural_kinds()
    out: list[ClassInfo] = []
    seen: dict[str, str] = {}
    for k, (store_name, pdb) in enumerate(zip(names, pdb_ids), start=1):
        name = copick_name(store_name)
        if not name:
            raise InputError(f"{store}: class {k} '{store_name}' has no character copick allows in a name; "
                             "rename the class (template file) and rerun")
        if name.endswith(RESERVED_SUFFIXES):
            raise InputError(f"{store}: class {k} '{store_name}' ends in '-multilabel', which copick reserves "
                             "for segmentation names; rename the class")
        if name in seen:
            raise InputError(f"{store}: classes '{seen[name]}' and '{store_name}' both become '{name}' in copick "
                             "(it replaces '_', spaces and <>:\"/\\|?* by '-'); rename one of them")
        seen[name] = store_name
        if name != store_name:
            notices.append(f"{store}: class {k} '{store_name}' is named '{name}' in copick (copick names cannot "
                           "contain '_', spaces or <>:\"/\\|?*)")
        radii = [float(tb["radius_A"].values[tb["class_id"].values == k].max()) for tb in tables
                 if (tb["class_id"].values == k).any()]
        out.append(ClassInfo(store_name, name, k, kinds.get(store_name, "protein"), pdb or None,
                             max(radii) if radii else None))
    return out


def pick_transforms(rot: np.ndarray, tilt: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """copick transforms ``(N, 4, 4)`` of particles with ZYZ angles ``rot, tilt, psi`` (degrees).

    ``T[:3, :3] = Rz(rot) Ry(tilt) Rz(psi)``: object (template) space to tomogram space, the
    same active rotation that rendered the particle; ``T[:3, 3] = 0``.
    """
    n = len(rot)
    out = np.tile(np.eye(4), (n, 1, 1))
    if n:
        out[:, :3, :3] = rotation_matrices(np.stack([rot, tilt, psi], axis=1))
    return out


def filament_frames(points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """copick transforms ``(n, 4, 4)`` along one filament path.

    Parameters
    ----------
    points : ndarray (n, 3)
        Path points (x, y, z), in order.
    normals : ndarray (n, 3)
        The path frame's normals (x, y, z) at the points.

    Returns
    -------
    ndarray (n, 4, 4)
        Columns of the rotation: +X the normal made perpendicular to the tangent, +Y = Z × X,
        +Z the unit tangent (central differences, one-sided at the ends); translation 0.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    n = len(pts)
    out = np.tile(np.eye(4), (n, 1, 1))
    if n < 2:
        return out
    t = np.gradient(pts, axis=0)
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    nrm = np.asarray(normals, np.float64).reshape(-1, 3)
    nx = nrm - t * np.sum(nrm * t, axis=1, keepdims=True)
    bad = np.linalg.norm(nx, axis=1) < 1e-9                    # normal along the tangent: any perpendicular
    if bad.any():
        helper = np.where(np.abs(t[bad, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
        nx[bad] = np.cross(t[bad], helper)
    nx /= np.linalg.norm(nx, axis=1, keepdims=True)
    out[:, :3, 0], out[:, :3, 1], out[:, :3, 2] = nx, np.cross(t, nx), t
    return out


def picks_record(object_name: str, run: str, voxel_spacing: float, locations_A: np.ndarray,
                 transforms: np.ndarray, instance_ids: np.ndarray, *, user_id: str, session_id: str,
                 trust_orientation: bool) -> dict[str, Any]:
    """A copick picks file (``copick.models.CopickPicksFile``) as a JSON-ready dict.

    ``locations_A`` (N, 3) x, y, z in Å; ``transforms`` (N, 4, 4); score 1 (ground truth).
    """
    points = [{"location": {"x": float(x), "y": float(y), "z": float(z)},
               "transformation_": np.asarray(T, np.float64).tolist(), "instance_id": int(i), "score": 1.0}
              for (x, y, z), T, i in zip(np.asarray(locations_A).reshape(-1, 3), transforms, instance_ids)]
    return {"pickable_object_name": object_name, "user_id": user_id, "session_id": session_id,
            "run_name": run, "voxel_spacing": float(voxel_spacing), "unit": "angstrom", "points": points,
            "trust_orientation": bool(trust_orientation)}


def filaments_record(object_name: str, run: str, voxel_spacing: float, paths_A: dict[int, np.ndarray],
                     radius_A: float | None, *, user_id: str, session_id: str) -> dict[str, Any]:
    """A copick filaments file (``copick.models.CopickFilamentsFile``): the traced centrelines.

    ``paths_A`` ``{filament id: (n, 3) points in Å}`` (paths of fewer than 2 points are left
    out: copick needs two); the point order is the renderer's, whose relation to the real
    structure's polarity is not modelled, hence ``polarity_known: false``.
    """
    fils = [{"instance_id": int(i), "points": np.asarray(p, np.float64).tolist(), "polarity_known": False,
             "score": 1.0, "radius": None if not radius_A else float(radius_A), "metadata": {}}
            for i, p in sorted(paths_A.items()) if len(p) >= 2]
    return {"pickable_object_name": object_name, "user_id": user_id, "session_id": session_id,
            "run_name": run, "voxel_spacing": float(voxel_spacing), "unit": "angstrom", "version": 1,
            "filaments": fils}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON (directories created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


# -- OME-Zarr (NGFF 0.4) in Zarr format 2, as copick and the Data Portal write it ---------------
class Strided:
    """``arr[::step, ::step, ::step]`` of a 3-D Zarr array (``n // step`` voxels per axis), read
    lazily: indexing it reads only the selected voxels (one output block at a time).

    With ``step = 2**k`` this is level ``k`` of a label volume by nearest neighbour (voxel ``2i``
    of the finer level, recursively), so labels stay labels; ``step = 1`` is the array itself.
    """

    def __init__(self, arr: Any, step: int = 1) -> None:
        self.arr, self.step = arr, int(step)
        self.shape = tuple(int(n) // self.step for n in arr.shape)
        self.dtype = np.dtype(arr.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        sl = []
        for k, n in zip(key, self.shape):
            a, b, _ = k.indices(n)
            sl.append(slice(a * self.step, b * self.step, self.step))
        return np.asarray(self.arr[tuple(sl)])


def write_ome_zarr_v2(path: Path, levels: list[Any], scales_A: list[float]) -> list[tuple[da.Array, Any]]:
    """Create an OME-Zarr multiscale image in Zarr format 2 and return what to store in it.

    The layout is what ``copick.util.ome.write_ome_zarr_3d`` (ome-zarr-py under zarr 2)
    writes: ``.zgroup``; ``.zattrs`` ``multiscales`` (version 0.4, axes z, y, x in angstrom,
    one ``scale`` transform per level, dataset paths ``"0"``, ``"1"``, …); arrays with
    ``dimension_separator "/"``, chunks of at most 256³, compressor
    ``Blosc(cname="lz4", clevel=5, shuffle=1)`` (zarr 2's default, also what the Data Portal's
    tomograms carry), fill value 0.

    Parameters
    ----------
    path : Path
        The image directory (``…/faket.zarr``); must not exist.
    levels : list of array-likes (z, y, x)
        Full resolution first; Zarr arrays or :class:`Strided` views (anything with ``shape``,
        ``dtype`` and slice indexing). Each output chunk is read straight from its source
        region, so memory is one chunk per task (64 MiB of float32), whatever the source's
        chunking.
    scales_A : list of float
        Voxel spacing (Å) of each level.

    Returns
    -------
    list of (dask array, zarr.Array)
        Lazy sources chunked like the new arrays, for ``dask.array.store(..., lock=False)``.
    """
    import uuid

    import numcodecs
    import zarr

    group = zarr.open_group(str(path), mode="w-", zarr_format=2)
    axes = [{"name": a, "type": "space", "unit": "angstrom"} for a in ("z", "y", "x")]
    datasets = [{"coordinateTransformations": [{"scale": [float(s)] * 3, "type": "scale"}], "path": str(k)}
                for k, s in enumerate(scales_A)]
    group.attrs["multiscales"] = [{"axes": axes, "datasets": datasets, "metadata": {}, "name": "/",
                                   "version": "0.4"}]
    out = []
    # the run store's codec (store.codecs.BLOSC), as zarr 2 spells it
    blosc = numcodecs.Blosc(cname=BLOSC["cname"], clevel=BLOSC["clevel"], shuffle=numcodecs.Blosc.SHUFFLE)
    for k, lv in enumerate(levels):
        chunks = tuple(max(1, min(CHUNK, int(s))) for s in lv.shape)
        arr = group.create_array(str(k), shape=lv.shape, chunks=chunks, dtype=lv.dtype, compressors=blosc,
                                 chunk_key_encoding={"name": "v2", "separator": "/"}, fill_value=0)
        src = da.from_array(lv, chunks=chunks, name=f"copick-{uuid.uuid4().hex}", lock=False,
                            meta=np.empty((0,) * len(lv.shape), lv.dtype))
        out.append((src, arr))
    return out
