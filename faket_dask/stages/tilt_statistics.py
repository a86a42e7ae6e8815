"""Per-tilt statistics of chunked tilt-series, and the input checks built on them.

The dask side of the statistics contract of :mod:`faket_dask.kernels.noise_moments`: per-row
moments are computed per chunk, the rows of a tilt are gathered (``Y × 3..6`` float64, a few
kB) and reduced once with exactly rounded sums, so every per-tilt statistic is bit-identical
for any chunking and any number of workers. The noise stage (:mod:`faket_dask.stages.noise`)
builds its estimation and injection on these; ``faket-dask noise`` runs :func:`check_references`
and :func:`check_values` before it starts a cluster.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from .. import chunking
from ..errors import InputError
from ..kernels.noise_moments import CSS, SUM, mean_std, reduce_rows
from ..kernels.noise_moments import row_moments as kernel_row_moments
from ..progress import compute
from ._common import check_tiltseries
from ..tilt_pairing import is_identity, match_tilts, tilt_label

__all__ = [
    "array_name",
    "array_names",
    "as_list",
    "as_tiltseries",
    "check_moments",
    "check_references",
    "check_values",
    "gather_rows",
    "row_moments",
    "tilt_angles",
    "tilt_mean_std",
    "tilt_moments",
]


def as_tiltseries(obj: Any, what: str) -> xr.DataArray:
    """A (tilt, y, x) DataArray backed by dask, with whole rows per chunk.

    numpy-backed inputs are chunked ``(1, cy, X)`` with the project's ``cy`` rule; dask inputs
    keep their chunks, except that several x-chunks are merged (row statistics need whole
    rows; the data model never splits x).

    Raises
    ------
    InputError
        Not a 3-D (tilt, y, x) array of real numbers, or empty; ``what`` names it.
    """
    obj = check_tiltseries(obj, what)
    data = obj.data
    if not isinstance(data, da.Array):
        t, ny, nx = obj.shape
        chunks = chunking.tiltseries_chunks(obj.shape, chunking.choose_cy(ny, nx, t))
        data = da.from_array(np.asarray(data), chunks=chunks)
    if data.numblocks[2] != 1:
        data = data.rechunk({2: -1})
    return obj.copy(data=data)


def array_name(arr: Any, given: str | None, default: str) -> str:
    """What to call an input in messages and in the model: given > the array's name > default."""
    if given:
        return str(given)
    name = getattr(arr, "name", None) if isinstance(arr, xr.DataArray) else None
    return str(name) if name is not None else default


def array_names(arrays: Sequence[Any], given: Sequence[str] | None, prefix: str) -> list[str]:
    """:func:`array_name` of each array (default ``PREFIX[i]``); ``given`` must match in length."""
    if given is not None and len(given) != len(arrays):
        raise InputError(f"{len(given)} names for {len(arrays)} {prefix} tilt-series")
    return [array_name(a, given[i] if given else None, f"{prefix}[{i}]") for i, a in enumerate(arrays)]


def as_list(x: Any) -> list[Any]:
    """One array or a sequence of arrays (or None) as a list of arrays."""
    if x is None:
        return []
    if isinstance(x, (xr.DataArray, np.ndarray, da.Array)):
        return [x]
    return list(x)


# --------------------------------------------------------------------------------------------
# per-tilt reductions (row moments -> tilt statistics), bit-reproducible
# --------------------------------------------------------------------------------------------


def gather_rows(rows: da.Array) -> da.Array:
    """All rows of each tilt in one block: ``(t, Y, k)``, a few kB per tilt."""
    return rows.rechunk({1: -1, 2: -1})


def _reduce_block(rows: np.ndarray) -> np.ndarray:
    return reduce_rows(rows)


def tilt_moments(rows: da.Array) -> da.Array:
    """Per-tilt moments (T, k) from row moments (T, Y, k): one :func:`reduce_rows` per tilt."""
    g = gather_rows(rows)
    return g.map_blocks(_reduce_block, drop_axis=1, chunks=(g.chunks[0], g.chunks[2]), dtype=np.float64)


