"""Planning a run: everything validated before any work (config, inputs, output, weights,
disk), resolved into a :class:`Plan`; seeds and the run hash that identifies its results."""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import store as st
from ..config import RunConfig
from ..errors import InputError, OutputExistsError

STORE_NAME = "run.zarr"
FIGURES = "figures"
SUMMARY = "summary.json"


# --------------------------------------------------------------------------------------------
# Seeds: one integer in the config, independent streams per purpose and tomogram
# --------------------------------------------------------------------------------------------
def derived_seed(seed: int, purpose: str, index: int = 0) -> int:
    """A 32-bit seed for ``purpose`` (e.g. ``"specimen"``) and item ``index`` of a run seed."""
    ss = np.random.SeedSequence([int(seed), zlib.crc32(purpose.encode()), int(index)])
    return int(ss.generate_state(1, np.uint32)[0])


# --------------------------------------------------------------------------------------------
# The plan: everything validated before any work
# --------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """A validated run: config, resolved paths, sizes and the style pairing."""

    cfg: RunConfig
    out_dir: Path
    base_dir: Path
    angles_deg: np.ndarray
    n_tomos: int
    shapes_zyx: list[tuple[int, int, int]]
    style_sources: list[str]
    paired: bool
    weights: str
    device: str = "cpu"
    resume: bool = False
    notices: list[str] = field(default_factory=list)

    @property
    def store(self) -> Path:
        """The run store ``OUT/run.zarr``."""
        return self.out_dir / STORE_NAME

    def style_of(self, tomo: int) -> int:
        """Index of the style stack that styles ``tomo``: the paper's ``(i + 1) mod K``."""
        return (tomo + 1) % len(self.style_sources)

    def tile_for(self, shape_yx: tuple[int, int]) -> int | str | None:
        """NST tile size: the config's; ``"auto"`` is resolved by the stage from the memory
        one task has on the workers (:mod:`faket_dask.stages.nst_budget`)."""
        return self.cfg.style.tile


def _resolve(base: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else base / q


def _check_output_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output exists and is not a directory")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{out}: cannot create the output directory ({probe} is not a directory)")
    try:  # a real write (os.access says yes to root even on read-only file systems)
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise InputError(f"{out}: output directory is not writable ({probe}: {exc.strerror})") from None


def _check_weights(weights: str, base: Path, *, fallback_random: bool) -> tuple[str, list[str]]:
    from ..params.nst import imagenet_weights_path  # torch-free: the client never imports torch

    if weights == "random":
        return weights, []
    if weights == "imagenet":
        path = imagenet_weights_path()
        if path.is_file():
            return weights, []
        if fallback_random:
            bar = "!" * 78
            return "random", [
                bar,
                f"!! NOTICE: ImageNet VGG-19 weights are not cached ({path}).",
                "!! Using RANDOM VGG-19 weights (the paper's ablation, not its main setting).",
                "!! Run `faket-dask fetch-weights` on a machine with internet access to fix this.",
                bar,
            ]
        raise InputError(
            f"style.weights: ImageNet VGG-19 weights are not in the local torch hub cache ({path}); "
            "run `faket-dask fetch-weights` on a machine with internet access, or set "
            "style.weights to a state-dict file or 'random'"
        )
    path = _resolve(base, weights)
    if not path.is_file():
        raise InputError(f"{path}: style.weights file not found")
    return str(path), []


def _check_finite(path: Path) -> None:
    from ..formats.mrc import MrcArray, check_finite

    check_finite(MrcArray(path))


def _check_labels(path: Path) -> None:
    """A class mask must hold integer labels 0..255 (read as IMOD would; one streaming pass)."""
    from ..formats.mrc import MrcArray, check_labels

    check_labels(MrcArray(path))


