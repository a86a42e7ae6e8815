"""How many y-slices the projection kernel multiplies at once: torch-free, for graph builders.

Owned by the projection kernel (:mod:`faket_dask.kernels.projection`, which re-exports it),
kept apart so that the projection stage can size its slabs on the client without importing
torch (~2 s on the project's 2-core VM, while the workers wait for the graph).
"""
from __future__ import annotations

__all__ = ["column_block_width"]

# Columns per sparse product (column_block_width). On CPU, blocks are 2-3x faster per column
# than one wide product (256² planes, 61 tilts, 2 cores: 0.20 s for 256 columns in blocks of
# 32, 0.54 s at once), presumably as the rows a ray touches stay in cache/TLB; wider blocks
# (48, 64) were slower for 256² and 512² planes. The GPU width is a guess (not measured).
_CPU_BLOCK_WIDTH = 32
_GPU_BLOCK_WIDTH = 64


def column_block_width(nz: int, nx: int, device: object = "cpu") -> int:
    """Number of y-slices that :func:`~faket_dask.kernels.projection.project_slab` multiplies at
    once for a (nz, nx) plane.

    Every sparse product has exactly this many columns (a last, partial block is padded), so a
    y-slice goes through the same arithmetic whatever slab it came in. Slabs whose ``cy`` is a
    multiple of it waste nothing; a thinner slab still costs a whole block.

    Parameters
    ----------
    nz, nx : int
        Volume size along z and x (voxels).
    device : str or torch.device, default "cpu"
        Where the products run (only its type is read: ``"cpu"``, ``"cuda"``, ``"cuda:1"``…).

    Returns
    -------
    int
        32 on CPU, 64 on other devices (a multiple of 16: whole AVX-512 vectors, no tails).
    """
    if str(device).split(":", 1)[0] != "cpu":
        return _GPU_BLOCK_WIDTH
    # The plane size is an argument so that this can become size-dependent; measured on 2 cores
    # (61 tilts, widths 16/32/48/64), 32 was the fastest for 64², 128², 256² and 512² planes.
    return _CPU_BLOCK_WIDTH