def _mean_std_block(rows: np.ndarray, *, what: str, block_info: dict | None = None) -> np.ndarray:
    """(t, Y, 3) row moments -> (t, 1, 2) [mean, std] of each tilt; rejects unusable tilts.

    Raised here, on the worker, because the values are only known when the graph runs; the
    :class:`InputError` travels back to the caller unchanged.
    """
    t0 = block_info[0]["array-location"][0][0] if block_info else 0
    n = block_info[0]["shape"][0] if block_info else rows.shape[0]
    return tilts_mean_std(rows, what, t0, n)


def tilts_mean_std(rows: np.ndarray, what: str, t0: int = 0, n: int | None = None) -> np.ndarray:
    """In a task: all ``(t, Y, 3)`` row moments of tilts ``t0 …`` -> ``(t, 1, 2)`` [mean, std].

    The same reduction as :func:`tilt_mean_std` (so the same bits); ``n`` (total tilts) only
    names tilts in the errors. Raises :class:`InputError` for a NaN/inf or constant tilt.
    """
    n = rows.shape[0] if n is None else n
    mean, std = mean_std(reduce_rows(rows))
    for i in range(mean.size):
        if not (np.isfinite(mean[i]) and np.isfinite(std[i])):
            raise InputError(f"{what}: {tilt_label(t0 + i, n)} has NaN or inf values")
        if std[i] == 0:
            raise InputError(f"{what}: {tilt_label(t0 + i, n)} is constant "
                             "(zero standard deviation: a blank or dark image)")
    return np.stack([mean, std], axis=-1)[:, None, :]


def tilt_mean_std(rows: da.Array, what: str) -> tuple[da.Array, da.Array]:
    """Per-tilt mean and std as ``(T, 1, 1)`` arrays that broadcast over a tilt's chunks."""
    g = gather_rows(rows)
    ms = g.map_blocks(
        _mean_std_block, what=what, chunks=(g.chunks[0], (1,), (2,)), dtype=np.float64,
        name=f"tilt-mean-std-{da.core.tokenize(g, what)}",
    )
    return ms[:, :, 0:1], ms[:, :, 1:2]


def _row_moments_block(a: np.ndarray) -> np.ndarray:
    return kernel_row_moments(a)


def row_moments(data: da.Array) -> da.Array:
    """Per-row moments ``(T, Y, 3)`` float64 of a ``(T, Y, X)`` array, chunk by chunk (lazy)."""
    return data.map_blocks(
        _row_moments_block, chunks=(data.chunks[0], data.chunks[1], (3,)), dtype=np.float64
    )


# --------------------------------------------------------------------------------------------
# checks of reference and input tilt-series
# --------------------------------------------------------------------------------------------


def check_moments(mo: np.ndarray, checks: Sequence[tuple]) -> None:
    """Reject NaN/inf and constant tilts after the reduction, naming the array and the tilt.

    ``checks`` holds ``(name, sum column, css column[, angles])`` of each array in the
    moments; tilts are named 1-based with their angle when known.
    """
    for check in checks:
        name, col_sum, col_css = check[:3]
        angles = check[3] if len(check) > 3 else None
        bad = np.flatnonzero(~(np.isfinite(mo[:, col_sum]) & np.isfinite(mo[:, col_css])))
        if bad.size:
            raise InputError(f"{name}: {tilt_label(int(bad[0]), len(mo), angles)} has NaN or inf values")
        const = np.flatnonzero(mo[:, col_css] <= 0)
        if const.size:
            raise InputError(f"{name}: {tilt_label(int(const[0]), len(mo), angles)} is constant "
                             "(zero standard deviation: a blank or dark image)")


def tilt_angles(arr: xr.DataArray) -> np.ndarray | None:
    """The ``tilt`` coordinate as float64 degrees, or None when the array has no numeric angles."""
    if "tilt" in arr.coords and np.issubdtype(arr["tilt"].dtype, np.number):
        return np.asarray(arr["tilt"].values, dtype=np.float64)
    return None


def _check_tilt_counts(arrays: Sequence[xr.DataArray], names: Sequence[str]) -> None:
    counts = [a.sizes["tilt"] for a in arrays]
    if len(set(counts)) > 1:
        listed = ", ".join(f"{n} has {c}" for n, c in zip(names, counts))
        raise InputError(f"references differ in tilt count ({listed}); curves are averaged per tilt")


