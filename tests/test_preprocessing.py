"""Preprocessing (polar4d_lib.preprocessing): resampling, centring, crop, normalisation, the CoM filter."""

import json

import numpy as np
import pytest

from polar4d_lib import acquisition, datasets, detector
from polar4d_lib import preprocessing as pp

OFFSET_PX = (3.3, -2.1)  # disk centre offset in input pixels (0.8 mrad/px)


def _disk(n: int = 128, sampling: float = 0.8, radius_mrad: float = 24.0,
          offset_px: tuple[float, float] = OFFSET_PX, supersample: int = 8) -> np.ndarray:
    """A uniform disk (value 1 inside) of ``radius_mrad`` centred at n//2 + offset_px, with
    anti-aliased edges (each pixel holds the covered fraction, by supersampling)."""
    sub = (np.arange(n * supersample) + 0.5) / supersample - 0.5  # sub-pixel centres in px
    x, y = np.meshgrid(sub - n // 2 - offset_px[0], sub - n // 2 - offset_px[1], indexing="ij")
    inside = (np.hypot(x, y) * sampling <= radius_mrad).astype(np.float64)
    return inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3))


def _centroid(p: np.ndarray) -> np.ndarray:
    x, y = np.meshgrid(np.arange(p.shape[-2]), np.arange(p.shape[-1]), indexing="ij")
    return np.array([(p * x).sum(), (p * y).sum()]) / p.sum()


# --- resampling ------------------------------------------------------------------------------

