"""The domain-gap chapter's test suites (polar4d_lib.suites): every suite builds on the smoke profile with its
nuisance actually in the recorded scans."""

from __future__ import annotations

import math
from dataclasses import replace
import numpy as np
import pytest

from polar4d_lib import acquisition, config, conventions, inputs, profiles, suites


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = tmp_path_factory.mktemp("suite_cache")
    with config.set({"progress_bar": False}):
        settings = suites.GapSettings.for_profile("smoke")
        rows, sweeps = suites.build("smoke", settings, cache_dir=cache)
    return settings, rows, sweeps, cache


def sweep(sweeps, factor, value, label=0):
    (item,) = [s for s in sweeps if s.row == factor and s.value == value and s.accepted == (label,)]
    return item


def com_px(pattern: np.ndarray) -> np.ndarray:
    n = np.indices(pattern.shape).reshape(2, -1)
    return (n * pattern.ravel()).sum(axis=1) / pattern.sum()


def test_every_profile_section_loads_and_names_known_factors():
    for profile in profiles.names():
        if profiles.section(profile, "domain_gap"):
            settings = suites.GapSettings.for_profile(profile)
            assert set(settings.sweeps) <= set(suites.FACTORS)
    assert len(suites.GapSettings.for_profile("default").sweeps) >= 8


def test_unknown_factor_is_a_one_line_error():
    with pytest.raises(KeyError, match="unknown sweep factor 'humidity'; the factors are dose"):
        suites.GapSettings(sweeps={"humidity": (1.0,)})


def test_rows_and_sweeps_cover_every_class_row_and_value(built):
    settings, rows, sweeps, _ = built
    names = suites.row_names(rows)
    assert names[:4] == ["S 1×1, 2 nm", "S 1×1, 4 nm", "S 2×2, 2 nm", "S 2×2, 4 nm"]
    assert [n for n in names if n.startswith("R ")] == ["R realistic detectors, a/2", "R + PSF, background, a/2"]
    for name in names:
        assert sorted(s.accepted for s in rows if s.row == name) == [(0,), (1,)]
    assert suites.row_names(sweeps) == list(settings.sweeps)
    assert len(sweeps) == sum(len(v) for v in settings.sweeps.values()) * len(settings.classes)
    for item in sweeps:
        assert item.accepted == (int(conventions.VARIANT_CLASSES[item.description["variant"]]),)


def test_synthetic_rows_are_ideal_and_cover_the_supercell(built):
    settings, rows, _, _ = built
    for item in rows:
        if item.row.startswith("S "):
            cells = item.description["cells"]
            assert item.scan.data.shape[:2] == (4 * cells, 4 * cells)  # the whole supercell at a/4
            assert item.scan.q_sampling_mrad == settings.simulation.q_sampling_mrad
            assert item.description["acquisition"] is None
            assert 0.9 < item.scan.data[0, 0].sum() <= 1.0  # fractions of the beam: no noise, no counts


def test_dose_sweep_records_the_dose(built):
    _, _, sweeps, _ = built
    ideal = sweep(sweeps, "thickness", 2.0).scan.data  # the base specimen, raster and thickness
    for dose in (1e3, 1e5):
        counts = sweep(sweeps, "dose", dose).scan.data
        assert np.all(counts == np.round(counts))
        measured = counts.sum() / ideal.sum()
        assert measured == pytest.approx(dose, rel=5 / math.sqrt(dose * ideal.sum()))


def test_center_offset_moves_the_centre_of_mass(built):
    _, _, sweeps, _ = built
    base = sweep(sweeps, "center offset", 0.0).scan.data.mean(axis=(0, 1))
    moved = sweep(sweeps, "center offset", 5.0).scan.data.mean(axis=(0, 1))
    np.testing.assert_allclose(com_px(moved) - com_px(base), [5.0, 2.5], atol=0.05)


