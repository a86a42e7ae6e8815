"""faket-dask: the FakET cryo-ET simulation method as a chunked, out-of-core Dask/Zarr pipeline.

Public API (lazy: nothing computes until ``.compute()`` or :func:`save`)::

    import faket_dask as fd
    ds = fd.open("run.zarr", "tomo_000/tiltseries")      # xarray Dataset, dask-backed
    fd.save(arr, "run.zarr", "tomo_000/tiltseries", name="measured")
"""
from __future__ import annotations

from .cluster import connect
from .config import RunConfig, load_config
from .datamodel import tiltseries, volume
from .errors import FaketError, InputError, OutputExistsError
from .formats.convert import angles_from_range, export_mrc, import_mrc, load_mrc
from .noise_model import NoiseModel
from .stages.noise import add_noise, estimate_noise
from .stages.projection import project
from .stages.reconstruction import reconstruct
from .stages.style_grams import style_grams_dataset
from .stages.style_transfer import style_transfer
from .store import open, open_var, save  # noqa: A004 - `open` is the documented API name

__version__ = "0.1.0"

__all__ = [
    "FaketError",
    "InputError",
    "NoiseModel",
    "OutputExistsError",
    "RunConfig",
    "add_noise",
    "angles_from_range",
    "connect",
    "estimate_noise",
    "export_mrc",
    "import_mrc",
    "load_config",
    "load_mrc",
    "open",
    "open_var",
    "project",
    "reconstruct",
    "save",
    "style_grams_dataset",
    "style_transfer",
    "tiltseries",
    "volume",
]
