"""The error-periodicity chapter's results on the smoke book, as results/<profile>/periodicity.json records them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from polar4d_lib import periodicity, reliability

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(smoke_book):
    return json.loads((smoke_book / "results" / "smoke" / "periodicity.json").read_text())


def test_the_issue_keys_for_every_model(result):
    settings = periodicity.PeriodicitySettings.for_profile("smoke")
    assert {"fold_maps", "information_map", "ceiling_accuracy", "coverage_curves", "correlation"} <= set(result)
    models = result["models"]
    assert len(models) >= 4 and models[-1] == "cnn-stack (shipped)"
    assert {"Conv-Cls", "PCA", "Physics"} <= set(models)
    for model in models:
        fold = np.array(result["fold_maps"][model], dtype=float)
        assert fold.shape == (settings.bins, settings.bins)
        assert np.all((fold[np.isfinite(fold)] >= 0) & (fold[np.isfinite(fold)] <= 1))
        curve = result["coverage_curves"][model]
        assert curve["score"] in reliability.SCORES
        assert len(curve["coverage"]) == len(curve["accuracy"]) and curve["coverage"][-1] == 1.0
        assert curve["accuracy"][-1] == pytest.approx(result["accuracy"][model])
        assert model in result["correlation"]
    assert np.array(result["fold_counts"]).sum() == len(settings.classes) * len(settings.thicknesses_nm) * \
        settings.origins * (settings.cells * round(settings.a_A / settings.step_A)) ** 2


def test_the_information_map_and_its_ceilings(result):
    settings = periodicity.PeriodicitySettings.for_profile("smoke")
    information = np.array(result["information_map"])
    assert information.shape == (settings.bins, settings.bins) and np.all(information > 0)
    by_dose = result["ceiling_by_dose"]
    assert set(by_dose) == {f"{d:g}" for d in {*settings.information_doses, settings.dose_e_per_pattern}}
    means = [by_dose[k]["mean"] for k in sorted(by_dose, key=float)]
    assert means == sorted(means), "more electrons cannot tell the classes apart worse"
    assert result["ceiling_accuracy"] == pytest.approx(by_dose[f"{settings.dose_e_per_pattern:g}"]["mean"])
    assert result["predict_score"] == reliability.DEFAULT
