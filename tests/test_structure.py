"""KNN specimens and their ground truth (polar4d_lib.structure)."""

from __future__ import annotations

import numpy as np
import pytest

from polar4d_lib import conventions as cv
from polar4d_lib import structure as st

A = 3.95
#: Fractional sites of the perovskite cell, in the order of the module: A, Nb, O(z), O(y), O(x).
SITES = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _site_of(specimen: st.Specimen) -> np.ndarray:
    """Index (0–4) of the cell site each atom sits near (displacements are ≤ 0.2 Å ≪ a/2)."""
    frac = specimen.atoms.positions / specimen.a_A - specimen.atoms.arrays["cell_index"] - [0, 0, 0.25]
    distance = np.linalg.norm(frac[:, None, :] - SITES[None], axis=-1)
    assert distance.min(1).max() < 0.1
    return distance.argmin(1)


def _minimum_image(vectors: np.ndarray, cell_lengths: np.ndarray) -> np.ndarray:
    return vectors - np.round(vectors / cell_lengths) * cell_lengths


# --- sizes and species -----------------------------------------------------------------------------

@pytest.mark.parametrize("thickness_nm, a_A, cells", [(10.0, 3.95, 25), (2.0, 3.95, 5), (0.1, 3.95, 1), (4.0, 4.0, 10),
                                                      (40.0, 3.95, 101)])
def test_cells_for_thickness(thickness_nm, a_A, cells):
    assert st.cells_for_thickness(thickness_nm, a_A) == cells


@pytest.mark.parametrize("thickness_nm", [0.0, -1.0, float("nan")])
def test_cells_for_thickness_rejects_non_positive(thickness_nm):
    with pytest.raises(ValueError, match="positive") as info:
        st.cells_for_thickness(thickness_nm)
    assert "\n" not in str(info.value)


def test_supercell_size_atom_counts_and_cell():
    specimen = st.knn_supercell(0, (2, 3), thickness_nm=2.0, a_A=A, k_fraction=1.0)
    assert specimen.shape_cells == (2, 3, 5)
    assert specimen.thickness_nm == pytest.approx(5 * A / 10)
    atoms = specimen.atoms
    n_cells = 2 * 3 * 5
    assert len(atoms) == 5 * n_cells
    numbers = atoms.numbers
    assert (numbers == 41).sum() == n_cells and (numbers == 8).sum() == 3 * n_cells and (numbers == 19).sum() == n_cells
    np.testing.assert_allclose(atoms.cell.lengths(), [2 * A, 3 * A, 5 * A])
    assert atoms.pbc.all()
    # Every atom lies inside the cell, a quarter cell above the slice boundaries (0 < z < thickness).
    assert (atoms.positions[:, 2] > 0).all() and (atoms.positions[:, 2] < 5 * A).all()
    assert atoms.arrays["variant"].dtype == np.int8 and (atoms.arrays["variant"] == 0).all()
    assert (atoms.arrays["defect"] == 0).all()
    np.testing.assert_array_equal(np.unique(atoms.arrays["cell_index"][:, 2]), np.arange(5))


@pytest.mark.parametrize("k_fraction, expected", [(1.0, 1.0), (0.0, 0.0), (0.5, 0.5), (0.8, 0.8)])
def test_species_fractions_follow_k_fraction(k_fraction, expected):
    specimen = st.knn_supercell(4, 10, thickness_nm=1.6, a_A=A, k_fraction=k_fraction, seed=1)  # 400 A sites
    numbers = specimen.atoms.numbers
    a_sites = numbers[(numbers == 19) | (numbers == 11)]
    assert len(a_sites) == 400
    fraction_k = float(np.mean(a_sites == 19))
    # Binomial standard deviation at 400 sites is ≤ 0.025; 4 σ.
    assert abs(fraction_k - expected) <= 0.1
    if k_fraction in (0.0, 1.0):
        assert fraction_k == expected


def test_disorder_is_seeded():
    make = lambda seed: st.knn_supercell(0, 4, 1.6, A, k_fraction=0.5, seed=seed).atoms.numbers  # noqa: E731
    np.testing.assert_array_equal(make(7), make(7))
    assert (make(7) != make(8)).any()


# --- variants and classes ----------------------------------------------------------------------

