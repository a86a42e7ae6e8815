"""``faket-dask pick``: particle picks of a tomogram with a trained picker, block by block.

::

    plan = plan_pick("run.zarr", "picker.pt", "picks.csv", tomo=3)   # every check, nothing read
    table = run_pick(plan)                                              # pandas DataFrame
    write_picks(table, plan.out, source=plan.source, class_names=plan.class_names)

or :func:`pick` (``faket_dask.pick``) for all three.

Steps (kernels: :mod:`faket_dask.kernels.picking_peaks` for the default ``clustering="peaks"``,
:mod:`faket_dask.kernels.picking` for ``"components"``; each documents its method and the
measured reason for it):

1. The tomogram's mean and standard deviation (dask reductions in the source's own chunks, so
   they do not depend on ``block``): the picker sees each tomogram standardised as a whole,
   as in training (DeepFinder standardises each tomogram the same way).
2. One task per block of ``block`` voxels per edge (blocks start at multiples of ``block``):
   it reads the block, the peaks' margin (:func:`~faket_dask.kernels.picking_peaks.margin_voxels`,
   8 voxels by default; 0 for components) and a halo of ``halo`` voxels straight from the Zarr
   array or the memory-mapped MRC file, computes the class probabilities on the block and its
   margin, optionally writes the block's labels (argmax) and scores (max probability) into the
   ``save_segmentation`` store (its chunks are the blocks: no two tasks write one chunk), and
   returns the peaks inside the block (complete picks: nothing to glue) or the connected
   components of the picked classes' voxels (complete ones, and the pieces on its faces) —
   never the block. A task holds one window of ``(block + 2 margin + 2 halo)³`` voxels and the
   picker's activations on it, whatever the tomogram's size: memory is flat in the tomogram
   size (``benchmarks/bench_pick.py``).
   The window is read by the task itself rather than through ``dask.array.map_overlap``,
   whose shared neighbour chunks would stay in memory across a whole layer of blocks; and the
   labels are clustered in the task that made them, so no temporary segmentation store is
   written and read back (``save_segmentation`` keeps one when asked).
3. Components only: one task per pair of neighbouring blocks finds the pieces that touch across their face;
   the client glues them (:func:`~faket_dask.kernels.picking.merge_components`), drops
   components under ``min_size`` voxels and sorts the picks by class (picker order), z, y, x.

With ``halo >= PICK_CONTEXT_VOXELS`` (the default) the picks do not depend on ``block``:
components bit for bit; peaks in position, class and size, and in score to float32 rounding (a
convolution's summation order depends on its window's shape, ulp differences in ~1 % of the
probabilities; ``tests/test_pick.py``).
Workers must be able to read the store / MRC file and the picker file by the same paths (as
for every stage).
"""
from __future__ import annotations

import contextlib
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..kernels.picking import (
    BlockPieces,
    Components,
    block_components,
    face_edges,
    merge_components,
)
from ..kernels.picking_peaks import Peaks
from ..params.picking import (
    PICK_BLOCK,
    PICK_CLUSTERING,
    PICK_CONTEXT_VOXELS,
    PICK_MIN_SIZE,
    PICK_PEAK_RADIUS_A,
    PICK_PEAK_THRESHOLD,
    PICK_SMOOTH_SIGMA,
)
from .picking_io import (
    PICK_COLUMNS,
    Source,
    check_outputs,
    check_picker_classes,
    open_source,
    picks_dataset,
    write_picks,
)

_MODELS: dict[tuple, Any] = {}
_MODELS_LOCK = threading.Lock()


@dataclass
class PickPlan:
    """A checked picking job (:func:`plan_pick`); nothing of the tomogram read yet."""

    source: Source
    picker: Path
    class_names: list[str]
    channels: list[int]
    block: int
    halo: int
    min_size: int
    device: str
    out: Path | None = None
    overwrite: bool = False
    save_segmentation: Path | None = None
    meta: dict = field(default_factory=dict)
    clustering: str = PICK_CLUSTERING
    peak_radius: int = 3            # voxels (plan_pick converts --peak-radius-A)
    smooth_sigma: float = PICK_SMOOTH_SIGMA
    threshold: float = PICK_PEAK_THRESHOLD

    @property
    def margin(self) -> int:
        """Voxels of probabilities needed around a block (peaks; 0 for components)."""
        from ..kernels.picking_peaks import margin_voxels

        return margin_voxels(self.peak_radius, self.smooth_sigma) if self.clustering == "peaks" else 0


