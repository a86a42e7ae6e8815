"""Every enumerated name and default of the method, torch-free: one owner per fact.

Submodules (each the only place that spells its facts):

* :mod:`.microscope` — :class:`MicroscopeParams`, the reference microscope's defaults;
* :mod:`.noise` — the noise modalities with their curve orders and noise scales
  (:data:`MODALITIES`, :class:`NoiseParams`), the unpaired estimate's band and window;
* :mod:`.reconstruction` — filter names and the reconstruction defaults;
* :mod:`.nst` — the neural style transfer's settings.

Memory sizes are in MiB (2**20 bytes) everywhere and named so (``task_memory_MiB``,
``chunk_MiB``); :data:`MIB` converts them to bytes.

Layer: just above :mod:`faket_dask.errors`; imports nothing else of the package, so every
other module (config, chunking, kernels, stages, commands) may import from here.
"""
from __future__ import annotations

from typing import Final

# The submodules' ``__all__`` lists are their public names; re-exported whole so a name added
# to a submodule needs no second edit here.
from . import microscope as _microscope
from . import noise as _noise
from . import nst as _nst
from . import reconstruction as _reconstruction
from .microscope import *  # noqa: F403
from .noise import *  # noqa: F403
from .nst import *  # noqa: F403
from .reconstruction import *  # noqa: F403

#: Bytes per MiB, the one memory unit of the project's settings (``*_MiB``).
MIB: Final = 2**20
#: Default budget of one Zarr chunk (MiB): large enough for efficient I/O, small enough that a
#: worker holds many at once (docs/architecture.md, "Chunking").
CHUNK_MiB: Final = 8
#: Default working-memory budget of one task (MiB): a slab task holds its input slab, its
#: output slab and kernel temporaries (docs/architecture.md, "Chunking"); NST tiling follows
#: it too.
TASK_MEMORY_MiB: Final = 512

__all__ = [
    "CHUNK_MiB",
    "MIB",
    "TASK_MEMORY_MiB",
    *_microscope.__all__,
    *_noise.__all__,
    *_nst.__all__,
    *_reconstruction.__all__,
]