def test_detector_sampling_keeps_the_field_and_calibration(built):
    settings, _, sweeps, _ = built
    item = sweep(sweeps, "detector sampling", 3.0)
    assert item.scan.q_sampling_mrad == 3.0
    field = settings.simulation.q_sampling_mrad * settings.simulation.detector_shape[0] / 2
    assert item.scan.data.shape[-1] == 2 * math.ceil(field / 3.0)
    base = sweep(sweeps, "detector sampling", 1.5).scan.data
    assert item.scan.data.sum() == pytest.approx(base.sum(), rel=1e-3)  # counts conserved by the rebinning


def test_psf_is_a_gaussian_of_its_width(built):
    _, _, sweeps, _ = built
    sharp = sweep(sweeps, "PSF", 0.0).scan.data
    blurred = sweep(sweeps, "PSF", 2.0).scan.data
    np.testing.assert_allclose(blurred, acquisition.apply_psf(sharp, 2.0), rtol=1e-5, atol=1e-7)


def test_background_is_added_in_counts(built):
    settings, _, sweeps, _ = built
    clean = sweep(sweeps, "background", 0.0).scan.data
    noisy = sweep(sweeps, "background", 100.0).scan.data
    ideal = sweep(sweeps, "thickness", 2.0).scan.data
    assert clean.sum() / ideal.sum() == pytest.approx(settings.background_dose_e_per_pattern, rel=0.01)
    assert (noisy - clean).mean() == pytest.approx(100.0, abs=0.5)
    dark = ideal * settings.background_dose_e_per_pattern < 1e-3  # pixels the beam (almost) never reaches
    assert dark.sum() > 1000
    assert noisy[dark].mean() == pytest.approx(100.0, abs=1.0)
    assert noisy[dark].std() == pytest.approx(10.0, rel=0.1)  # dark noise of √100 counts


def test_probe_and_specimen_factors_change_the_patterns(built):
    _, _, sweeps, _ = built
    base = sweep(sweeps, "thickness", 2.0).scan.data
    for factor, value in [("defocus", 0.0), ("astigmatism", 0.0), ("mistilt", 0.0), ("K/Na disorder", 201)]:
        np.testing.assert_array_equal(sweep(sweeps, factor, value).scan.data, base)  # the base conditions
    for factor, value in [("thickness", 4.0), ("defocus", 10.0), ("astigmatism", 10.0), ("mistilt", 2.0),
                          ("K/Na disorder", 202)]:
        item = sweep(sweeps, factor, value)
        assert np.abs(item.scan.data - base).sum() / base.sum() > 1e-3, factor
    assert sweep(sweeps, "mistilt", 2.0).description["tilt_mrad"] == [2.0, 0.0]
    assert sweep(sweeps, "defocus", 10.0).description["defocus_nm"] == 10.0


def test_scan_step_sets_the_raster(built):
    settings, _, sweeps, _ = built
    item = sweep(sweeps, "scan step", 2)
    assert item.scan.scan_step_A == pytest.approx(settings.a_A / 2)
    assert item.scan.data.shape[:2] == (2, 2)
    assert suites.cell_window(item) == 2


def test_realistic_rows_with_the_detector_effects_on(built):
    _, rows, _, _ = built
    plain = [s for s in rows if s.row == "R realistic detectors, a/2"]
    full = [s for s in rows if s.row == "R + PSF, background, a/2"]
    assert [s.name for s in plain] == [s.name for s in full]
    for a, b in zip(plain, full):
        assert a.description["psf_sigma_px"] == 0.0 and b.description["psf_sigma_px"] > 0.0
        assert a.description["dose_e_per_pattern"] == b.description["dose_e_per_pattern"]  # the same detector draws
        assert b.scan.data.mean() > a.scan.data.mean()  # the background


