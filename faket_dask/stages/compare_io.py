"""``faket-dask compare`` on a run store: input checks, opening the tilt-series, the JSON file.

Every check runs before any data is read and raises a one-line
:class:`~faket_dask.errors.InputError` / :class:`~faket_dask.errors.OutputExistsError`:
no such store, a tomogram index out of range, a modality (or the reference) a tomogram lacks,
an existing output folder without ``overwrite``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError, OutputExistsError
from ..store.layout import TILTSERIES, tiltseries_var, tomo_name

__all__ = ["JSON_NAME", "check_out", "check_store", "compare_store", "parse_names", "parse_tomos", "plan_store",
           "run_plan", "write_json"]

#: File name of the result in the output folder.
JSON_NAME = "compare.json"
_TOMO = re.compile(r"^tomo_(\d{3,})$")


def parse_names(text: str | Sequence[str], what: str) -> list[str]:
    """``"faket,baseline"`` (or a list) -> ``["faket", "baseline"]``; empty or repeated names refused."""
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text)]
    items = [t for t in items if t]
    if not items:
        raise InputError(f"{what}: no names given")
    dup = sorted({t for t in items if items.count(t) > 1})
    if dup:
        raise InputError(f"{what}: '{dup[0]}' is given twice")
    return items


def parse_tomos(text: str | Sequence[int] | None, available: Sequence[int], store: Path | str,
                what: str = "--tomos") -> list[int]:
    """``"0,1"`` -> ``[0, 1]`` (None: every tomogram of the store), each checked against ``available``.

    ``what`` names the option in the messages (``--tomos``, ``--train``, ...).
    """
    if text is None:
        return list(available)
    if isinstance(text, str):
        try:
            tomos = [int(t) for t in parse_names(text, what)]
        except ValueError:
            raise InputError(f"{what} must be comma-separated tomogram indices, e.g. 0,1; got '{text}'") from None
    else:
        tomos = [int(t) for t in text]
    if not tomos:
        raise InputError(f"{what}: no tomogram given")
    have = ", ".join(map(str, available)) or "none"
    for t in tomos:
        if t not in available:
            raise InputError(f"{what} {t}: out of range; {store} has tomograms {have}")
    if len(set(tomos)) != len(tomos):
        raise InputError(f"{what}: a tomogram is given twice ({text})")
    return tomos


def _tiltseries_names(root: Any, tomo: int) -> list[str]:
    try:
        group = root[f"{tomo_name(tomo)}/{TILTSERIES}"]
    except KeyError:
        return []
    return sorted(name for name, arr in group.arrays() if arr.ndim == 3)  # not the coordinates


def check_store(store: str | Path, modalities: Sequence[str], reference: str, tomos: Any = None,
                noiseless: str | None = "noiseless") -> tuple[list[int], bool]:
    """Check a store for a comparison, reading metadata only.

    Parameters
    ----------
    store : path
        Run store.
    modalities : sequence of str
        Simulated modalities (``tomo_NNN/tiltseries/MODALITY``).
    reference : str
        The reference modality of each tomogram, or a ``GROUP/VAR`` shared by all
        (``reference/style_000/measured``).
    tomos : str or sequence of int, optional
        Tomogram indices (default: every tomogram with tilt-series).
    noiseless : str or None
        The correlation partner's modality; used only when every tomogram has it.

    Returns
    -------
    tomos : list of int
    with_noiseless : bool
        Whether every chosen tomogram has ``noiseless``.
    """
    from ..store.run_store import has_var, open_root

    root = open_root(store)  # InputError: no such store / not a Zarr store
    available = sorted(int(m.group(1)) for k in root.group_keys() if (m := _TOMO.match(k))
                       and _tiltseries_names(root, int(m.group(1))))
    if not available:
        raise InputError(f"{store}: no tomogram with tilt-series (tomo_NNN/{TILTSERIES})")
    chosen = parse_tomos(tomos, available, store)
    if reference in modalities:
        raise InputError(f"'{reference}' is the reference and cannot also be compared with itself")
    shared = "/" in reference
    if shared and not has_var(store, reference):
        raise InputError(f"{store}: no tilt-series '{reference}' (the reference)")
    for t in chosen:
        have = _tiltseries_names(root, t)
        for m in ([] if shared else [reference]) + list(modalities):
            if m not in have:
                raise InputError(f"{store}: {tomo_name(t)} has no tilt-series '{m}' (has: {', '.join(have)})")
    with_noiseless = noiseless is not None and all(noiseless in _tiltseries_names(root, t) for t in chosen)
    return chosen, with_noiseless


def check_out(out: str | Path, overwrite: bool) -> Path:
    """Refuse an existing output folder without ``overwrite`` (and a file in its place)."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise InputError(f"{p}: exists and is not a folder")
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{p}: exists; pass --overwrite to replace its comparison files")
    return p


