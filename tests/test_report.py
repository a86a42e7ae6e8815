"""Report figures (faket_dask.report): montages, power spectra, central slices, write_report."""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import faket_dask as fd
from faket_dask import report
from faket_dask.kernels.power_spectrum import tilt_power
from faket_dask.report.drawing import thumbnail
from faket_dask.store import save_image
from faket_dask.store.layout import reference_var, tiltseries_group, tomogram_group

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
T, Y, X = 11, 48, 40
ANGLES = np.linspace(-50, 50, T)
PIXEL = 7.5


def smooth(shape: tuple[int, ...], seed: int, sigma: float = 3.0) -> np.ndarray:
    """A smooth random field (white noise low-passed with a Gaussian, in Fourier space)."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(shape)
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in shape[-2:]], indexing="ij")
    gauss = np.exp(-2 * (np.pi * sigma) ** 2 * sum(f**2 for f in freqs))
    return np.fft.ifft2(np.fft.fft2(white, axes=(-2, -1)) * gauss, axes=(-2, -1)).real


def stack(seed: int, noise: float, name: str, **attrs) -> xr.DataArray:
    rng = np.random.default_rng(seed + 100)
    data = 5 * smooth((T, Y, X), seed) + noise * rng.standard_normal((T, Y, X))
    darr = da.from_array(data.astype(np.float32), chunks=(1, 16, X))
    return fd.tiltseries(darr, ANGLES, PIXEL, name=name, attrs=attrs)


def assert_png(path) -> None:
    import matplotlib.image as mpimg

    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 0 and img.shape[1] > 0


@pytest.fixture(scope="module")
def run_store(tmp_path_factory):
    """A small hand-made run store: two tomograms' tilt-series, a tomogram, a noise model."""
    store = tmp_path_factory.mktemp("report") / "run.zarr"
    g0, g1 = tiltseries_group(0), tiltseries_group(1)
    fd.save(stack(0, 1.0, "noisy"), store, g0)
    fd.save(stack(1, 1.0, "baseline"), store, g0)
    fd.save(stack(2, 0.5, "faket", style=f"{g1}/measured"), store, g0)
    measured = stack(3, 1.0, "measured")
    fd.save(measured, store, g1)
    rng = np.random.default_rng(7)
    for name in ("noisy", "faket"):
        vol = fd.volume(da.from_array(rng.standard_normal((16, Y, X)).astype(np.float32), chunks=(16, 16, X)), PIXEL)
        save_image(vol, store, tomogram_group(0), name, levels=2)
    clean = fd.tiltseries(5 * smooth((T, Y, X), 3), ANGLES, PIXEL, name="noiseless")
    fd.estimate_noise(measured=[measured], noiseless=[clean]).save(store)
    return store


# -- write_report ----------------------------------------------------------------------------
def test_write_report_files(run_store, tmp_path):
    out = tmp_path / "figs"
    paths = report.write_report(run_store, out)
    names = [p.name for p in paths]
    assert names == [
        "noise_curves.png",
        "tomo_000_montage_noisy.png",
        "tomo_000_montage_baseline.png",
        "tomo_000_montage_faket.png",
        "tomo_000_power_spectra.png",
        "tomo_000_central_slices.png",
        "tomo_001_montage_measured.png",
    ]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    for p in paths:
        assert p.parent == out
        assert_png(p)


def test_write_report_selected_tomos(run_store, tmp_path):
    paths = report.write_report(run_store, tmp_path / "one", tomos=[1])
    assert [p.name for p in paths] == ["noise_curves.png", "tomo_001_montage_measured.png"]
    # a tomogram index that is not in the store is skipped
    assert [p.name for p in report.write_report(run_store, tmp_path / "none", tomos=[5])] == ["noise_curves.png"]


def test_write_report_skips_missing(tmp_path):
    """No faket, no tomogram, no noise model: only what exists is drawn."""
    store = tmp_path / "run.zarr"
    fd.save(stack(0, 1.0, "noisy"), store, tiltseries_group(0))
    fd.save(stack(1, 1.0, "baseline"), store, tiltseries_group(0))
    paths = report.write_report(store, tmp_path / "figs")
    assert [p.name for p in paths] == [
        "tomo_000_montage_noisy.png", "tomo_000_montage_baseline.png", "tomo_000_power_spectra.png",
    ]
    for p in paths:
        assert_png(p)


