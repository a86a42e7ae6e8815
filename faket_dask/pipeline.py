"""The whole FakET data-generation method (the paper's Fig. 5) as resumable stages.

:func:`simulate` runs, for N tomograms:

1. ``specimen``      generated specimens (or imported grandmodels with their class masks)
2. ``noiseless``     noiseless projections
3. ``measured`` or ``style_import``   style data: the reference microscope's measured
   tilt-series of every tomogram, or imported measured tilt-series (optionally with their
   noiseless projections)
4. ``noise_model``   the noise model over all style stacks (paired when noiseless projections
   exist, else the unpaired estimate)
5. ``noise``         NOISY, CONTENT and BASELINE of every tomogram (one noise field each)
6. ``style_grams``   Gram matrices of every style stack, once, kept in the store
7. ``faket``         NST: tomogram i styled with style stack (i + 1) mod K (the paper's pairing)
8. ``reconstruct``   tomograms of every modality + labels mapped to the tomogram grid
9. ``report``        figures (``OUT/figures``); ``OUT/summary.json`` is written after every run

Every stage writes its outputs to ``OUT/run.zarr`` and is then recorded as complete (with the
config hash) in the store's root attributes. A rerun of the same config skips complete stages
and recomputes the others from scratch (a killed run leaves at most one stage incomplete), so
the final store is the same whatever was interrupted. A different config refuses to touch an
existing output without ``overwrite``.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import store as st
from .config import RunConfig
from .errors import FaketError, InputError, OutputExistsError
from .fingerprint import changed as fingerprint_changed
from .fingerprint import fingerprint as fingerprint_files
from .run_inputs import MATCH_OPTION

STORE_NAME = "run.zarr"
FIGURES = "figures"
SUMMARY = "summary.json"
_PREFIX = "pipeline/"
#: Bytes of memory per tilt pixel the NST kernel holds at its peak (kernels/style_transfer.py).
NST_BYTES_PER_PIXEL = 2600


# --------------------------------------------------------------------------------------------
# Seeds: one integer in the config, independent streams per purpose and tomogram
# --------------------------------------------------------------------------------------------
def derived_seed(seed: int, purpose: str, index: int = 0) -> int:
    """A 32-bit seed for ``purpose`` (e.g. ``"specimen"``) and item ``index`` of a run seed."""
    ss = np.random.SeedSequence([int(seed), zlib.crc32(purpose.encode()), int(index)])
    return int(ss.generate_state(1, np.uint32)[0])


def auto_tile(shape_yx: tuple[int, int], task_bytes: int) -> int | None:
    """Tile edge for NST of one tilt within ``task_bytes`` (None: the whole tilt fits).

    The fast kernel holds ~:data:`NST_BYTES_PER_PIXEL` per pixel; a tile is processed on a crop
    with a 160-pixel margin, so the largest multiple of 16 whose crop fits is chosen.
    """
    h, w = int(shape_yx[0]), int(shape_yx[1])
    budget_px = task_bytes / NST_BYTES_PER_PIXEL
    if h * w <= budget_px:
        return None
    best = None
    for t in range(16, max(h, w) + 16, 16):
        if min(h, t + 320) * min(w, t + 320) <= budget_px:
            best = t
    return best or 64


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

    def tile_for(self, shape_yx: tuple[int, int]) -> int | None:
        """NST tile size: the config's, or :func:`auto_tile` for ``tile: auto``."""
        t = self.cfg.style.tile
        if t == "auto":
            return auto_tile(shape_yx, int(self.cfg.compute.task_memory_MB * 1e6))
        return t


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
    from .kernels.style_transfer import imagenet_weights_path

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
    from .formats.mrc import MrcArray, check_finite

    check_finite(MrcArray(path))