def plan_pick(source: str | Path, picker: str | Path, out: str | Path | None = None, *, tomo: int | None = None,
              modality: str | None = None, level: int = 0, classes: str | list[str] | None = None,
              min_size: int = PICK_MIN_SIZE, block: int = PICK_BLOCK, halo: int = PICK_CONTEXT_VOXELS,
              any_classes: bool = False, pixel_size_A: float | None = None, device: str = "cpu",
              overwrite: bool = False, save_segmentation: str | Path | None = None,
              clustering: str = PICK_CLUSTERING, peak_radius_A: float = PICK_PEAK_RADIUS_A,
              smooth_sigma: float = PICK_SMOOTH_SIGMA, threshold: float = PICK_PEAK_THRESHOLD) -> PickPlan:
    """Check a picking job, reading metadata only (parameters: :func:`pick`).

    Raises
    ------
    InputError, OutputExistsError
        See :func:`pick`.
    """
    from ..kernels.picker_net import SIZE_MULTIPLE, load_picker
    from ._common import resolve_device

    for name, v, low in (("--block", block, SIZE_MULTIPLE), ("--halo", halo, 0)):
        if int(v) != v or v < low or v % SIZE_MULTIPLE:
            raise InputError(f"{name} must be a multiple of {SIZE_MULTIPLE} (>= {low}), got {v}")
    if int(min_size) != min_size or min_size < 1:
        raise InputError(f"--min-size must be >= 1 voxel, got {min_size}")
    if clustering not in ("peaks", "components"):
        raise InputError(f"--clustering must be peaks or components, got {clustering!r}")
    if not (np.isfinite(peak_radius_A) and peak_radius_A > 0):
        raise InputError(f"--peak-radius-A must be a positive distance in Å, got {peak_radius_A}")
    if not (np.isfinite(smooth_sigma) and 0 <= smooth_sigma <= 8):
        raise InputError(f"--smooth-sigma must be in 0..8 voxels, got {smooth_sigma}")
    if not (np.isfinite(threshold) and 0 <= threshold < 1):
        raise InputError(f"--threshold must be in [0, 1), got {threshold}")
    out_path = check_outputs(out, save_segmentation, overwrite=overwrite)
    src = open_source(source, tomo=tomo, modality=modality, level=level, pixel_size_A=pixel_size_A)
    keep = [c.strip() for c in classes.split(",") if c.strip()] if isinstance(classes, str) else classes
    _, meta = load_picker(picker)
    channels = check_picker_classes(picker, meta, src, any_classes=any_classes, keep=keep)
    if len(meta["class_names"]) > 256:
        raise InputError(f"{picker}: {len(meta['class_names'])} channels; pick stores labels as uint8 (≤ 256)")
    peak_radius = max(1, int(np.floor(peak_radius_A / src.pixel_size_A + 0.5)))   # voxels, half up
    if clustering == "peaks" and peak_radius > 32:
        raise InputError(f"--peak-radius-A {peak_radius_A:g} is {peak_radius} voxels of {src.pixel_size_A:g} Å "
                         f"in {src.label}; at most 32")
    return PickPlan(src, Path(picker), list(meta["class_names"]), channels, int(block), int(halo), int(min_size),
                    resolve_device(device), out_path, overwrite,
                    None if save_segmentation is None else Path(save_segmentation), meta,
                    clustering, int(peak_radius), float(smooth_sigma), float(threshold))


