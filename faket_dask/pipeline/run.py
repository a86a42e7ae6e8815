"""Running a :class:`~.plan.Plan`: the declarative stage list, resume bookkeeping, :func:`simulate`.

Stages are listed in :data:`STAGES` in a dependency order and run side by side, each as soon as
the stages it reads have completed (:meth:`Pipeline.depends_on`); each is recorded in the store
when complete, with the run hash and the fingerprints of the files it read (``fingerprint.py``),
so a rerun skips complete stages, and a changed input reruns its stage and every later one.
"""
from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import store as st
from ..config import RunConfig, deprecations
from ..params import MIB
from ..torch_import import import_torch_everywhere
from ..fingerprint import changed as fingerprint_changed
from ..fingerprint import fingerprint as fingerprint_files
from .plan import FIGURES, STORE_NAME, SUMMARY, Plan, _check_output_dir, _resolve, load_run_config, plan_run, run_hash
from .steps import StageSteps
from .summary import run_summary


@dataclass(frozen=True)
class StageSpec:
    """One kind of stage: its name (a :class:`~.steps.StageSteps` method), what it iterates
    over, and the config it applies to."""

    name: str
    per: str  # "tomogram" | "style_file" | "style_used" | "once"
    when: Callable[[RunConfig], bool] = lambda cfg: True
    #: the later kinds that read this kind's outputs (None: every later kind may)
    read_by: frozenset[str] | None = None

    def applies(self, cfg: RunConfig) -> bool:
        """Whether this run has the stage."""
        return self.when(cfg)


#: The method (the paper's Fig. 5), in dependency order.
STAGES: tuple[StageSpec, ...] = (
    StageSpec("specimen", "tomogram"),
    StageSpec("noiseless", "tomogram"),
    StageSpec("measured", "tomogram", lambda c: c.style_data.source == "microscope"),
    StageSpec("style_import", "style_file", lambda c: c.style_data.source == "import"),
    StageSpec("noise_model", "once"),
    StageSpec("noise", "tomogram"),
    # every modality but FAKET, and the labels: they need not wait for the NST (the last
    # tomogram's FAKET is then the only reconstruction left at the end of a run); only the
    # central slices read these tomograms, so the NST does not wait for them either
    StageSpec("reconstruct", "tomogram", read_by=frozenset({"slices"})),
    StageSpec("style_grams", "style_used"),  # reads its own style stack only (depends_on)
    StageSpec("faket", "tomogram"),
    # a tomogram's tilt-series figures need its FAKET only; its central slices, the FAKET
    # tomogram too (depends_on): the two run side by side at the end of a run
    StageSpec("figures", "tomogram", lambda c: c.report.figures),
    StageSpec("reconstruct_faket", "tomogram", lambda c: "faket" in c.reconstruction.modalities),
    StageSpec("slices", "tomogram", lambda c: c.report.figures),
    StageSpec("report", "once", lambda c: c.report.figures),
)


#: The kinds that only draw PNGs (``OUT/figures``): no stage reads what they write, so no stage
#: waits for them (:meth:`Pipeline.depends_on`).
FIGURE_KINDS = frozenset({"figures", "slices", "report"})


#: The NST kinds: long tasks (seconds each) that keep the workers busy. Every other kind is
#: short and bound by latency (small computations with the client in the loop) and goes
#: before them (:meth:`Pipeline.priority`).
FILLER_KINDS = frozenset({"style_grams", "faket"})


#: Priority base of the long kinds (every other kind: 10**7, first): the Grams, then the NST
#: (:meth:`Pipeline.priority`).
_PRIORITY_CLASS = {"style_grams": 10**7 - 2 * 10**5, "faket": 10**7 - 10**6}
assert set(_PRIORITY_CLASS) == FILLER_KINDS


#: Most stages running side by side (:meth:`Pipeline._run_stages`); more would only queue on the
#: cluster while their graphs sit in the client's memory. Eight: three style stacks' Grams, the
#: three tomograms' noise and the reconstruction of the first ones, or three NST stages beside
#: the reconstructions and figures of the first tomograms (depth first, :meth:`Pipeline.priority`).
#: With six, the first NST of the demo waited ~6 s for a slot held by a figure stage, its Grams
#: and its noise done (session 15).
MAX_TOGETHER = 8


