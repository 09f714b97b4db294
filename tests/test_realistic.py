"""Realistic held-out scans and training on random detectors (polar4d_lib.realistic)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from polar4d_lib import conventions, realistic
from polar4d_lib.realistic import RealisticScanSpec


@pytest.fixture(scope="module")
def smoke_ranges() -> realistic.RealisticRanges:
    return realistic.RealisticRanges.for_profile("smoke")


def test_specs_cover_the_classes_with_held_out_specimens_in_range():
    ranges = realistic.RealisticRanges()
    specs = realistic.realistic_specs(ranges)
    assert [s.label for s in specs] == list(range(conventions.N_CLASSES))
    for spec in specs:
        assert conventions.VARIANT_CLASSES[spec.variant] == spec.label
        assert spec.disorder_seed in ranges.disorder_seeds and spec.disorder_seed not in (0, 1)  # never trained on
        assert np.hypot(*spec.tilt_mrad) <= ranges.tilt_max_mrad + 1e-3
        assert ranges.defocus_nm[0] <= spec.probe.defocus_nm <= ranges.defocus_nm[1]
        assert spec.simulation.phonon_configs == 4
    assert realistic.realistic_specs(ranges) == specs  # seeded


def test_several_specimens_per_class_extend_the_draw_and_are_named_apart(smoke_ranges):
    ranges = realistic.RealisticRanges(disorder_seeds=(105, 106, 107))
    one = realistic.realistic_specs(ranges)
    three = realistic.realistic_specs(replace(ranges, specimens_per_class=3))
    assert [s.label for s in three] == list(np.repeat(range(conventions.N_CLASSES), 3))
    assert three[0] == one[0]  # the first draw of the seed is kept
    assert len({(s.variant, s.disorder_seed, s.tilt_mrad, s.probe) for s in three}) == len(three)  # each its own
    for spec in three:
        assert conventions.VARIANT_CLASSES[spec.variant] == spec.label and spec.disorder_seed in (105, 106, 107)
    with pytest.raises(ValueError, match="specimens_per_class is a whole number ≥ 1"):
        realistic.realistic_specs(replace(ranges, specimens_per_class=0))
    # scans of the second specimen of a class carry "#2" (two classes × two specimens × two thicknesses)
    names = [item.name for item in realistic.realistic_scans(replace(smoke_ranges, specimens_per_class=2))]
    assert names == ["RM 2 nm", "RM 4 nm", "RM #2 2 nm", "RM #2 4 nm",
                     "RU 2 nm", "RU 4 nm", "RU #2 2 nm", "RU #2 4 nm"]


def test_random_origins_only_move_where_each_raster_starts():
    ranges = realistic.RealisticRanges(disorder_seeds=(111, 112), specimens_per_class=2)
    at_origin = realistic.realistic_specs(ranges)
    moved = realistic.realistic_specs(replace(ranges, random_origin=True))
    assert all(s.origin_A == (0.0, 0.0) for s in at_origin)
    assert [replace(s, origin_A=(0.0, 0.0)) for s in moved] == at_origin  # every other draw as before
    origins = np.array([s.origin_A for s in moved])
    assert np.all((origins >= 0) & (origins < RealisticScanSpec.a_A)) and len(np.unique(origins, axis=0)) == len(moved)
    assert at_origin[0].key() != moved[0].key() and replace(moved[0], origin_A=(0.0, 0.0)).key() == at_origin[0].key()


def test_a_raster_started_one_step_further_is_the_same_periodic_scan_rolled(smoke_ranges):
    """The specimen is periodic: starting the raster one step (x) and two steps (y) into the cell shows the
    patterns of the raster at the origin, rolled by those steps, the last ones wrapped around the supercell."""
    spec = realistic.realistic_specs(smoke_ranges)[1]
    base = realistic.simulate_realistic(spec)
    moved = realistic.simulate_realistic(replace(spec, origin_A=(spec.step_A, 2 * spec.step_A)))
    assert moved.shape == base.shape
    np.testing.assert_allclose(moved, np.roll(base, (-1, -2), axis=(1, 2)), atol=1e-5 * float(base.max()))
    assert not np.allclose(moved, base, atol=1e-5 * float(base.max()))  # the raster did move


def test_random_detectors_stay_in_the_ranges():
    ranges = realistic.RealisticRanges()
    rng = np.random.default_rng(0)
    for _ in range(50):
        acq = realistic.random_acquisition(ranges, rng)
        assert 1e3 <= acq.dose_e_per_pattern <= 1e5
        assert 0.5 <= acq.sampling_out_mrad <= 2.0
        assert acq.shape_out[0] in realistic.DETECTOR_SIZES
        assert acq.shape_out[0] * acq.sampling_out_mrad / 2 >= ranges.min_field_mrad
        assert max(abs(v) for v in acq.center_offset_px) <= 3.0


def test_realistic_scans_are_recorded_scans_with_their_truth(smoke_ranges):
    items = realistic.realistic_scans(smoke_ranges)
    assert len(items) == 4  # 2 classes × 2 thicknesses
    for i, item in enumerate(items):
        assert item.scan.data.ndim == 4 and item.scan.data.shape[:2] == (4, 4)
        assert item.scan.data.shape[2] == item.description["detector_px"]
        assert item.scan.q_sampling_mrad == pytest.approx(item.description["sampling_mrad"])
        assert (item.scan.scan_step_A is None) == (i % 2 == 1)
        counts = item.scan.data.sum(axis=(-2, -1))
        spec = realistic.realistic_specs(smoke_ranges)[i // 2]
        ideal = realistic.simulate_realistic(spec)[i % 2].sum(axis=(-2, -1))  # fraction of the beam on the detector
        npix = item.scan.data.shape[2] * item.scan.data.shape[3]
        expected = item.description["dose_e_per_pattern"] * ideal  # every electron (no background by default)
        assert np.all(np.abs(counts - expected) < 6 * np.sqrt(expected))
        assert np.all(item.scan.data >= 0) and np.all(item.scan.data == np.round(item.scan.data))  # counts
    assert [i.label for i in items] == [0, 0, 1, 1]


def test_coarse_realistic_scans_are_every_other_position_and_leave_the_fine_ones_unchanged(smoke_ranges):
    fine = realistic.realistic_scans(smoke_ranges)
    both = realistic.realistic_scans(replace(smoke_ranges, strides=(1, 2)))
    assert len(both) == 2 * len(fine)
    for a, b in zip(fine, both):
        assert a.name == b.name and np.array_equal(a.scan.data, b.scan.data)  # stride 1 drawn as before
    for i, item in enumerate(both[len(fine):]):
        spec = realistic.realistic_specs(smoke_ranges)[i // 2]
        assert item.scan.data.shape[:2] == (2, 2) and item.label == spec.label
        assert item.description["true_step_A"] == pytest.approx(2 * spec.step_A)
        assert item.scan.scan_step_A == (None if i % 2 else pytest.approx(2 * spec.step_A))
        assert item.name.endswith(f"at {2 * spec.step_A:.3g} Å")
        ideal = realistic.simulate_realistic(spec)[i % 2, ::2, ::2].sum(axis=(-2, -1))  # the raster's every other position
        expected = item.description["dose_e_per_pattern"] * ideal
        assert np.all(np.abs(item.scan.data.sum(axis=(-2, -1)) - expected) < 6 * np.sqrt(expected))
    with pytest.raises(ValueError, match="whole numbers ≥ 1"):
        realistic.realistic_scans(replace(smoke_ranges, strides=(0,)))


def test_training_recordings_stack_and_carry_dose_of_an_average(smoke_ranges):
    ideal = np.zeros((20, 64, 64), np.float32)
    ideal[:, 24:40, 24:40] = 1.0 / 256  # a bright-field square holding the whole beam
    x = realistic.record_on_detectors(ideal, 1.5, smoke_ranges, seed=3, out_sampling_mrad=3.0, out_size=40,
                                       per_detector=5, positions=(4.0, 4.0))
    assert x.shape == (20, 40, 40) and x.dtype == np.float32
    totals = x.sum(axis=(-2, -1)).reshape(4, 5)
    # 4 detectors of 5 patterns; each records 4 × its dose (an average over 4 positions)
    for row in totals:
        assert 4e3 * 0.9 < row.mean() < 4e5 * 1.1
        assert np.ptp(row) < 0.2 * row.mean()
    again = realistic.record_on_detectors(ideal, 1.5, smoke_ranges, seed=3, out_sampling_mrad=3.0, out_size=40,
                                           per_detector=5, positions=(4.0, 4.0))
    np.testing.assert_array_equal(x, again)
    other = realistic.record_on_detectors(ideal, 1.5, smoke_ranges, seed=4, out_sampling_mrad=3.0, out_size=40,
                                           per_detector=5, positions=(4.0, 4.0))
    assert not np.array_equal(x, other)


def test_training_recordings_hold_the_electrons_asked_for(smoke_ranges):
    ideal = np.zeros((20, 64, 64), np.float32)
    ideal[:, 24:40, 24:40] = 1.0 / 256
    x = realistic.record_on_detectors(ideal, 1.5, smoke_ranges, seed=3, out_sampling_mrad=3.0, out_size=40,
                                       per_detector=5, electrons=(2e5, 8e5))
    totals = x.sum(axis=(-2, -1)).reshape(4, 5)
    assert np.all((totals > 2e5 * 0.99) & (totals < 8e5 * 1.01))
    assert len(np.unique(np.round(totals.mean(axis=1), -3))) == 4  # each detector draws its own count


def test_summary_of_scores():
    rows = [{"share_correct": 1.0, "majority_correct": True}, {"share_correct": 0.4, "majority_correct": False}]
    assert realistic.summary(rows) == {"scans": 2, "mean_share_correct": 0.7, "min_share_correct": 0.4,
                                        "majority_correct": 0.5}
    for row, step in zip(rows, (0.49375, 0.9875)):
        row["true_step_A"] = step
    rows.append({"share_correct": 0.6, "majority_correct": True, "true_step_A": 0.9875})
    by_step = realistic.summary_by_step(rows)
    assert list(by_step) == [0.49375, 0.9875]
    assert by_step[0.49375] == {"scans": 1, "mean_share_correct": 1.0, "min_share_correct": 1.0, "majority_correct": 1.0}
    assert by_step[0.9875]["scans"] == 2 and by_step[0.9875]["mean_share_correct"] == pytest.approx(0.5)
    assert by_step[0.9875]["majority_correct"] == 0.5
