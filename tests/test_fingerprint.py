"""Changed-input detection for resume: what counts as a change, and which files each stage reads."""
from __future__ import annotations

import os

from faket_dask.config import parse_config
from faket_dask.fingerprint import changed, fingerprint
from faket_dask.pipeline import Pipeline, Plan


def test_same_bytes_new_mtime_is_unchanged_and_new_bytes_are_changed(tmp_path):
    f = tmp_path / "ts.tlt"
    f.write_text("-30\n0\n30\n")
    rec = fingerprint([f])
    assert changed(rec, [f]) == []
    os.utime(f, ns=(1, 10**18))                       # touched: hash decides -> same
    assert changed(rec, [f]) == []
    f.write_text("-30\n0\n31\n")                      # same size, new content
    os.utime(f, ns=(1, 10**18))
    assert changed(rec, [f]) == [str(f.resolve())]


def test_directories_missing_and_new_files(tmp_path):
    d = tmp_path / "templates"
    d.mkdir()
    (d / "a.mrc").write_bytes(b"\0" * 64)
    rec = fingerprint([d, tmp_path / "absent.mrc"])
    assert changed(rec, [d, tmp_path / "absent.mrc"]) == []
    (d / "b.mrc").write_bytes(b"\1" * 64)             # a template added
    assert changed(rec, [d, tmp_path / "absent.mrc"]) == [str((d / "b.mrc").resolve())]
    (tmp_path / "absent.mrc").write_bytes(b"x")       # a file that appeared
    assert str((tmp_path / "absent.mrc").resolve()) in changed(rec, [d, tmp_path / "absent.mrc"])


def test_each_stage_names_the_files_it_reads(tmp_path):
    cfg = parse_config({
        "specimens": {"source": "import", "files": [{"density": "d.mrc", "class_mask": "m.mrc"}]},
        "style_data": {"source": "import",
                       "files": [{"measured": "s.mrc", "angles_file": "s.tlt", "noiseless": "n.mrc"}]},
        "style": {"weights": "vgg.pth"},
    })
    plan = Plan(cfg=cfg, out_dir=tmp_path / "out", base_dir=tmp_path, angles_deg=None, n_tomos=1,
                shapes_zyx=[(8, 8, 8)], style_sources=["reference/style_000/measured"], paired=True,
                weights=str(tmp_path / "vgg.pth"))
    p = Pipeline(plan)
    names = lambda stage: sorted(x.name for x in p.stage_inputs(stage))  # noqa: E731
    assert names("specimen/000") == ["d.mrc", "m.mrc"]
    assert names("style_import/000") == ["n.mrc", "s.mrc", "s.tlt"]
    assert names("style_grams/000") == names("faket/000") == ["vgg.pth"]
    assert names("noise/000") == [] and names("reconstruct/000") == []
