"""Protein classes from a directory of templates: atomic models and MRC maps, in volts.

One class per file, named by the file stem, in file-name order:

* ``*.pdb``, ``*.ent``, ``*.cif``, ``*.mmcif`` (optionally ``.gz``): atomic models, whose
  potential relative to ice is computed with gemmi
  (:func:`faket_dask.kernels.atomic_model.potential_class`);
* ``*.mrc``: maps with declared units
  (:func:`faket_dask.kernels.atomic_model.volts_class_from_map`): ``"V"`` = volts relative to
  the solvent, taken as is; ``"normalised"`` = arbitrary units scaled to the protein-minus-ice
  contrast.

Every file is read and checked before any potential is computed, so a bad file fails in
seconds with one line naming it (:class:`~faket_dask.errors.InputError`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..kernels.atomic_model import (
    MAP_UNITS,
    MODEL_SUFFIXES,
    model_diameter_A,
    model_stem,
    potential_class,
    read_model,
    volts_class_from_map,
)
from ..kernels.specimen_templates import ClassTemplate

#: Class ids are uint8 with 0 = background, and vesicle, fiducial, actin and microtubule take
#: four more.
MAX_TEMPLATE_CLASSES = 250
#: A map's extent is that of its voxels at or above this fraction of its peak.
MAP_SUPPORT_FRACTION = 0.01


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".mrc"):
        return "map"
    base = name.removesuffix(".gz")
    return "model" if any(base.endswith(s) for s in MODEL_SUFFIXES) else None


def _read_mrc(f: Path) -> tuple[np.ndarray, float]:
    import mrcfile

    try:
        with mrcfile.open(f, permissive=True) as m:
            data = None if m.data is None else np.asarray(m.data, dtype=np.float32)
            vs = float(m.voxel_size.x)
    except Exception as e:  # noqa: BLE001 - any reader failure is a user error
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise InputError(f"{f}: not a readable MRC file ({msg})") from None
    if data is None or data.ndim != 3:
        shape = "no data" if data is None else f"shape {data.shape}"
        raise InputError(f"{f}: template must be a 3D density map, got {shape}")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{f}: contains NaN or inf")
    if not vs > 0:
        raise InputError(f"{f}: no voxel size in the header")
    if data.max() <= 0:
        raise InputError(f"{f}: the map has no positive value")
    return data, vs


def _map_diameter_A(data: np.ndarray, voxel_A: float) -> float:
    """Diameter (Å) around the centre of mass of the voxels >= 1 % of the peak."""
    w = np.clip(data, 0, None)
    idx = np.indices(data.shape).reshape(3, -1)
    com = (idx * w.reshape(-1)).sum(1) / w.sum()
    sel = (data >= MAP_SUPPORT_FRACTION * data.max()).reshape(-1)
    r = np.sqrt(((idx[:, sel] - com[:, None]) ** 2).sum(0)).max()
    return float(2 * (r + 0.5) * voxel_A)


def load_template_dir(
    templates_dir: str | Path,
    pixel_size_A: float,
    *,
    units: str = "V",
    bfactor_A2: float = 0.0,
    max_extent_A: float | None = None,
) -> list[ClassTemplate]:
    """One protein class per template file of ``templates_dir``, in volts relative to ice.

    Parameters
    ----------
    templates_dir : str or Path
        Directory of ``*.pdb``, ``*.ent``, ``*.cif``, ``*.mmcif`` (optionally ``.gz``) and
        ``*.mrc`` files; other files are ignored. Class name = file stem.
    pixel_size_A : float
        Voxel size of the specimen (Å).
    units : {"V", "normalised"}
        Units of the ``*.mrc`` maps (see :func:`volts_class_from_map`).
    bfactor_A2 : float
        Extra blur (Å²) of the atomic models.
    max_extent_A : float, optional
        The volume's smallest extent (Å); a class whose diameter exceeds it is an error.

    Returns
    -------
    list of ClassTemplate
        Kind ``"map"``, sorted by file name.

    Raises
    ------
    InputError
        One line naming the directory or file: directory missing, no supported files, more
        than 250 classes, two files with one stem, unknown units, unreadable or empty model,
        unreadable MRC, not 3-D, NaN/inf, no voxel size, no positive value, larger than the
        volume.
    """
    d = Path(templates_dir)
    if not d.is_dir():
        raise InputError(f"--templates {d}: not a directory")
    if units not in MAP_UNITS:
        allowed = ", ".join(repr(u) for u in MAP_UNITS)
        raise InputError(f"--templates {d}: unknown map units {units!r}; allowed: {allowed}")
    files = sorted((f for f in d.iterdir() if f.is_file() and _kind(f)), key=lambda f: f.name)
    if not files:
        raise InputError(f"--templates {d}: no template files "
                         f"(*{', *'.join(MODEL_SUFFIXES)}, *.mrc)")
    if len(files) > MAX_TEMPLATE_CLASSES:
        raise InputError(f"--templates {d}: {len(files)} templates; at most "
                         f"{MAX_TEMPLATE_CLASSES} classes fit uint8 class ids")
    seen: dict[str, Path] = {}
    for f in files:
        stem = model_stem(f) if _kind(f) == "model" else f.stem
        if stem in seen:
            raise InputError(f"{f}: class name {stem!r} is also that of {seen[stem].name}")
        seen[stem] = f
    # pass 1: read and check everything (cheap) before computing any potential (slow)
    inputs = []
    for f in files:
        if _kind(f) == "model":
            try:
                obj = read_model(f)
                diameter = model_diameter_A(obj, str(f))
            except ValueError as e:
                raise InputError(str(e)) from None
            what = "model"
        else:
            data, vs = _read_mrc(f)
            obj = (data, vs)
            diameter = _map_diameter_A(data, vs)
            what = "map"
        if max_extent_A is not None and diameter > max_extent_A:
            raise InputError(f"{f}: the {what} is {diameter:.0f} Å across but the volume's "
                             f"smallest extent is {max_extent_A:.0f} Å")
        inputs.append((f, model_stem(f) if what == "model" else f.stem, obj))
    # pass 2: the classes
    out = []
    for f, stem, obj in inputs:
        try:
            if isinstance(obj, tuple):
                out.append(volts_class_from_map(stem, obj[0], obj[1], pixel_size_A, units))
            else:
                out.append(potential_class(stem, obj, pixel_size_A, bfactor_A2=bfactor_A2))
        except ValueError as e:
            raise InputError(f"{f}: {e}") from None
    return out