def test_variants_map_to_classes_as_conventions_say():
    classes = cv.VARIANT_CLASSES
    assert len(cv.VARIANTS) == 12
    # The 4 in-plane variants project onto the diagonals.
    np.testing.assert_array_equal(classes[:4], [1, 3, 5, 7])
    assert all(v[2] == 0 for v in cv.VARIANTS[:4])
    # The 8 inclined ones onto ±x and ±y, two (up and down out of plane) per axial class.
    np.testing.assert_array_equal(np.sort(classes[4:]), [0, 0, 2, 2, 4, 4, 6, 6])
    for k in (0, 2, 4, 6):
        pair = cv.VARIANTS[4:][classes[4:] == k]
        assert len(pair) == 2 and pair[0][2] == -pair[1][2] != 0
        np.testing.assert_array_equal(pair[0][:2], pair[1][:2])
    # Every variant is a pseudocubic <110>.
    assert all(sorted(np.abs(v)) == [0, 1, 1] for v in cv.VARIANTS)


@pytest.mark.parametrize("variant", range(12))
def test_specimen_class_map_is_the_variant_class(variant):
    specimen = st.knn_supercell(variant, 2, 0.8, A, k_fraction=1.0)
    assert specimen.class_map.dtype == np.int8
    assert (specimen.class_map == cv.VARIANT_CLASSES[variant]).all()
    assert specimen.pure_map.all()
    assert (specimen.defect_map == 0).all()


@pytest.mark.parametrize("variant", [0, 2, 4, 7, 9])
def test_displacements_nb_along_p_and_o_against_p(variant):
    displacements = st.Displacements(nb_A=0.12, o_A=0.07, a_A=0.03)
    polar = st.knn_supercell(variant, 2, 0.8, A, k_fraction=1.0, displacements=displacements)
    ideal = st.knn_supercell(variant, 2, 0.8, A, k_fraction=1.0, displacements=st.Displacements().scaled(0.0))
    # The paraelectric structure sits exactly on the ideal sites, a quarter cell above each slice boundary.
    site = _site_of(ideal)
    np.testing.assert_allclose(
        ideal.atoms.positions, (ideal.atoms.arrays["cell_index"] + SITES[site] + [0, 0, 0.25]) * A, atol=1e-12
    )
    np.testing.assert_array_equal(site, _site_of(polar))
    p = _unit(cv.VARIANTS[variant])
    shift = polar.atoms.positions - ideal.atoms.positions
    numbers = polar.atoms.numbers
    np.testing.assert_allclose(shift[numbers == 41], np.tile(0.12 * p, ((numbers == 41).sum(), 1)), atol=1e-12)
    np.testing.assert_allclose(shift[numbers == 8], np.tile(-0.07 * p, ((numbers == 8).sum(), 1)), atol=1e-12)
    np.testing.assert_allclose(shift[numbers == 19], np.tile(0.03 * p, ((numbers == 19).sum(), 1)), atol=1e-12)
    # Nb–O relative shift points along +P.
    assert (shift[numbers == 41][0] - shift[numbers == 8][0]) @ p == pytest.approx(0.19)


def test_displacements_scale():
    d = st.Displacements()
    np.testing.assert_allclose(d.scaled(2.0).site_vectors(4), 2 * d.site_vectors(4))
    assert (d.scaled(0.0).site_vectors(4) == 0).all()
    vectors = d.site_vectors(8)
    assert vectors.shape == (5, 3)
    np.testing.assert_allclose(vectors[1], d.nb_A * _unit([0, 1, 1]))
    np.testing.assert_allclose(vectors[2:], np.tile(-d.o_A * _unit([0, 1, 1]), (3, 1)))