def pick(source: str | Path, picker: str | Path, out: str | Path | None = None, *, tomo: int | None = None,
         modality: str | None = None, level: int = 0, classes: str | list[str] | None = None,
         min_size: int = PICK_MIN_SIZE, block: int = PICK_BLOCK, halo: int = PICK_CONTEXT_VOXELS,
         any_classes: bool = False, pixel_size_A: float | None = None, device: str = "cpu",
         overwrite: bool = False, save_segmentation: str | Path | None = None,
         clustering: str = PICK_CLUSTERING, peak_radius_A: float = PICK_PEAK_RADIUS_A,
         smooth_sigma: float = PICK_SMOOTH_SIGMA, threshold: float = PICK_PEAK_THRESHOLD):
    """Pick particles in a tomogram with a trained picker (``faket-dask train-picker``).

    Runs on the active ``distributed.Client`` if there is one, else one block at a time here.

    Parameters
    ----------
    source : path
        A run store (its ``tomo_NNN/tomogram/MODALITY``) or an MRC volume (``.mrc``, ``.rec``,
        ``.map``, …; voxel size from the header, read through a memory map block by block).
    picker : path
        Picker checkpoint (:func:`~faket_dask.kernels.picker_net.load_picker`).
    out : path, optional
        Write the picks here: ``.csv`` (columns :data:`~.picking_io.PICK_COLUMNS`), RELION
        ``.star`` or SHREC ``.txt`` (:func:`~.picking_io.write_picks`).
    tomo, modality, level : optional
        Store only: tomogram index (0), modality (``measured``), OME-NGFF level (0).
    classes : str or list of str, optional
        Keep only these classes (``"a,b"``); default all of the picker's.
    min_size : int
        Smallest pick: voxels of its component (components), or voxels labelled with a picked
        class within the peak radius of the peak (peaks).
    block : int
        Block edge (voxels, multiple of 4): memory per task grows with ``(block + 2 halo)³``.
    halo : int
        Context voxels read around each block (multiple of 4). Default
        :data:`~faket_dask.params.picking.PICK_CONTEXT_VOXELS`: picks independent of ``block``;
        less is faster, and changes probabilities near block faces.
    any_classes : bool
        Pick a store tomogram whose true classes do not include the picker's.
    pixel_size_A : float, optional
        MRC only: voxel size (Å) instead of the header's.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``; CUDA tasks ask for the worker resource ``GPU=1``.
    overwrite : bool
        Replace ``out`` / ``save_segmentation``.
    save_segmentation : path, optional
        Also write a Zarr store with ``labels`` (uint8, picker channel) and ``score``
        (float16, max probability), dims (z, y, x), chunks = blocks.
    clustering : {"peaks", "components"}
        One pick per local maximum of the particle probability
        (:mod:`~faket_dask.kernels.picking_peaks`), or per connected component of labelled
        voxels (:mod:`~faket_dask.kernels.picking`); ``docs/picking.md`` compares them.
    peak_radius_A : float
        Peaks: the closest two picks may be (Å; the maximum filter's ball radius, rounded half
        up to whole voxels of the tomogram, at least 1).
    smooth_sigma : float
        Peaks: Gaussian smoothing of the particle probability (voxels; 0: none).
    threshold : float
        Peaks: smallest smoothed particle probability of a pick, in [0, 1).

    Returns
    -------
    pandas.DataFrame
        One row per pick, columns :data:`~.picking_io.PICK_COLUMNS`, sorted by class (picker
        order), z, y, x.

    Raises
    ------
    InputError
        Before anything is read: bad ``block``/``halo``/``min_size``; unknown ``out`` suffix or
        missing folder; no such store/MRC file; a tomogram index, modality or level the store
        lacks; not a picker file; a picker from another class list (``any_classes`` to pick
        anyway); ``classes`` the picker lacks; a clustering setting out of range. After the statistics: a constant or non-finite
        tomogram.
    OutputExistsError
        ``out`` or ``save_segmentation`` exists and ``overwrite`` is false.
    """
    plan = plan_pick(source, picker, out, tomo=tomo, modality=modality, level=level, classes=classes,
                     min_size=min_size, block=block, halo=halo, any_classes=any_classes, pixel_size_A=pixel_size_A,
                     device=device, overwrite=overwrite, save_segmentation=save_segmentation,
                     clustering=clustering, peak_radius_A=peak_radius_A, smooth_sigma=smooth_sigma,
                     threshold=threshold)
    table = run_pick(plan)
    if plan.out is not None:
        write_picks(table, plan.out, source=plan.source, class_names=plan.class_names, overwrite=overwrite)
    return table


def _regions(shape: tuple[int, ...], block: int) -> dict[tuple[int, int, int], tuple[tuple[int, int], ...]]:
    """Block index (i, j, k) → ((z0, z1), (y0, y1), (x0, x1))."""
    edges = [[(s, min(s + block, n)) for s in range(0, n, block)] for n in shape]
    return {(i, j, k): (ez, ey, ex) for i, ez in enumerate(edges[0]) for j, ey in enumerate(edges[1])
            for k, ex in enumerate(edges[2])}


def _model(path: str, device: str):
    """The picker on ``device``, loaded once per worker process (and per file version)."""
    from ..kernels.picker_net import load_picker

    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size, device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS.clear()
            _MODELS[key] = load_picker(path, device)[0]
        return _MODELS[key]