def plan_store(store: str | Path, modalities: str | Sequence[str], reference: str = "measured", tomos: Any = None,
               *, noiseless: str | None = "noiseless", **settings: Any) -> Any:
    """Check a comparison of a run store's tilt-series, reading metadata only.

    Parameters are those of :func:`compare_store`.

    Returns
    -------
    faket_dask.stages.compare.Plan
        For :func:`faket_dask.stages.compare.run`.
    """
    from ..store import open_var
    from ..store.run_store import has_var
    from .compare import plan

    modalities = parse_names(modalities, "modalities")
    chosen, with_noiseless = check_store(store, modalities, reference, tomos, noiseless)
    ref_name = reference.rsplit("/", 1)[-1] if "/" in reference else reference
    if "/" in reference:
        if ref_name in modalities:
            raise InputError(f"the reference '{reference}' has the name of a compared modality")
        ref = open_var(store, reference)
        partner = f"{reference.rsplit('/', 1)[0]}/{noiseless}" if noiseless else None
        ref_partner = open_var(store, partner) if partner and has_var(store, partner) else None
    else:
        ref = [open_var(store, tiltseries_var(t, reference)) for t in chosen]
        ref_partner = "same"
    sims = {m: [open_var(store, tiltseries_var(t, m)) for t in chosen] for m in modalities}
    partners = [open_var(store, tiltseries_var(t, noiseless)) for t in chosen] if with_noiseless else None
    checked = plan(sims, ref, noiseless=partners, reference_noiseless=ref_partner if partners else None,
                   reference_name=ref_name, tomo_names=[tomo_name(t) for t in chosen], **settings)
    checked.store = str(store)
    return checked


def run_plan(checked: Any) -> dict[str, Any]:
    """Compute a :func:`plan_store` plan: the result with ``store`` first."""
    from .compare import run

    return {"store": getattr(checked, "store", None), **run(checked)}


def compare_store(store: str | Path, modalities: str | Sequence[str], reference: str = "measured", tomos: Any = None,
                  *, noiseless: str | None = "noiseless", **settings: Any) -> dict[str, Any]:
    """:func:`faket_dask.stages.compare.compare` of a run store's tilt-series.

    Parameters
    ----------
    store : path
        Run store.
    modalities : str or sequence of str
        Simulated modalities, e.g. ``["faket", "baseline", "noisy"]`` or ``"faket,noisy"``.
    reference : str
        Reference modality (``measured``) or a ``GROUP/VAR`` shared by every tomogram (its
        group's ``noiseless``, if any, is its correlation partner).
    tomos : str or sequence of int, optional
        Tomogram indices (default: all).
    noiseless : str or None
        Correlation partner modality (skipped unless every tomogram has it).
    **settings
        ``tile``, ``band``, ``noise_band``, ``hist_range``, ``hist_bin`` of ``compare``.

    Returns
    -------
    dict
        The result (``docs/compare.md``) with ``store`` set.
    """
    return run_plan(plan_store(store, modalities, reference, tomos, noiseless=noiseless, **settings))


def write_json(result: dict[str, Any], out: str | Path) -> Path:
    """Write ``OUT/compare.json`` (indented, keys in the result's order); returns its path."""
    p = Path(out)
    p.mkdir(parents=True, exist_ok=True)
    path = p / JSON_NAME
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    tmp.replace(path)
    return path
