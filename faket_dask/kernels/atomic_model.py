"""Specimen classes in volts from atomic models (PDB / mmCIF) and from MRC maps with units.

Pure numpy + gemmi + scipy (no dask; the only I/O is reading a model file). The physics
constants come from :mod:`faket_dask.kernels.potential`.

Potential of a model
--------------------
gemmi's ``DensityCalculatorE`` sums, for every atom, the inverse Fourier transform of its
electron scattering factor ``f_e(s) = Σ_i a_i exp(-b_i s²/4)`` (ITC Vol. C Table 4.3.2.2,
Peng et al. 1996; neutral atoms) with the displacement ``B`` (Å²) added to every ``b_i``:
``ρ(r) = Σ_i a_i (4π/(b_i+B))^{3/2} exp(-4π² r²/(b_i+B))``. With ``a_i`` in Å its grid values
are in Å⁻² and integrate to ``f_e(0)`` (Å) per atom (checked with single atoms: 2.5085 vs
2.5088 for C at a 0.2 Å grid). Times ``h²/(2π m0 e) = 47.878 V·Å²`` (Kirkland 2010, eq. 5.9)
this is the potential in volts, so ``Σ map · pixel³ = 47.878 · Σ_atoms occ · f_e(0)``.

Sampling: every atom is blurred to a Gaussian width of at least :data:`MIN_SIGMA_PX` pixel
(``B + blur >= 8π² (0.75 p)²``, the same floor as the procedural atoms of
:mod:`~faket_dask.kernels.specimen_templates`): narrower atoms would alias on a coarse grid
(a bare C atom on a 10 Å grid sums to 0, not 2.5 Å). gemmi's ``cutoff`` is an absolute density,
so it is set to :data:`CUTOFF_FRACTION` of the lowest blurred atomic peak of the model: every
atom is summed out to where it has fallen below 1e-5 of its peak (measured integral errors
< 0.1 % at 2-15 Å pixels). The P1 box is the atoms' extent plus the largest cut-off radius plus
one voxel each side, so nothing wraps around the periodic cell.

Hydrogens (``hydrogens="implicit"``, united atoms): X-ray and cryo-EM models rarely carry H,
but H is ≈ 18 % of a protein's ``Σ f_e(0)``. Every non-metal heavy atom then also carries
``n_H`` hydrogens (an H form factor at its position and B, occupancy ``n_H · occ``): the
averagine ratio H / heavy atoms = 7.7583 / 7.8151 = 0.993 for amino acids and other residues
(Senko et al. 1995), 11.75 / 21.25 = 0.553 for RNA and 12.25 / 20.5 = 0.598 for DNA (mean of
the four in-chain nucleotide formulas, e.g. A = C10H12N5O6P); metals carry none. A model with
explicit H/D atoms keeps them and gets no implicit ones. ``"ignore"`` drops the scattering of
all H: a protein's mean potential falls from 7.93 to 6.49 V (-18 %) and its contrast above ice
from 3.36 to 1.92 V (-43 %); its displaced volume still counts the H. Waters are removed (the
ice stands for the solvent), only the first model is used, charges are ignored (neutral
atoms) and anisotropic ADPs are replaced by ``B_iso`` (irrelevant at ≥ 2 Å pixels).

Potential relative to ice
-------------------------
``specimen/density`` is relative to vitreous ice: matter minus the ice it displaces. Each atom
displaces the volume ``v = m / (ρ_protein N_A)`` (its mass with its implicit H at 1.35 g/cm³)
as a Gaussian sphere of unit peak and volume ``v`` (Fraser, MacRae & Suzuki 1978, J. Appl.
Cryst. 11:693, the excluded-volume model of CRYSOL), blurred like the atom. Their sum ``E``
(the excluded-volume fraction; ≈ 1 inside a protein) is the soft molecular envelope; the
class map is ``V - ice_potential_V() · E`` inside the support ``E >= 0.001`` and 0
outside. Displaced ice blurred like the matter keeps the edges unbiased at every pixel size.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .potential import (
    AVOGADRO,
    LIGHT_ATOM_ABSORPTION_RATIO,
    POTENTIAL_PER_SCATTERING_V_A2,
    PROTEIN_DENSITY_G_CM3,
    PROTEIN_RESIDUE,
    ice_potential_V,
    protein_potential_V,
    scattering_f0_A,
)
from .specimen_templates import ClassTemplate

#: Atomic-model file suffixes (each may also end in ``.gz``).
MODEL_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")
HYDROGEN_MODES = ("implicit", "ignore")
MAP_UNITS = ("V", "normalised")
#: Smallest Gaussian width of a rendered atom, in pixels (anti-aliasing floor).
MIN_SIGMA_PX = 0.75
#: gemmi's cut-off as a fraction of the lowest blurred atomic peak of the model.
CUTOFF_FRACTION = 1e-5
#: Implicit H per heavy atom: averagine (Senko 1995) and in-chain nucleotide means.
H_PER_HEAVY_PROTEIN = PROTEIN_RESIDUE["H"] / sum(n for e, n in PROTEIN_RESIDUE.items() if e != "H")
H_PER_HEAVY_RNA = 11.75 / 21.25
H_PER_HEAVY_DNA = 12.25 / 20.5
#: The relative map is kept where the excluded-volume fraction is at least this (0.1 %; the
#: relative potential lost outside is < 0.3 % of its integral at 2-15 Å pixels, 1-3 % at 1 %).
ENVELOPE_SUPPORT = 0.001
#: Label threshold as a fraction of the class's mean over its molecular envelope.
LABEL_FRACTION = 0.5
_U_TO_B = 8 * math.pi ** 2


def _suffix(path: Path) -> str:
    s = path.suffixes
    if s and s[-1].lower() == ".gz":
        s = s[:-1]
    return s[-1].lower() if s else ""


def model_stem(path: str | Path) -> str:
    """File name without the model suffix and an optional ``.gz`` (``1abc.cif.gz`` -> ``1abc``)."""
    name = Path(path).name
    return Path(name[:-3] if name.lower().endswith(".gz") else name).stem


def read_model(path: str | Path):
    """Read an atomic model with gemmi.

    Parameters
    ----------
    path : str or Path
        ``.pdb``, ``.ent``, ``.cif`` or ``.mmcif``, optionally gzipped (``.gz``).

    Returns
    -------
    gemmi.Structure

    Raises
    ------
    ValueError
        One line naming the file: unknown extension, unreadable, or no atoms.
    """
    import gemmi

    p = Path(path)
    if _suffix(p) not in MODEL_SUFFIXES:
        raise ValueError(f"{p}: unknown model extension (use {', '.join(MODEL_SUFFIXES)}, optionally .gz)")
    fmt = gemmi.CoorFormat.Mmcif if _suffix(p) in (".cif", ".mmcif") else gemmi.CoorFormat.Pdb
    try:
        st = gemmi.read_structure(str(p), format=fmt)
    except Exception as e:  # noqa: BLE001 - any parser failure is a bad file
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{p}: not a readable atomic model ({msg})") from None
    if len(st) == 0 or st[0].count_atom_sites() == 0:
        raise ValueError(f"{p}: no atoms")
    if not st.name:
        st.name = model_stem(p)
    return st


def _pdb_id(st, fallback: str) -> str:
    entry = dict(st.info.items()).get("_entry.id", "").strip()
    return entry or st.name or fallback


def _atom_table(st, hydrogens: str, where: str) -> dict:
    """Atoms of the first model without waters: positions (Å), element names, occupancies,
    B (Å²), implicit H per atom and atomic masses (Da, with the implicit H)."""
    import gemmi

    if hydrogens not in HYDROGEN_MODES:
        raise ValueError(f"hydrogens must be one of {', '.join(HYDROGEN_MODES)}, got {hydrogens!r}")
    st = st.clone()
    while len(st) > 1:
        del st[len(st) - 1]
    st.remove_waters()
    explicit_h = st[0].has_hydrogen()
    if hydrogens == "ignore":
        st.remove_hydrogens()
    model = st[0]
    # H scatter only in "implicit" mode without explicit H; H always occupies volume (the ice
    # displaced does not depend on how the scattering is modelled)
    h_volume_only = hydrogens == "ignore" or explicit_h
    vol_from_rule = hydrogens == "ignore" or not explicit_h
    xyz, els, occ, b, nh, mass = [], [], [], [], [], []
    h_mass = gemmi.Element("H").weight
    for res in (r for ch in model for r in ch):
        info = gemmi.find_tabulated_residue(res.name)
        ratio = H_PER_HEAVY_PROTEIN
        if info is not None and info.kind == gemmi.ResidueKind.RNA:
            ratio = H_PER_HEAVY_RNA
        elif info is not None and info.kind == gemmi.ResidueKind.DNA:
            ratio = H_PER_HEAVY_DNA
        for a in res:
            el = a.element
            if el.atomic_number == 0 or el.c4322 is None:     # 'X' has all-zero coefficients
                raise ValueError(f"{where}: atom {res.name} {a.name} has element {el.name!r} "
                                 "with no electron scattering factor")
            n = 0.0 if (el.is_hydrogen or el.is_metal or not vol_from_rule) else ratio
            xyz.append(a.pos.tolist())
            els.append(el.name)
            occ.append(a.occ)
            b.append(max(a.b_iso, 0.0))
            nh.append(0.0 if h_volume_only else n)
            mass.append(el.weight + n * h_mass)
    if not xyz:
        raise ValueError(f"{where}: no atoms (waters excluded)")
    return {"xyz": np.asarray(xyz, dtype=np.float64), "el": els, "occ": np.asarray(occ, dtype=np.float64),
            "b": np.asarray(b, dtype=np.float64), "nh": np.asarray(nh), "mass": np.asarray(mass)}


def model_diameter_A(st, where: str = "model") -> float:
    """Diameter (Å) of the atoms (waters excluded) around their centroid: ``2 max |r - c|``.

    Raises
    ------
    ValueError
        No atoms besides waters, or an element without scattering factor (message starts
        with ``where``).
    """
    xyz = _atom_table(st, "implicit", where)["xyz"]
    return float(2 * np.sqrt(((xyz - xyz.mean(0)) ** 2).sum(1)).max())


def _peak(el: str, b_total: float) -> float:
    """Peak (Å⁻²) of an atom's ITC Gaussians blurred by ``b_total`` (Å²)."""
    import gemmi

    c = gemmi.Element(el).c4322.get_coefs()
    return float(sum(a * (4 * math.pi / (bi + b_total)) ** 1.5 for a, bi in zip(c[:5], c[5:])))