def _pick_block(reader: Any, region: tuple, shape: tuple, *, halo: int, mean: float, std: float, picker: str,
                device: str, channels: list[int], index: int, min_size: int, segmentation: str | None,
                peaks: dict | None = None) -> BlockPieces | Peaks:
    """Segment and cluster one block (step 2 of the module docstring).

    ``peaks`` (``margin``, ``radius``, ``sigma``, ``threshold``): find the block's peaks from
    probabilities on the block and ``margin`` voxels around it; else connected components.
    """
    from ..cluster import set_torch_threads
    from ..kernels.picking import labels_and_score, pad_window, probabilities
    from ..kernels.picking_peaks import block_peaks

    if device == "cpu":
        set_torch_threads()
    margin = peaks["margin"] if peaks else 0
    # the probabilities are wanted on ``ext`` (the block and its margin, inside the tomogram)
    ext = [(max(a - margin, 0), min(b + margin, n)) for (a, b), n in zip(region, shape)]
    lo = [max(a - halo, 0) for a, _ in ext]
    hi = [min(b + halo, n) for (_, b), n in zip(ext, shape)]
    data = np.asarray(reader[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], dtype=np.float32)
    data = (data - np.float32(mean)) / np.float32(std)
    window = pad_window(data, [halo - (a - l) for (a, _), l in zip(ext, lo)],
                        [halo - (h - b) for (_, b), h in zip(ext, hi)])
    del data
    probs = probabilities(_model(picker, device), window, halo, [b - a for a, b in ext], device)
    del window
    core = tuple(slice(a - e, b - e) for (a, b), (e, _) in zip(region, ext))
    labels, score = labels_and_score(probs[(slice(None), *core)])
    if segmentation is not None:
        import zarr

        group = zarr.open_group(segmentation, mode="r+")
        where = tuple(slice(a, b) for a, b in region)
        group["labels"][where] = labels
        group["score"][where] = score
    if peaks:
        found = block_peaks(probs, origin=[e for e, _ in ext], core=region, channels=channels,
                            radius=peaks["radius"], sigma=peaks["sigma"], threshold=peaks["threshold"])
        keep = found.size >= min_size
        return Peaks(found.zyx[keep], found.cls[keep], found.size[keep], found.score[keep])
    del probs
    neighbours = [(a > 0, b < n) for (a, b), n in zip(region, shape)]
    return block_components(labels, score, origin=[a for a, _ in region], classes=channels, block_index=index,
                            neighbours=neighbours, min_size=min_size)


def _without_faces(pieces: BlockPieces) -> tuple[Components, Components]:
    return pieces.complete, pieces.partial


def statistics(plan: PickPlan) -> tuple[float, float]:
    """Mean and standard deviation (float64) of the tomogram, in the source's own chunks.

    Raises
    ------
    InputError
        Non-finite values, or a constant tomogram.
    """
    from ..progress import compute

    data = plan.source.volume.data
    mean, std = compute([data.mean(dtype=np.float64), data.std(dtype=np.float64)], label="tomogram statistics")
    mean, std = float(mean), float(std)
    if not (np.isfinite(mean) and np.isfinite(std)):
        raise InputError(f"{plan.source.label}: the tomogram has NaN or infinite values")
    if not std > 0:
        raise InputError(f"{plan.source.label}: the tomogram is constant ({mean:g}); nothing to pick")
    return mean, std


def _create_segmentation(plan: PickPlan) -> str:
    import shutil

    import zarr

    from ..store.codecs import compressors

    path = plan.save_segmentation
    assert path is not None
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    chunks = tuple(min(plan.block, n) for n in plan.source.shape)
    for name, dtype in (("labels", "uint8"), ("score", "float16")):
        group.create_array(name, shape=plan.source.shape, chunks=chunks, dtype=dtype, fill_value=0,
                           dimension_names=("z", "y", "x"), compressors=compressors())
    group.attrs.update(class_names=plan.class_names, pixel_size_A=plan.source.pixel_size_A,
                       source=plan.source.label, picker=str(plan.picker.resolve()),
                       description="labels: argmax picker channel (class_names[k], 0 = background); "
                                   "score: max class probability")
    return str(path)