def test_resample_conserves_counts_and_keeps_the_zero_angle_at_n_over_2():
    disk = _disk()
    for s_out in (1.5, 0.5):
        out = pp.resample_to(disk, 0.8, s_out)
        assert out.sum() == pytest.approx(disk.sum(), rel=1e-10)
        # the field of view is kept: the canvas covers ±(64.5 · 0.8) mrad at least
        assert (out.shape[0] // 2) * s_out >= 64 * 0.8
    delta = np.zeros((64, 64))
    delta[32, 32] = 1.0
    out = pp.resample_to(delta, 1.0, 2.0)  # the central pixel falls inside the central output pixel
    n = out.shape[0]
    assert out[n // 2, n // 2] == pytest.approx(1.0) and out.sum() == pytest.approx(1.0)
    assert pp.resample_to(delta, 1.5, 1.5) is delta  # equal samplings: unchanged


def test_canvas_shape_is_even_and_holds_the_field_of_view():
    assert pp.canvas_shape((128, 128), 0.8, 1.5) == (70, 70)
    assert pp.canvas_shape((64, 63), 1.0, 2.0) == (34, 34)


# --- centring and crop -----------------------------------------------------------------------

@pytest.mark.parametrize("center", ["dataset", "pattern"])
def test_offset_disk_lands_centred_in_the_crop(center):
    disks = np.stack([_disk(), _disk()])
    out = pp.Preprocessor(sampling_mrad=1.5, size=64, center=center).transform(disks, 0.8)
    assert out.shape == (2, 64, 64) and out.dtype == np.float32
    for pattern in out:
        assert np.all(np.abs(_centroid(pattern) - 32.0) < 0.5)


@pytest.mark.parametrize("center", ["dataset", "pattern"])
def test_a_disk_on_a_wide_detector_is_found(center):
    # 256 px at 1.9 mrad/px: the 24 mrad disk covers 1 % of the detector, less than the 5 % above the bright
    # percentile; a faint noisy dark field around it must not pull the centre away
    rng = np.random.default_rng(0)
    disks = np.stack([_disk(n=256, sampling=1.9, offset_px=(2.4, -1.7)) * 1e3 + rng.poisson(2.0, (256, 256))
                      for _ in range(2)])
    out = pp.Preprocessor(sampling_mrad=3.0, size=32, center=center).transform(disks, 1.9)
    for pattern in out:
        inner = np.where(pattern > 0.5, pattern, 0)  # the disk, without the dark field
        assert np.all(np.abs(_centroid(inner) - 16.0) < 0.3)


def test_nominal_centre_keeps_the_offset():
    out = pp.Preprocessor(sampling_mrad=1.5, size=64, center="nominal").transform(_disk(), 0.8)
    expected = 32.0 + np.asarray(OFFSET_PX) * 0.8 / 1.5  # (33.76, 30.88)
    np.testing.assert_allclose(_centroid(out[0]), expected, atol=0.1)


def test_pattern_centre_follows_each_pattern_and_dataset_centre_is_shared():
    disks = np.stack([_disk(offset_px=(4.0, 0.0)), _disk(offset_px=(-4.0, 0.0))])
    per_pattern = pp.Preprocessor(center="pattern").transform(disks, 0.8)
    shared = pp.Preprocessor(center="dataset").transform(disks, 0.8)
    for i, sign in enumerate((1, -1)):
        assert np.all(np.abs(_centroid(per_pattern[i]) - 32.0) < 0.5)
        # one centre for both (their mean, the nominal centre): each keeps its own offset
        np.testing.assert_allclose(_centroid(shared[i]), [32.0 + sign * 4.0 * 0.8 / 1.5, 32.0], atol=0.1)
    centers = pp.disk_center_px(disks)
    np.testing.assert_allclose(centers, [[68.0, 64.0], [60.0, 64.0]], atol=0.05)
    np.testing.assert_allclose(pp.dataset_center_px(disks), (64.0, 64.0), atol=0.05)


def test_crop_is_count_conserving_subpixel_shift_equal_to_detector_resample():
    rng = np.random.default_rng(0)
    p = rng.random((3, 40, 36))
    centers = np.array([[20.3, 17.8], [3.7, -4.2], [19.0, 18.0]])
    out = pp.crop(p, centers, 16)
    for i, c in enumerate(centers):
        ref = detector.resample(p[i], 1.0, 1.0, (16, 16), center_in_px=tuple(c), center_out_px=(8, 8))
        np.testing.assert_allclose(out[i], ref, atol=1e-12)
    np.testing.assert_array_equal(out[2], p[2, 11:27, 10:26])  # an integer centre is a plain slice
    # one centre for all patterns (the 'dataset' and 'nominal' path): the same windows
    np.testing.assert_array_equal(pp.crop(p, (19.0, 18.0), 16), p[:, 11:27, 10:26])
    shared = detector.resample(p, 1.0, 1.0, (16, 16), center_in_px=(3.7, -4.2), center_out_px=(8, 8))
    np.testing.assert_allclose(pp.crop(p, (3.7, -4.2), 16), shared, atol=1e-12)
    assert np.all(out[1, :4] == 0) and np.all(out[1, :, :12] == 0)  # zero-padded outside the pattern
    blob = acquisition.shift_center(_disk(64, 1.5, 10.0, (0.0, 0.0)), (0.0, 0.0))
    assert pp.crop(blob, (31.6, 32.25), 48).sum() == pytest.approx(blob.sum(), rel=1e-6)


# --- normalisation ---------------------------------------------------------------------------

def test_minmax_per_pattern_and_the_alternatives():
    rng = np.random.default_rng(1)
    p = rng.random((3, 8, 8)) * np.array([1.0, 50.0, 1e-3])[:, None, None] + np.array([0.0, 5.0, 2.0])[:, None, None]
    mm = pp.normalize(p, "minmax")
    np.testing.assert_allclose(mm.min(axis=(1, 2)), 0.0)
    np.testing.assert_allclose(mm.max(axis=(1, 2)), 1.0)
    np.testing.assert_allclose(pp.normalize(p, "total").sum(axis=(1, 2)), 1.0)
    log = pp.normalize(p, "log")
    assert log.min() == 0.0 and log.max() == 1.0
    assert np.array_equal(np.argsort(log[1], axis=None), np.argsort(p[1], axis=None))  # monotonic
    assert pp.normalize(p, "none") is p
    assert np.all(pp.normalize(np.ones((2, 4, 4)), "minmax") == 0)  # a flat pattern → 0
    out = pp.Preprocessor(normalize="minmax").transform(np.stack([_disk(), 3 * _disk()]), 0.8)
    np.testing.assert_allclose(out.min(axis=(1, 2)), 0.0)
    np.testing.assert_allclose(out.max(axis=(1, 2)), 1.0)


# --- the stored preprocessor -----------------------------------------------------------------

def test_to_dict_from_dict_round_trip_gives_identical_output():
    rng = np.random.default_rng(2)
    patterns = _disk()[None] * (1 + 0.3 * rng.random((4, 128, 128)))
    for prep in (pp.Preprocessor(), pp.Preprocessor(1.2, 48, "pattern", 90.0, "log")):
        again = pp.Preprocessor.from_dict(json.loads(json.dumps(prep.to_dict())))
        assert again == prep
        np.testing.assert_array_equal(again.transform(patterns, 0.8), prep.transform(patterns, 0.8))
    other = pp.Preprocessor.from_dict({**pp.Preprocessor().to_dict(), "center": "nominal"})
    assert not np.array_equal(other.transform(patterns, 0.8), pp.Preprocessor().transform(patterns, 0.8))


def test_transform_rejects_bad_input_with_one_line_errors():
    prep = pp.Preprocessor()
    good = _disk(32, 3.0)
    bad = good.copy()
    bad[3, 3] = np.nan
    cases = [
        (lambda: prep.transform(bad, 3.0), "NaN"),
        (lambda: prep.transform(np.where(bad == bad, good, np.inf), 3.0), "NaN or inf"),
        (lambda: prep.transform(good[0], 3.0), "2 .* or 3 .* dimensions"),
        (lambda: prep.transform(good[None, None], 3.0), "reshape a 4D scan"),
        (lambda: prep.transform(good, None), "angular sampling unknown: pass sampling_mrad"),
        (lambda: prep.transform(good, 0.0), "positive"),
        (lambda: prep.transform(good, -1.5), "positive"),
        (lambda: pp.Preprocessor(center="middle"), "center .middle. unknown"),
        (lambda: pp.Preprocessor(normalize="zscore"), "normalize .zscore. unknown"),
        (lambda: pp.Preprocessor.from_dict({"size": 64, "crop": 32}), "unknown preprocessing parameter"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            call()
        assert "\n" not in str(error.value)


# --- the CoM filter --------------------------------------------------------------------------

def test_com_filter_keeps_the_large_shifts_per_group():
    base = _disk(48, 1.0, 8.0, (0.0, 0.0)) + 0.1 * _disk(48, 1.0, 3.0, (1.0, 2.0))
    shifts_a = [(-2, 0), (-1, 0), (0, 0), (1, 0), (2, 0)]  # |shift| 2 1 0 1 2 → norm 1 .5 0 .5 1, mean .6
    shifts_b = [(0, 0), (0, 0), (0, 0), (0, 0), (0, 3)]  # mean (0, .6): |.| .6 .6 .6 .6 2.4 → norm 0 0 0 0 1
    patterns = np.stack([acquisition.shift_center(base, s) for s in shifts_a + shifts_b])
    groups = np.repeat([7, 3], 5)
    keep = pp.com_filter(patterns, 0.5, groups)
    assert keep.dtype == bool and keep.shape == (10,)
    np.testing.assert_array_equal(keep, [1, 0, 0, 0, 1, 0, 0, 0, 0, 1])
    # a lower threshold keeps more (norm > 0.5 · mean: > 0.3 in group a, > 0.1 in group b)
    np.testing.assert_array_equal(pp.com_filter(patterns, 0.5, groups, threshold=0.5), [1, 1, 0, 1, 1, 0, 0, 0, 0, 1])
    # pooled into one group, the reference (mean shift (0, 0.3)) and the scaling change: norms
    # .72 .31 0 .31 .72 | 0 0 0 0 1, mean .306
    np.testing.assert_array_equal(pp.com_filter(patterns, 0.5, None), [1, 1, 0, 1, 1, 0, 0, 0, 0, 1])
    # the sampling only scales the shifts: the mask does not depend on it
    np.testing.assert_array_equal(pp.com_filter(patterns, 2.0, groups), keep)
    with pytest.raises(ValueError, match="one value per pattern"):
        pp.com_filter(patterns, 0.5, groups[:3])
    with pytest.raises(ValueError, match="angular sampling unknown"):
        pp.com_filter(patterns, None, groups)


def test_com_filter_on_the_smoke_dataset(smoke_dataset):
    """On the session's smoke dataset (conftest: 3 specimens, 4 positions × 2 thicknesses each)."""
    ds = datasets.open_dataset(smoke_dataset.path)
    patterns, unit, frac = ds["patterns"], ds["unit"], ds["position_frac"]
    thickness_index = np.unique(ds["thickness_nm"], return_inverse=True)[1]
    groups = unit * 100 + thickness_index
    keep = pp.com_filter(patterns, ds.attrs["q_sampling_mrad"], groups)
    for g in np.unique(groups):
        assert 0 < keep[groups == g].sum() < (groups == g).sum()
    # The paper keeps 40–45 % of its 128 × 128 scans of 20–50 nm. On thin (≤ 4 nm) specimens the CoM
    # shift is sharply peaked at the atomic columns, the normalised shifts are skewed and fewer lie
    # above their mean: 42 % here, 30 % on the full smoke profile (16 patterns per group).
    assert 0.25 <= keep.mean() <= 0.6
    # Physics: the large CoM shifts are those of probes near an atomic column (A, Nb–O, O columns).
    columns = np.array([[0.0, 0.0], [0.5, 0.5], [0.5, 0.0], [0.0, 0.5]])
    d = frac[:, None, :] - columns[None]
    distance = np.linalg.norm(d - np.round(d), axis=-1).min(axis=1)
    assert distance[keep].mean() < 0.8 * distance[~keep].mean()