def _render(st, pixel_size_A: float, bfactor_A2: float, hydrogens: str, where: str, envelope: bool):
    """Absolute potential (V) and, if asked, the excluded-volume fraction on one P1 box."""
    import gemmi

    p = float(pixel_size_A)
    if not (math.isfinite(p) and p > 0):
        raise ValueError(f"pixel size must be a positive number of Å, got {pixel_size_A}")
    if not (math.isfinite(bfactor_A2) and bfactor_A2 >= 0):
        raise ValueError(f"bfactor_A2 must be >= 0, got {bfactor_A2}")
    t = _atom_table(st, hydrogens, where)
    # blur: every atom at least MIN_SIGMA_PX wide, plus the requested extra B
    blur = max(_U_TO_B * (MIN_SIGMA_PX * p) ** 2 - float(t["b"].min()), 0.0) + float(bfactor_A2)
    # excluded volume of each atom (Å³; 1 g/cm³ = 1e-24 g/Å³) and its Fraser width B_v = 4π v^(2/3)
    vol = t["mass"] / (PROTEIN_DENSITY_G_CM3 * AVOGADRO * 1e-24)
    b_vol = 4 * math.pi * vol ** (2 / 3)
    kinds = sorted(set(t["el"]) | ({"H"} if t["nh"].any() else set()))
    b_max = float(t["b"].max()) + blur
    cutoff = CUTOFF_FRACTION * min(_peak(e, b_max) for e in kinds)
    dc = gemmi.DensityCalculatorE()
    dc.blur, dc.cutoff = blur, cutoff
    probe = gemmi.Atom()
    probe.b_iso = float(t["b"].max())
    radius = 0.0
    for e in kinds:
        probe.element = gemmi.Element(e)
        radius = max(radius, dc.estimate_radius(probe))
    if envelope:  # unit-peak Gaussians: radius where the widest falls to CUTOFF_FRACTION
        bw = b_max + float(b_vol.max())
        radius = max(radius, math.sqrt(bw * math.log(1 / CUTOFF_FRACTION) / (4 * math.pi ** 2)))
    # box: centroid on voxel m (per axis), atoms + cut-off radius + 1 voxel inside
    centroid = t["xyz"].mean(0)
    m = np.ceil((np.abs(t["xyz"] - centroid).max(0) + radius) / p).astype(int) + 1
    n = 2 * m + 1
    shift = m * p - centroid
    dc.grid.set_unit_cell(gemmi.UnitCell(*(n * p), 90, 90, 90))
    dc.grid.spacegroup = gemmi.find_spacegroup_by_name("P 1")
    dc.grid.set_size(*(int(k) for k in n))                   # spacing = pixel_size_A exactly
    dc.grid.fill(0.0)
    atom = gemmi.Atom()                                      # fresh: no aniso, B_iso only
    element = {e: gemmi.Element(e) for e in kinds}
    pos = t["xyz"] + shift
    # one Python loop over atoms: each atom, then its united-atom hydrogens at the same place
    for i, (e, o, b, nh) in enumerate(zip(t["el"], t["occ"], t["b"], t["nh"])):
        atom.pos = gemmi.Position(*pos[i])
        atom.b_iso = b
        atom.element, atom.occ = element[e], o
        dc.add_atom_density_to_grid(atom)
        if nh > 0:
            atom.element, atom.occ = element["H"], o * nh
            dc.add_atom_density_to_grid(atom)
    # gemmi's array is (x, y, z); ours is (z, y, x)
    v = np.array(dc.grid, copy=True).transpose(2, 1, 0) * POTENTIAL_PER_SCATTERING_V_A2
    e_map = None
    if envelope:
        dc.grid.fill(0.0)
        # gemmi compares the cut-off with the unit-occupancy Gaussian (4π/B)^(3/2)
        dc.cutoff = CUTOFF_FRACTION * float((4 * math.pi / (b_max + b_vol.max())) ** 1.5)
        for i, (o, b) in enumerate(zip(t["occ"], t["b"])):
            # c = 1 gives a Gaussian of integral occ (Å³ here: occ = v) and width B + blur
            atom.pos = gemmi.Position(*pos[i])
            atom.b_iso, atom.occ = b + b_vol[i], o * vol[i]
            dc.add_c_contribution_to_grid(atom, 1.0)
        e_map = np.array(dc.grid, copy=True).transpose(2, 1, 0)
    sum_f0 = float(sum(o * scattering_f0_A(e) for e, o in zip(t["el"], t["occ"]))
                   + (t["occ"] * t["nh"]).sum() * scattering_f0_A("H"))
    info = {"n_atoms": len(t["el"]), "n_implicit_h": float((t["occ"] * t["nh"]).sum()),
            "sum_f0_A": sum_f0, "blur_A2": blur, "volume_A3": float((t["occ"] * vol).sum())}
    return v.astype(np.float32), e_map, m[::-1].astype(np.float64), info


