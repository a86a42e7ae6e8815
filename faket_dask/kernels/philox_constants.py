"""The constants of Philox4x32-10 (Salmon et al. 2011; Random123, ``philox.h``).

One owner for :mod:`.noise_rng` (the numpy Philox) and :mod:`.philox_compiled` (the numba one).
"""
from __future__ import annotations

from typing import Final

__all__ = ["PHILOX_M0", "PHILOX_M1", "PHILOX_W0", "PHILOX_W1", "U32"]

#: Largest 32-bit word; also the mask of a word.
U32: Final = 0xFFFFFFFF
#: Round multipliers.
PHILOX_M0: Final = 0xD2511F53
PHILOX_M1: Final = 0xCD9E8D57
#: Weyl key increments.
PHILOX_W0: Final = 0x9E3779B9
PHILOX_W1: Final = 0xBB67AE85