def test_a_second_build_comes_from_the_cache(built, monkeypatch):
    settings, rows, sweeps, cache = built
    monkeypatch.setattr(suites.SpecimenUnit, "simulate", lambda self: pytest.fail("simulated again"))
    again_rows, again_sweeps = suites.build("smoke", settings, cache_dir=cache)
    np.testing.assert_array_equal(again_sweeps[3].scan.data, sweeps[3].scan.data)
    np.testing.assert_array_equal(again_rows[0].scan.data, rows[0].scan.data)


def test_pooled_probabilities_average_whole_windows():
    p = np.zeros((4, 4, conventions.N_CLASSES), dtype=np.float32)
    p[:2, :, 0] = 1.0
    p[2:, :, 1] = 1.0
    pooled = suites.pooled_probabilities(p, 4)
    np.testing.assert_allclose(pooled[..., 0], 0.5)
    np.testing.assert_allclose(suites.pooled_probabilities(p, 1), p)


def test_score_counts_accepted_classes_and_refusals(built):
    _, rows, sweeps, _ = built

    class Always:  # a model that always says RU, with the single-pattern input kind
        kind = "always"
        input_kind = inputs.get("single-patterns")

        def predict_maps(self, patterns, sampling_mrad):
            proba = np.zeros((len(patterns), conventions.N_CLASSES), dtype=np.float32)
            proba[:, 1] = 1.0
            return proba, np.ones(len(patterns), dtype=np.int8), np.full(len(patterns), 45.0)

    scores = suites.score(Always(), rows[:4], cells=(0, 1))
    assert [s["share_0"] for s in scores] == [0.0, 1.0, 0.0, 1.0]
    assert [s["majority_1"] for s in scores] == [False, True, False, True]
    assert all(s["refused"] is None for s in scores)

    class Refuses(inputs.SinglePatterns):
        def refusal(self, model, scan):
            return "too coarse"

    refusing = type("Refusing", (), {"kind": "r", "input_kind": Refuses()})()
    (score,) = suites.score(refusing, sweeps[:1])
    assert score["share_0"] is None and score["majority_0"] is None and score["refused"] == "too coarse"


def test_scan_cells_limits_the_raster_to_whole_cells(tmp_path):
    settings = suites.GapSettings.for_profile("smoke", {"cells": 2, "scan_cells": 1, "classes": [0],
                                                        "sweeps": {"defocus": [0.0]}})
    with config.set({"progress_bar": False}):
        (item,) = suites.condition_scans(suites.sweep_conditions(settings), settings, tmp_path)
        (whole,) = suites.condition_scans(suites.sweep_conditions(replace(settings, scan_cells=None)), settings, tmp_path)
    assert item.scan.data.shape[:2] == (4, 4) and whole.scan.data.shape[:2] == (8, 8)
    np.testing.assert_allclose(item.scan.data, whole.scan.data[:4, :4], rtol=1e-5, atol=1e-8)  # the same positions


def test_every_factor_names_its_value_in_the_training_conditions():
    settings = suites.GapSettings.for_profile("default")
    base = settings.base()
    assert suites.FACTORS["dose"].base(settings) is None  # the ideal detector counts no electrons
    assert suites.FACTORS["thickness"].base(settings) == base.thickness_nm
    assert suites.FACTORS["scan step"].base(settings) == pytest.approx(4.0)
    assert suites.FACTORS["detector sampling"].base(settings) == settings.simulation.q_sampling_mrad
    for factor in ("defocus", "astigmatism", "mistilt", "center offset", "PSF", "background"):
        assert suites.FACTORS[factor].base(settings) == 0.0
    assert suites.FACTORS["K/Na disorder"].base(settings) == base.disorder_seed


def test_suite_scan_patterns_are_the_scan_in_its_frame(built):
    _, rows, _, _ = built
    item = rows[0]
    rx, ry, qx, qy = item.scan.data.shape
    np.testing.assert_array_equal(item.patterns(), inputs.in_scan_frame(item.scan.data.reshape(rx * ry, qx, qy), item.scan))
