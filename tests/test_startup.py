"""`faket-dask --help` and `faket-dask info` start fast: the CLI and the package import lazily.

Times are not asserted (they depend on the machine's load); what makes them slow is: importing
xarray, dask.array, torch or pandas before a command needs them. `benchmarks/bench_startup.py`
measures the times.
"""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("xarray", "dask.array", "torch", "pandas", "distributed", "scipy", "numba")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_cli_help_imports_no_heavy_library():
    loaded = _loaded_after("import faket_dask.cli\nfrom faket_dask.cli import app")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_info_reads_a_store_without_xarray_dask_or_torch(tmp_path):
    code = (f"import zarr\nzarr.create_group({str(tmp_path / 's.zarr')!r}).attrs['faket_dask'] = {{'version': 'x'}}\n"
            "from faket_dask.cli import main\n"
            "try:\n    main(['info', " + repr(str(tmp_path / "s.zarr")) + "])\nexcept SystemExit:\n    pass")
    loaded = _loaded_after(code)
    assert not loaded & {"xarray", "dask.array", "torch"}, loaded & {"xarray", "dask.array", "torch"}


def test_package_attributes_load_on_first_use():
    loaded = _loaded_after("import faket_dask as fd\nassert callable(fd.open) and fd.InputError")
    assert "faket_dask.store.run_store" in loaded      # fd.open is resolved on first use
    loaded = _loaded_after("import faket_dask as fd")
    assert not loaded & set(HEAVY)
    import faket_dask as fd

    assert set(fd.__all__) <= set(dir(fd))
    for name in fd.__all__:
        assert getattr(fd, name) is not None
    try:
        fd.no_such_name
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("unknown attribute did not raise")
