"""The frame, the 8 classes and their D4 symmetry (polar4d_lib.conventions)."""

from __future__ import annotations

import numpy as np
import pytest

from polar4d_lib import conventions as cv
from polar4d_lib.detector import center_of_mass_mrad

ROT90 = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])  # +90° about z: x → y
MIRROR_X = np.diag([-1, 1, 1])
MIRROR_Y = np.diag([1, -1, 1])


# --- classes -------------------------------------------------------------------------------------

def test_class_table():
    assert cv.N_CLASSES == 8
    assert cv.CLASS_NAMES == ("RM", "RU", "MU", "LU", "LM", "LD", "MD", "RD")
    np.testing.assert_array_equal(cv.CLASS_ANGLES_DEG, np.arange(8) * 45.0)
    np.testing.assert_array_equal(cv.class_from_angle(cv.CLASS_ANGLES_DEG), np.arange(8))


@pytest.mark.parametrize(
    "angle, k",
    [(0.0, 0), (22.49, 0), (22.51, 1), (-22.49, 0), (-22.51, 7), (67.49, 1), (67.51, 2), (180.0, 4),
     (202.4, 4), (202.6, 5), (337.51, 0), (337.49, 7), (360.0, 0), (405.0, 1), (-90.0, 6), (-720.0, 0)],
)
def test_class_from_angle_sector_edges(angle, k):
    assert cv.class_from_angle(angle) == k


def test_class_from_angle_exact_edges_respect_d4():
    # An exact sector edge (an odd multiple of 22.5°) belongs to one of its two neighbouring classes, by a
    # rule the D4 maps respect (ties to the axial or to the diagonal class both do; "always
    # counter-clockwise" would not).
    edges = 22.5 + 45.0 * np.arange(8)
    k = cv.class_from_angle(edges)
    assert ((k == np.arange(8)) | (k == (np.arange(8) + 1) % 8)).all()
    np.testing.assert_array_equal(cv.class_from_angle(edges + 90.0), cv.rotate90_class(k))
    np.testing.assert_array_equal(cv.class_from_angle(180.0 - edges), cv.mirror_x_class(k))
    np.testing.assert_array_equal(cv.class_from_angle(-edges), cv.mirror_y_class(k))


def test_class_from_angle_is_int8_and_vectorised():
    k = cv.class_from_angle(np.array([[0.0, 45.0], [90.0, 315.0]]))
    assert k.dtype == np.int8 and k.shape == (2, 2)
    np.testing.assert_array_equal(k, [[0, 1], [2, 7]])


def test_class_from_vector():
    np.testing.assert_array_equal(cv.class_from_vector(np.array([[1, 0], [1, 1], [0, 1], [-1, -0.1]])), [0, 1, 2, 4])
    np.testing.assert_array_equal(cv.VARIANT_CLASSES, [1, 3, 5, 7, 0, 0, 4, 4, 2, 2, 6, 6])
    with pytest.raises(ValueError, match="no in-plane component"):
        cv.class_from_vector(np.array([0.0, 0.0, 1.0]))


def test_class_names_and_indices():
    assert [cv.class_name(k) for k in range(8)] == list(cv.CLASS_NAMES)
    assert cv.class_name(9) == "RU"
    assert cv.class_index("lu") == 3 and cv.class_index(np.int64(6)) == 6 and cv.class_index(0) == 0
    for bad in ("XX", 8, -1, 2.0, None):
        with pytest.raises(ValueError, match="unknown class") as info:
            cv.class_index(bad)
        assert "\n" not in str(info.value)


def test_circular_distance():
    i, j = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    d = cv.circular_distance(i, j)
    expected = np.array([[min(abs(a - b), 8 - abs(a - b)) for b in range(8)] for a in range(8)])
    np.testing.assert_array_equal(d, expected)
    np.testing.assert_array_equal(d, d.T)
    assert d.max() == 4 and (np.diag(d) == 0).all()
    assert cv.circular_distance(0, 7) == 1 and cv.circular_distance(1, 5) == 4 and cv.circular_distance(6, 1) == 3
    # The distance is invariant under the D4 maps.
    for f in (cv.rotate90_class, cv.mirror_x_class, cv.mirror_y_class):
        np.testing.assert_array_equal(cv.circular_distance(f(i), f(j)), d)