def _check_labels(path: Path) -> None:
    """A class mask must hold integer labels 0..255 (read as IMOD would; one streaming pass)."""
    from .formats.mrc import MrcArray, check_labels

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
    from . import run_inputs as ri
    from .tilt_pairing import match_tilts

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
        sources = [st.tomo_group(i, "tiltseries") + "/measured" for i in range(len(shapes))]
        paired = True
    else:
        sources, given_noiseless, style_angles = [], [], []
        for k, f in enumerate(sd.files):
            key = f"style_data.files[{k}]"
            sf = ri.check_style_file(
                _resolve(base, f.measured), _resolve(base, f.angles_file), key=key,
                content_angles_deg=angles, content_pixel_size_A=content_px,
                pixel_size_A=f.pixel_size_A, match_angles=sd.match_angles,
                pixel_size_rtol=sd.pixel_size_rtol)
            file_notices += list(sf.notices)
            if f.noiseless is not None:
                file_notices += ri.check_noiseless_partner(_resolve(base, f.noiseless), sf, key)
            given_noiseless.append(f.noiseless is not None)
            sources.append(f"reference/style_{k:03d}/measured")
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
    import hashlib

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


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------
@dataclass
class StageRecord:
    """What happened to one stage in this invocation."""

    name: str
    status: str  # "done" | "skipped"
    seconds: float
    peak_worker_MB: float
    peak_client_MB: float


