"""The noise model of FakET (``docs/method.md §2``): per-tilt curves, their polynomial fits, persistence.

A :class:`NoiseModel` holds

* ``raw``: the per-reference raw curves, an xarray Dataset with dims ``("reference", "tilt")``
  and variables ``r``, ``sigma``, ``mean``, ``std`` (plus ``clean_mean``, ``clean_std`` for
  paired estimates, ``noise_std``/``band_ratio`` for unpaired ones);
* ``order`` and ``curves``: every raw curve fitted with a polynomial of that order over the tilt
  index and averaged over the references (Dataset on dim ``tilt``). This is what
  :func:`faket_dask.add_noise` uses: NOISY and CONTENT take the order-2 model, BASELINE the
  order-0 one (``model.with_order(0)``; refitting from ``raw`` is cheap and exact).

Store layout (group :data:`faket_dask.store.layout.NOISE_MODEL_GROUP`, one group holds every
order)::

    noise_model/               attrs: format, version, method, default_order, sources, params
      r, sigma, mean, std, ... (order, tilt)      fitted + averaged curves, one row per order
      raw_r, raw_sigma, ...    (reference, tilt)  raw curves of each reference
      coords: order (int), tilt (degrees, when known), reference (int)

``xr.open_zarr(store, group="noise_model").sel(order=2)`` gives the NOISY/CONTENT curves. The
same content is written as JSON by :meth:`NoiseModel.to_json` (floats in shortest round-trip
form, so a model survives JSON bit for bit).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import xarray as xr

from . import store as _store
from .errors import InputError
from .kernels import noise as nz
from .params import MAX_NOISE_ORDER, NOISE_MODEL_ORDERS, NOISE_ORDER
from .store.layout import NOISE_MODEL_GROUP

#: Curves :func:`faket_dask.add_noise` needs.
REQUIRED: Final = ("r", "sigma", "mean", "std")
FORMAT: Final = "faket-dask/noise-model"
VERSION: Final = 1
_RAW_PREFIX: Final = "raw_"


def check_order(order: int) -> int:
    """A polynomial order as int in 0..:data:`~faket_dask.params.MAX_NOISE_ORDER`.

    Raises
    ------
    InputError
        For anything else (non-integers, negative or too high orders).
    """
    o = int(order)
    if o != order or o < 0 or o > MAX_NOISE_ORDER:
        raise InputError(f"noise model: polynomial order must be an integer in 0..{MAX_NOISE_ORDER}, got {order}")
    return o


def _fit(raw: xr.Dataset, order: int) -> xr.Dataset:
    """Fit every raw curve of every reference (order ``order``) and average over references."""
    refs = [{k: raw[k].values[i] for k in raw.data_vars} for i in range(raw.sizes["reference"])]
    fitted = nz.fit_and_average(refs, order)
    coords = {"tilt": raw["tilt"]} if "tilt" in raw.coords else {}
    ds = xr.Dataset({k: ("tilt", v) for k, v in fitted.items()}, coords=coords)
    ds.attrs["order"] = order
    return ds


@dataclass(frozen=True, eq=False)
class NoiseModel:
    """Per-tilt noise curves of FakET (``docs/method.md §2``), fitted at one polynomial order.

    Attributes
    ----------
    raw : xarray.Dataset, dims (reference, tilt)
        Raw curves of each of K references: ``r`` (dimensionless, [0, 1]), ``sigma`` (residual
        std of the standardised measured tilt, dimensionless), ``mean``/``std`` of the measured
        tilt (its units), and method-specific extras.
    order : int
        Polynomial order of :attr:`curves`.
    curves : xarray.Dataset, dim tilt
        Raw curves fitted at :attr:`order` over the tilt index 0…T−1, averaged over references.
    method : str
        ``"paired"`` (measured + noiseless, ``docs/method.md §2``) or ``"unpaired"`` (measured only,
        spectral estimate, see docs/noise.md).
    sources : tuple of dict
        Per reference, where its data came from (``{"measured": ..., "noiseless": ...}``).
    params : dict
        Parameters of the estimator (e.g. the frequency band of the unpaired estimate).
    """

    raw: xr.Dataset
    order: int
    curves: xr.Dataset
    method: str = "paired"
    sources: tuple[dict[str, str], ...] = ()
    params: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------------------------------
    # construction
    # ----------------------------------------------------------------------------------------

    @classmethod
    def from_raw(
        cls,
        raw: Sequence[Mapping[str, np.ndarray]] | xr.Dataset,
        order: int = NOISE_ORDER,
        *,
        angles_deg: Sequence[float] | np.ndarray | None = None,
        method: str = "paired",
        sources: Sequence[Mapping[str, str]] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> NoiseModel:
        """Build a model from raw per-reference curves.

        Parameters
        ----------
        raw : sequence of K dicts of str -> ndarray (T,), or Dataset (reference, tilt)
            Raw curves (e.g. from :func:`faket_dask.kernels.noise.curves_from_moments`); every
            reference needs at least ``r``, ``sigma``, ``mean``, ``std``.
        order : int
            Polynomial order of the fitted curves (2: NOISY/CONTENT, 0: BASELINE).
        angles_deg : array (T,), optional
            Tilt angles (degrees), the ``tilt`` coordinate.
        method, sources, params
            Recorded with the model (see the class attributes).
        """
        order = check_order(order)
        if isinstance(raw, xr.Dataset):
            ds = raw
        else:
            if len(raw) == 0:
                raise InputError("noise model: no reference curves given")
            keys = list(raw[0])
            shapes = {np.asarray(c[k]).shape for c in raw for k in keys if k in c}
            if len(shapes) != 1 or any(set(c) != set(keys) for c in raw):
                raise InputError(f"noise model: references differ in curves or tilt count {sorted(shapes)}")
            data = {k: (("reference", "tilt"), np.stack([np.asarray(c[k], np.float64) for c in raw])) for k in keys}
            coords: dict[str, Any] = {"reference": np.arange(len(raw))}
            if angles_deg is not None:
                coords["tilt"] = xr.Variable("tilt", np.asarray(angles_deg, np.float64), {"units": "degree"})
            ds = xr.Dataset(data, coords=coords)
        _validate_raw(ds)
        src = tuple(dict(s) for s in (sources or ()))
        if src and len(src) != ds.sizes["reference"]:
            raise InputError(f"noise model: {len(src)} sources for {ds.sizes['reference']} references")
        return cls(ds, order, _fit(ds, order), str(method), src, dict(params or {}))

    def with_order(self, order: int) -> NoiseModel:
        """The same raw curves fitted at another polynomial order (e.g. 0 for BASELINE)."""
        order = check_order(order)
        if order == self.order:
            return self
        return NoiseModel(self.raw, order, _fit(self.raw, order), self.method, self.sources, self.params)

    # ----------------------------------------------------------------------------------------
    # properties
    # ----------------------------------------------------------------------------------------

    @property
    def n_tilts(self) -> int:
        """Number of tilts T of the curves."""
        return int(self.raw.sizes["tilt"])

    @property
    def n_references(self) -> int:
        """Number of references K averaged."""
        return int(self.raw.sizes["reference"])

    @property
    def angles_deg(self) -> np.ndarray | None:
        """Tilt angles (degrees) of the first reference, or None when unknown."""
        return self.raw["tilt"].values if "tilt" in self.raw.coords else None

    def curve(self, name: str) -> np.ndarray:
        """One fitted curve as a float64 array (T,)."""
        if name not in self.curves:
            raise InputError(f"noise model has no curve '{name}' (has: {', '.join(self.curves.data_vars)})")
        return np.asarray(self.curves[name].values, dtype=np.float64)

    def describe(self) -> str:
        """A one-line summary: method, references, tilts, order and the curves' ranges."""
        parts = [f"{k} {self.curves[k].values.min():.4g}..{self.curves[k].values.max():.4g}" for k in REQUIRED]
        return (
            f"{self.method} noise model, {self.n_references} reference(s), {self.n_tilts} tilts, "
            f"order {self.order}: " + ", ".join(parts)
        )

    def __repr__(self) -> str:
        return f"<NoiseModel {self.describe()}>"

    # ----------------------------------------------------------------------------------------
    # xarray / JSON / store
    # ----------------------------------------------------------------------------------------

    def _orders(self, orders: Iterable[int] | None) -> list[int]:
        out = [self.order]
        for o in orders if orders is not None else NOISE_MODEL_ORDERS:
            o = check_order(o)
            if o not in out:
                out.append(o)
        return out

    def to_dataset(self, orders: Iterable[int] | None = None) -> xr.Dataset:
        """The store layout: fitted curves on (order, tilt), raw curves on (reference, tilt).

        Parameters
        ----------
        orders : iterable of int, optional
            Orders to include besides :attr:`order` (default
            :data:`~faket_dask.params.NOISE_MODEL_ORDERS`, 2 and 0).
        """
        ords = self._orders(orders)
        fits = [self.with_order(o).curves for o in ords]
        ds = xr.concat(fits, dim=xr.DataArray(ords, dims="order", name="order"), combine_attrs="drop")
        for k in self.raw.data_vars:
            ds[_RAW_PREFIX + str(k)] = self.raw[k]
        ds = ds.assign_coords(reference=self.raw["reference"].values)
        ds.attrs = {
            "format": FORMAT,
            "version": VERSION,
            "method": self.method,
            "default_order": self.order,
            "sources": [dict(s) for s in self.sources],
            "params": _jsonable(self.params),
        }
        return ds

    @classmethod
    def from_dataset(cls, ds: xr.Dataset, order: int | None = None) -> NoiseModel:
        """Inverse of :meth:`to_dataset`.

        Parameters
        ----------
        ds : xarray.Dataset
            As written by :meth:`to_dataset` (e.g. read back from the store).
        order : int, optional
            Order of :attr:`curves`; default the stored ``default_order``. Stored fitted
            curves of that order are used as they are; another order is refitted from the
            raw curves.
        """
        if ds.attrs.get("format") != FORMAT:
            raise InputError(f"not a faket-dask noise model (format attr {ds.attrs.get('format')!r})")
        raw_vars = {str(k)[len(_RAW_PREFIX):]: ds[k] for k in ds.data_vars if str(k).startswith(_RAW_PREFIX)}
        raw = xr.Dataset(raw_vars).load()
        raw = raw.drop_vars([c for c in raw.coords if c not in ("reference", "tilt")])
        order = check_order(ds.attrs.get("default_order", NOISE_ORDER) if order is None else order)
        sources = tuple(dict(s) for s in ds.attrs.get("sources", []))
        params = dict(ds.attrs.get("params", {}))
        method = str(ds.attrs.get("method", "paired"))
        model = cls.from_raw(raw, order, method=method, sources=sources, params=params)
        if "order" in ds.coords and order in ds["order"].values.tolist():
            fitted_names = [k for k in ds.data_vars if not str(k).startswith(_RAW_PREFIX)]
            curves = ds[fitted_names].sel(order=order).drop_vars("order").load()
            curves = curves.drop_vars([c for c in curves.coords if c != "tilt"])
            curves.attrs = {"order": order}
            model = cls(model.raw, order, curves, method, sources, params)
        return model

    def to_json(self, path: str | Path | None = None, *, orders: Iterable[int] | None = None) -> str:
        """Serialise as JSON (written to ``path`` if given); floats round-trip exactly.

        Parameters
        ----------
        path : path, optional
            File to write.
        orders : iterable of int, optional
            Fitted orders to include besides :attr:`order` (default
            :data:`~faket_dask.params.NOISE_MODEL_ORDERS`, 2 and 0).

        Returns
        -------
        str
            The JSON text.
        """
        ords = self._orders(orders)
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "method": self.method,
            "order": self.order,
            "sources": [dict(s) for s in self.sources],
            "params": _jsonable(self.params),
            "tilt_deg": None if self.angles_deg is None else self.angles_deg.tolist(),
            "raw": {str(k): self.raw[k].values.tolist() for k in self.raw.data_vars},
            "fitted": {
                str(o): {str(k): v.values.tolist() for k, v in self.with_order(o).curves.data_vars.items()}
                for o in ords
            },
        }
        text = json.dumps(doc, indent=1, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | Path, order: int | None = None) -> NoiseModel:
        """Read a model written by :meth:`to_json` (a path, or the JSON text itself).

        Parameters
        ----------
        source : path or str
            File name, or a string starting with ``{``.
        order : int, optional
            As in :meth:`from_dataset`.
        """
        text = str(source)
        where = "JSON text"
        if not text.lstrip().startswith("{"):
            p = Path(source)
            where = str(p)
            if not p.is_file():
                raise InputError(f"{p}: no such noise-model file")
            text = p.read_text()
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise InputError(f"{where}: not a faket-dask noise model")
        try:
            raw_keys = list(doc["raw"])
            k = len(doc["raw"][raw_keys[0]])
            raw = [{key: np.asarray(doc["raw"][key][i], np.float64) for key in raw_keys} for i in range(k)]
            order = check_order(doc["order"] if order is None else order)
            model = cls.from_raw(
                raw, order, angles_deg=doc.get("tilt_deg"), method=doc.get("method", "paired"),
                sources=doc.get("sources") or None, params=doc.get("params") or {},
            )
            fitted = (doc.get("fitted") or {}).get(str(order))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise InputError(f"{where}: {exc}") from None
            raise InputError(f"{where}: malformed noise model ({type(exc).__name__}: {exc})") from None
        if fitted:
            curves = xr.Dataset(
                {key: ("tilt", np.asarray(v, np.float64)) for key, v in fitted.items()},
                coords=model.curves.coords,
            )
            curves.attrs = {"order": order}
            model = cls(model.raw, order, curves, model.method, model.sources, model.params)
        return model

    def save(
        self,
        store: str | Path,
        group: str = NOISE_MODEL_GROUP,
        *,
        orders: Iterable[int] | None = None,
        overwrite: bool = False,
    ) -> str:
        """Write the model into a run store (see the module docstring for the layout).

        Parameters
        ----------
        store : path
            Run store (created if missing).
        group : str
            Group to write (default ``noise_model``).
        orders : iterable of int, optional
            Fitted orders to store besides :attr:`order` (default
            :data:`~faket_dask.params.NOISE_MODEL_ORDERS`, 2 and 0).
        overwrite : bool
            Replace an existing model; otherwise :class:`~faket_dask.errors.OutputExistsError`.

        Returns
        -------
        str
            The group written.
        """
        group = group.strip("/")
        _store.check_writable(store, f"{group}/r", overwrite=overwrite)
        ds = self.to_dataset(orders)
        p = Path(store)
        # never leave a half-written model behind (architecture.md, failure safety)
        with _store.rollback_on_error(p, group, stage="noise estimate"):
            _store.open_root(p, create=True)
            _store.mark_stage(p, group, status="running", stage="noise estimate")
            _store.clear_encoding(ds).to_zarr(str(p), group=group, mode="w", zarr_format=3, consolidated=False)
            _store.mark_stage(
                p, group, status="complete", stage="noise estimate", method=self.method,
                orders=[int(o) for o in ds["order"].values],
            )
        return group

    @classmethod
    def load(cls, store: str | Path, group: str = NOISE_MODEL_GROUP, *, order: int | None = None) -> NoiseModel:
        """Read a model from a run store (see :meth:`from_dataset` for ``order``)."""
        group = group.strip("/")
        root = _store.open_root(store)
        if group not in root:
            raise InputError(f"{store}: no noise model in group '{group}' (run `faket-dask noise estimate` first)")
        # read here, not through the cluster (store.open's in_memory says why)
        return cls.from_dataset(_store.open(store, group, in_memory=True), order)


def _validate_raw(ds: xr.Dataset) -> None:
    missing = [k for k in REQUIRED if k not in ds.data_vars]
    if missing:
        raise InputError(f"noise model: missing curve(s) {', '.join(missing)}")
    if set(ds.dims) != {"reference", "tilt"} or ds.sizes["reference"] < 1 or ds.sizes["tilt"] < 1:
        raise InputError(f"noise model: raw curves need dims (reference, tilt), got {dict(ds.sizes)}")
    for k in ds.data_vars:
        if ds[k].dims != ("reference", "tilt"):
            raise InputError(f"noise model: curve '{k}' has dims {ds[k].dims}, expected (reference, tilt)")
        if not np.isfinite(ds[k].values).all():
            raise InputError(f"noise model: curve '{k}' has NaN or inf values")
    if (ds["std"].values <= 0).any():
        raise InputError("noise model: curve 'std' must be positive")


def _jsonable(obj: Any) -> Any:
    """Tuples and numpy scalars as plain JSON types (Zarr attrs and JSON files need them)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