# --- D4 on labels: a group action ----------------------------------------------------------------

def test_label_maps_form_a_d4_action():
    k = np.arange(8)
    np.testing.assert_array_equal(cv.rotate90_class(k, 4), k)
    np.testing.assert_array_equal(cv.rotate90_class(cv.rotate90_class(k, 3)), k)
    np.testing.assert_array_equal(cv.rotate90_class(k, -1), cv.rotate90_class(k, 3))
    np.testing.assert_array_equal(cv.mirror_x_class(cv.mirror_x_class(k)), k)
    np.testing.assert_array_equal(cv.mirror_y_class(cv.mirror_y_class(k)), k)
    # mirror_y = rotate180 ∘ mirror_x; m r m = r⁻¹.
    np.testing.assert_array_equal(cv.mirror_y_class(k), cv.rotate90_class(cv.mirror_x_class(k), 2))
    np.testing.assert_array_equal(cv.mirror_x_class(cv.rotate90_class(cv.mirror_x_class(k))), cv.rotate90_class(k, 3))
    np.testing.assert_array_equal(cv.rotate90_class(k), [2, 3, 4, 5, 6, 7, 0, 1])
    np.testing.assert_array_equal(cv.mirror_x_class(k), [4, 3, 2, 1, 0, 7, 6, 5])
    np.testing.assert_array_equal(cv.mirror_y_class(k), [0, 7, 6, 5, 4, 3, 2, 1])


@pytest.mark.parametrize("variant", range(12))
@pytest.mark.parametrize(
    "matrix, label_map",
    [(ROT90, cv.rotate90_class), (ROT90 @ ROT90, lambda k: cv.rotate90_class(k, 2)),
     (MIRROR_X, cv.mirror_x_class), (MIRROR_Y, cv.mirror_y_class)],
    ids=["rotate90", "rotate180", "mirror_x", "mirror_y"],
)
def test_label_maps_agree_with_vector_maps(variant, matrix, label_map):
    p = cv.VARIANTS[variant].astype(float)
    assert cv.class_from_vector(matrix @ p) == label_map(cv.class_from_vector(p))
    # The transformed polarization is again one of the 12 variants.
    assert any((cv.VARIANTS == matrix @ p).all(1))


def test_label_maps_agree_with_vector_maps_off_axis():
    angles = np.random.default_rng(0).uniform(0, 360, 500)
    angles = angles[np.abs((angles % 45) - 22.5) > 0.01]  # away from sector edges
    p = np.stack([np.cos(np.radians(angles)), np.sin(np.radians(angles)), np.zeros_like(angles)], -1)
    k = cv.class_from_vector(p)
    for matrix, f in ((ROT90, cv.rotate90_class), (MIRROR_X, cv.mirror_x_class), (MIRROR_Y, cv.mirror_y_class)):
        np.testing.assert_array_equal(cv.class_from_vector(p @ matrix.T), f(k))


# --- D4 on patterns --------------------------------------------------------------------------------

