"""``faket-dask export-copick``: a run store as a copick filesystem project.

:func:`plan_copick_export` checks everything (store, destination, modalities, names) and reads
the small tables before a byte is written; :func:`write_copick_project` streams the volumes
into a temporary sibling of the destination and renames it at the end, so a failure leaves
nothing (:func:`export_copick` does both). The pieces and their conventions (with sources)
are in :mod:`faket_dask.stages.copick_model` and ``docs/formats.md``; the layout::

    ROOT/copick_config.json                      config_type filesystem, overlay_root ROOT
    ROOT/ExperimentRuns/tomo_000/                one run per tomogram
      VoxelSpacing20.000/faket.zarr              OME-NGFF 0.4 in zarr format 2, levels 0, 1, 2
      Segmentations/20.000_USER_SESSION_class-mask-multilabel.zarr   the class mask (labels)
      Picks/USER_SESSION_OBJECT.json             one file per class with particles in the run
      Filaments/USER_SESSION_OBJECT.json         filament centrelines (actin, microtubule)

Class names copick cannot use (copick's ``sanitize_name``: no ``_``, white space or
``<>:"/\\|?*``) are **renamed** as copick would rename them (``my_protein`` → ``my-protein``)
with a notice; a name that renames to nothing, to another class's name or to a name ending in
``-multilabel`` is refused. The store's name is kept in each object's
``metadata.faket_dask.class_name``.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import InputError, OutputExistsError
from ..store.layout import labels_group, labels_particles_group, tomo_name, tomogram_group
from . import copick_model as cm

#: The config file inside ROOT (copick reads it with ``copick.from_file``).
CONFIG_NAME = "copick_config.json"
#: Name of the multilabel segmentation (the class mask on the tomogram grid).
SEGMENTATION_NAME = "class-mask"
#: Default copick user and session ids (session ``"0"``: made by a tool, copick's ``from_tool``).
DEFAULT_USER_ID = "faket-dask"
DEFAULT_SESSION_ID = "0"
#: Threads copying volumes (each holds about four 256³ chunks: read, encode; ~256 MiB of float32).
MAX_THREADS = 8


@dataclass
class RunPlan:
    """One tomogram: its images, labels and particle table (tomogram grid)."""

    tomo: int
    images: dict[str, tuple[list[str], list[float]]]      # modality -> (level paths, scales in Å)
    table: xr.Dataset | None = None                          # tomogram-grid table (in memory)
    derived: bool = False                                    # table derived from the labels
    has_labels: bool = False

    @property
    def name(self) -> str:
        return tomo_name(self.tomo)


@dataclass
class CopickPlan:
    """Everything :func:`write_copick_project` needs, checked."""

    store: Path
    root: Path
    user_id: str
    session_id: str
    modalities: list[str]
    classes: list[cm.ClassInfo]
    runs: list[RunPlan]
    notices: list[str] = field(default_factory=list)


def check_root(root: str | Path, store: Path, *, overwrite: bool) -> Path:
    """Validate the destination: parent exists, not inside the store, replaceable if it exists.

    Raises
    ------
    OutputExistsError
        ``root`` exists and ``overwrite`` is false.
    InputError
        Missing parent directory; ``root`` inside the store; with ``overwrite``, ``root`` is not
        a copick project (no ``copick_config.json``) and not empty, so it is not replaced.
    """
    root = Path(root).absolute()
    if root.exists() and not overwrite:
        raise OutputExistsError(f"{root}: exists; pass --overwrite to replace it")
    if not root.parent.is_dir():
        raise InputError(f"{root}: directory {root.parent} does not exist")
    if root == store.absolute() or store.absolute() in root.parents:
        raise InputError(f"{root}: inside the run store {store}; choose another directory")
    if root.exists() and not (root.is_dir() and ((root / CONFIG_NAME).is_file() or not any(root.iterdir()))):
        raise InputError(f"{root}: exists and is not a copick project (no {CONFIG_NAME}); not replacing it")
    return root


def _tomograms(store: Path) -> dict[int, dict[str, tuple[list[str], list[float]]]]:
    """``{tomo: {modality: (level paths, scales)}}`` of every reconstructed tomogram."""
    import zarr

    from ..store import MARKER, ngff, open_root

    if MARKER not in open_root(store).attrs:
        raise InputError(f"{store}: not a faket-dask run store (no '{MARKER}' attribute)")
    root = zarr.open_group(str(store), mode="r", use_consolidated=False)   # the current listing
    out: dict[int, dict[str, tuple[list[str], list[float]]]] = {}
    for key in sorted(root.group_keys()):
        tail = key.rpartition("_")[2]
        if not (tail.isdigit() and tomo_name(int(tail)) == key):
            continue
        t = int(tail)
        try:
            group = root[tomogram_group(t)]
        except KeyError:
            continue
        images = {}
        for mod, sub in sorted(group.groups()):
            if isinstance(sub, zarr.Group) and ngff.is_image(sub):
                attrs = sub.attrs.asdict()
                ms = attrs.get("ome", attrs)["multiscales"][0]
                scales = [float(next(c["scale"][-1] for c in d["coordinateTransformations"] if c["type"] == "scale"))
                          for d in ms["datasets"]]
                images[mod] = (ngff.levels(sub), scales)
        if images:
            out[t] = images
    if not out:
        raise InputError(f"{store}: no reconstructed tomograms (tomo_NNN/tomogram); run `faket-dask simulate` "
                         "or `faket-dask reconstruct` first")
    return out


def _run_table(store: Path, t: int) -> tuple[xr.Dataset | None, bool, xr.DataArray | None]:
    """The tomogram-grid particle table (or one derived from the labels), and the labels."""
    from ..kernels.specimen_placement import COLUMNS
    from ..store import has_var
    from ..store import open as open_group
    from .particles import particles_from_masks

    labels = None
    if has_var(store, f"{labels_group(t)}/class_mask"):
        labels = open_group(store, labels_group(t))["class_mask"]
    lp = labels_particles_group(t)
    if has_var(store, f"{lp}/x"):
        table = open_group(store, lp, in_memory=True)
        missing = [c for c in COLUMNS if c not in table]
        if missing:
            raise InputError(f"{store}: {lp} lacks {', '.join(missing)}")
        if table.sizes.get("particle", 0):
            return table, False, labels
    if labels is not None:
        return particles_from_masks(labels), True, labels
    return None, False, None


def _class_list(table: xr.Dataset | None, labels: xr.DataArray | None) -> tuple[list[str], list[str]]:
    """Class names and PDB ids (``""`` when none) of one tomogram, from its labels or table."""
    for src in (labels, table):
        if src is not None and src.attrs.get("class_names") is not None:
            names = [str(n) for n in src.attrs["class_names"]]
            pdb = [str(p) for p in src.attrs.get("class_pdb_ids", [""] * len(names))]
            return names, pdb + [""] * (len(names) - len(pdb))
    if table is not None and table.sizes.get("particle", 0):
        k = int(np.max(table["class_id"].values))
        names = [f"class_{i}" for i in range(1, k + 1)]
        for i, n in zip(table["class_id"].values, table["class_name"].values):
            names[int(i) - 1] = str(n)
        return names, [""] * k
    return [], []


def plan_copick_export(store: str | Path, root: str | Path, *, modalities: list[str] | None = None,
                       user_id: str = DEFAULT_USER_ID, session_id: str = DEFAULT_SESSION_ID,
                       overwrite: bool = False) -> CopickPlan:
    """Check an export and read what it needs (tables, class lists); nothing is written.

    Parameters
    ----------
    store : path
        Run store with reconstructed tomograms (``tomo_NNN/tomogram``) and, for picks and the
        segmentation, labels (``tomo_NNN/labels``, ``tomo_NNN/labels_particles``).
    root : path
        The copick project directory to create.
    modalities : list of str, optional
        Tomogram modalities to export (copick tomogram types); default every modality all
        tomograms have.
    user_id, session_id : str
        copick's user and session of the picks and segmentations (session ``"0"``: made by a
        tool).
    overwrite : bool
        Replace an existing project.

    Returns
    -------
    CopickPlan
        With ``notices`` (renamed classes, tomograms without labels) to show the user.

    Raises
    ------
    InputError
        Missing store or not a run store, no tomograms, a modality some tomogram lacks, bad ids,
        class names copick cannot use, tomograms with different class lists, missing parent
        directory.
    OutputExistsError
        ``root`` exists and ``overwrite`` is false.
    """
    store = Path(store)
    cm.check_copick_id(user_id, "--user-id")
    cm.check_copick_id(session_id, "--session-id")
    root = check_root(root, store, overwrite=overwrite)
    tomos = _tomograms(store)
    common = sorted(set.intersection(*(set(v) for v in tomos.values())))
    if modalities is None:
        modalities = common
    modalities = list(dict.fromkeys(m.strip() for m in modalities if m.strip()))
    if not modalities:
        raise InputError(f"{store}: no modality to export (every tomogram has: {', '.join(common) or 'none'})")
    notices: list[str] = []
    for m in modalities:
        lacking = [tomo_name(t) for t, imgs in tomos.items() if m not in imgs]
        if lacking:
            raise InputError(f"{store}: no '{m}' tomogram in {', '.join(lacking)} (every tomogram has: "
                             f"{', '.join(common) or 'none'})")
        if cm.copick_name(m) != m:
            raise InputError(f"{store}: modality '{m}' is not a valid copick tomogram type")
    runs, tables, class_list = [], [], None
    for t, imgs in sorted(tomos.items()):
        table, derived, labels = _run_table(store, t)
        run = RunPlan(t, {m: imgs[m] for m in modalities}, table, derived, labels is not None)
        if labels is None and table is None:
            notices.append(f"{store}: {run.name} has no labels (tomo_NNN/labels); its run gets tomograms only")
        elif derived:
            notices.append(f"{store}: {run.name} has no particle table on the tomogram grid; picks derived from "
                           "its labels (centroids of connected components, orientations unknown)")
        names = _class_list(table, labels)
        if table is not None and table.sizes.get("particle", 0):
            ids, tnames = table["class_id"].values, table["class_name"].values.astype(str)
            bad = [f"{n} (id {k})" for k, n in sorted(set(zip(ids.tolist(), tnames.tolist())))
                   if not 0 < k <= len(names[0]) or names[0][k - 1] != n]
            if bad:
                raise InputError(f"{store}: {run.name}'s particle table has classes its class list lacks: "
                                 f"{', '.join(bad)}")
        if names[0] and class_list is not None and class_list[0] != names[0]:
            raise InputError(f"{store}: {run.name} has other classes than the tomograms before it "
                             f"({names[0]} vs {class_list[0]}); one copick project needs one class list")
        if names[0]:
            class_list = names
        if table is not None:
            tables.append(table)
        runs.append(run)
    classes = cm.class_infos(*(class_list or ([], [])), tables, notices, store)
    return CopickPlan(store, root, user_id, session_id, modalities, classes, runs, notices)


def _run_picks(plan: CopickPlan, run: RunPlan, run_dir: Path) -> int:
    """Write the picks (and filament centrelines) of one run; the number of picks."""
    tb = run.table
    if tb is None or not tb.sizes.get("particle", 0):
        return 0
    px = float(tb.attrs["pixel_size_A"])
    ids = np.asarray(tb["particle"].values, np.int64)
    cls = np.asarray(tb["class_id"].values, np.int64)
    xyz = np.stack([np.asarray(tb[a].values, np.float64) for a in ("x", "y", "z")], 1)
    has_paths = "filament_id" in tb
    total = 0
    for c in plan.classes:
        rows = np.flatnonzero(cls == c.label)
        if not len(rows):
            continue
        trust = c.kind in ("protein", "shell", "filament") and not run.derived
        loc = xyz[rows] * px
        T = (cm.pick_transforms(*(np.asarray(tb[a].values)[rows] for a in ("rot", "tilt", "psi")))
             if trust else np.tile(np.eye(4), (len(rows), 1, 1)))
        inst = ids[rows]
        paths: dict[int, np.ndarray] = {}
        if c.kind == "filament" and has_paths:
            fid = np.asarray(tb["filament_id"].values, np.int64)
            pts = np.stack([np.asarray(tb[f"filament_{a}"].values) for a in "xyz"], 1) * px
            nrm = np.stack([np.asarray(tb[f"filament_n{a}"].values) for a in "xyz"], 1)
            locs, frames, insts = [], [], []
            for j, r in enumerate(rows):        # a filament with a path: its points, else its row
                sel = fid == ids[r]
                if sel.any():
                    paths[int(ids[r])] = pts[sel]
                    locs.append(pts[sel])
                    frames.append(cm.filament_frames(pts[sel], nrm[sel]))
                    insts.append(np.full(int(sel.sum()), ids[r]))
                else:
                    locs.append(loc[j:j + 1])
                    frames.append(T[j:j + 1])
                    insts.append(inst[j:j + 1])
            loc, T, inst = np.concatenate(locs), np.concatenate(frames), np.concatenate(insts)
        fname = f"{plan.user_id}_{plan.session_id}_{c.name}.json"
        cm.write_json(run_dir / "Picks" / fname, cm.picks_record(
            c.name, run.name, px, loc, T, inst, user_id=plan.user_id, session_id=plan.session_id,
            trust_orientation=trust))
        if paths:
            cm.write_json(run_dir / "Filaments" / fname, cm.filaments_record(
                c.name, run.name, px, paths, c.radius_A, user_id=plan.user_id, session_id=plan.session_id))
        total += len(loc)
    return total


def _run_volumes(plan: CopickPlan, run: RunPlan, run_dir: Path) -> None:
    """Stream the run's tomograms and class mask into OME-Zarr v2 images, chunk by chunk.

    Tomogram levels are the store's own levels (``s0, s1, s2``: 2×2×2 block means); the class
    mask's coarser levels take every ``2**k``-th voxel (:class:`~.copick_model.Strided`).
    """
    import dask.array as da
    import zarr

    if not (run.images or run.has_labels):
        return
    src = zarr.open_group(str(plan.store), mode="r", use_consolidated=False)
    pairs = []
    n_levels = 1
    for mod, (paths, scales) in run.images.items():
        vs_dir = run_dir / f"VoxelSpacing{scales[0]:.3f}"
        vs_dir.mkdir(parents=True, exist_ok=True)
        (vs_dir / ".meta").write_text("meta")               # as copick's VoxelSpacing.ensure writes it
        image = src[f"{tomogram_group(run.tomo)}/{mod}"]
        pairs += cm.write_ome_zarr_v2(vs_dir / f"{mod}.zarr", [image[p] for p in paths], scales)
        n_levels = max(n_levels, len(paths))
    if run.has_labels:
        mask = src[f"{labels_group(run.tomo)}/class_mask"]
        vs = float(mask.attrs["pixel_size_A"])
        levels = [cm.Strided(mask, 2**k) for k in range(n_levels)]
        levels = [lv for lv in levels if min(lv.shape) >= 1]
        seg = (run_dir / "Segmentations" /
               f"{vs:.3f}_{plan.user_id}_{plan.session_id}_{SEGMENTATION_NAME}-multilabel.zarr")
        seg.parent.mkdir(parents=True, exist_ok=True)
        pairs += cm.write_ome_zarr_v2(seg, levels, [vs * 2**k for k in range(len(levels))])
    if pairs:   # threads: I/O and Blosc release the GIL; ~4 chunks (256 MiB) in flight per thread
        from dask.system import CPU_COUNT

        da.store([s for s, _ in pairs], [t for _, t in pairs], lock=False, scheduler="threads",
                 num_workers=min(CPU_COUNT, MAX_THREADS))


def copick_config(plan: CopickPlan) -> dict:
    """The copick filesystem config (``copick.impl.filesystem.CopickConfigFSSpec``) of a plan.

    ``overlay_root`` is ``local://`` + the absolute path of ROOT (no ``static_root``: the
    project is one writable tree); ``overlay_fs_args.auto_mkdir`` lets copick create
    directories when users add picks (copick's local file system needs it).
    """
    objects = [cm.pickable_object(c.name, c.label, is_particle=c.is_particle, radius_A=c.radius_A,
                                  pdb_id=c.pdb_id, filament=cm.filament_spec(c.store_name) if c.kind == "filament" else None,
                                  source_name=c.store_name) for c in plan.classes]
    return {"config_type": "filesystem", "name": f"faket-dask {plan.store.name}",
            "description": f"Simulated cryo-ET data exported by faket-dask from {plan.store.absolute()}",
            "pickable_objects": objects, "user_id": plan.user_id, "session_id": plan.session_id,
            "overlay_root": f"local://{plan.root}", "overlay_fs_args": {"auto_mkdir": True}}


def write_copick_project(plan: CopickPlan) -> dict[str, int]:
    """Write the project of a plan (:func:`plan_copick_export`); atomically replace ROOT.

    Everything is written into ``.ROOT.part-PID`` next to ROOT, which is renamed to ROOT at the
    end (an existing ROOT, with ``overwrite``, is moved aside first and then deleted); on any
    error the temporary directory is removed and ROOT is untouched.

    Returns
    -------
    dict
        ``{"runs": ..., "tomograms": ..., "picks": ...}`` counts.
    """
    root = plan.root
    tmp = root.with_name(f".{root.name}.part-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {"runs": 0, "tomograms": 0, "picks": 0}
    try:
        tmp.mkdir()
        cm.write_json(tmp / CONFIG_NAME, copick_config(plan))
        for run in plan.runs:
            run_dir = tmp / "ExperimentRuns" / run.name
            run_dir.mkdir(parents=True)
            (run_dir / ".meta").write_text("meta")           # as copick's new_run writes it
            _run_volumes(plan, run, run_dir)
            counts["picks"] += _run_picks(plan, run, run_dir)
            counts["runs"] += 1
            counts["tomograms"] += len(run.images)
        old = root.with_name(f".{root.name}.old-{os.getpid()}")
        if root.exists():
            os.replace(root, old)
        try:
            os.replace(tmp, root)
        except BaseException:
            if old.exists():
                os.replace(old, root)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts


def export_copick(store: str | Path, root: str | Path, *, modalities: list[str] | None = None,
                  user_id: str = DEFAULT_USER_ID, session_id: str = DEFAULT_SESSION_ID,
                  overwrite: bool = False) -> CopickPlan:
    """Plan and write a copick project (:func:`plan_copick_export`, :func:`write_copick_project`).

    Returns the plan (its ``notices`` say which classes were renamed); raises what
    :func:`plan_copick_export` raises, before anything is written.
    """
    plan = plan_copick_export(store, root, modalities=modalities, user_id=user_id, session_id=session_id,
                              overwrite=overwrite)
    write_copick_project(plan)
    return plan