def _structure(path_or_structure):
    if isinstance(path_or_structure, (str, Path)):
        return read_model(path_or_structure), str(path_or_structure), model_stem(path_or_structure)
    st = path_or_structure
    return st, st.name or "structure", st.name or ""


def potential_map(path_or_structure, pixel_size_A: float, *, bfactor_A2: float = 0.0,
                  hydrogens: str = "implicit") -> tuple[np.ndarray, np.ndarray, dict]:
    """Absolute electrostatic potential (V) of an atomic model on a grid of ``pixel_size_A``.

    Parameters
    ----------
    path_or_structure : str, Path or gemmi.Structure
        Model file (see :func:`read_model`) or a structure already read.
    pixel_size_A : float
        Grid spacing (Å), exactly.
    bfactor_A2 : float
        Extra isotropic blur (Å²) on top of the atoms' B and the anti-aliasing floor.
    hydrogens : {"implicit", "ignore"}
        United-atom hydrogens (explicit ones are used when the model has any) or none.

    Returns
    -------
    map_zyx : ndarray, float32, shape (D, H, W)
        Potential in V (absolute: not relative to ice), 0 far from the atoms.
        ``map_zyx.sum() * pixel_size_A**3 = 47.878 V·Å² * info["sum_f0_A"]`` within 0.1 %.
    centre_zyx : ndarray, float64, shape (3,)
        ``(z, y, x)`` voxel of the atoms' centroid (unweighted mean position).
    info : dict
        ``pdb_id``, ``n_atoms`` (without implicit H), ``n_implicit_h``, ``sum_f0_A``
        (``Σ occ · f_e(0)`` with the implicit H, Å), ``blur_A2`` and ``volume_A3`` (excluded
        volume at 1.35 g/cm³).

    Raises
    ------
    ValueError
        Unreadable model, no atoms, an element without scattering factor, bad options.
    """
    st, where, stem = _structure(path_or_structure)
    v, _, centre, info = _render(st, pixel_size_A, bfactor_A2, hydrogens, where, envelope=False)
    info["pdb_id"] = _pdb_id(st, stem)
    return v, centre, info


