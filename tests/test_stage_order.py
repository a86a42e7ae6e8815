"""Which stages may run side by side: the dependencies :meth:`Pipeline.depends_on` derives."""
from __future__ import annotations

from faket_dask.config import parse_config
from faket_dask.pipeline import Pipeline, Plan


def _pipeline(tmp_path, style_data: dict) -> Pipeline:
    cfg = parse_config({"specimens": {"source": "generate", "count": 3, "shape_zyx": [16, 16, 16]},
                        "style_data": style_data})
    sources = (["tomo_001/tiltseries/measured", "tomo_002/tiltseries/measured", "tomo_000/tiltseries/measured"]
               if style_data["source"] == "microscope" else ["reference/style_000/measured"])
    plan = Plan(cfg=cfg, out_dir=tmp_path / "out", base_dir=tmp_path, angles_deg=None, n_tomos=3,
                shapes_zyx=[(16, 16, 16)] * 3, style_sources=sources, paired=True, weights="random")
    return Pipeline(plan)


def test_a_tomograms_stages_wait_only_for_what_they_read(tmp_path):
    p = _pipeline(tmp_path, {"source": "microscope"})
    dep = p.depends_on
    assert dep("specimen/001") == []
    assert dep("noiseless/001") == ["specimen/001"]
    # the noise model pools every reference stack; a tomogram's noise needs it and its own stages
    assert set(dep("noise_model")) >= {"measured/000", "measured/001", "measured/002"}
    assert set(dep("noise/001")) == {"specimen/001", "noiseless/001", "measured/001", "noise_model"}
    # Grams read their own style stack only (stack 0 is tomogram 1's measured tilt-series here):
    # they may start while the other tomograms' first stages still run
    assert dep("style_grams/000") == ["measured/001"]
    assert dep("style_grams/002") == ["measured/000"]
    # FakET of tomogram 1 reads its own noise and the Grams of its style stack ((1 + 1) mod 3)
    faket = set(dep("faket/001"))
    assert {"noise/001", "style_grams/002"} <= faket
    assert not faket & {"noise/000", "noise/002", "faket/000", "faket/002", "style_grams/000", "style_grams/001"}
    # the tomograms of every modality but FAKET (and the labels) do not wait for the NST; the
    # FAKET tomogram does, for its own tomogram's only
    assert set(dep("reconstruct/002")) == {"specimen/002", "noiseless/002", "measured/002",
                                           "noise_model", "noise/002"}
    assert "faket/002" in dep("reconstruct_faket/002") and "faket/001" not in dep("reconstruct_faket/002")
    # a tomogram's tilt-series figures follow its FAKET, its central slices its tomograms only
    # (the two figure stages run side by side); the report (the noise curves) reads the noise
    # model only, so it does not wait for the last tomogram
    assert "faket/001" in dep("figures/001")
    assert "reconstruct_faket/001" not in dep("figures/001")
    # only the central slices read the tomograms: neither the NST nor the tilt-series figures
    # wait for the other modalities' reconstruction
    assert "reconstruct/001" not in dep("faket/001")
    assert "reconstruct/001" not in dep("figures/001")
    assert "reconstruct/001" not in dep("reconstruct_faket/001")
    assert set(dep("slices/001")) == {"reconstruct/001", "reconstruct_faket/001"}
    # nothing waits for PNGs: the FAKET tomogram is made beside the tilt-series figures
    assert "figures/001" not in dep("reconstruct_faket/001")
    assert "reconstruct/000" not in dep("figures/001")
    assert dep("report") == ["noise_model"]


def test_short_stages_go_first_and_tomograms_depth_first(tmp_path):
    """Dask priorities of the stages (higher first): every short stage before any NST stage,
    tomogram 0's later stages before tomogram 1's earlier ones, a style stack with the first
    tomogram styled towards it."""
    p = _pipeline(tmp_path, {"source": "microscope"})
    pr = p.priority
    assert min(pr(n) for n in ("specimen/002", "noise_model", "noise/002", "reconstruct/002",
                               "reconstruct_faket/002", "figures/002", "slices/002", "report")) > max(pr(n) for n in ("faket/000", "style_grams/001"))
    assert pr("faket/000") > pr("faket/001") > pr("faket/002")
    assert pr("figures/000") > pr("reconstruct/000") > pr("specimen/001")
    assert pr("figures/000") > pr("reconstruct/001")
    # the run's own figures after every tomogram's short stages (they held a stage slot that
    # the last tomogram's noise waited for)
    assert pr("report") < min(pr(n) for n in ("noise/002", "reconstruct/002", "slices/002"))
    # tomogram 0 is styled towards stack 1, tomogram 1 towards stack 2, tomogram 2 towards stack 0
    assert pr("style_grams/001") > pr("style_grams/002") > pr("style_grams/000")
    # every stack's Grams before any NST: an NST never waits for Grams queued behind another NST
    assert pr("style_grams/000") > pr("faket/000")


def test_stages_of_one_kind_never_wait_for_each_other_and_order_is_respected(tmp_path):
    p = _pipeline(tmp_path, {"source": "import", "files": [{"measured": "s.mrc", "angles_file": "s.tlt"}]})
    names = [n for n, _ in p.stages()]
    for name in names:
        kind = name.partition("/")[0]
        for d in p.depends_on(name):
            assert d.partition("/")[0] != kind
            assert names.index(d) < names.index(name)  # the stage table stays a dependency order
    assert p.depends_on("style_grams/000") == ["style_import/000"]