@dataclass
class StageRecord:
    """What happened to one stage in this invocation."""

    name: str
    status: str  # "done" | "skipped"
    seconds: float
    peak_worker_MiB: float
    peak_client_MiB: float


class Pipeline(StageSteps):
    """Runs a :class:`Plan` on the current Dask client (see :func:`simulate`)."""

    def __init__(self, plan: Plan, *, log: Callable[[str], None] | None = None) -> None:
        self.plan = plan
        self.cfg = plan.cfg
        self.store = plan.store
        self.log = log or (lambda s: print(s, flush=True))
        self.records: list[StageRecord] = []
        self.task_bytes = int(self.cfg.compute.task_memory_MiB * MIB)
        self.hash = run_hash(plan)

    # -- bookkeeping ----------------------------------------------------------------------
    def stages(self) -> list[tuple[str, Callable[[], None]]]:
        """The ordered ``(name, function)`` list of this run, expanded from :data:`STAGES`."""
        out: list[tuple[str, Callable[[], None]]] = []
        for spec in STAGES:
            if not spec.applies(self.cfg):
                continue
            fn = getattr(self, spec.name)
            if spec.per == "once":
                out.append((spec.name, fn))
            else:
                for i in self._indices(spec.per):
                    out.append((f"{spec.name}/{i:03d}", lambda fn=fn, i=i: fn(i)))
        return out

    def depends_on(self, name: str) -> list[str]:
        """The stages of this run whose outputs stage ``name`` may read.

        Per-tomogram stages read their own tomogram's outputs of earlier per-tomogram kinds,
        every earlier stage that is once per run (``noise_model``), and of the per-style-stack
        kinds only their own style stack's (``faket/001`` reads the Grams of stack
        ``plan.style_of(1)``); ``noise_model`` may read every stage of an earlier kind.
        No stage reads the figure stages' PNGs (:data:`FIGURE_KINDS`), so none waits for them.
        ``style_grams/k`` reads style stack k only (the stage that writes it); ``slices/i`` the
        tomograms of tomogram i only (``reconstruct/i``, ``reconstruct_faket/i``); ``report`` draws
        the noise curves only (each tomogram's figures are ``figures/i``), so it reads the
        noise model only and no longer waits for the last tomogram (~1.5 s off the end of the
        demo, session 13). A kind with :attr:`StageSpec.read_by` is read by those later kinds
        only: the NST no longer waits for its tomogram's other reconstructions (``reconstruct/i``),
        which held every ``faket/i`` back by ~7 s on half-idle workers in the demo (session 15).
        Stages of one kind never read each other's outputs. Why so narrow: a stage starts as
        soon as what it reads exists; waiting for every style stack's Grams held the first NST
        back by ~6 s in the demo while one stack's Grams finished on half-idle workers.
        """
        kind, _, idx = name.partition("/")
        specs = [s for s in STAGES if s.applies(self.cfg)]
        here = next(s for s in specs if s.name == kind)
        if kind == "style_grams":
            # the Grams of style stack k read that stack only: they start as soon as it exists,
            # beside the other tomograms' first stages (which left workers half idle in the demo)
            return [self._writer(self.plan.style_sources[int(idx)])]
        if kind == "report":
            return [s.name for s in specs if s.name == "noise_model"]
        if kind == "slices":
            # the central slices read the tomograms only (not the tilt-series figures)
            return [f"{s.name}/{idx}" for s in specs if s.name in ("reconstruct", "reconstruct_faket")]
        deps: list[str] = []
        # by kind, not over every stage of the run: this is asked once per stage
        for spec in specs[: specs.index(here)]:
            if spec.name in FIGURE_KINDS:
                continue  # PNGs: no stage reads them
            if spec.read_by is not None and kind not in spec.read_by:
                continue  # e.g. the NST and the tilt-series figures never read the tomograms
            if spec.per == "once":
                deps.append(spec.name)
            elif here.per == spec.per == "tomogram":
                deps.append(f"{spec.name}/{idx}")
            elif here.per == "tomogram":  # a per-style-stack kind: its own stack's stage
                deps.append(f"{spec.name}/{self.plan.style_of(int(idx)):03d}")
            else:
                deps += [f"{spec.name}/{i:03d}" for i in self._indices(spec.per)]
        return deps

    def _writer(self, path: str) -> str:
        """The stage that writes style stack ``path`` (a measured tilt-series of the run)."""
        for i in range(self.plan.n_tomos):
            if path == st.tiltseries_var(i, "measured"):
                return f"measured/{i:03d}"
        for k in range(len(self.cfg.style_data.files)):
            if path == st.reference_var(k, "measured"):
                return f"style_import/{k:03d}"
        raise ValueError(f"no stage of this run writes style stack {path}")  # a planning bug

    def priority(self, name: str) -> int:
        """Dask priority of stage ``name``'s tasks (higher first).

        Why: with stages side by side, the queue decides what waits. Short stages bound by
        latency (specimens, projections, the noise model and modalities, reconstructions,
        figures) go before the NST stages (:data:`FILLER_KINDS`), whose long tasks fill the
        gaps: queued behind the style Grams, the noise model held the first NST back by ~5 s
        in the demo. Within each class tomograms go depth first (a lower index first, a
        later kind of one tomogram before an earlier kind of the next), so tomogram 0 is
        reconstructed and drawn while later tomograms are still being styled, instead of every
        tomogram finishing its NST at the same moment and the reconstructions and figures
        running on half-idle workers at the end. Among the long tasks every style stack's Grams
        go before any NST (session 14): an NST stage waits for its stack's Grams, and when the
        last Grams of a stack sat queued behind the first tomogram's NST, all on one worker
        (Dask did not move them), the next NST waited ~8 s beside an idle worker in the demo;
        with the Grams first, the NST tasks of the stacks that are ready fill such gaps.
        The run's own figures (``report``) go after every tomogram's short stages: nothing
        waits for them, and first in line they took the last free stage slot and held the
        third tomogram's noise back by ~17 s in the demo (session 15).
        """
        kind, _, idx = name.partition("/")
        spec = next(s for s in STAGES if s.name == kind)
        depth = int(idx or 0)
        if spec.per == "once" and kind in FIGURE_KINDS:
            depth = self.plan.n_tomos
        elif spec.per in ("style_file", "style_used"):
            # a style stack goes with the first tomogram styled towards it
            users = [i for i in range(self.plan.n_tomos) if self.plan.style_of(i) == depth]
            depth = min(users, default=self.plan.n_tomos)
        return STAGES.index(spec) - 20 * depth + _PRIORITY_CLASS.get(kind, 10**7)

    def _run_stages(self, todo: list[tuple[str, Callable[[], None]]], client: Any) -> None:
        """Run stages side by side, each as soon as the stages it reads have completed.

        Why: one stage's graph leaves workers idle at its start (graph building, small reads)
        and at its end (the last tasks); with stages of three tomograms and of consecutive
        kinds side by side, the demo kept both workers busy (issue 15, docs/benchmarks.md).
        At most :data:`MAX_TOGETHER` stages run at once; ready stages start in the order of
        :meth:`priority` (stage order on ties).
        Each stage is recorded in the store as it completes, with its own time and the peak
        memory since the first stage started. After a failure no new stage starts; those
        running still complete, then the first failure in stage order is raised (the failed
        stage stays ``running`` in the store, as when stages ran one by one).
        """
        from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

        from ..memory import PeakMemory
        from ..progress import labels_only, priority

        names = [name for name, _ in todo]
        fns = dict(todo)
        todo_names = set(names)
        deps = {name: set(self.depends_on(name)) & todo_names for name in names}
        inputs = {name: fingerprint_files(self.stage_inputs(name)) for name in names}

        def one(name: str, mem: PeakMemory, alone: bool) -> StageRecord:
            st.mark_stage(self.store, st.pipeline_stage_key(name), status="running", run_hash=self.hash)
            t0 = time.perf_counter()
            with priority(self.priority(name)):
                if alone:
                    fns[name]()
                else:
                    with labels_only():  # several bars on one terminal line would garble it
                        fns[name]()
            dt = time.perf_counter() - t0
            mem.read()
            st.mark_stage(self.store, st.pipeline_stage_key(name), status="complete", run_hash=self.hash,
                          consolidate_after=False, seconds=round(dt, 3), peak_worker_MiB=round(mem.max_worker_MiB, 1),
                          peak_client_MiB=round(mem.client_MiB, 1), inputs=inputs[name])
            return StageRecord(name, "done", dt, mem.max_worker_MiB, mem.client_MiB)

        if any(name.split("/")[0] in _TORCH_KINDS for name in names):
            # before any stage runs: a process importing torch while another of its threads
            # runs SciPy fails (torch_import.py); the client only where its graphs need torch
            from ..stages.style_settings import client_needs_torch

            import_torch_everywhere(client, here=client_needs_torch(self.plan.weights,
                                                                   self.plan.device))
        done: set[str] = set()
        errors: dict[str, BaseException] = {}
        running: dict[Future, str] = {}
        pool = ThreadPoolExecutor(MAX_TOGETHER, thread_name_prefix="faket-stage")
        try:
            with PeakMemory(client) as mem:
                waiting = list(names)
                while waiting or running:
                    ready = [n for n in waiting if deps[n] <= done] if not errors else []
                    ready.sort(key=self.priority, reverse=True)  # stable: stage order on ties
                    for name in ready[: MAX_TOGETHER - len(running)]:
                        waiting.remove(name)
                        self.log(f"[run ] {name}")
                        # a stage with nothing beside it keeps its progress bar
                        alone = not running and len(ready) == 1 and len(waiting) == 0
                        running[pool.submit(one, name, mem, alone)] = name
                    if not running:
                        break  # only stages that depend on a failed one are left
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for f in finished:
                        name = running.pop(f)
                        try:
                            self.records.append(f.result())
                            done.add(name)
                        except Exception as exc:  # noqa: BLE001 - raised below, in stage order
                            errors[name] = exc
        except BaseException:
            # Ctrl-C: stop waiting; the stages still running end when the cluster closes
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        if errors:
            raise errors[min(errors, key=names.index)]

    def _indices(self, per: str) -> list[int]:
        p = self.plan
        if per == "tomogram":
            return list(range(p.n_tomos))
        if per == "style_file":
            return list(range(len(p.style_sources)))
        return sorted({p.style_of(i) for i in range(p.n_tomos)})  # "style_used"

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
            files = [f.measured, f.noiseless, f.angles_file, f.mdoc]
        elif kind in ("style_grams", "faket") and cfg.style.weights not in ("random", "imagenet"):
            files = [cfg.style.weights]
        return [_resolve(base, f) for f in files if f]

    def _status(self, name: str) -> tuple[bool, list[str]]:
        """(complete under this run's hash, input files changed since it completed)."""
        if not st.is_store(self.store):
            return False, []
        e = st.stage_status(self.store).get(st.pipeline_stage_key(name), {})
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
        todo: list[tuple[str, Callable[[], None]]] = []
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
            rerun_from = rerun_from or name
            todo.append((name, fn))
        if todo:
            self._run_stages(todo, client)
            st.consolidate(self.store)  # once, now that no stage runs (mark_stage's docstring)
        fig_dir = self.plan.out_dir / FIGURES
        if fig_dir.is_dir():  # counted here: the report may finish before the last figures
            self.log(f"       {len(list(fig_dir.glob('*.png')))} figures in {fig_dir}")
        order = {name: k for k, (name, _) in enumerate(self.stages())}
        self.records.sort(key=lambda r: order.get(r.name, len(order)))
        shutil.rmtree(self.plan.out_dir / "_scratch", ignore_errors=True)
        summary = run_summary(self.plan, self.records, self.hash, time.perf_counter() - t_run, client)
        (self.plan.out_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        return summary


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
    from ..cluster import connect
    from ..runlock import RunLock

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
        source = None if isinstance(config, RunConfig) else str(config)
        plan.notices += [f"faket-dask: notice: {line}" for line in deprecations(cfg, source)]
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


#: Stage kinds whose tasks import torch (their graphs are built without it on the client, except
#: for the options :func:`faket_dask.stages.style_settings.client_needs_torch` names).
_TORCH_KINDS = frozenset({"style_grams", "faket"})


def _cluster_file_is_cuda(path: str | Path | None) -> bool:
    if not path:
        return False
    import yaml

    try:
        return (yaml.safe_load(Path(path).read_text()) or {}).get("type") == "cuda"
    except (OSError, yaml.YAMLError, AttributeError):
        return False