def _threshold(m: np.ndarray, inside: np.ndarray) -> float:
    """Label threshold: half the map's mean over its molecular envelope ``inside`` (half the
    protein-minus-ice contrast, ≈ 1.68 V, for a protein with hydrogens), so the label is the
    molecule whatever its contrast; half the peak when blur leaves no voxel inside (a small
    class at coarse pixels keeps a label)."""
    level = float(m[inside].mean()) if inside.any() else float(m.max())
    return LABEL_FRACTION * min(level, float(m.max()))


def potential_class(name: str, path, pixel_size_A: float, *, bfactor_A2: float = 0.0,
                    hydrogens: str = "implicit") -> ClassTemplate:
    """A ``"map"`` class whose map is the model's potential relative to ice (V).

    ``map = V - ice_potential_V() * E`` where ``E >= ENVELOPE_SUPPORT``, 0 elsewhere (``E`` =
    excluded-volume fraction, see the module docstring); its inside is ≈ protein minus ice
    (3.4 V) for a protein. ``threshold`` is half the map's mean where ``E >= 0.5`` (≈ 1.6 V
    for a protein); ``amplitude`` 1
    (:func:`~faket_dask.kernels.specimen.render_block` samples maps as they are).

    Parameters and errors as :func:`potential_map`; ``path`` may also be a gemmi.Structure.
    """
    st, where, stem = _structure(path)
    v, e, centre, _ = _render(st, pixel_size_A, bfactor_A2, hydrogens, where, envelope=True)
    rel = np.where(e >= ENVELOPE_SUPPORT, v - ice_potential_V() * e, 0.0).astype(np.float32)
    inside = e >= 0.5                                         # at least half the ice displaced
    return ClassTemplate(name=name, kind="map", map_zyx=rel, map_centre=centre, amplitude=1.0,
                         threshold=_threshold(rel, inside), absorption_ratio=LIGHT_ATOM_ABSORPTION_RATIO,
                         pdb_id=_pdb_id(st, stem))