def _align(arr: xr.DataArray, to: xr.DataArray, name: str, to_name: str,
           match_angles: str = "exact") -> xr.DataArray:
    """``arr`` reordered so its tilt i has the angle of ``to``'s tilt i (by position when
    either has no angles). Curves are averaged, and pairs are compared, angle by angle."""
    a, b = tilt_angles(arr), tilt_angles(to)
    if a is None or b is None:
        return arr
    idx = match_tilts(b, a, target=to_name, source=name, mode=match_angles,
                      option="references with the same angles (curves are averaged angle by angle) or")
    return arr if is_identity(idx) else arr.isel(tilt=idx)


def check_references(
    measured: Sequence[xr.DataArray] | xr.DataArray,
    noiseless: Sequence[xr.DataArray] | xr.DataArray | None = None,
    names: Sequence[str] | None = None,
    noiseless_names: Sequence[str] | None = None,
) -> tuple[list[xr.DataArray], list[xr.DataArray] | None, list[str], list[str] | None]:
    """Validate reference tilt-series before any work; cheap (shapes only, nothing computed).

    Returns
    -------
    measured, noiseless, names, noiseless_names
        Dask-backed (tilt, y, x) DataArrays (whole rows per chunk) and their names.

    Raises
    ------
    InputError
        Nothing given, counts differ, a pair's shapes differ, or references differ in tilt
        count (their curves are averaged tilt by tilt).
    """
    ms = as_list(measured)
    if not ms:
        raise InputError("estimate_noise: no measured tilt-series given")
    m_names = array_names(ms, names, "measured")
    ms = [as_tiltseries(a, n) for a, n in zip(ms, m_names)]
    # every reference's tilt i must have the first reference's angle i (stores keep stacks
    # sorted by angle, but arrays given directly may come in acquisition order)
    # The curves are fitted over the tilt index (``docs/method.md §2``), so that index must run over
    # ascending angles: the first reference is sorted, the others follow it angle by angle.
    order = np.argsort(tilt_angles(ms[0]), kind="stable") if tilt_angles(ms[0]) is not None else None
    if order is not None and not is_identity(order):
        ms[0] = ms[0].isel(tilt=order)
    ms = [ms[0]] + [_align(m, ms[0], n, m_names[0]) for m, n in zip(ms[1:], m_names[1:])]
    _check_tilt_counts(ms, m_names)
    if noiseless is None:
        return ms, None, m_names, None
    cs = as_list(noiseless)
    if len(ms) != len(cs):
        raise InputError(
            f"estimate_noise: {len(ms)} measured but {len(cs)} noiseless tilt-series; give one noiseless per measured"
        )
    c_names = array_names(cs, noiseless_names, "noiseless")
    cs = [as_tiltseries(a, n) for a, n in zip(cs, c_names)]
    cs = [_align(c, m, cn, mn) if m.shape == c.shape else c
          for m, c, mn, cn in zip(ms, cs, m_names, c_names)]
    for m, c, mn, cn in zip(ms, cs, m_names, c_names):
        if m.shape != c.shape:
            raise InputError(f"{mn} has shape {m.shape} but its noiseless partner {cn} has {c.shape}")
    return ms, cs, m_names, c_names


def check_values(arrays: Sequence[xr.DataArray], names: Sequence[str]) -> None:
    """Reject tilt-series with a NaN/inf value or a constant tilt; one read of each array.

    The CLI runs this before it starts a cluster (inputs are validated before any work, with
    one-line errors: docs/architecture.md, "Errors"), on the local threaded scheduler; memory stays at a few chunks.

    Raises
    ------
    InputError
        Naming the array and the first bad tilt.
    """
    arrs = [as_tiltseries(a, n) for a, n in zip(arrays, names)]
    if not arrs:
        return
    per_tilt = [tilt_moments(row_moments(a.data)) for a in arrs]
    results = compute(per_tilt[0] if len(per_tilt) == 1 else da.concatenate(per_tilt), label="checking inputs")
    offsets = np.cumsum([0] + [a.sizes["tilt"] for a in arrs])
    for i, n in enumerate(names):
        check_moments(np.asarray(results[offsets[i] : offsets[i + 1]]), [(n, SUM, CSS, tilt_angles(arrs[i]))])