def run_pick(plan: PickPlan):
    """Compute the picks of a :func:`plan_pick` plan (steps 1–3 of the module docstring).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`~.picking_io.PICK_COLUMNS`, one row per pick.
    """
    import dask
    from dask import delayed

    from ..progress import compute, current_client
    from ..torch_import import import_torch_everywhere
    from ._common import gpu_annotation
    from .style_settings import check_device_usable

    check_device_usable(plan.device)     # CUDA: a GPU here, or workers offering GPU=1
    # every worker imports torch before the blocks' tasks (which also run SciPy) start:
    # a thread importing torch breaks SciPy in the process's other threads (torch_import.py)
    import_torch_everywhere(current_client())
    mean, std = statistics(plan)
    shape = plan.source.shape
    seg = _create_segmentation(plan) if plan.save_segmentation is not None else None
    regions = _regions(shape, plan.block)
    counts = [len(range(0, n, plan.block)) for n in shape]
    token = uuid.uuid4().hex[:12]
    picker = str(plan.picker.resolve())
    peaks = None if plan.clustering != "peaks" else {
        "margin": plan.margin, "radius": plan.peak_radius, "sigma": plan.smooth_sigma, "threshold": plan.threshold}
    blocks = {}
    with gpu_annotation(plan.device):
        for n, (ijk, region) in enumerate(regions.items()):
            blocks[ijk] = delayed(_pick_block, pure=False)(
                plan.source.reader, region, shape, halo=plan.halo, mean=mean, std=std, picker=picker,
                device=plan.device, channels=plan.channels, index=n, min_size=plan.min_size, segmentation=seg,
                peaks=peaks, dask_key_name=f"pick-block-{token}-{n}")
    local = current_client() is None   # here: one block at a time, torch on every core
    if peaks is not None:
        # each block holds exactly the peaks inside it: nothing to glue
        with dask.config.set(scheduler="synchronous") if local else contextlib.nullcontext():
            found = compute(list(blocks.values()), label="picking")
        allp = Peaks.concat(found)
        return _frame(allp.cls, allp.zyx.astype(np.float64), allp.size, allp.score, plan)
    edges = []
    for (i, j, k), pieces in blocks.items():
        for axis in range(3):
            nxt = [i, j, k]
            nxt[axis] += 1
            if nxt[axis] < counts[axis]:
                edges.append(delayed(face_edges)(pieces, blocks[tuple(nxt)], axis,
                                                 dask_key_name=f"pick-face-{token}-{i}-{j}-{k}-{axis}"))
    summaries = [delayed(_without_faces)(b, dask_key_name=f"pick-pieces-{token}-{n}")
                 for n, b in enumerate(blocks.values())]
    with dask.config.set(scheduler="synchronous") if local else contextlib.nullcontext():
        done = compute(summaries + edges, label="picking")
    pieces, pairs = done[:len(summaries)], done[len(summaries):]
    complete = Components.concat([c for c, _ in pieces])
    merged = merge_components(Components.concat([p for _, p in pieces]),
                              np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64))
    merged = merged.select(merged.count >= plan.min_size)
    return picks_frame(Components.concat([complete, merged]), plan)


def picks_frame(comps: Components, plan: PickPlan):
    """The picks table of components: centroids, Å from the corner, sizes, mean scores."""
    zyx = comps.centroid_zyx() if len(comps) else np.zeros((0, 3))
    return _frame(comps.cls, zyx, comps.count, comps.score_sum / np.maximum(comps.count, 1), plan)


def _frame(cls: np.ndarray, zyx: np.ndarray, size: np.ndarray, score: np.ndarray, plan: PickPlan):
    """The picks table: positions in voxels and Å from the corner, class names, sizes, scores.

    Sorted by picker channel, then z, y, x (then size, score).
    """
    import pandas as pd

    zyx = np.asarray(zyx, np.float64).reshape(-1, 3)
    order = np.lexsort((score, size, zyx[:, 2], zyx[:, 1], zyx[:, 0], cls))
    names = np.asarray(plan.class_names, dtype=object)
    df = pd.DataFrame({"class_name": names[cls[order]].astype(str) if len(cls) else np.zeros(0, str),
                       "x": zyx[order, 2], "y": zyx[order, 1], "z": zyx[order, 0],
                       "size": np.asarray(size)[order], "score": np.asarray(score, np.float64)[order]})
    table = picks_dataset(df, plan.source.shape, plan.source.pixel_size_A, plan.class_names)
    for c in ("x_A", "y_A", "z_A"):
        df[c] = table[c].values
    return df[list(PICK_COLUMNS)]