def _asymmetric(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((2, n, n))  # a stack, to check the leading axes too


@pytest.mark.parametrize("n", [7, 8])
def test_pattern_maps_are_involutions_and_rotation_has_order_4(n):
    p = _asymmetric(n)
    for times in (1, 2, 3):
        assert not np.array_equal(cv.rotate90_pattern(p, times), p)
    np.testing.assert_array_equal(cv.rotate90_pattern(p, 4), p)
    np.testing.assert_array_equal(cv.rotate90_pattern(cv.rotate90_pattern(p), 3), p)
    np.testing.assert_array_equal(cv.rotate90_pattern(p, 0), p)
    for mirror in (cv.mirror_x_pattern, cv.mirror_y_pattern):
        assert not np.array_equal(mirror(p), p)
        np.testing.assert_array_equal(mirror(mirror(p)), p)
    np.testing.assert_array_equal(cv.rotate90_pattern(p, 2), cv.mirror_x_pattern(cv.mirror_y_pattern(p)))
    np.testing.assert_array_equal(cv.mirror_y_pattern(p), cv.rotate90_pattern(cv.mirror_x_pattern(p), 2))


@pytest.mark.parametrize("n", [7, 8])
def test_rotation_composed_with_mirror_is_a_diagonal_mirror(n):
    p = _asymmetric(n)
    c = n // 2
    # mirror_x then rotate: (kx, ky) → (−ky, −kx), the anti-diagonal mirror about the centre pixel.
    anti = cv.rotate90_pattern(cv.mirror_x_pattern(p))
    # rotate then mirror_x: (kx, ky) → (ky, kx), the main-diagonal mirror: a plain transpose.
    np.testing.assert_array_equal(cv.mirror_x_pattern(cv.rotate90_pattern(p)), np.swapaxes(p, -1, -2))
    i = (2 * c - np.arange(n)) % n
    np.testing.assert_array_equal(anti, np.swapaxes(p, -1, -2)[..., i[:, None], i[None, :]])
    # The label maps agree: (kx, ky) → (ky, kx) takes angle θ to 90° − θ, class k to 2 − k.
    k = np.arange(8)
    np.testing.assert_array_equal(cv.mirror_x_class(cv.rotate90_class(k)), (2 - k) % 8)
    np.testing.assert_array_equal(cv.rotate90_class(cv.mirror_x_class(k)), (6 - k) % 8)


@pytest.mark.parametrize("n", [7, 8])
def test_maps_keep_the_centre_pixel_and_move_a_spot_as_the_frame_says(n):
    c = n // 2
    p = np.zeros((n, n))
    p[c, c] = 1.0
    p[c + 2, c + 1] = 2.0  # a spot at (kx, ky) = (+2, +1) px
    r = cv.rotate90_pattern(p)
    assert r[c, c] == 1.0 and r[c - 1, c + 2] == 2.0  # rotated +90°: (−1, +2)
    mx, my = cv.mirror_x_pattern(p), cv.mirror_y_pattern(p)
    assert mx[c, c] == 1.0 and mx[c - 2, c + 1] == 2.0
    assert my[c, c] == 1.0 and my[c + 2, c - 1] == 2.0


def _spot_pattern(k: int, n: int = 33) -> np.ndarray:
    """A lumpy pattern whose centre of mass points along class k's direction."""
    c = n // 2
    x, y = np.meshgrid(np.arange(n) - c, np.arange(n) - c, indexing="ij")
    theta = np.radians(k * 45.0 + 10.0)  # 10° off the class axis, inside its sector
    p = np.exp(-(x**2 + y**2) / 40.0) + 0.6 * np.exp(-((x - 6 * np.cos(theta)) ** 2 + (y - 6 * np.sin(theta)) ** 2) / 6.0)
    return p * (1 + 0.05 * np.random.default_rng(k).random((n, n)))


@pytest.mark.parametrize("k", range(8))
@pytest.mark.parametrize(
    "pattern_map, label_map",
    [(cv.rotate90_pattern, cv.rotate90_class), (lambda p: cv.rotate90_pattern(p, 3), lambda k: cv.rotate90_class(k, 3)),
     (cv.mirror_x_pattern, cv.mirror_x_class), (cv.mirror_y_pattern, cv.mirror_y_class)],
    ids=["rotate90", "rotate270", "mirror_x", "mirror_y"],
)
def test_pattern_maps_agree_with_label_maps(k, pattern_map, label_map):
    """A pattern whose centre of mass (Qx first, Qy second) points into class k is mapped to one that
    points into the mapped class."""
    def com_class(p):
        cx, cy = center_of_mass_mrad(p, 1.0)
        return cv.class_from_angle(np.degrees(np.arctan2(cy, cx)))

    p = _spot_pattern(k)
    assert com_class(p) == k
    assert com_class(pattern_map(p)) == label_map(k)


def test_rotation_needs_square_patterns():
    with pytest.raises(ValueError, match="square") as info:
        cv.rotate90_pattern(np.zeros((4, 5)))
    assert "\n" not in str(info.value)


def test_friedel_difference_is_zero_for_a_centrosymmetric_pattern_and_odd_under_inversion():
    rng = np.random.default_rng(0)
    p = rng.random((3, 9, 9))
    symmetric = p + cv.mirror_x_pattern(cv.mirror_y_pattern(p))
    np.testing.assert_allclose(cv.friedel_difference(symmetric), 0.0, atol=1e-12)
    d = cv.friedel_difference(p)
    np.testing.assert_allclose(cv.mirror_x_pattern(cv.mirror_y_pattern(d)), -d)
    assert np.abs(d).max() > 0.1