# --- oxygen vacancies ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "cell, axis, relaxation, neighbour_cells",
    [
        ((1, 1, 1), "z", 0.15, {(1, 1, 1), (1, 1, 0)}),
        ((1, 2, 1), "y", 0.10, {(1, 2, 1), (1, 1, 1)}),
        ((0, 1, 1), "x", 0.10, {(0, 1, 1), (2, 1, 1)}),  # across the periodic boundary in x
        ((1, 1, 1), "z", -0.05, {(1, 1, 1), (1, 1, 0)}),  # negative relaxation: towards the vacancy
    ],
)
def test_oxygen_vacancy(cell, axis, relaxation, neighbour_cells):
    full = st.knn_supercell(0, 3, 1.2, A, k_fraction=1.0)  # 3 × 3 × 3 cells
    vacancy = st.OxygenVacancy(cell=cell, axis=axis, nb_relaxation_A=relaxation)
    defective = st.knn_supercell(0, 3, 1.2, A, k_fraction=1.0, vacancies=[vacancy])
    o_site = {"z": 2, "y": 3, "x": 4}[axis]

    # Exactly one O removed: the one on the vacancy site.
    assert len(defective.atoms) == len(full.atoms) - 1
    assert (defective.atoms.numbers == 8).sum() == (full.atoms.numbers == 8).sum() - 1
    full_sites = _site_of(full)
    removed = np.flatnonzero((full_sites == o_site) & (full.atoms.arrays["cell_index"] == cell).all(1))
    assert len(removed) == 1
    empty = full.atoms.positions[removed[0]]
    kept = np.delete(np.arange(len(full.atoms)), removed)
    np.testing.assert_array_equal(defective.atoms.numbers, full.atoms.numbers[kept])

    # Exactly the two Nb neighbours are marked, and they moved along the bond by the relaxation.
    marked = np.flatnonzero(defective.atoms.arrays["defect"] == 1)
    assert len(marked) == 2
    assert (defective.atoms.numbers[marked] == 41).all()
    assert {tuple(c) for c in defective.atoms.arrays["cell_index"][marked]} == neighbour_cells
    lengths = full.atoms.cell.lengths()
    before = _minimum_image(full.atoms.positions[kept][marked] - empty, lengths)
    after = _minimum_image(defective.atoms.positions[marked] - empty, lengths)
    np.testing.assert_allclose(np.linalg.norm(after, axis=1) - np.linalg.norm(before, axis=1), relaxation, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(after - before, axis=1), abs(relaxation), atol=1e-9)
    # Nothing else moved.
    others = np.setdiff1d(np.arange(len(kept)), marked)
    np.testing.assert_array_equal(defective.atoms.positions[others], full.atoms.positions[kept][others])

    # Ground truth: one vacancy in that column, none elsewhere; labels_at reports it.
    expected = np.zeros((3, 3), dtype=np.int8)
    expected[cell[0], cell[1]] = 1
    np.testing.assert_array_equal(defective.defect_map, expected)
    centre = (np.array(cell[:2]) + 0.5) * A
    labels, defects = defective.labels_at(np.array([centre, centre + [A, 0], centre + [0, A]]) % (3 * A))
    assert defects[0] == 1 and (defects[1:] == 0).all()
    assert (labels == cv.VARIANT_CLASSES[0]).all()


def test_two_vacancies_in_one_column_count_twice():
    vacancies = [st.OxygenVacancy((1, 1, 1), "z"), st.OxygenVacancy((1, 1, 2), "y")]
    specimen = st.knn_supercell(4, 3, 1.2, A, k_fraction=1.0, vacancies=vacancies)
    assert specimen.defect_map[1, 1] == 2 and specimen.defect_map.sum() == 2
    assert (specimen.atoms.arrays["defect"] == 1).sum() == 4
    assert specimen.labels_at(np.array([[1.2 * A, 1.7 * A]]))[1][0] == 2


def test_vacancy_validation():
    with pytest.raises(ValueError, match="axis") as info:
        st.OxygenVacancy((0, 0, 0), axis="w")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="outside") as info:
        st.knn_supercell(0, 2, 0.8, A, vacancies=[st.OxygenVacancy((2, 0, 0))])
    assert "\n" not in str(info.value)


# --- domains and walls ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "variant_a, variant_b, normal, angle",
    [
        (0, 1, "x", 90.0),  # [1,1,0] | [-1,1,0]: 90° wall, RU | LU
        (0, 2, "y", 180.0),  # [1,1,0] | [-1,-1,0]: 180° wall, RU | LD
        (4, 7, "x", 180.0),  # [1,0,1] | [-1,0,-1]
        (0, 4, "y", 60.0),
        (0, 6, "x", 120.0),
    ],
)
def test_wall_volume_class_maps_and_angle(variant_a, variant_b, normal, angle):
    assert st.wall_angle_deg(variant_a, variant_b) == pytest.approx(angle)
    assert st.wall_angle_deg(variant_b, variant_a) == pytest.approx(angle)
    volume = st.wall_volume((4, 4, 3), variant_a, variant_b, normal)
    assert volume.shape == (4, 4, 3) and volume.dtype == np.int8
    specimen = st.knn_supercell(volume, a_A=A, k_fraction=1.0)
    assert specimen.shape_cells == (4, 4, 3)
    expected = np.full((4, 4), cv.VARIANT_CLASSES[variant_a], dtype=np.int8)
    if normal == "x":
        expected[2:, :] = cv.VARIANT_CLASSES[variant_b]
    else:
        expected[:, 2:] = cv.VARIANT_CLASSES[variant_b]
    np.testing.assert_array_equal(specimen.class_map, expected)
    assert specimen.pure_map.all()
    # Per-atom variants follow the cells, and each domain's Nb is displaced along its own P.
    cells = specimen.atoms.arrays["cell_index"]
    np.testing.assert_array_equal(specimen.atoms.arrays["variant"], volume[cells[:, 0], cells[:, 1], cells[:, 2]])
    nb = specimen.atoms.numbers == 41
    shift = specimen.atoms.positions[nb] - (cells[nb] + [0.5, 0.5, 0.75]) * A
    p = np.array([_unit(cv.VARIANTS[v]) for v in specimen.atoms.arrays["variant"][nb]])
    np.testing.assert_allclose(shift, st.Displacements().nb_A * p, atol=1e-12)


