"""``summary.json`` of a run and the table printed at its end."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import store as st
from .plan import Plan


def run_summary(plan: Plan, records: Sequence[Any], config_hash: str, seconds: float,
                client: Any | None) -> dict[str, Any]:
    """``summary.json``: sizes, per-stage timings and peak memory (MiB), the noise model.

    ``records`` are the :class:`~.run.StageRecord` of this invocation, in order.
    """
    from ..noise_model import NoiseModel

    marks = st.stage_status(plan.store)
    stages = {}
    for rec in records:
        m = marks.get(st.pipeline_stage_key(rec.name), {})
        stages[rec.name] = {
            "status": rec.status,
            "seconds": m.get("seconds"),
            "peak_worker_MiB": m.get("peak_worker_MiB"),
            "peak_client_MiB": m.get("peak_client_MiB"),
        }
    sizes = {}
    for i in range(plan.n_tomos):
        entry: dict[str, Any] = {"specimen_zyx": list(plan.shapes_zyx[i])}
        for part in ("tiltseries", "tomogram"):
            try:
                ds = st.open(plan.store, st.tomo_group(i, part))
                entry[part] = {str(v): list(ds[v].shape) for v in ds.data_vars}
            except Exception:  # noqa: BLE001 - partial stores still get a summary
                pass
        sizes[st.tomo_name(i)] = entry
    try:
        nm = NoiseModel.load(plan.store)
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
    peak_w = max((s["peak_worker_MiB"] or 0 for s in stages.values()), default=0)
    peak_c = max((s["peak_client_MiB"] or 0 for s in stages.values()), default=0)
    return {
        "store": str(plan.store),
        "config_hash": config_hash,
        "weights": plan.weights,
        "device": plan.device,
        "n_tomograms": plan.n_tomos,
        "n_tilts": int(len(plan.angles_deg)),
        "angles_deg": [float(a) for a in plan.angles_deg],
        "style_pairing": {st.tomo_name(i): plan.style_sources[plan.style_of(i)]
                          for i in range(plan.n_tomos)},
        "sizes": sizes,
        "seconds_total_this_invocation": round(seconds, 2),
        "stages": stages,
        "peak_memory_MiB": {"worker": peak_w, "client": peak_c},
        "cluster": workers,
        "noise_model": noise,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary table printed at the end of a run."""
    lines = [f"{'stage':<22}{'status':>9}{'seconds':>10}{'peak worker MiB':>17}"]
    for name, s in summary["stages"].items():
        sec = "" if s["seconds"] is None else f"{s['seconds']:.1f}"
        mem = "" if not s["peak_worker_MiB"] else f"{s['peak_worker_MiB']:.0f}"
        lines.append(f"{name:<22}{s['status']:>9}{sec:>10}{mem:>17}")
    lines.append(f"total this run: {summary['seconds_total_this_invocation']:.1f} s; "
                 f"peak worker {summary['peak_memory_MiB']['worker']:.0f} MiB; store {summary['store']}")
    return "\n".join(lines)
