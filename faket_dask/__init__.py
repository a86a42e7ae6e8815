"""faket-dask: the FakET cryo-ET simulation method as a chunked, out-of-core Dask/Zarr pipeline.

Public API (lazy: nothing computes until ``.compute()`` or :func:`save`)::

    import faket_dask as fd
    ds = fd.open("run.zarr", "tomo_000/tiltseries")      # xarray Dataset, dask-backed
    fd.save(arr, "run.zarr", "tomo_000/tiltseries", name="measured")
"""
from __future__ import annotations

# Lazy (PEP 562): ``import faket_dask`` and the CLI's ``--help`` must not import dask, xarray,
# torch or zarr (~1.3 s); each public name is imported from its module on first use.
_PUBLIC: dict[str, str] = {
    "FaketError": ".errors",
    "InputError": ".errors",
    "NoiseModel": ".noise_model",
    "OutputExistsError": ".errors",
    "RunConfig": ".config",
    "add_noise": ".stages.noise",
    "angles_from_range": ".formats.convert",
    "compare": ".stages.compare",
    "compare_store": ".stages.compare_io",
    "connect": ".cluster",
    "estimate_noise": ".stages.noise",
    "export_mrc": ".formats.convert",
    "import_mrc": ".formats.convert",
    "load_config": ".config",
    "load_mrc": ".formats.convert",
    "open": ".store",
    "open_var": ".store",
    "pick": ".stages.picking",
    "project": ".stages.projection",
    "reconstruct": ".stages.reconstruction",
    "save": ".store",
    "style_grams_dataset": ".stages.style_grams",
    "style_transfer": ".stages.style_transfer",
    "tiltseries": ".datamodel",
    "train_picker": ".stages.picker_training",
    "volume": ".datamodel",
}


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'faket_dask' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__version__ = "0.1.0"

__all__ = [
    "FaketError",
    "InputError",
    "NoiseModel",
    "OutputExistsError",
    "RunConfig",
    "add_noise",
    "angles_from_range",
    "compare",
    "compare_store",
    "connect",
    "estimate_noise",
    "export_mrc",
    "import_mrc",
    "load_config",
    "load_mrc",
    "open",
    "open_var",
    "pick",
    "project",
    "reconstruct",
    "save",
    "style_grams_dataset",
    "style_transfer",
    "tiltseries",
    "train_picker",
    "volume",
]