def test_wall_position_and_labels_at():
    volume = st.wall_volume((5, 2, 1), 8, 10, "x", position_cells=1)
    specimen = st.knn_supercell(volume, a_A=A)
    np.testing.assert_array_equal(specimen.class_map[:, 0], [2, 6, 6, 6, 6])
    positions = np.array([[0.5, 0.5], [1.01, 0.5], [-0.5, 0.5], [5.5, 1.5], [0.99, 7.3]]) * A
    labels, defects = specimen.labels_at(positions)
    np.testing.assert_array_equal(labels, [2, 6, 6, 2, 2])  # periodic: x = −a/2 is the last column
    assert labels.dtype == np.int8 and (defects == 0).all()


def test_domain_volume_regions_and_majority_class():
    shape = (3, 2, 4)
    box = ((0, 1), (0, 1), (0, 1))  # one cell of the (0, 0) column, a quarter of its thickness
    column = ((2, 3), (0, 2))  # a whole-thickness box
    volume = st.domain_volume(shape, 0, [(box, 2), (column, 5)])
    assert volume[0, 0, 0] == 2 and (volume[0, 0, 1:] == 0).all() and (volume[2] == 5).all()
    mask = np.zeros(shape, dtype=bool)
    mask[1, 1, :3] = True
    volume = st.domain_volume(shape, 0, [(box, 2), (column, 5), (mask, 9)])
    specimen = st.knn_supercell(volume, a_A=A)
    # Variants 0, 2, 5, 9 are classes RU (1), LD (5), RM (0), MU (2). Column (0, 0): 3 cells RU, 1 LD → RU,
    # mixed; (1, 1): 3 cells MU, 1 RU → MU, mixed; x = 2: RM throughout.
    assert [cv.VARIANT_CLASSES[v] for v in (0, 2, 5, 9)] == [1, 5, 0, 2]
    expected_class = np.array([[1, 1], [1, 2], [0, 0]])
    np.testing.assert_array_equal(specimen.class_map, expected_class)
    np.testing.assert_array_equal(specimen.pure_map, [[False, True], [True, False], [True, True]])


# --- bad inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: st.knn_supercell(12, 2, 0.8), "variant 12"),
        (lambda: st.knn_supercell(-1, 2, 0.8), "variant -1"),
        (lambda: st.knn_supercell(0, 2, 0.8, k_fraction=1.5), "k_fraction"),
        (lambda: st.knn_supercell(0, 2, 0.8, k_fraction=-0.1), "k_fraction"),
        (lambda: st.knn_supercell(0, 2, 0.0), "thickness"),
        (lambda: st.knn_supercell(np.full((2, 2, 2), 13, dtype=np.int8)), "variant 13"),
        (lambda: st.wall_volume((4, 4, 2), 0, 1, normal="z"), "normal"),
        (lambda: st.wall_volume((4, 4, 2), 0, 12), "variant 12"),
        (lambda: st.domain_volume((2, 2, 2), 0, [(np.ones((2, 2, 3), dtype=bool), 1)]), "shape"),
    ],
)
def test_bad_inputs_raise_one_line_value_errors(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


# --- mistilt -----------------------------------------------------------------------------------

def test_tilt_specimen_is_a_shear_and_a_copy():
    atoms = st.knn_supercell(4, 2, 2.0, A).atoms
    same = st.tilt_specimen(atoms, (0.0, 0.0))
    assert same is not atoms
    np.testing.assert_array_equal(same.positions, atoms.positions)
    tilted = st.tilt_specimen(atoms, (0.5, -0.3))
    z = atoms.positions[:, 2]
    np.testing.assert_allclose(tilted.positions[:, 0] - atoms.positions[:, 0], z * np.tan(0.5e-3), atol=1e-12)
    np.testing.assert_allclose(tilted.positions[:, 1] - atoms.positions[:, 1], z * np.tan(-0.3e-3), atol=1e-12)
    np.testing.assert_array_equal(tilted.positions[:, 2], z)
    np.testing.assert_array_equal(tilted.cell, atoms.cell)
    tilted.positions[:] = 0.0
    assert atoms.positions.any()  # the original is untouched