def test_write_report_style_missing_is_skipped(tmp_path):
    store = tmp_path / "run.zarr"
    fd.save(stack(2, 0.5, "faket", style=reference_var(0, "measured")), store, tiltseries_group(0))
    paths = report.write_report(store, tmp_path / "figs")
    assert [p.name for p in paths] == ["tomo_000_montage_faket.png", "tomo_000_power_spectra.png"]


# -- single figures --------------------------------------------------------------------------
def test_montage_tilts_and_numpy_input(tmp_path):
    assert report.tilt_indices(61, 5).tolist() == [0, 15, 30, 45, 60]
    assert report.tilt_indices(3, 5).tolist() == [0, 1, 2]
    ts = fd.tiltseries(np.random.default_rng(0).random((61, 24, 30)), np.linspace(-60, 60, 61), 2.0, name="x")
    assert_png(report.plot_tilt_montage(ts, tmp_path / "sub" / "m.png", title="t"))


def test_montage_downsamples_large_tilts(tmp_path):
    big = da.random.default_rng(0).random((3, 1100, 700), chunks=(1, 256, 700)).astype(np.float32)
    ts = fd.tiltseries(big, [-30, 0, 30], 1.0, name="big")
    thumb = thumbnail(ts.data[0])
    assert max(thumb.shape) <= report.MAX_PANEL_PX
    assert_png(report.plot_tilt_montage(ts, tmp_path / "m.png", n_tilts=3))


def test_central_slices_and_bad_dims(tmp_path):
    vol = fd.volume(np.random.default_rng(0).random((12, 20, 16)), 3.0)
    assert_png(report.plot_central_slices({"a": vol, "b": vol * 2}, tmp_path / "s.png"))
    with pytest.raises(fd.InputError):
        report.plot_central_slices({"a": vol.transpose("y", "z", "x")}, tmp_path / "bad.png")
    with pytest.raises(fd.InputError):
        report.radial_power_spectrum(vol)


# -- radial power spectrum -------------------------------------------------------------------
def test_power_spectrum_of_white_noise_is_flat_and_axis_in_per_A():
    rng = np.random.default_rng(1)
    data = 3.0 * rng.standard_normal((21, 96, 80))
    freq, power = report.radial_power_spectrum(fd.tiltseries(data, np.zeros(21), 2.5))
    assert freq.shape == power.shape == (40,)
    assert freq[-1] == pytest.approx(1 / (2 * 2.5))  # Nyquist = 1 / (2 p)
    np.testing.assert_allclose(np.diff(freq), 1 / (80 * 2.5))
    assert np.all(np.abs(power / 9.0 - 1) < 0.2), power / 9.0  # periodogram of variance 9


def test_power_spectrum_of_smooth_image_falls():
    yy, xx = np.mgrid[:48, :40]
    blobs = [np.exp(-((yy - 24 + k) ** 2 + (xx - 20 - k) ** 2) / (2 * 3.0**2)) for k in range(5)]
    ts = fd.tiltseries(np.stack(blobs), np.zeros(5), 1.0)  # Gaussian blobs, σ = 3 px
    freq, power = report.radial_power_spectrum(ts)
    assert freq[-1] == pytest.approx(0.5)  # default pixel size 1 Å
    assert power[0] > 100 * power[-1]
    assert np.all(np.diff(power[: len(power) // 2]) < 0)


def test_power_spectrum_independent_of_chunking():
    data = stack(0, 1.0, "noisy")
    f1, p1 = report.radial_power_spectrum(data.chunk({"tilt": 1, "y": 7}))
    f2, p2 = report.radial_power_spectrum(data.chunk({"tilt": 4, "y": 48}))
    f3, p3 = report.radial_power_spectrum(data.compute())
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(p1, p3)


def test_plot_power_spectra(tmp_path):
    series = {"A": stack(0, 1.0, "a"), "B": stack(1, 0.1, "b")}
    assert_png(report.plot_power_spectra(series, tmp_path / "p.png", title="x"))
    with pytest.raises(fd.InputError):
        report.plot_power_spectra({}, tmp_path / "q.png")


# -- on a distributed client (last: the session's client stays current) ---------------------
def test_report_on_distributed_client(run_store, tmp_path, client):
    """Everything also runs on a distributed client (workers compute, the client draws)."""
    data = stack(0, 1.0, "noisy")
    local = tilt_power(data.values).mean(axis=0)  # the kernel alone, no scheduler
    with client.as_current():
        _, remote = report.radial_power_spectrum(data)
        paths = report.write_report(run_store, tmp_path / "figs", tomos=[0])
    np.testing.assert_allclose(remote, local, rtol=1e-12)
    assert len(paths) == 6
    for p in paths:
        assert_png(p)