def map_envelope(m: np.ndarray) -> np.ndarray:
    """Molecular envelope of an arbitrary density map: ``m >= Otsu threshold`` of its positive
    voxels (Otsu 1979, via scikit-image), bool, same shape. Separating the molecule from a
    flat background, the threshold falls near the half-density surface."""
    from skimage.filters import threshold_otsu

    pos = m[m > 0]
    if pos.size == 0 or pos.min() == pos.max():
        return m > 0
    return m >= threshold_otsu(pos)


def volts_class_from_map(name: str, map_zyx: np.ndarray, map_pixel_A: float, pixel_size_A: float,
                         units: str) -> ClassTemplate:
    """A ``"map"`` class from a density map with declared units, resampled to ``pixel_size_A``.

    Parameters
    ----------
    map_zyx : ndarray, shape (D, H, W)
        The map, positive = matter.
    map_pixel_A, pixel_size_A : float
        Voxel size of the map and of the specimen (Å); cubic-spline resampling (scipy zoom)
        as :func:`~faket_dask.kernels.specimen_templates.map_class`.
    units : {"V", "normalised"}
        ``"V"``: potential in volts relative to the solvent (simulators flatten the solvent to
        0), taken as is. ``"normalised"``: arbitrary units; negatives are clipped to 0 and the
        map is scaled so its mean inside :func:`map_envelope` is ``protein_potential_V() -
        ice_potential_V()`` (≈ 3.36 V); the soft edge below the envelope is kept, scaled.

    Raises
    ------
    ValueError
        Unknown units (lists the allowed ones), a map that is not 3-D, not finite, or has no
        positive value.
    """
    from scipy.ndimage import zoom

    if units not in MAP_UNITS:
        raise ValueError(f"unknown map units {units!r}; allowed: {', '.join(repr(u) for u in MAP_UNITS)}")
    m = np.asarray(map_zyx, dtype=np.float64)
    if m.ndim != 3:
        raise ValueError(f"{name}: the map must be 3-D, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name}: the map contains NaN or inf")
    if units == "normalised":
        m = np.clip(m, 0, None)
    if m.max() <= 0:
        raise ValueError(f"{name}: the map has no positive value")
    if abs(map_pixel_A / pixel_size_A - 1) > 1e-6:
        m = zoom(m, map_pixel_A / pixel_size_A, order=3)
    if units == "normalised":
        m = np.clip(m, 0, None)
        m *= (protein_potential_V() - ice_potential_V()) / m[map_envelope(m)].mean()
    m = np.pad(m, 1)                                          # zero border: interpolation fades out
    w = np.clip(m, 0, None)
    com = (np.indices(m.shape).reshape(3, -1) * w.reshape(-1)).sum(1) / w.sum()
    return ClassTemplate(name=name, kind="map", map_zyx=m.astype(np.float32), map_centre=com,
                         amplitude=1.0, threshold=_threshold(m, map_envelope(m)),
                         absorption_ratio=LIGHT_ATOM_ABSORPTION_RATIO)
