"""Post-simulation detector transforms (polar4d_lib.acquisition)."""

import numpy as np
import pytest

from polar4d_lib import acquisition as acq
from polar4d_lib.conventions import rotate90_pattern


def _com(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    x, y = np.meshgrid(np.arange(p.shape[-2]), np.arange(p.shape[-1]), indexing="ij")
    return np.array([(p * x).sum(), (p * y).sum()]) / p.sum()


def _pattern(n: int = 32, seed: int = 0) -> np.ndarray:
    """An ideal-looking pattern: an off-centre, lumpy disc of mass ≈ 1, zero near the edges."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2, indexing="ij")
    p = np.exp(-((x - 1.5) ** 2 / 18 + (y + 0.7) ** 2 / 10)) * (1 + rng.random((n, n)))
    p[np.hypot(x, y) > n / 2 - 4] = 0.0
    return p / p.sum()


# --- dose ------------------------------------------------------------------------------------

def test_dose_mean_is_dose_times_pattern():
    p = _pattern(16) * 0.95  # 5 % of the beam scattered outside the detector
    dose, repeats = 1e4, 400
    counts = acq.apply_dose(np.broadcast_to(p, (repeats, 16, 16)), dose, seed=3)
    assert counts.dtype == np.float32 and counts.shape == (repeats, 16, 16)
    assert np.all(counts == np.round(counts)) and counts.min() >= 0
    expected = dose * p
    # per pixel: the mean of `repeats` Poisson draws has std sqrt(λ / repeats)
    tolerance = 5 * np.sqrt(expected / repeats) + 1e-9
    assert np.all(np.abs(counts.mean(axis=0) - expected) <= tolerance)
    # per pattern total: Poisson with mean 0.95 · dose (the pattern is not renormalised)
    totals = counts.sum(axis=(-2, -1))
    assert abs(totals.mean() - 0.95 * dose) < 5 * np.sqrt(0.95 * dose / repeats)
    assert totals.var() == pytest.approx(0.95 * dose, rel=0.25)


def test_dose_seeded():
    p = _pattern(16)
    a = acq.apply_dose(p, 1e3, seed=7)
    assert np.array_equal(a, acq.apply_dose(p, 1e3, seed=7))
    assert not np.array_equal(a, acq.apply_dose(p, 1e3, seed=8))


def test_dose_rejects_negative_intensity_and_bad_dose():
    with pytest.raises(ValueError, match="negative"):
        acq.apply_dose(-_pattern(8), 1e3, seed=0)
    with pytest.raises(ValueError, match="dose"):
        acq.apply_dose(_pattern(8), 0.0, seed=0)


# --- PSF -------------------------------------------------------------------------------------

def test_psf_conserves_counts_and_broadens_delta_by_sigma_squared():
    n, sigma = 41, 2.0
    delta = np.zeros((2, n, n), dtype=np.float32)
    delta[:, n // 2, n // 2] = 100.0
    out = acq.apply_psf(delta, sigma)
    assert out.dtype == np.float32 and out.shape == delta.shape
    np.testing.assert_allclose(out.sum(axis=(-2, -1)), 100.0, rtol=1e-6)
    x = np.arange(n) - n // 2
    w = out[0].astype(np.float64) / out[0].sum()
    var_x = (w.sum(axis=1) * x**2).sum()
    var_y = (w.sum(axis=0) * x**2).sum()
    assert var_x == pytest.approx(sigma**2, rel=1e-2)
    assert var_y == pytest.approx(sigma**2, rel=1e-2)
    np.testing.assert_allclose(_com(out[0]), [n // 2, n // 2], atol=1e-6)


def test_psf_conserves_counts_even_at_the_edge_and_zero_sigma_is_identity():
    p = np.zeros((16, 16))
    p[0, 3] = 5.0
    assert acq.apply_psf(p, 1.5).sum() == pytest.approx(5.0, rel=1e-6)
    q = _pattern(16)
    np.testing.assert_array_equal(acq.apply_psf(q, 0.0), q.astype(np.float32))


# --- background ------------------------------------------------------------------------------

def test_background_adds_the_right_mean_and_noise():
    p = np.zeros((4, 64, 64))
    out = acq.add_background(p, background_counts=3.0, dark_noise_sigma=2.0, seed=1)
    assert out.dtype == np.float32
    n = out.size
    assert abs(out.mean() - 3.0) < 5 * 2.0 / np.sqrt(n)
    assert out.std() == pytest.approx(2.0, rel=0.03)
    np.testing.assert_allclose(acq.add_background(p, 3.0, 0.0, seed=1), 3.0)
    assert np.array_equal(out, acq.add_background(p, 3.0, 2.0, seed=1))


# --- centre shift and resampling -------------------------------------------------------------

@pytest.mark.parametrize("shift", [(0.3, -1.7), (2.0, 0.0), (-0.55, 0.25)])
def test_shift_center_moves_center_of_mass_exactly(shift):
    p = np.stack([_pattern(48, seed=s) for s in range(2)])
    out = acq.shift_center(p, shift)
    assert out.shape == p.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=(-2, -1)), p.sum(axis=(-2, -1)), rtol=1e-5)
    for a, b in zip(p, out):
        np.testing.assert_allclose(_com(b) - _com(a), shift, atol=1e-3)


def test_resample_detector_shape_and_counts():
    p = _pattern(64)
    out = acq.resample_detector(p, 0.5, 1.1, (40, 40))
    assert out.shape == (40, 40) and out.dtype == np.float32
    assert out.sum() == pytest.approx(p.sum(), rel=1e-5)


# --- scan rotation ---------------------------------------------------------------------------

def test_rotate_scan_90_equals_rotate90_pattern_odd_size():
    p = np.random.default_rng(4).random((3, 33, 33))
    out = acq.rotate_scan(p, 90.0)
    np.testing.assert_allclose(out, rotate90_pattern(p), rtol=1e-6, atol=1e-7)


def test_rotate_scan_matches_rotate90_pattern_even_size_without_nyquist_row():
    p = np.random.default_rng(5).random((2, 32, 32))
    p[..., 0, :] = 0.0  # the Nyquist row/column, which rotate90_pattern wraps round
    p[..., :, 0] = 0.0
    np.testing.assert_allclose(acq.rotate_scan(p, 90.0), rotate90_pattern(p), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(acq.rotate_scan(p, -90.0), rotate90_pattern(p, 3), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(acq.rotate_scan(p, 180.0), rotate90_pattern(p, 2), rtol=1e-6, atol=1e-7)


def test_rotate_scan_direction_and_conservation():
    n = 33
    x, y = np.meshgrid(np.arange(n) - n // 2, np.arange(n) - n // 2, indexing="ij")
    p = np.exp(-((x - 6) ** 2 + y**2) / (2 * 1.5**2))  # a smooth spot at +x
    p /= p.sum()
    out = acq.rotate_scan(p, 30.0)
    assert out.sum() == pytest.approx(1.0, rel=1e-6)
    com = _com(out) - n // 2
    np.testing.assert_allclose(com, [6 * np.cos(np.pi / 6), 6 * np.sin(np.pi / 6)], atol=0.02)
    # a rotation that pushes mass off the detector is rescaled to the original total
    wide = np.random.default_rng(6).random((2, 20, 20))
    np.testing.assert_allclose(acq.rotate_scan(wide, 45.0).sum(axis=(-2, -1)), wide.sum(axis=(-2, -1)),
                               rtol=1e-6)


# --- the full chain --------------------------------------------------------------------------

def test_acquisition_apply_returns_stated_sampling_and_shape():
    p = np.stack([_pattern(64, seed=s) for s in range(3)]).reshape(3, 1, 64, 64)
    a = acq.Acquisition(dose_e_per_pattern=1e4, psf_sigma_px=0.8, background_counts=0.5,
                        dark_noise_sigma=0.3, center_offset_px=(0.4, -0.6), sampling_out_mrad=1.25,
                        shape_out=(48, 40), scan_rotation_deg=7.0, seed=11)
    out, sampling = a.apply(p, 0.6)
    assert sampling == 1.25
    assert out.shape == (3, 1, 48, 40) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    # mean total ≈ dose + background over the detector
    expected = 1e4 + 0.5 * 48 * 40
    assert abs(out.sum(axis=(-2, -1)).mean() - expected) < 5 * np.sqrt(1e4 + 48 * 40 * 0.09)
    out2, _ = a.apply(p, 0.6)
    assert np.array_equal(out, out2)
    a.seed = 12
    assert not np.array_equal(out, a.apply(p, 0.6)[0])


def test_acquisition_defaults_are_identity():
    p = _pattern(32)
    out, sampling = acq.Acquisition().apply(p, 0.9)
    assert sampling == 0.9
    np.testing.assert_array_equal(out, p.astype(np.float32))


def test_acquisition_validates_parameters():
    with pytest.raises(ValueError, match="psf_sigma_px"):
        acq.Acquisition(psf_sigma_px=-1.0)
    with pytest.raises(ValueError, match="dose"):
        acq.Acquisition(dose_e_per_pattern=0.0)
    with pytest.raises(ValueError, match="sampling_out_mrad"):
        acq.Acquisition(sampling_out_mrad=0.0)


# --- input validation ------------------------------------------------------------------------

_CALLS = {
    "apply_dose": lambda p: acq.apply_dose(p, 1e3, seed=0),
    "apply_psf": lambda p: acq.apply_psf(p, 1.0),
    "add_background": lambda p: acq.add_background(p, 1.0, 1.0, seed=0),
    "shift_center": lambda p: acq.shift_center(p, (0.5, 0.5)),
    "resample_detector": lambda p: acq.resample_detector(p, 1.0, 2.0, (8, 8)),
    "rotate_scan": lambda p: acq.rotate_scan(p, 10.0),
    "Acquisition.apply": lambda p: acq.Acquisition(dose_e_per_pattern=1e3).apply(p, 1.0),
}


@pytest.mark.parametrize("name", list(_CALLS))
def test_functions_reject_nan_and_wrong_ndim(name):
    call = _CALLS[name]
    bad = _pattern(16)
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN") as info:
        call(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        call(np.ones(16))