class Pipeline:
    """Runs a :class:`Plan` on the current Dask client (see :func:`simulate`)."""

    def __init__(self, plan: Plan, *, log: Callable[[str], None] | None = None) -> None:
        self.plan = plan
        self.cfg = plan.cfg
        self.store = plan.store
        self.log = log or (lambda s: print(s, flush=True))
        self.records: list[StageRecord] = []
        self.task_bytes = int(self.cfg.compute.task_memory_MB * 1e6)
        self.hash = run_hash(plan)

    # -- bookkeeping ----------------------------------------------------------------------
    def stages(self) -> list[tuple[str, Callable[[], None]]]:
        """The ordered ``(name, function)`` list of this run."""
        p, out = self.plan, []
        n = p.n_tomos
        for i in range(n):
            out.append((f"specimen/{i:03d}", lambda i=i: self.specimen(i)))
        for i in range(n):
            out.append((f"noiseless/{i:03d}", lambda i=i: self.noiseless(i)))
        if self.cfg.style_data.source == "microscope":
            for i in range(n):
                out.append((f"measured/{i:03d}", lambda i=i: self.measured(i)))
        else:
            for k in range(len(p.style_sources)):
                out.append((f"style_import/{k:03d}", lambda k=k: self.style_import(k)))
        out.append(("noise_model", self.noise_model))
        for i in range(n):
            out.append((f"noise/{i:03d}", lambda i=i: self.noise(i)))
        for k in sorted({p.style_of(i) for i in range(n)}):
            out.append((f"style_grams/{k:03d}", lambda k=k: self.style_grams(k)))
        for i in range(n):
            out.append((f"faket/{i:03d}", lambda i=i: self.faket(i)))
        for i in range(n):
            out.append((f"reconstruct/{i:03d}", lambda i=i: self.reconstruct(i)))
        if self.cfg.report.figures:
            out.append(("report", self.report))
        return out

    def stage_inputs(self, name: str) -> list[Path]:
        """The user's files that stage ``name`` reads (their fingerprints guard its resume)."""
        base, cfg = self.plan.base_dir, self.cfg
        kind, _, idx = name.partition("/")
        files: list[str | None] = []
        if kind == "specimen":
            sp = cfg.specimens
            if sp.source == "import":
                f = sp.files[int(idx)]
                files = [f.density, f.class_mask]
            else:
                files = [sp.templates_dir]
        elif kind == "style_import":
            f = cfg.style_data.files[int(idx)]
            files = [f.measured, f.noiseless, f.angles_file]
        elif kind in ("style_grams", "faket") and cfg.style.weights not in ("random", "imagenet"):
            files = [cfg.style.weights]
        return [_resolve(base, f) for f in files if f]

    def _status(self, name: str) -> tuple[bool, list[str]]:
        """(complete under this run's hash, input files changed since it completed)."""
        if not st.is_store(self.store):
            return False, []
        e = st.stage_status(self.store).get(_PREFIX + name, {})
        if e.get("status") != "complete" or e.get("run_hash") != self.hash:
            return False, []
        changed = fingerprint_changed(e.get("inputs", {}), self.stage_inputs(name))
        return not changed, changed

    def is_complete(self, name: str) -> bool:
        """Whether stage ``name`` completed under this run's hash from the same input files."""
        return self._status(name)[0]

    def _init_store(self) -> None:
        p = self.plan
        if not p.resume:
            # plan_run refused existing outputs unless --overwrite was given
            for name in (STORE_NAME, FIGURES, SUMMARY, "_scratch"):
                target = p.out_dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        p.out_dir.mkdir(parents=True, exist_ok=True)
        if not p.resume:
            root = st.open_root(self.store, create=True)
            # one attribute write, so a kill cannot leave a store without its config hash
            # (a store without one is refused as "another configuration")
            root.attrs.update({
                "config": self.cfg.model_dump(mode="json"),
                "config_hash": self.hash,
                "run": {"weights": p.weights, "device": p.device, "style_sources": p.style_sources,
                        "pairing": "tomogram i styled with style stack (i + 1) mod K"},
            })

    def run(self) -> dict[str, Any]:
        """Run every incomplete stage, write the summary; returns it."""
        from distributed import get_client

        from .memory import PeakMemory

        try:
            client = get_client()
        except ValueError:
            client = None
        for line in self.plan.notices:
            self.log(line)
        self._init_store()
        t_run = time.perf_counter()
        # Stages are in dependency order: once one runs, every later one runs too, so a
        # stage recomputed because its input file changed never leaves stale results after it.
        rerun_from: str | None = None
        for name, fn in self.stages():
            complete, changed = self._status(name)
            if complete and rerun_from is None:
                self.log(f"[skip] {name} (complete)")
                self.records.append(StageRecord(name, "skipped", 0.0, 0.0, 0.0))
                continue
            if changed:
                self.log(f"[rerun] {name}: input changed since it completed ({', '.join(changed)}); "
                         "it and every later stage run again")
            elif complete:
                self.log(f"[rerun] {name}: depends on {rerun_from}, which ran again")
            else:
                self.log(f"[run ] {name}")
            rerun_from = rerun_from or name
            inputs = fingerprint_files(self.stage_inputs(name))
            st.mark_stage(self.store, _PREFIX + name, status="running", run_hash=self.hash)
            t0 = time.perf_counter()
            with PeakMemory(client) as mem:
                fn()
            dt = time.perf_counter() - t0
            st.mark_stage(self.store, _PREFIX + name, status="complete", run_hash=self.hash,
                          seconds=round(dt, 3), peak_worker_MB=round(mem.max_worker_MB, 1),
                          peak_client_MB=round(mem.client_MB, 1), inputs=inputs)
            self.records.append(StageRecord(name, "done", dt, mem.max_worker_MB, mem.client_MB))
        shutil.rmtree(self.plan.out_dir / "_scratch", ignore_errors=True)
        summary = self.summary(time.perf_counter() - t_run, client)
        (self.plan.out_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    # -- stages ---------------------------------------------------------------------------
    def specimen(self, i: int) -> None:
        """Generate (or import) specimen ``i`` into ``tomo_i/specimen`` and ``tomo_i/particles``."""
        from .stages.specimen import generate_specimen, particles_dataset, write_specimen

        sp = self.cfg.specimens
        px = self.cfg.acquisition.pixel_size_A
        if sp.source == "generate":
            tdir = _resolve(self.plan.base_dir, sp.templates_dir) if sp.templates_dir else None
            spec, parts = generate_specimen(
                sp.shape_zyx, px, derived_seed(self.cfg.seed, "specimen", i),
                n_particles=sp.particles, n_vesicles=sp.vesicles, n_fiducials=sp.fiducials,
                templates_dir=tdir,
            )
        else:
            from .formats.convert import load_labels, load_mrc
            from .kernels import specimen as K
            from .run_inputs import entry_hint

            f = sp.files[i]
            key = f"specimens.files[{i}]"
            dens = load_mrc(_resolve(self.plan.base_dir, f.density), kind="volume",
                            pixel_size_A=f.pixel_size_A, pixel_size_hint=entry_hint(key))
            px = float(dens.attrs["pixel_size_A"])
            data = {"density": dens.rename("density").astype(np.float32)}
            if f.class_mask is not None:
                # labels read as IMOD shows them (signed bytes + 128, unsigned bytes), exact
                cm = load_labels(_resolve(self.plan.base_dir, f.class_mask), pixel_size_A=px,
                                 check_values=False)
                data["class_mask"] = cm.rename("class_mask")
            spec = xr.Dataset(data)
            spec.attrs.update(pixel_size_A=px, source=str(f.density))
            if f.class_mask is not None:
                # one particle per connected labelled region (orientations unknown)
                from .stages.specimen import particles_from_masks

                parts = particles_from_masks(data["class_mask"], pixel_size_A=px)
                parts.attrs["source"] = f"imported {f.density}; particles derived from {f.class_mask}"
            else:
                empty = {c: np.zeros(0, np.float64) for c in K.COLUMNS}
                empty["class_name"] = np.zeros(0, "<U16")
                parts = particles_dataset(empty, px, {"source": "imported (no particle table)"})
        write_specimen(spec, parts, self.store, i, overwrite=True, progress=f"specimen {i}")

    def noiseless(self, i: int) -> None:
        """Project ``tomo_i/specimen/density`` into ``tomo_i/tiltseries/noiseless``."""
        from .stages.projection import project

        vol = st.open(self.store, st.tomo_group(i, "specimen"))["density"]
        ts = project(vol, self.plan.angles_deg, device=self.plan.device, task_bytes=self.task_bytes)
        st.save(ts, self.store, st.tomo_group(i, "tiltseries"), name="noiseless", overwrite=True,
                progress=f"projecting tomogram {i}")

    def measured(self, i: int) -> None:
        """Reference microscope: ``tomo_i/tiltseries/measured`` from the noiseless projections."""
        from .stages.microscope import simulate_microscope

        ts = st.open_var(self.store, st.tomo_group(i, "tiltseries") + "/noiseless")
        m = simulate_microscope(ts, seed=derived_seed(self.cfg.seed, "microscope"), tomo=i,
                                params=self.cfg.style_data.microscope)
        st.save(m, self.store, st.tomo_group(i, "tiltseries"), name="measured", overwrite=True,
                progress=f"microscope {i}")

    def style_import(self, k: int) -> None:
        """Import measured style stack ``k`` (and its noiseless projections) into ``reference/``."""
        from .formats.convert import import_mrc

        f = self.cfg.style_data.files[k]
        group = f"reference/style_{k:03d}"
        tlt = _resolve(self.plan.base_dir, f.angles_file)
        # import sorts each stack by angle (acquisition order kept as a coordinate), so the
        # measured stack and its noiseless partner stay paired tilt by tilt
        import_mrc(_resolve(self.plan.base_dir, f.measured), self.store, f"{group}/measured",
                   kind="tiltseries", angles_file=tlt, pixel_size_A=f.pixel_size_A, overwrite=True)
        if f.noiseless is not None:
            import_mrc(_resolve(self.plan.base_dir, f.noiseless), self.store, f"{group}/noiseless",
                       kind="tiltseries", angles_file=tlt, pixel_size_A=f.pixel_size_A,
                       overwrite=True)

    def noise_model(self) -> None:
        """Estimate the noise model over every style stack (METHOD §2)."""
        from .stages.noise import estimate_noise

        srcs = self.plan.style_sources
        measured = [st.open_var(self.store, s) for s in srcs]
        noiseless = None
        if self.plan.paired:
            noiseless = [st.open_var(self.store, s.rsplit("/", 1)[0] + "/noiseless") for s in srcs]
        model = estimate_noise(measured, noiseless, order=self.cfg.noise.order, sources=srcs)
        orders = sorted({self.cfg.noise.order, self.cfg.noise.baseline_order})
        model.save(self.store, orders=orders, overwrite=True)

    def noise(self, i: int) -> None:
        """NOISY, CONTENT and BASELINE of tomogram ``i`` (one noise field, METHOD §3)."""
        from .noise_model import NoiseModel
        from .stages.noise import add_noise

        nzc = self.cfg.noise
        model = NoiseModel.load(self.store)
        group = st.tomo_group(i, "tiltseries")
        p = st.open_var(self.store, group + "/noiseless")
        seed = derived_seed(self.cfg.seed, "noise")
        for name, order, k in (("noisy", nzc.order, nzc.noisy_scale),
                               ("content", nzc.order, nzc.content_scale),
                               ("baseline", nzc.baseline_order, nzc.baseline_scale)):
            arr = add_noise(p, model.with_order(order), seed, k, tomo=i, name=name,
                            match_angles=self.cfg.style_data.match_angles,
                            match_option=MATCH_OPTION)
            st.save(arr, self.store, group, name=name, overwrite=True, progress=f"{name} {i}")

    def _style_kwargs(self, shape_yx: tuple[int, int]) -> dict[str, Any]:
        from .kernels.style_transfer import NSTParams

        s = self.cfg.style
        return {"weights": self.plan.weights, "seed": self.cfg.seed, "device": self.plan.device,
                "precision": s.precision, "tile": self.plan.tile_for(shape_yx),
                "params": NSTParams.from_config(s), "batch": s.batch}

    def _grams_group(self, k: int) -> str:
        return f"style_grams/style_{k:03d}"

    def style_grams(self, k: int) -> None:
        """Gram matrices of style stack ``k`` (computed once, reused by every tomogram)."""
        from .stages.style_transfer import save_style_grams, style_grams_dataset

        style = st.open_var(self.store, self.plan.style_sources[k])
        content_yx = tuple(self.plan.shapes_zyx[0][1:])
        ds = style_grams_dataset(style, **self._style_kwargs(content_yx))
        save_style_grams(ds, self.store, self._grams_group(k), overwrite=True)

    def faket(self, i: int) -> None:
        """FAKET of tomogram ``i``: CONTENT styled towards style stack ``(i + 1) mod K``."""
        from .stages.style_transfer import load_style_grams, style_transfer

        group = st.tomo_group(i, "tiltseries")
        content = st.open_var(self.store, group + "/content")
        noisy = st.open_var(self.store, group + "/noisy")
        k = self.plan.style_of(i)
        grams = load_style_grams(self.store, self._grams_group(k))
        if grams is None:
            raise FaketError(f"{self.store}: style Grams of stack {k} are missing; rerun with --overwrite")
        out = style_transfer(content, grams, noisy, **self._style_kwargs(tuple(content.shape[1:])),
                             match_angles=self.cfg.style_data.match_angles,
                             match_option=MATCH_OPTION)
        out.attrs["style"] = self.plan.style_sources[k]
        st.save(out, self.store, group, name="faket", overwrite=True, progress=f"style transfer {i}")

    def reconstruct(self, i: int) -> None:
        """Tomograms of every modality of tomogram ``i`` and its labels on the tomogram grid."""
        from .stages.reconstruction import reconstruct

        r = self.cfg.reconstruction
        ts_group = st.tomo_group(i, "tiltseries")
        have = st.open(self.store, ts_group)
        scratch = self.plan.out_dir / "_scratch"
        for m in r.modalities:
            if m not in have.data_vars:
                continue
            vol = reconstruct(have[m], binning=r.binning, filter=r.filter, z_valid=r.z_valid,
                              thickness=r.thickness, device=self.plan.device, scratch_dir=scratch,
                              task_bytes=self.task_bytes)
            vol.attrs["modality"] = m
            st.save_image(vol, self.store, st.tomo_group(i, "tomogram"), m, overwrite=True,
                          progress=f"reconstructing {m} {i}")
        self.labels(i)

    def _tomo_grid(self, shape_zyx: tuple[int, int, int]) -> tuple[int, int, int, int]:
        """(thickness before z_valid, first kept slice, kept slices, binning)."""
        from .kernels.backprojection import z_valid_slice

        r = self.cfg.reconstruction
        z, y, x = shape_zyx
        b = r.binning
        nz_full = r.thickness or x // b
        sl = z_valid_slice(nz_full, r.z_valid) if r.z_valid else slice(0, nz_full)
        return nz_full, sl.start, sl.stop - sl.start, b

    def labels(self, i: int) -> None:
        """Class mask and particle coordinates mapped to the tomogram grid (``tomo_i/labels``).

        Voxel ``j`` of a binned axis covers specimen voxels ``j·b … j·b + b − 1``; the label of
        its centre voxel ``j·b + b//2`` is taken (nearest neighbour). In z the tomogram is
        centred on the specimen (the back-projection's rotation centre), so slice ``r`` of the
        full-thickness tomogram holds specimen slice ``floor((r + 0.5 − nz/2)·b + Z/2)``
        (zero outside the specimen). Particle coordinates (voxel centres at integers) become
        ``(c + 0.5)/b − 0.5`` in y and x and ``(z + 0.5 − Z/2)/b + nz/2 − 0.5 − z0`` in z.
        """
        import dask.array as da

        from . import chunking, datamodel

        spec = st.open(self.store, st.tomo_group(i, "specimen"))
        Z, Y, X = (int(spec.sizes[d]) for d in ("z", "y", "x"))
        nz_full, z0, nz_keep, b = self._tomo_grid((Z, Y, X))
        rows = np.arange(z0, z0 + nz_keep)
        src = np.floor((rows + 0.5 - nz_full / 2) * b + Z / 2).astype(np.int64)
        valid = (src >= 0) & (src < Z)
        px = float(spec.attrs.get("pixel_size_A", self.cfg.acquisition.pixel_size_A)) * b
        group = st.tomo_group(i, "labels")
        if "class_mask" in spec.data_vars:
            cm = spec["class_mask"].data[:, b // 2::b, b // 2::b][:, : Y // b, : X // b]
            picked = cm[np.clip(src, 0, Z - 1)]
            mapped = da.where(da.from_array(valid, chunks=-1)[:, None, None], picked, 0).astype(np.uint8)
            mapped = mapped.rechunk(chunking.volume_chunks(mapped.shape, chunking.choose_cy(*mapped.shape[1:], mapped.shape[0])))
            arr = datamodel.volume(mapped, px, name="class_mask", dtype=None,
                                   attrs={**spec["class_mask"].attrs, "binning": b,
                                          "mapping": "nearest (centre voxel of each bin); z centred"})
            st.save(arr, self.store, group, name="class_mask", overwrite=True, progress=f"labels {i}")
        parts = st.open(self.store, st.tomo_group(i, "particles")).load()
        if parts.sizes.get("particle", 0):
            out = parts.copy()
            out["x"] = (parts["x"] + 0.5) / b - 0.5
            out["y"] = (parts["y"] + 0.5) / b - 0.5
            out["z"] = (parts["z"] + 0.5 - Z / 2) / b + nz_full / 2 - 0.5 - z0
            out.attrs.update(pixel_size_A=px, binning=b, grid="tomogram (tomo_NNN/tomogram level 0)")
            for v in out.variables.values():
                v.encoding.clear()
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out.to_zarr(str(self.store), group=st.tomo_group(i, "labels_particles"), mode="w",
                            zarr_format=3, consolidated=False)

    def report(self) -> None:
        """Figures of the run into ``OUT/figures``."""
        from .report import write_report

        fig_dir = self.plan.out_dir / FIGURES
        shutil.rmtree(fig_dir, ignore_errors=True)
        paths = write_report(self.store, fig_dir)
        self.log(f"       {len(paths)} figures in {fig_dir}")

    # -- summary --------------------------------------------------------------------------
    def summary(self, seconds: float, client: Any | None) -> dict[str, Any]:
        """``summary.json``: sizes, per-stage timings and peak memory, the noise model."""
        from .noise_model import NoiseModel

        marks = st.stage_status(self.store)
        stages = {}
        for rec in self.records:
            m = marks.get(_PREFIX + rec.name, {})
            stages[rec.name] = {
                "status": rec.status,
                "seconds": m.get("seconds"),
                "peak_worker_MB": m.get("peak_worker_MB"),
                "peak_client_MB": m.get("peak_client_MB"),
            }
        sizes = {}
        for i in range(self.plan.n_tomos):
            entry: dict[str, Any] = {"specimen_zyx": list(self.plan.shapes_zyx[i])}
            for part in ("tiltseries", "tomogram"):
                try:
                    ds = st.open(self.store, st.tomo_group(i, part))
                    entry[part] = {str(v): list(ds[v].shape) for v in ds.data_vars}
                except Exception:  # noqa: BLE001 - partial stores still get a summary
                    pass
            sizes[st.tomo_group(i, "")[:-1]] = entry
        try:
            nm = NoiseModel.load(self.store)
            noise = {"method": nm.method, "order": int(nm.order), "sources": nm.sources,
                     **{c: [float(v) for v in nm.curve(c)] for c in ("r", "sigma", "mean", "std")}}
        except Exception:  # noqa: BLE001
            noise = None
        workers = {}
        if client is not None:
            try:
                info = client.scheduler_info()["workers"]
                workers = {"n_workers": len(info),
                           "threads": sum(w.get("nthreads", 0) for w in info.values())}
            except Exception:  # noqa: BLE001
                pass
        peak_w = max((s["peak_worker_MB"] or 0 for s in stages.values()), default=0)
        peak_c = max((s["peak_client_MB"] or 0 for s in stages.values()), default=0)
        return {
            "store": str(self.store),
            "config_hash": self.hash,
            "weights": self.plan.weights,
            "device": self.plan.device,
            "n_tomograms": self.plan.n_tomos,
            "n_tilts": int(len(self.plan.angles_deg)),
            "angles_deg": [float(a) for a in self.plan.angles_deg],
            "style_pairing": {st.tomo_group(i, "")[:-1]: self.plan.style_sources[self.plan.style_of(i)]
                              for i in range(self.plan.n_tomos)},
            "sizes": sizes,
            "seconds_total_this_invocation": round(seconds, 2),
            "stages": stages,
            "peak_memory_MB": {"worker": peak_w, "client": peak_c},
            "cluster": workers,
            "noise_model": noise,
        }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary table printed at the end of a run."""
    lines = [f"{'stage':<22}{'status':>9}{'seconds':>10}{'peak worker MB':>16}"]
    for name, s in summary["stages"].items():
        sec = "" if s["seconds"] is None else f"{s['seconds']:.1f}"
        mem = "" if not s["peak_worker_MB"] else f"{s['peak_worker_MB']:.0f}"
        lines.append(f"{name:<22}{s['status']:>9}{sec:>10}{mem:>16}")
    lines.append(f"total this run: {summary['seconds_total_this_invocation']:.1f} s; "
                 f"peak worker {summary['peak_memory_MB']['worker']:.0f} MB; store {summary['store']}")
    return "\n".join(lines)


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a run configuration file (one-line errors naming the key)."""
    from .config import load_config

    return load_config(path)


def simulate(
    config: RunConfig | str | Path,
    *,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    scheduler: str | None = None,
    cluster_file: str | Path | None = None,
    gpus: bool = False,
    workers: int | None = None,
    device: str | None = None,
    fallback_random_weights: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the whole FakET pipeline for a config; resumes an interrupted run of the same config.

    Parameters
    ----------
    config : RunConfig or path
        A config object or a YAML file (relative paths inside it are resolved against the
        file's directory).
    out_dir : path, optional
        Output directory (default: the config's ``output``).
    overwrite : bool
        Replace an output made with another configuration.
    scheduler, cluster_file, gpus, workers
        The cluster (see :func:`faket_dask.connect`); when a distributed client is already
        current, it is used and these are ignored.
    device : {"cpu", "cuda"}, optional
        Default ``"cuda"`` with ``gpus`` or a ``cuda`` cluster file, else ``"cpu"``.
    fallback_random_weights : bool
        Use random VGG weights (with a notice) when ImageNet weights are not cached.
    log : callable, optional
        Receives progress lines (default: print).

    Returns
    -------
    dict
        The summary also written to ``OUT/summary.json``.

    Raises
    ------
    RunLockedError
        Another run uses the output directory (``OUT/.faket-dask.lock``); raised before any
        work, the cluster or a change to the output.
    InputError, OutputExistsError
        From validation (:func:`plan_run`), before any work.
    """
    from .cluster import connect
    from .runlock import RunLock

    if isinstance(config, RunConfig):
        cfg, base = config, Path(".")
    else:
        cfg, base = load_run_config(config), Path(config).resolve().parent
    out = Path(out_dir) if out_dir is not None else _resolve(base, cfg.output)
    if device is None:
        device = "cuda" if gpus or _cluster_file_is_cuda(cluster_file) else "cpu"
    emit = log or (lambda s: print(s, flush=True))
    # The lock is taken before plan_run, not after: plan_run reads the store to decide
    # resume-or-refuse and deletes a store that has no config yet, which for a live run is
    # the store it has just created. Locking needs the directory, so a bad output path is
    # reported first; a directory created here is removed again if validation then fails.
    _check_output_dir(out)
    with RunLock(out, notify=emit):
        plan = plan_run(cfg, out, base_dir=base, overwrite=overwrite, device=device,
                        fallback_random_weights=fallback_random_weights)
        emit(f"{'resuming' if plan.resume else 'starting'} run: {plan.n_tomos} tomograms, "
             f"{len(plan.angles_deg)} tilts, output {out}")
        try:
            from distributed import get_client

            get_client()
            have_client = True
        except ValueError:
            have_client = False
        if have_client:
            return Pipeline(plan, log=emit).run()
        with connect(scheduler, workers=workers, gpus=gpus, cluster_file=cluster_file):
            return Pipeline(plan, log=emit).run()


def _cluster_file_is_cuda(path: str | Path | None) -> bool:
    if not path:
        return False
    import yaml

    try:
        return (yaml.safe_load(Path(path).read_text()) or {}).get("type") == "cuda"
    except (OSError, yaml.YAMLError, AttributeError):
        return False
