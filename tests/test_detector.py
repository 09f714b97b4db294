"""Detector geometry and count-conserving resampling (polar4d_lib.detector)."""

import numpy as np
import pytest

from polar4d_lib.detector import DetectorGeometry, overlap_matrix, resample


def _blob(n: int, center: tuple[float, float], width: float, seed: int = 0) -> np.ndarray:
    """A lumpy, asymmetric pattern whose mass lies well inside an n × n grid."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    p = np.exp(-((x - center[0]) ** 2 + (y - center[1]) ** 2) / (2 * width**2))
    p *= 1 + 0.5 * rng.random((n, n))
    p[p < 1e-12] = 0.0
    return p / p.sum()


def _com(p: np.ndarray) -> np.ndarray:
    x, y = np.meshgrid(np.arange(p.shape[-2]), np.arange(p.shape[-1]), indexing="ij")
    return np.array([(p * x).sum(), (p * y).sum()]) / p.sum()


# --- DetectorGeometry ------------------------------------------------------------------------

def test_geometry_default_center_is_n_over_2():
    g = DetectorGeometry((64, 63), 0.5)
    ax, ay = g.angles_mrad()
    assert g.center == (32.0, 31.0)
    assert ax.shape == (64,) and ay.shape == (63,)
    assert ax[32] == 0.0 and ay[31] == 0.0
    np.testing.assert_allclose(np.diff(ax), 0.5)
    assert ax[0] == -16.0


def test_geometry_custom_center():
    g = DetectorGeometry((10, 10), 2.0, center_px=(4.5, 5.25))
    ax, ay = g.angles_mrad()
    np.testing.assert_allclose(ax, (np.arange(10) - 4.5) * 2.0)
    np.testing.assert_allclose(ay, (np.arange(10) - 5.25) * 2.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shape=(64, 64), sampling_mrad=0.0), "positive"),
        (dict(shape=(64, 64), sampling_mrad=-1.0), "positive"),
        (dict(shape=(64, 64), sampling_mrad=float("nan")), "positive"),
        (dict(shape=(64,), sampling_mrad=1.0), "pair of positive ints"),
        (dict(shape=(64, 0), sampling_mrad=1.0), "pair of positive ints"),
        (dict(shape=(64.0, 64), sampling_mrad=1.0), "pair of positive ints"),
        (dict(shape=(8, 8), sampling_mrad=1.0, center_px=(np.inf, 1)), "finite"),
    ],
)
def test_geometry_validation(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        DetectorGeometry(**kwargs)
    assert "\n" not in str(info.value)


# --- overlap matrix --------------------------------------------------------------------------

def test_overlap_matrix_known_values():
    # input pixels of 1 mrad centred at -1, 0, 1; one output pixel of 2 mrad centred at 0.
    w = overlap_matrix(3, 1.0, 1, 1, 2.0, 0)
    np.testing.assert_allclose(w, [[0.5, 1.0, 0.5]])
    # half-pixel shift: output pixels of 1 mrad centred at -0.5, 0.5 over the same input
    w = overlap_matrix(3, 1.0, 1, 2, 1.0, 0.5)
    np.testing.assert_allclose(w, [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])


# --- resample --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "s_in, s_out, n_in, n_out",
    [
        (1.0, 0.5, 32, 64),  # up-sampling ×2
        (1.0, 0.37, 24, 80),  # up-sampling, non-integer ratio
        (0.5, 1.0, 64, 32),  # down-sampling ×2
        (0.5, 1.3, 64, 30),  # down-sampling, non-integer ratio
        (0.73, 0.73, 40, 52),  # same sampling, larger grid
    ],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_resample_conserves_counts(s_in, s_out, n_in, n_out, dtype):
    p = np.stack([_blob(n_in, (n_in / 2 - 1.3, n_in / 2 + 0.7), n_in / 10, seed=s) for s in range(3)])
    p = (p * 1000).astype(dtype)
    out = resample(p, s_in, s_out, (n_out, n_out))
    assert out.shape == (3, n_out, n_out)
    assert out.dtype == dtype
    np.testing.assert_allclose(out.sum(axis=(-2, -1)), p.astype(np.float64).sum(axis=(-2, -1)), rtol=1e-5)
    # the centre of mass, in mrad, is kept to a small fraction of a pixel (exactly for integer ratios)
    for a, b in zip(p, out):
        com_in = (_com(a) - n_in // 2) * s_in
        com_out = (_com(b) - n_out // 2) * s_out
        np.testing.assert_allclose(com_out, com_in, atol=1e-2 * max(s_in, s_out))


def test_resample_identity():
    p = np.random.default_rng(1).random((2, 5, 17, 19))
    out = resample(p, 0.8, 0.8, (17, 19))
    np.testing.assert_allclose(out, p, rtol=1e-12, atol=1e-15)


def test_resample_matches_einsum_and_vectorises():
    rng = np.random.default_rng(2)
    p = rng.random((4, 3, 20, 22))
    out = resample(p, 1.0, 1.7, (15, 11), center_in_px=(9.6, 11.2), center_out_px=(7.3, 5.0))
    wx = overlap_matrix(20, 1.0, 9.6, 15, 1.7, 7.3)
    wy = overlap_matrix(22, 1.0, 11.2, 11, 1.7, 5.0)
    np.testing.assert_allclose(out, np.einsum("ij,...jk,lk->...il", wx, p, wy), rtol=1e-12)
    np.testing.assert_allclose(out[2, 1], resample(p[2, 1], 1.0, 1.7, (15, 11), (9.6, 11.2), (7.3, 5.0)))


@pytest.mark.parametrize("s_out, n_out", [(2.0, 16), (0.5, 64), (1.0, 33), (1.0, 31)])
def test_resample_delta_stays_at_center(s_out, n_out):
    p = np.zeros((32, 32))
    p[16, 16] = 1.0
    out = resample(p, 1.0, s_out, (n_out, n_out))
    assert out.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.unravel_index(np.argmax(out), out.shape) == (n_out // 2, n_out // 2)
    np.testing.assert_allclose(_com(out), [n_out // 2, n_out // 2], atol=1e-12)


def test_resample_subpixel_center_offset_moves_center_of_mass():
    p = _blob(48, (24, 24), 3.0)
    out = resample(p, 1.0, 1.0, (48, 48), center_in_px=(24.0, 24.0), center_out_px=(24.35, 23.2))
    assert out.sum() == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(_com(out) - _com(p), [0.35, -0.8], atol=1e-9)


def test_resample_drops_what_leaves_the_field_of_view():
    p = np.ones((10, 10))
    out = resample(p, 1.0, 1.0, (4, 4))  # centred crop of 4 × 4 pixels
    assert out.sum() == pytest.approx(16.0)


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.full((8, 8), np.nan), 1.0, 1.0, (8, 8)), "NaN"),
        ((np.full((8, 8), np.inf), 1.0, 1.0, (8, 8)), "NaN or inf"),
        ((np.ones(8), 1.0, 1.0, (8, 8)), "at least 2 dimensions"),
        ((np.ones((8, 8)), 0.0, 1.0, (8, 8)), "sampling_in_mrad"),
        ((np.ones((8, 8)), 1.0, -2.0, (8, 8)), "sampling_out_mrad"),
        ((np.ones((8, 8)), 1.0, 1.0, (8, -1)), "shape_out"),
        ((np.ones((8, 8), dtype=complex), 1.0, 1.0, (8, 8)), "real"),
    ],
)
def test_resample_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match) as info:
        resample(*args)
    assert "\n" not in str(info.value)
