"""The specimen in volts: protein interiors, the lipid bilayer profile, gold beads, absorption.

Every value is checked against the constants of ``kernels/potential.py``: protein minus ice
(≈ 3.36 V), gold minus ice (≈ 25.3 V), the bilayer's head groups above and core below ice."""
from __future__ import annotations

import numpy as np
import pytest

from faket_dask.kernels import potential as P
from faket_dask.kernels import specimen as K
from faket_dask.kernels import specimen_membranes as mem
from faket_dask.kernels.specimen_placement import (
    EXTRA_COLUMNS,
    empty_table,
    rotation_matrices,
)
from faket_dask.kernels.specimen_templates import (
    GOLD_CONTRAST_V,
    PROTEIN_CONTRAST_V,
    SHREC_CLASSES,
    builtin_classes,
)
from faket_dask.stages.specimen import build_classes


def single(cls_id: int, centre_zyx, euler=(0.0, 0.0, 0.0), radius_A=0.0, **sizes) -> dict:
    """A one-row table."""
    t = empty_table()
    t.update({"class_name": np.array(["x"]), "class_id": np.array([cls_id], np.int32),
              "z": np.array([centre_zyx[0]], float), "y": np.array([centre_zyx[1]], float),
              "x": np.array([centre_zyx[2]], float), "rot": np.array([euler[0]]),
              "tilt": np.array([euler[1]]), "psi": np.array([euler[2]]), "radius_A": np.array([radius_A]),
              "shell_radius_A": np.array([sizes.pop("shell_radius_A", 0.0)])})
    for c in EXTRA_COLUMNS:
        t[c] = np.array([sizes.pop(c, 0.0)])
    assert not sizes
    return t


def test_contrast_constants():
    assert PROTEIN_CONTRAST_V == pytest.approx(P.protein_potential_V() - P.ice_potential_V())
    assert 3.3 < PROTEIN_CONTRAST_V < 3.4 and 25.0 < GOLD_CONTRAST_V < 25.5


