"""The embedded demo (what ``make demo`` runs): the whole FakET pipeline on small specimens.

Three generated specimens of 128³ voxels (10 Å; proteins at 10 % volume fraction, a vesicle, an
actin filament, a microtubule and three gold beads, in volts), 61 tilts (−60°…60°, 2°), the reference
microscope as style data, the paper's noise and NST settings, reconstructions binned by 2.
ImageNet VGG-19 weights are used when cached, otherwise random weights with a loud notice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import RunConfig, parse_config

#: The demo's configuration (everything else: the paper's defaults, ``faket-dask config``).
DEMO_CONFIG: dict[str, Any] = {
    "seed": 0,
    # crowded like a cytoplasm-ish sample: 10 % protein by volume, a vesicle, an actin filament,
    # a microtubule and gold beads, all in volts relative to the ice (docs/microscope.md)
    "specimens": {"source": "generate", "count": 3, "shape_zyx": [128, 128, 128],
                  "volume_fraction": 0.1, "vesicles": 1, "fiducials": 3, "actin": 1,
                  "microtubules": 1},
    "style_data": {"source": "microscope"},
    "output": "demo-out",
}


def demo_config() -> RunConfig:
    """The demo's :class:`RunConfig`."""
    return parse_config(DEMO_CONFIG, source="demo config")


def run_demo(
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    gpus: bool = False,
    cluster_file: str | Path | None = None,
) -> dict:
    """Run the demo into ``out_dir`` (resumes an interrupted demo); returns the summary."""
    from .pipeline import format_summary, simulate

    summary = simulate(demo_config(), out_dir=out_dir, overwrite=overwrite, scheduler=scheduler,
                       workers=workers, gpus=gpus, cluster_file=cluster_file,
                       fallback_random_weights=True)
    print(format_summary(summary))
    print(f"demo output in {Path(out_dir).resolve()}")
    return summary
