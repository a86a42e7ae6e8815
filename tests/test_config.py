"""Run configuration: paper defaults, unknown keys rejected by name."""
from __future__ import annotations

import pytest

from faket_dask.config import RunConfig, deprecations, load_config, parse_config
from faket_dask.errors import InputError
from faket_dask.params import MIB, MODALITIES, NoiseParams


def test_defaults_are_the_papers():
    cfg = RunConfig()
    assert cfg.acquisition.angles_deg().size == 61
    assert cfg.acquisition.pixel_size_A == 10.0
    assert (cfg.noise.order, cfg.noise.baseline_order, cfg.noise.content_scale) == (2, 0, 0.25)
    assert cfg.style.lr == 0.15 and cfg.style.iterations == 1 and cfg.style.ema_decay == 0.99
    assert cfg.style.style_layers == (1, 6, 11, 20, 29)
    assert cfg.style.style_layer_weights == (256, 64, 16, 4, 1)
    assert cfg.style.content_layers == (8,)
    assert cfg.reconstruction.binning == 2 and cfg.reconstruction.filter == "approx_shrec"


def test_sections_come_from_params():
    cfg = RunConfig()
    assert isinstance(cfg.noise, NoiseParams) and cfg.noise.modalities() == dict(MODALITIES)
    assert (cfg.compute.task_memory_MiB, cfg.compute.chunk_MiB) == (512.0, 8.0)
    assert MIB == 2**20
    assert deprecations(cfg) == []


def test_memory_keys_in_mib_old_spelling_accepted(tmp_path):
    new, old = tmp_path / "new.yaml", tmp_path / "old.yaml"
    new.write_text("compute:\n  task_memory_MiB: 256\n  chunk_MiB: 4\n")
    old.write_text("compute:\n  task_memory_MB: 256\n  chunk_MB: 4\n")
    a, b = load_config(new), load_config(old)
    assert a.compute == b.compute and a.hash() == b.hash()  # the same run whichever spelling
    assert a.model_dump() == b.model_dump() and "task_memory_MB" not in b.model_dump()["compute"]
    assert deprecations(a, str(new)) == []
    assert deprecations(b, str(old)) == [
        f"{old}: compute.chunk_MB is deprecated; use compute.chunk_MiB (same value, MiB)",
        f"{old}: compute.task_memory_MB is deprecated; use compute.task_memory_MiB (same value, MiB)",
    ]
    with pytest.raises(InputError, match="compute: .*task_memory_MiB or its deprecated spelling task_memory_MB"):
        parse_config({"compute": {"task_memory_MB": 1, "task_memory_MiB": 1}}, source="run.yaml")


def test_unknown_key_named(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("seed: 3\nstyle:\n  lrr: 0.1\n")
    with pytest.raises(InputError, match=r"run.yaml: unknown key 'style.lrr'"):
        load_config(f)


def test_bad_value_named(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("reconstruction:\n  filter: gaussian\n")
    with pytest.raises(InputError, match=r"reconstruction.filter"):
        load_config(f)


def test_valid_file_and_hash(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("seed: 7\nacquisition:\n  tilt_step_deg: 3\n")
    cfg = load_config(f)
    assert cfg.seed == 7 and cfg.acquisition.angles_deg().size == 41
    assert cfg.hash() != RunConfig().hash()
    assert cfg.hash() == load_config(f).hash()


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(InputError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    f = tmp_path / "bad.yaml"
    f.write_text("seed: [1,\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(f)
