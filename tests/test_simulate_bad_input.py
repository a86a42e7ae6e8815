"""Bad inputs to `faket-dask simulate`: one line naming the problem, before any work, nothing lost."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import write_mrc
from pipeline_helpers import TINY, cli, write_config


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("faket-dask: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "Dask dashboard" not in proc.stderr
    return lines[0]


def _snapshot(path):
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(path.rglob("*"))}


def test_unknown_config_key(tmp_path):
    cfg = write_config(tmp_path / "run.yaml", style={"weights": "random", "lrr": 0.1})
    msg = _one_line_error(cli("simulate", cfg))
    assert "unknown key 'style.lrr'" in msg and str(cfg) in msg
    assert not (tmp_path / "out").exists()


def test_impossible_combination_names_the_key(tmp_path):
    cfg = write_config(tmp_path / "run.yaml", specimens={**TINY["specimens"], "count": 1})
    msg = _one_line_error(cli("simulate", cfg))
    assert "specimens" in msg and "(i + 1) mod K" in msg
    cfg = write_config(tmp_path / "run2.yaml", style_data={"source": "import"})
    assert "style_data" in _one_line_error(cli("simulate", cfg))


def _imported_style_config(tmp_path, n_tilts: int, *, angles_file: bool = True, **extra):
    data = np.random.default_rng(0).normal(size=(n_tilts, 32, 48)).astype(np.float32)
    write_mrc(tmp_path / "style.mrc", data)
    entry = {"measured": "style.mrc"}
    if angles_file:
        (tmp_path / "style.tlt").write_text("\n".join(str(a) for a in np.linspace(-60, 60, n_tilts)) + "\n")
        entry["angles_file"] = "style.tlt"
    entry.update(extra)
    return write_config(tmp_path / "run.yaml", style_data={"source": "import", "files": [entry]})


def test_style_stack_with_another_tilt_count(tmp_path):
    cfg = _imported_style_config(tmp_path, 11)
    msg = _one_line_error(cli("simulate", cfg))
    assert "style.mrc" in msg and "11 tilts" in msg and "21" in msg
    assert not (tmp_path / "out").exists()


def test_missing_angles(tmp_path):
    cfg = _imported_style_config(tmp_path, 21, angles_file=False)
    msg = _one_line_error(cli("simulate", cfg))
    assert "angles_file" in msg
    cfg = _imported_style_config(tmp_path, 21)
    (tmp_path / "style.tlt").unlink()
    msg = _one_line_error(cli("simulate", cfg))
    assert "style.tlt" in msg and "not found" in msg


@pytest.mark.parametrize("where", ["proc", "under_a_file"])
def test_unwritable_output_directory(tmp_path, where):
    if where == "proc":
        out = "/proc/faket-dask-out"
    else:
        (tmp_path / "afile").write_text("x")
        out = str(tmp_path / "afile" / "out")
    cfg = write_config(tmp_path / "run.yaml", output=out)
    msg = _one_line_error(cli("simulate", cfg))
    assert out in msg and ("not writable" in msg or "not a directory" in msg)


def test_existing_output_without_overwrite_is_untouched(tmp_path):
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "mine.png").write_bytes(b"precious")
    (out / "summary.json").write_text("{}")
    before = _snapshot(out)
    cfg = write_config(tmp_path / "run.yaml")
    msg = _one_line_error(cli("simulate", cfg))
    assert "--overwrite" in msg
    assert _snapshot(out) == before


def test_imagenet_weights_offline_and_not_cached(tmp_path):
    cfg = write_config(tmp_path / "run.yaml", style={"weights": "imagenet"})
    proc = cli("simulate", cfg, extra_env={"TORCH_HOME": str(tmp_path / "empty")})
    msg = _one_line_error(proc)
    assert "fetch-weights" in msg
    assert not (tmp_path / "out").exists()