def plan_run(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    base_dir: str | Path = ".",
    overwrite: bool = False,
    device: str = "cpu",
    fallback_random_weights: bool = False,
) -> Plan:
    """Validate a run before any work: config, inputs, output, weights, disk.

    Parameters
    ----------
    cfg : RunConfig
        The run configuration.
    out_dir : path
        Output directory (``run.zarr``, ``figures/``, ``summary.json``).
    base_dir : path
        Directory relative paths of the config are resolved against (the config file's).
    overwrite : bool
        Replace an existing output made with a different configuration.
    device : {"cpu", "cuda"}
        Where projection, NST and back-projection run.
    fallback_random_weights : bool
        ``weights: imagenet`` without a cached file falls back to random weights with a notice
        (the demo) instead of failing.

    Returns
    -------
    Plan

    Raises
    ------
    InputError, OutputExistsError
        One line naming the file or key and the problem.
    """
    from .. import run_inputs as ri
    from ..tilt_pairing import match_tilts

    base = Path(base_dir)
    out = Path(out_dir)
    _check_output_dir(out)
    # stored and paired by angle: content tilt-series are kept sorted, like imported ones
    angles = np.sort(cfg.acquisition.angles_deg())
    if not np.all(np.abs(angles) < 89.0):
        raise InputError("acquisition: tilt angles must lie within (-89°, 89°)")
    b = cfg.reconstruction.binning
    sp = cfg.specimens

    shapes: list[tuple[int, int, int]] = []
    file_notices: list[str] = []  # what was assumed reading odd headers (IMOD modes, stamps)
    content_px = cfg.acquisition.pixel_size_A
    if sp.source == "generate":
        shapes = [tuple(sp.shape_zyx)] * sp.count
        if sp.templates_dir is not None and not _resolve(base, sp.templates_dir).is_dir():
            raise InputError(f"{_resolve(base, sp.templates_dir)}: specimens.templates_dir not found")
    else:
        pxs = []
        for j, f in enumerate(sp.files):
            key = f"specimens.files[{j}]"
            dpath = _resolve(base, f.density)
            info = ri.mrc_info(dpath, f"{key}.density")
            if len(info.shape) != 3 or min(info.shape) < 2:
                raise InputError(f"{dpath}: a specimen must be a 3D volume, got shape {info.shape}")
            pxs.append(ri.pixel_size(info, f.pixel_size_A, key, kind="volume"))
            file_notices += list(info.notices)
            shapes.append(tuple(int(s) for s in info.shape))
            if f.class_mask is not None:
                cpath = _resolve(base, f.class_mask)
                cm = ri.mrc_info(cpath, f"{key}.class_mask")
                if tuple(cm.shape) != shapes[-1]:
                    raise InputError(f"{cpath}: class mask shape {cm.shape} differs from the density's {shapes[-1]}")
                file_notices += list(cm.notices)
                _check_labels(cpath)
            _check_finite(dpath)
        content_px = pxs[0]
        for j, px in enumerate(pxs):
            if abs(px - content_px) > 1e-3 * content_px:
                raise InputError(f"{_resolve(base, sp.files[j].density)}: pixel size {px:g} Å differs "
                                 f"from the first specimen's {content_px:g} Å; one run has one pixel size")
    for z, y, x in shapes:
        if y < 2 * b or x < 2 * b:
            raise InputError(f"reconstruction.binning {b} is too large for a {y} x {x} detector")

    sd = cfg.style_data
    if sd.source == "microscope":
        if len(shapes) < 2:
            raise InputError(
                "specimens: the paper styles tomogram i with the style stack of tomogram (i + 1) mod K; "
                "with the reference microscope K = number of tomograms, so at least 2 are needed"
            )
        sources = [st.tiltseries_var(i, "measured") for i in range(len(shapes))]
        paired = True
    else:
        sources, given_noiseless, style_angles = [], [], []
        for k, f in enumerate(sd.files):
            key = f"style_data.files[{k}]"
            sf = ri.check_style_file(
                _resolve(base, f.measured),
                None if f.angles_file is None else _resolve(base, f.angles_file), key=key,
                content_angles_deg=angles, content_pixel_size_A=content_px,
                pixel_size_A=f.pixel_size_A, match_angles=sd.match_angles,
                pixel_size_rtol=sd.pixel_size_rtol,
                mdoc=None if f.mdoc is None else _resolve(base, f.mdoc),
                exclude_tilts=f.exclude_tilts)
            file_notices += list(sf.notices)
            if f.noiseless is not None:
                file_notices += ri.check_noiseless_partner(_resolve(base, f.noiseless), sf, key)
            given_noiseless.append(f.noiseless is not None)
            sources.append(st.reference_var(k, "measured"))
            if k:  # the noise model averages the stacks' curves angle by angle
                match_tilts(style_angles[0], sf.angles_deg, target=f"{_resolve(base, sd.files[0].measured)}",
                            source=f"{sf.path}", mode="exact",
                            option="the same angles in every style stack (the noise model averages them per angle)")
            style_angles.append(sf.angles_deg)
        if any(given_noiseless) and not all(given_noiseless):
            raise InputError("style_data.files: give 'noiseless' for every file or for none")
        paired = all(given_noiseless)

    weights, notices = _check_weights(cfg.style.weights, base, fallback_random=fallback_random_weights)
    if device not in ("cpu", "cuda"):
        raise InputError(f"device must be cpu or cuda, got '{device}'")

    plan = Plan(cfg=cfg, out_dir=out, base_dir=base, angles_deg=angles, n_tomos=len(shapes),
                shapes_zyx=shapes, style_sources=sources, paired=paired, weights=weights,
                device=device, notices=notices + [f"faket-dask: notice: {n}" for n in file_notices])
    run_store = plan.store
    if run_store.exists() and st.is_store(run_store):
        attrs = st.open_root(run_store).attrs
        if attrs.get("config_hash") == run_hash(plan) and not overwrite:
            plan.resume = True
        elif "config_hash" not in attrs and not list(zarr_children(run_store)):
            # killed between creating the store and recording the config: nothing to keep
            shutil.rmtree(run_store)
    if not plan.resume:
        existing = [out / n for n in (STORE_NAME, FIGURES, SUMMARY) if (out / n).exists()]
        if existing and not overwrite:
            raise OutputExistsError(
                f"{existing[0]}: exists (from another configuration or another tool); pass "
                "--overwrite to replace it, or choose another output directory"
            )
    st.check_disk(out if out.exists() else _existing_parent(out), estimate_bytes(plan))
    return plan


