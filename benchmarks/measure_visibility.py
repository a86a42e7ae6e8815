"""Is the specimen visible in the reference microscope's tomograms? (``docs/microscope.md``)

Runs the demo configuration's first stages (specimen, noiseless projection, reference
microscope, reconstruction of ``measured`` and ``noiseless``, labels) for its tomograms, then
:func:`faket_dask.report.visibility.specimen_visibility` on each, and writes JSON plus a
central-slice figure per tomogram::

    python benchmarks/measure_visibility.py --out /tmp/vis [--tomos 3] [--json vis.json]

No style transfer runs (the measures concern the microscope's data only), so it takes about a
minute per tomogram on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="output directory (replaced)")
    ap.add_argument("--tomos", type=int, default=None, help="tomograms (default: the demo's)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here too")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from faket_dask.cluster import connect
    from faket_dask.demo import demo_config
    from faket_dask.pipeline.plan import plan_run
    from faket_dask.pipeline.run import Pipeline
    from faket_dask.report import plot_central_slices
    from faket_dask import store as st
    from faket_dask.report.visibility import lowpass_volume, specimen_visibility

    cfg = demo_config()
    n = cfg.specimens.count if args.tomos is None else args.tomos
    t0 = time.perf_counter()
    results = []
    with connect(None, workers=args.workers):
        plan = plan_run(cfg, args.out, base_dir=Path("."), overwrite=True, device="cpu",
                        fallback_random_weights=True)
        pipe = Pipeline(plan, log=lambda s: None)
        for i in range(n):
            pipe.specimen(i)
            pipe.noiseless(i)
            pipe.measured(i)
            pipe.reconstruct(i)
            vis = specimen_visibility(plan.store, i)
            tomos = st.open(plan.store, st.tomogram_group(i))
            fig = args.out / f"visibility_tomo_{i:03d}.png"
            plot_central_slices({"noiseless": tomos["noiseless"], "measured": tomos["measured"],
                                 "measured, low-pass 2 vox": lowpass_volume(tomos["measured"])}, fig,
                                title=f"tomogram {i}: reference microscope (volts)")
            r = np.array(vis["tilt_correlation"])
            ang = np.array(vis["tilt_angles_deg"])
            fc = vis["fiducial_contrast"]
            row = {
                "tomo": i,
                "tilt_correlation_at_0": float(r[np.argmin(np.abs(ang))]),
                "tilt_correlation_max_at_deg": float(ang[np.argmax(r)]),
                "tilt_correlation_at_60": float(r[np.argmax(np.abs(ang))]),
                "tomogram_correlation_lowpass2": vis["tomogram_correlation"],
                "tomogram_correlation_both_lowpassed": vis["tomogram_correlation_both_lowpassed"],
                "fiducial_contrast_min": min(fc) if fc else None,
                "fiducial_contrast": fc,
                "figure": str(fig),
                "tilt_correlation": vis["tilt_correlation"],
            }
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "tilt_correlation"}), flush=True)
    out = {"seconds": time.perf_counter() - t0, "tomograms": results}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
