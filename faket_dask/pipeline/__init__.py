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
6. ``reconstruct``   tomograms of every modality but FAKET + labels mapped to the tomogram grid
7. ``style_grams``   Gram matrices of every style stack, once, kept in the store
8. ``faket``         NST: tomogram i styled with style stack (i + 1) mod K (the paper's pairing)
9. ``figures``       each tomogram's tilt-series figures (``OUT/figures``)
10. ``reconstruct_faket``   the FAKET tomogram
11. ``slices``, ``report``   the central slices of each tomogram's tomograms; the noise curves.
   ``OUT/summary.json`` is written after every run

Every stage writes its outputs to ``OUT/run.zarr`` and is then recorded as complete (with the
config hash) in the store's root attributes. A rerun of the same config skips complete stages
and recomputes the others from scratch (a killed run leaves at most one stage incomplete), so
the final store is the same whatever was interrupted. A different config refuses to touch an
existing output without ``overwrite``.
"""
from __future__ import annotations

from .plan import (
    FIGURES, STORE_NAME, SUMMARY, Plan, derived_seed,
    estimate_bytes, load_run_config, plan_run, run_hash,
)
from .run import STAGES, Pipeline, StageRecord, StageSpec, simulate
from .summary import format_summary, run_summary

__all__ = [
    "FIGURES", "STAGES", "STORE_NAME", "SUMMARY", "Pipeline", "Plan",
    "StageRecord", "StageSpec", "derived_seed", "estimate_bytes", "format_summary",
    "load_run_config", "plan_run", "run_hash", "run_summary", "simulate",
]