def zarr_children(store: Path) -> list[str]:
    """Names of the root group's members."""
    import zarr

    return list(zarr.open_group(str(store), mode="r").keys())


def _existing_parent(p: Path) -> Path:
    while not p.exists():
        p = p.parent
    return p


def run_hash(plan: Plan) -> str:
    """Hash of everything that shapes the results (config but its ``output``, resolved weights,
    device)."""
    # where the output lives does not shape it: a moved or copied run still resumes
    settings = plan.cfg.model_dump(mode="json", exclude={"output"})
    text = json.dumps({"config": settings, "weights": plan.weights, "device": plan.device},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def estimate_bytes(plan: Plan) -> int:
    """Rough size of the run store (bytes, uncompressed upper bound)."""
    n_t = len(plan.angles_deg)
    b = plan.cfg.reconstruction.binning
    total = 0
    for z, y, x in plan.shapes_zyx:
        total += z * y * x * 9                       # density, class mask, occupancy
        total += 7 * n_t * y * x * 4                 # tilt-series modalities
        nz = plan.cfg.reconstruction.thickness or x // b
        total += 7 * nz * (y // b) * (x // b) * 4 * 8 // 7   # tomograms + pyramid levels
    return int(total * 1.1)



def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a run configuration file (one-line errors naming the key)."""
    from ..config import load_config

    return load_config(path)
