"""The error-periodicity chapter's measures (polar4d_lib.periodicity): folding into the unit cell, the lattice
spectrum, the information measures and the chapter's scans."""

from __future__ import annotations

import numpy as np
import pytest

from polar4d_lib import config, conventions, periodicity, profiles
from polar4d_lib.simulation import region_grid_positions

A = conventions.A_A


@pytest.mark.parametrize("step_A", [A / 8, A / 5.3, A / 2, 0.7])
def test_fractional_positions_are_the_raster_positions_modulo_the_cell(step_A):
    origin = tuple(np.random.default_rng(3).uniform(0, 3 * A, 2))
    positions, shape = region_grid_positions(origin, (3 * A, 3 * A), step_A)
    fractions = periodicity.fractional_positions(shape, step_A, origin, A)
    assert fractions.shape == shape + (2,)
    expected = np.mod(positions / A, 1.0).reshape(shape + (2,))
    np.testing.assert_allclose(fractions, expected, atol=1e-12)
    assert fractions.min() >= 0 and fractions.max() < 1


def test_fold_recovers_a_function_of_the_place_in_the_cell():
    bins = 8
    table = np.arange(bins * bins, dtype=float).reshape(bins, bins)
    fractions = periodicity.fractional_positions((40, 40), A / 5.3, (1.234, 2.71), A)
    b = periodicity.bin_index(fractions, bins)
    values = table[b[..., 0], b[..., 1]]
    mean, counts = periodicity.fold(values, fractions, bins)
    filled = counts > 0
    assert counts.sum() == 40 * 40
    np.testing.assert_array_equal(mean[filled], table[filled])
    assert np.isnan(mean[~filled]).all()


def test_bin_index_centres_bins_on_the_grid_of_the_cell():
    fractions = np.array([[0.0, 0.0], [0.99, 0.01], [0.5, 0.124], [0.5, 0.126]])
    assert periodicity.bin_index(fractions, 4).tolist() == [[0, 0], [0, 0], [2, 0], [2, 1]]


def test_fold_refuses_values_without_positions():
    with pytest.raises(ValueError, match="3 values but 4 positions"):
        periodicity.fold(np.zeros(3), np.zeros((4, 2)), 4)


def test_lattice_spectrum_finds_the_period_and_not_in_noise():
    fractions = periodicity.fractional_positions((16, 16), A / 8, (0.9, 2.2), A)
    periodic = (periodicity.bin_index(fractions, 8) == 0).all(axis=-1).astype(float)
    _, share, white = periodicity.lattice_spectrum(periodic[None], A / 8, A)
    assert share == pytest.approx(1.0)
    assert white == pytest.approx(63 / 255)  # 8 × 8 harmonics of 16 × 16 frequencies, the zero left out
    noise = np.random.default_rng(0).random((200, 16, 16))
    _, share, white = periodicity.lattice_spectrum(noise, A / 8, A)
    assert share == pytest.approx(white, abs=0.02)


def test_bhattacharyya_distance_is_zero_for_identical_patterns_and_grows_with_their_difference():
    rng = np.random.default_rng(1)
    base = rng.random(100)
    base /= base.sum()
    other = rng.random(100)
    other /= other.sum()
    distances = []
    for t in (0.0, 0.1, 0.3, 1.0):
        pair = np.stack([base, (1 - t) * base + t * other])
        distances.append(periodicity.bhattacharyya_distances(pair, 1e4)[0, 1])
    assert distances[0] == pytest.approx(0.0, abs=1e-9)
    assert np.all(np.diff(distances) > 0)
    d = periodicity.bhattacharyya_distances(np.stack([base, other]), 1e4)
    assert np.allclose(d, d.T) and np.allclose(np.diag(d), 0)
    assert periodicity.bhattacharyya_distances(np.stack([base, other]), 2e4)[0, 1] == pytest.approx(2 * d[0, 1])


def test_bayes_observer_is_at_chance_on_identical_classes_and_right_on_distinct_ones():
    rng = np.random.default_rng(2)
    one = rng.random((1, 1, 2, 50))
    one /= one.sum(-1, keepdims=True)
    identical = np.repeat(one, 4, axis=1)  # (1 position, 4 classes, 2 draws, 50 px)
    assert periodicity.bayes_accuracy(identical, 1e3, samples=200, seed=0)[0] == pytest.approx(0.25, abs=0.05)
    distinct = np.zeros((1, 4, 2, 50))
    for c in range(4):
        distinct[0, c, :, 10 * c:10 * c + 10] = 0.1
    assert periodicity.bayes_accuracy(distinct, 1e3, samples=20, seed=0)[0] == 1.0
    with pytest.raises(ValueError, match="positions, classes, draws, pixels"):
        periodicity.bayes_accuracy(distinct[0], 1e3)


def test_column_sites_of_the_projected_perovskite_cell():
    sites = periodicity.column_site(np.array([[0.02, 0.97], [0.5, 0.52], [0.0, 0.5], [0.5, 0.96], [0.25, 0.25]]))
    assert sites.tolist() == ["A column", "B–O column", "O column", "O column", "between columns"]


def test_settings_of_every_profile_load_and_unknown_keys_are_named():
    for profile in profiles.names():
        if profiles.section(profile, "periodicity"):
            periodicity.PeriodicitySettings.for_profile(profile)
    with pytest.raises(KeyError, match="bogus"):
        periodicity.PeriodicitySettings.for_profile("smoke", {"bogus": 1})


@pytest.mark.slow
def test_smoke_scans_know_where_their_positions_are_and_the_information_patterns_are_ideal(smoke_book):
    settings = periodicity.PeriodicitySettings.for_profile("smoke")
    with config.set({"progress_bar": False}):  # the smoke book's chapter simulated them into its cache
        scans, means = periodicity.build(settings, cache_dir=smoke_book / "cache")
    assert len(scans) == len(settings.classes) * len(settings.thicknesses_nm) * settings.origins
    per_side = settings.cells * round(A / settings.step_A)
    for item in scans:
        assert item.scan.data.shape[:2] == (per_side, per_side)
        origin = item.description["origin_A"]
        assert all(0 <= o < A for o in origin)
        np.testing.assert_allclose(item.description["fractions"],
                                   periodicity.fractional_positions((per_side,) * 2, settings.step_A, origin, A))
        # recorded at the settings' dose (the background adds its counts per pixel)
        detector_px = np.prod(item.scan.data.shape[-2:])
        dose = item.scan.data.sum(axis=(-2, -1)).mean() - settings.background_counts * detector_px
        assert dose == pytest.approx(settings.dose_e_per_pattern, rel=0.05)
    draws = len(settings.information_disorder_seeds) * len(settings.thicknesses_nm) * len(settings.defocus_nm)
    assert means.shape == (settings.bins ** 2, len(settings.classes), draws, int(np.prod(settings.simulation.detector_shape)))
    assert np.all(means >= 0) and np.all(means.sum(-1) <= 1.0 + 1e-6)
    assert not np.allclose(means[:, 0], means[:, 1])  # the classes differ
