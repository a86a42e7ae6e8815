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
    # Grams read the style stacks only: they may run beside the noise stages
    assert set(dep("style_grams/000")) == {"measured/000", "measured/001", "measured/002"}
    # FakET of tomogram 1 reads its own noise and any style stack's Grams, never tomogram 0's noise
    faket = set(dep("faket/001"))
    assert {"noise/001", "style_grams/000", "style_grams/001", "style_grams/002"} <= faket
    assert not faket & {"noise/000", "noise/002", "faket/000", "faket/002"}
    assert "faket/002" in dep("reconstruct/002") and "faket/001" not in dep("reconstruct/002")
    # the report reads everything before it
    names = [n for n, _ in p.stages()]
    assert set(dep("report")) == set(names[:-1])


def test_stages_of_one_kind_never_wait_for_each_other_and_order_is_respected(tmp_path):
    p = _pipeline(tmp_path, {"source": "import", "files": [{"measured": "s.mrc", "angles_file": "s.tlt"}]})
    names = [n for n, _ in p.stages()]
    for name in names:
        kind = name.partition("/")[0]
        for d in p.depends_on(name):
            assert d.partition("/")[0] != kind
            assert names.index(d) < names.index(name)  # the stage table stays a dependency order
    assert p.depends_on("style_grams/000") == ["style_import/000"]
