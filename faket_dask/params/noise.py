"""FakET's noise settings (``docs/method.md §2`` and ``§3``): the one owner of their names and defaults.

The method derives three tilt-series from one noiseless tilt-series P, a noise model and one
standard-normal field z (``docs/method.md §3``)::

    modality   curves of order   noise scale k
    NOISY      2                 1      (the NST's initial image)
    CONTENT    2                 0.25   (the NST's content image: same z, a quarter of the noise)
    BASELINE   0                 1      (the paper's baseline: constant curves)

A modality is therefore only an ``(order, scale)`` pair of the same injection
(:func:`faket_dask.stages.noise.add_noise_modality`). :class:`NoiseParams` holds the five
numbers (it is the ``noise:`` section of the run configuration and the ``noise apply``
options); :data:`MODALITIES` is the paper's table, the default everywhere.

Torch-free; the kernels, stages, commands and :mod:`faket_dask.config` import from here.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InputError

__all__ = [
    "BASELINE_ORDER",
    "BASELINE_SCALE",
    "CONTENT_SCALE",
    "MAX_NOISE_ORDER",
    "MODALITIES",
    "MODALITY_NAMES",
    "Modality",
    "NOISE_MODEL_ORDERS",
    "NOISE_ORDER",
    "NOISY_SCALE",
    "NoiseParams",
    "UNPAIRED_BAND",
    "UNPAIRED_TAPER",
]

#: The modalities, in the order the method makes them (``docs/method.md §3``).
MODALITY_NAMES: Final = ("noisy", "content", "baseline")
#: Polynomial order of the noise curves of NOISY and CONTENT (``docs/method.md §3``: 2).
NOISE_ORDER: Final = 2
#: Polynomial order of BASELINE's curves (``docs/method.md §3``: 0, i.e. constant curves).
BASELINE_ORDER: Final = 0
#: Highest polynomial order accepted: the curves have one value per tilt (tens of tilts), a
#: higher order would fit the per-tilt scatter instead of the trend.
MAX_NOISE_ORDER: Final = 10
#: Noise scale k of NOISY (``docs/method.md §3``).
NOISY_SCALE: Final = 1.0
#: Noise scale k of CONTENT: a quarter of NOISY's noise (``docs/method.md §3``). A power of
#: two, so CONTENT's noise term is exactly ``k ×`` NOISY's in floating point.
CONTENT_SCALE: Final = 0.25
#: Noise scale k of BASELINE (``docs/method.md §3``).
BASELINE_SCALE: Final = 1.0
#: Orders a noise model stores by default: NOISY/CONTENT's and BASELINE's.
NOISE_MODEL_ORDERS: Final = (NOISE_ORDER, BASELINE_ORDER)

#: Frequency band of the unpaired noise estimate, fractions of the Nyquist frequency
#: (0.5 cycles/pixel): 0.6–1.0 Nyquist = 0.3–0.5 cycles/pixel, where the CTF envelope and the
#: detector MTF usually leave no signal at tomography pixel sizes (assumptions and validation:
#: ``docs/noise.md``).
UNPAIRED_BAND: Final = (0.6, 1.0)
#: Tukey window taper fraction of the unpaired estimate: tapers 12.5 % at each row end (kills
#: the edge-discontinuity leakage) and weights the flat 75 % middle equally, so a noise level
#: that varies across the row is averaged almost uniformly (a Hann window over-weights the
#: row centre). Chosen in ``docs/noise.md``.
UNPAIRED_TAPER: Final = 0.25


@dataclass(frozen=True)
class Modality:
    """One noise modality: which curves, how much noise.

    Attributes
    ----------
    order : int
        Polynomial order of the noise-model curves it uses (0..:data:`MAX_NOISE_ORDER`).
    scale : float
        Noise scale k of the noise term ``z·σ·k`` (dimensionless, >= 0).
    """

    order: int
    scale: float


class NoiseParams(BaseModel):
    """The orders and scales of the three modalities (``docs/method.md §3``).

    The ``noise:`` section of the run configuration and the options of ``noise apply``; the
    defaults are the paper's (:data:`MODALITIES`). Unknown keys are rejected, the model is
    frozen.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    order: int = Field(NOISE_ORDER, ge=0, le=MAX_NOISE_ORDER, description="polynomial order for NOISY and CONTENT")
    baseline_order: int = Field(BASELINE_ORDER, ge=0, le=MAX_NOISE_ORDER, description="polynomial order for BASELINE")
    noisy_scale: float = NOISY_SCALE
    content_scale: float = CONTENT_SCALE
    baseline_scale: float = BASELINE_SCALE

    def modality(self, name: str) -> Modality:
        """The ``(order, scale)`` of modality ``name``.

        Parameters
        ----------
        name : {"noisy", "content", "baseline"}

        Returns
        -------
        Modality

        Raises
        ------
        InputError
            For another name (the message lists the modalities).
        """
        if name == "noisy":
            return Modality(self.order, self.noisy_scale)
        if name == "content":
            return Modality(self.order, self.content_scale)
        if name == "baseline":
            return Modality(self.baseline_order, self.baseline_scale)
        raise InputError(f"unknown noise modality '{name}' (choose from {', '.join(MODALITY_NAMES)})")

    def modalities(self) -> dict[str, Modality]:
        """Every modality's ``(order, scale)``, in :data:`MODALITY_NAMES` order."""
        return {name: self.modality(name) for name in MODALITY_NAMES}


#: The paper's table (``docs/method.md §3``): NOISY (2, 1), CONTENT (2, 0.25), BASELINE (0, 1).
MODALITIES: Final[Mapping[str, Modality]] = MappingProxyType(NoiseParams().modalities())
