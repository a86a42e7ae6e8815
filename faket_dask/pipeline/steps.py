"""The body of every stage (one method each); :class:`~.run.Pipeline` runs them in order.

Each method reads its inputs from the run store and writes its outputs there; the store paths
come from :mod:`faket_dask.store.layout`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from .. import datamodel
from .. import store as st
from ..store.write_batch import one_graph
from ..errors import FaketError
from ..run_inputs import MATCH_OPTION
from .plan import FIGURES, _resolve, derived_seed

if TYPE_CHECKING:
    from ..config import RunConfig
    from .plan import Plan


class StageSteps:
    """Stage bodies; mixed into :class:`~.run.Pipeline`, which provides the attributes."""

    plan: Plan
    cfg: RunConfig
    store: Any
    task_bytes: int
    log: Any

    def specimen(self, i: int) -> None:
        """Generate (or import) specimen ``i`` into ``tomo_i/specimen`` and ``tomo_i/particles``."""
        from ..stages.particles import particles_dataset
        from ..stages.specimen import generate_specimen, write_specimen

        sp = self.cfg.specimens
        px = self.cfg.acquisition.pixel_size_A
        if sp.source == "generate":
            tdir = _resolve(self.plan.base_dir, sp.templates_dir) if sp.templates_dir else None
            spec, parts = generate_specimen(
                sp.shape_zyx, px, derived_seed(self.cfg.seed, "specimen", i),
                n_particles=sp.particles, volume_fraction=sp.volume_fraction,
                n_vesicles=sp.vesicles, n_fiducials=sp.fiducials, n_actin=sp.actin,
                n_microtubules=sp.microtubules, templates_dir=tdir, template_units=sp.template_units,
            )
        else:
            from ..formats.convert import load_labels, load_mrc
            from ..kernels.specimen_placement import COLUMNS
            from ..run_inputs import entry_hint

            f = sp.files[i]
            key = f"specimens.files[{i}]"
            dens = load_mrc(_resolve(self.plan.base_dir, f.density), kind="volume",
                            pixel_size_A=f.pixel_size_A, pixel_size_hint=entry_hint(key))
            px = float(dens.attrs["pixel_size_A"])
            from ..formats.units import to_volts

            dens = to_volts(dens, f.units, str(f.density))
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
                from ..stages.particles import particles_from_masks

                parts = particles_from_masks(data["class_mask"], pixel_size_A=px)
                parts.attrs["source"] = f"imported {f.density}; particles derived from {f.class_mask}"
            else:
                empty = {c: np.zeros(0, np.float64) for c in COLUMNS}
                empty["class_name"] = np.zeros(0, "<U16")
                parts = particles_dataset(empty, px, {"source": "imported (no particle table)"})
        write_specimen(spec, parts, self.store, i, overwrite=True, progress=f"specimen {i}")

    def noiseless(self, i: int) -> None:
        """Project ``tomo_i/specimen/density`` into ``tomo_i/tiltseries/noiseless``."""
        from ..stages.projection import project

        vol = st.open(self.store, st.specimen_group(i))["density"]
        ts = project(vol, self.plan.angles_deg, device=self.plan.device, task_bytes=self.task_bytes)
        st.save(ts, self.store, st.tiltseries_group(i), name="noiseless", overwrite=True,
                progress=f"projecting tomogram {i}")

    def measured(self, i: int) -> None:
        """Reference microscope: ``tomo_i/tiltseries/measured`` from the noiseless projections."""
        from ..stages.microscope import simulate_microscope
        from ..stages.noise import open_input
        from ..stages.projection import project

        # whole tilts, small ones several to a task, as the noise stage reads them
        ts = open_input(self.store, st.tiltseries_var(i, "noiseless"))
        spec = st.open(self.store, st.specimen_group(i))
        # the absorption potential is projected here, lazily, for the microscope alone: it is
        # no FakET modality, so it is not stored
        absorption = (project(spec["absorption"], ts["tilt"].values, device=self.plan.device,
                              task_bytes=self.task_bytes) if "absorption" in spec else None)
        thickness = spec.sizes["z"] * datamodel.pixel_size_of(spec["density"])
        m = simulate_microscope(ts, seed=derived_seed(self.cfg.seed, "microscope"), tomo=i,
                                params=self.cfg.style_data.microscope, absorption=absorption,
                                specimen_thickness_A=thickness)
        st.save(m, self.store, st.tiltseries_group(i), name="measured", overwrite=True,
                progress=f"microscope {i}")

    def style_import(self, k: int) -> None:
        """Import measured style stack ``k`` (and its noiseless projections) into ``reference/``."""
        from ..formats.convert import import_mrc

        f = self.cfg.style_data.files[k]
        group = st.reference_group(k)
        # angles from the .tlt or the .mdoc (then also doses and acquisition order), the same
        # tilts excluded from both stacks
        angles = {"angles_file": None if f.angles_file is None else _resolve(self.plan.base_dir, f.angles_file),
                  "mdoc": None if f.mdoc is None else _resolve(self.plan.base_dir, f.mdoc),
                  "exclude_tilts": f.exclude_tilts}
        # import sorts each stack by angle (acquisition order kept as a coordinate), so the
        # measured stack and its noiseless partner stay paired tilt by tilt
        import_mrc(_resolve(self.plan.base_dir, f.measured), self.store, f"{group}/measured",
                   kind="tiltseries", pixel_size_A=f.pixel_size_A, overwrite=True, **angles)
        if f.noiseless is not None:
            import_mrc(_resolve(self.plan.base_dir, f.noiseless), self.store, f"{group}/noiseless",
                       kind="tiltseries", pixel_size_A=f.pixel_size_A, overwrite=True, **angles)

    def noise_model(self) -> None:
        """Estimate the noise model over every style stack (docs/method.md §2)."""
        from ..stages.noise import estimate_noise

        srcs = self.plan.style_sources
        measured = [st.open_var(self.store, s) for s in srcs]
        noiseless = None
        if self.plan.paired:
            noiseless = [st.open_var(self.store, s.rsplit("/", 1)[0] + "/noiseless") for s in srcs]
        model = estimate_noise(measured, noiseless, order=self.cfg.noise.order, sources=srcs)
        orders = sorted({self.cfg.noise.order, self.cfg.noise.baseline_order})
        model.save(self.store, orders=orders, overwrite=True)

    def noise(self, i: int) -> None:
        """NOISY, CONTENT and BASELINE of tomogram ``i`` (one noise field, docs/method.md §3)."""
        from ..noise_model import NoiseModel
        from ..params import MODALITY_NAMES
        from ..stages.noise import add_noise_modality, open_input

        model = NoiseModel.load(self.store)
        group = st.tiltseries_group(i)
        p = open_input(self.store, st.tiltseries_var(i, "noiseless"))
        seed = derived_seed(self.cfg.seed, "noise")
        # one function for every modality, with the config's orders and scales (as `noise apply`);
        # the three written in one graph: one wait for the cluster, not three (store/write_batch.py)
        with one_graph(f"noise {i}"):
            for name in MODALITY_NAMES:
                arr = add_noise_modality(p, model, name, seed, tomo=i, params=self.cfg.noise,
                                         match_angles=self.cfg.style_data.match_angles,
                                         match_option=MATCH_OPTION)
                st.save(arr, self.store, group, name=name, overwrite=True, progress=f"{name} {i}")

    def _style_kwargs(self, shape_yx: tuple[int, int]) -> dict[str, Any]:
        from ..params.nst import NSTParams

        s = self.cfg.style
        return {"weights": self.plan.weights, "seed": self.cfg.seed, "device": self.plan.device,
                "precision": s.precision, "tile": self.plan.tile_for(shape_yx),
                "params": NSTParams.from_config(s), "batch": s.batch}

    def _grams_group(self, k: int) -> str:
        # the one key of the Gram cache (store.layout): `faket-dask style --style VAR` finds it
        return st.style_grams_group(self.plan.style_sources[k])

    def style_grams(self, k: int) -> None:
        """Gram matrices of style stack ``k`` (computed once, reused by every tomogram)."""
        from ..stages.style_grams import save_style_grams, style_grams_dataset
        from ..stages.style_settings import settings

        path = self.plan.style_sources[k]
        content_yx = tuple(self.plan.shapes_zyx[0][1:])
        kw = self._style_kwargs(content_yx)
        # read in the tilt batches of the Gram tasks: each task (and each range task) reads its
        # own tilts, with no read and merge task per stored tilt (~240 tasks per stack in the demo)
        shape_yx = tuple(st.open_var(self.store, path).shape[1:])
        batch = settings(shape_yx, algorithm="auto", **kw).task_batch
        style = st.open_var(self.store, path, tilts_per_chunk=batch)
        # named by its store path, as `faket-dask style --style VAR` names it: one cache entry
        style.attrs["source"] = path
        ds = style_grams_dataset(style, **kw)
        save_style_grams(ds, self.store, self._grams_group(k), overwrite=True)

    def faket(self, i: int) -> None:
        """FAKET of tomogram ``i``: CONTENT styled towards style stack ``(i + 1) mod K``."""
        from ..stages.style_grams import load_style_grams
        from ..stages.style_transfer import style_transfer

        group = st.tiltseries_group(i)
        k = self.plan.style_of(i)
        grams = load_style_grams(self.store, self._grams_group(k))
        if grams is None:
            raise FaketError(f"{self.store}: style Grams of stack {k} are missing; rerun with --overwrite")
        # read CONTENT and NOISY in the tilt batches of the NST's tasks, which the Grams were
        # computed and stored in (same settings): one read task per batch, no merge tasks
        batch = int(grams["style_mean"].chunks[0][0]) if grams["style_mean"].chunks else None
        content = st.open_var(self.store, group + "/content", tilts_per_chunk=batch)
        noisy = st.open_var(self.store, group + "/noisy", tilts_per_chunk=batch)
        out = style_transfer(content, grams, noisy, **self._style_kwargs(tuple(content.shape[1:])),
                             match_angles=self.cfg.style_data.match_angles,
                             match_option=MATCH_OPTION)
        out.attrs["style"] = self.plan.style_sources[k]
        # saved in the batches of its tasks: each task writes its tilts, one Zarr chunk per tilt
        # (st.save), with no split task per tilt between the NST and the write
        st.save(out, self.store, group, name="faket", overwrite=True, progress=f"style transfer {i}")

    def reconstruct(self, i: int) -> None:
        """Tomograms of every modality of tomogram ``i`` but FAKET, and its labels on the
        tomogram grid (FAKET's: :meth:`reconstruct_faket`, after the NST)."""
        self._reconstruct(i, [m for m in self.cfg.reconstruction.modalities if m != "faket"],
                          labels=True)

    def reconstruct_faket(self, i: int) -> None:
        """The FAKET tomogram of tomogram ``i`` (the one reconstruction that waits for the NST)."""
        self._reconstruct(i, ["faket"], labels=False)

    def _reconstruct(self, i: int, modalities: list[str], *, labels: bool) -> None:
        from ..stages.reconstruction import reconstruct, tilts_per_task

        r = self.cfg.reconstruction
        ts_group = st.tiltseries_group(i)
        have = st.open(self.store, ts_group)
        if have.data_vars:  # the variables of a group share their dims, so one grouping fits all
            # read as the reconstruction groups its tilts: one task reads and filters them
            first = next(iter(have.data_vars.values()))
            have = st.open(self.store, ts_group, tilts_per_chunk=tilts_per_task(first.shape))
        scratch = self.plan.out_dir / "_scratch"
        # every volume and the labels in one graph: one wait for the cluster, not six
        # (store/write_batch.py); the NST of other tomograms runs beside this stage
        with one_graph(f"reconstructing {i}"):
            for m in modalities:
                if m not in have.data_vars:
                    continue
                vol = reconstruct(have[m], binning=r.binning, filter=r.filter, z_valid=r.z_valid,
                                  thickness=r.thickness, device=self.plan.device, scratch_dir=scratch,
                                  task_bytes=self.task_bytes)
                vol.attrs["modality"] = m
                st.save_image(vol, self.store, st.tomogram_group(i), m, overwrite=True,
                              progress=f"reconstructing {m} {i}")
            if labels:
                self.labels(i)

    def labels(self, i: int) -> None:
        """Class mask and particle table mapped to the tomogram grid (``tomo_i/labels``,
        ``tomo_i/labels_particles``; geometry in :mod:`faket_dask.kernels.labels`)."""
        from ..stages.labels import class_mask_on_tomogram, particles_on_tomogram, tomogram_grid

        r = self.cfg.reconstruction
        spec = st.open(self.store, st.specimen_group(i))
        Z, X = int(spec.sizes["z"]), int(spec.sizes["x"])
        b = r.binning
        nz_full, z0, nz_keep = tomogram_grid(X, b, r.thickness, r.z_valid)
        px = float(spec.attrs.get("pixel_size_A", self.cfg.acquisition.pixel_size_A))
        if "class_mask" in spec.data_vars:
            arr = class_mask_on_tomogram(spec["class_mask"], binning=b, nz_full=nz_full, z0=z0,
                                         nz_keep=nz_keep, pixel_size_A=px)
            st.save(arr, self.store, st.labels_group(i), name="class_mask", overwrite=True,
                    progress=f"labels {i}")
        parts = st.open(self.store, st.particles_group(i), in_memory=True)
        if parts.sizes.get("particle", 0):
            out = particles_on_tomogram(parts, specimen_z=Z, binning=b, nz_full=nz_full, z0=z0,
                                        pixel_size_A=px)
            st.clear_encoding(out)
            # (zarr's warning on fixed-width unicode is filtered by store.run_store, process-wide:
            # catch_warnings here would race with the stages running beside this one)
            out.to_zarr(str(self.store), group=st.labels_particles_group(i), mode="w",
                        zarr_format=3, consolidated=False)

    def figures(self, i: int) -> None:
        """Tilt-series figures of tomogram ``i`` into ``OUT/figures``: ``tomo_NNN_montage_*.png``
        and ``tomo_NNN_power_spectra.png`` (its central slices: :meth:`slices`).

        A stage per tomogram, not one at the end: tomogram 0's figures are drawn while later
        tomograms are still being styled (the report's ~6 s ran on half-idle workers at the
        end of the demo)."""
        self._draw(i, tilt_series=True)

    def slices(self, i: int) -> None:
        """``tomo_NNN_central_slices.png``: the central slices of tomogram ``i``'s tomograms, drawn
        as soon as its FAKET tomogram exists (beside :meth:`figures`)."""
        self._draw(i, tilt_series=False)

    def _draw(self, i: int, *, tilt_series: bool) -> None:
        from ..report import write_report

        fig_dir = self.plan.out_dir / FIGURES
        # only this stage's own files: the other figure stage of the tomogram may run beside it
        mine = ("montage_*", "power_spectra") if tilt_series else ("central_slices",)
        for pattern in mine:
            for old in fig_dir.glob(f"{st.tomo_name(i)}_{pattern}.png"):
                old.unlink()
        write_report(self.store, fig_dir, tomos=[i], noise_curves=False, tilt_series=tilt_series,
                     tomograms=not tilt_series)

    def report(self) -> None:
        """The run's own figures (the noise curves) into ``OUT/figures``; each tomogram's are
        drawn by ``figures/i`` and ``slices/i`` (the pipeline counts them all at the end)."""
        from ..report import write_report

        write_report(self.store, self.plan.out_dir / FIGURES, tomos=[])