@pytest.mark.parametrize("name", list(SHREC_CLASSES))
def test_protein_interior_is_protein_minus_ice(name):
    """Mean over the lobes shrunk by one atom sigma, rendered (random orientation) at a pixel size
    that does not widen the atoms: protein - ice within 5 %."""
    classes = builtin_classes()
    k = [c.name for c in classes].index(name)
    cls = classes[k]
    px = cls.sigma_A                                    # sigma = 1 voxel: atoms rendered as they are
    rb = cls.bounding_radius_A(px) / px
    n = int(2 * np.ceil(rb) + 3)
    c = np.array([n // 2 + 0.3, n // 2 - 0.2, n // 2 + 0.1])
    euler = (31.0, 67.0, -112.0)
    d, a, m, o = K.render_block(single(k + 1, c, euler, radius_A=rb * px), classes, (0, 0, 0), (n, n, n), px)
    rot = rotation_matrices(np.array(euler))[0]
    lob = cls.envelope_A
    cen = (lob[:, :3] @ rot.T / px)[:, ::-1] + c
    zz, yy, xx = np.indices((n, n, n))
    inner = np.zeros((n, n, n), bool)
    envelope = np.zeros((n, n, n), bool)
    for (z0, y0, x0), r in zip(cen, lob[:, 3] / px):
        dist2 = (zz - z0) ** 2 + (yy - y0) ** 2 + (xx - x0) ** 2
        inner |= dist2 <= (r - cls.sigma_A / px) ** 2
        envelope |= dist2 <= r ** 2
    assert d[inner].mean() == pytest.approx(PROTEIN_CONTRAST_V, rel=0.05)
    assert np.array_equal(o > 0, envelope)             # labels: the envelope, exactly
    assert np.allclose(a, P.LIGHT_ATOM_ABSORPTION_RATIO * d, rtol=1e-6, atol=0)
    # the envelope's voxel count is its volume (the molecular volume the fractions count)
    assert (o > 0).sum() * px ** 3 == pytest.approx(cls.volume_A3, rel=0.08)


def test_independent_atom_model_puts_lipid_chains_above_ice():
    """Why the bilayer uses the measured electron-density profile: the independent-atom model
    gives the hydrocarbon core MORE potential than ice, the electron density less."""
    assert P.lipid_chain_potential_V() > P.ice_potential_V() + 1.0
    assert P.lipid_headgroup_potential_V() > P.lipid_chain_potential_V()
    chains = P.electrons(P.POPC_CHAINS) / P.POPC_CHAIN_VOLUME_A3
    heads = P.electrons(P.PC_HEADGROUP) / P.PC_HEADGROUP_VOLUME_A3
    assert chains < P.ice_electron_density() < P.protein_electron_density() < heads
    assert P.electron_density_potential_V(chains) == pytest.approx(-1.05, abs=0.02)
    assert P.electron_density_potential_V(P.protein_electron_density()) == pytest.approx(PROTEIN_CONTRAST_V)
    assert P.electron_density_potential_V(P.ice_electron_density()) == pytest.approx(0.0, abs=1e-12)


def _radial(px: float, axes, euler=(0.0, 0.0, 0.0), axis: int = 2, n: int | None = None):
    """Potential and label along the line through a vesicle's centre parallel to ``axis``."""
    classes = build_classes(px)
    kv = [c.name for c in classes].index("vesicle") + 1
    R = max(axes)
    n = n or int(2 * (R + 60) / px) + 1
    c = [0.0, 0.0, 0.0]
    c[axis] = (n - 1) / 2 + 0.25
    t = single(kv, c, euler, radius_A=R + mem.support_half_A(px), shell_radius_A=axes[0],
               shell_b_A=axes[1], shell_c_A=axes[2])
    shape = [1, 1, 1]
    shape[axis] = n
    d, a, m, o = K.render_block(t, classes, (0, 0, 0), tuple(shape), px)
    u = np.abs(np.arange(n) - c[axis]) * px                 # distance from the centre (Å)
    return u, d.ravel(), a.ravel(), o.ravel() > 0


@pytest.mark.parametrize("px", [2.0, 10.0])
def test_bilayer_profile_sign(px):
    """Along a radial line: head groups above ice, the hydrocarbon core below, ice beyond."""
    R = 300.0
    u, d, a, lab = _radial(px, (R, R, R))
    dhh = P.POPC_DHH_A / 2
    head = np.abs(np.abs(u - R) - dhh) <= px / 2 + 1e-9
    core = np.abs(u - R) <= px / 2 + 1e-9
    far = np.abs(u - R) > mem.support_half_A(px)
    assert head.sum() >= 2 and core.sum() >= 1
    assert np.all(d[head] > 0) and np.all(d[core] < 0) and np.all(d[far] == 0)
    assert np.array_equal(lab, np.abs(u - R) <= mem.LABEL_HALF_A)        # the bilayer slab
    assert np.allclose(a, P.LIGHT_ATOM_ABSORPTION_RATIO * d, rtol=1e-6, atol=0)
    if px == 2.0:                                            # fine sampling: the stated values
        p = mem.bilayer_parameters()
        assert d[core].max() == pytest.approx(p["core_V"], rel=0.02)
        assert d[head].max() == pytest.approx(p["head_V_A"] / (mem.HEAD_SIGMA_A * np.sqrt(2 * np.pi)), rel=0.05)
        assert 2.5 < d.max() < 3.5 and -1.1 < d.min() < -1.0


def test_ellipsoidal_bilayer_follows_each_semi_axis():
    axes = (400.0, 330.0, 280.0)
    for axis, semi in ((2, axes[0]), (1, axes[1]), (0, axes[2])):     # template x, y, z = volume x, y, z
        u, d, _, lab = _radial(4.0, axes, axis=axis)
        head = np.abs(np.abs(u - semi) - P.POPC_DHH_A / 2) <= 2.0 + 1e-9
        core = np.abs(u - semi) <= 2.0 + 1e-9
        assert np.all(d[head] > 0) and np.all(d[core] < 0), axis
        assert np.all(d[u < semi - 60] == 0) and np.all(d[u > semi + 60] == 0)
    # rotated 90° about z (rot = 90): the template x axis lies along the volume y axis
    u, d, _, _ = _radial(4.0, axes, euler=(90.0, 0.0, 0.0), axis=1)
    assert np.all(d[np.abs(u - axes[0]) <= 2.0 + 1e-9] < 0)


def test_vesicle_axes_spherical_and_ellipsoidal():
    rng = np.random.default_rng(0)
    ax = np.array([mem.draw_axes(rng, 300.0) for _ in range(400)])
    sphere = np.all(ax == 300.0, axis=1)
    assert 0.35 < sphere.mean() < 0.65
    ratio = ax[~sphere, 0] / ax[~sphere, 2]
    assert ratio.min() >= mem.AXIS_RATIO[0] - 1e-9 and ratio.max() <= 1.5 + 1e-9
    assert np.all((ax[:, 1] <= ax[:, 0]) & (ax[:, 1] >= ax[:, 2]))


@pytest.mark.parametrize("radius_A", [25.0, 37.5, 50.0])
def test_gold_is_gold_minus_ice(radius_A):
    px = 10.0
    classes = build_classes(px)
    kf = [c.name for c in classes].index("fiducial") + 1
    n = 15
    c = (7.0, 7.0, 7.0)
    t = single(kf, c, radius_A=classes[kf - 1].bounding_radius_A(px, radius_A), bead_radius_A=radius_A)
    d, a, m, o = K.render_block(t, classes, (0, 0, 0), (n, n, n), px)
    assert d[7, 7, 7] == pytest.approx(P.gold_potential_V() - P.ice_potential_V(), rel=0.005)
    assert np.allclose(a, P.GOLD_ABSORPTION_RATIO * d, rtol=1e-6, atol=0)
    assert a[7, 7, 7] == pytest.approx(0.3 * GOLD_CONTRAST_V, rel=0.005)
    # labelled: the ball (half-height surface at the radius)
    assert (o > 0).sum() == pytest.approx(4 / 3 * np.pi * (radius_A / px) ** 3, rel=0.35)
    assert np.all(d[o > 0] >= 0.5 * GOLD_CONTRAST_V)


def test_absorption_is_ratio_times_density_per_class():
    from tests.test_specimen import gen

    spec, parts = gen(3, n_fiducials=4, shape=(48, 96, 96))
    s = spec.compute()
    d, a, m = s["density"].values, s["absorption"].values, s["class_mask"].values
    classes = build_classes(10.0)
    names = s["class_mask"].attrs["class_names"]
    seen = set()
    for k in np.unique(m[m > 0]):
        sel = m == k
        assert np.allclose(a[sel], classes[k - 1].absorption_ratio * d[sel], rtol=1e-6, atol=0), names[k - 1]
        seen.add(names[k - 1])
    assert {"fiducial", "vesicle"} <= seen and len(seen) > 4
    # everywhere (labelled or not) the absorption is some class's ratio times the density
    ratios = np.unique([c.absorption_ratio for c in classes])
    nz = d != 0
    q = a[nz].astype(np.float64) / d[nz]
    assert np.all(np.min(np.abs(q[:, None] - ratios[None]), axis=1) < 1e-5)
    assert np.all(a[~nz] == 0)
    assert s["density"].attrs["units"] == "V" and s["absorption"].attrs["units"] == "V"
