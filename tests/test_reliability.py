"""Reliability scores, abstention and selective-accuracy curves (polar4d_lib.reliability)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from polar4d_lib import reliability


def proba(n: int = 200, seed: int = 0) -> np.ndarray:
    return softmax(np.random.default_rng(seed).normal(0, 2, (n, 8)), axis=1)


def test_scores_are_zero_for_a_uniform_guess_and_one_for_certainty():
    uniform, certain = np.full(8, 1 / 8), np.eye(8)[3]
    assert reliability.margin(uniform) == 0 and reliability.margin(certain) == 1
    assert reliability.certainty(uniform) == pytest.approx(0) and reliability.certainty(certain) == 1
    assert reliability.top_probability(uniform) == pytest.approx(1 / 8) and reliability.top_probability(certain) == 1
    for name in reliability.SCORES:
        s = reliability.score(proba(), name)
        assert s.shape == (200,) and s.min() >= 0 and s.max() <= 1
    assert reliability.DEFAULT in reliability.SCORES


def test_abstention_keeps_everything_at_zero_and_nothing_at_one():
    p = proba()
    classes = p.argmax(axis=1)
    for name in reliability.SCORES:
        np.testing.assert_array_equal(reliability.abstain(classes, p, 0.0, name), classes)
        assert (reliability.abstain(classes, p, 1.0, name) == -1).all()
        mid = reliability.abstain(classes, p, 0.5, name)
        kept = reliability.score(p, name) >= 0.5
        np.testing.assert_array_equal(mid[kept], classes[kept])
        assert (mid[~kept] == -1).all()


def test_bad_scores_and_thresholds_are_named():
    with pytest.raises(KeyError, match="no reliability score 'luck'"):
        reliability.score(proba(), "luck")
    with pytest.raises(ValueError, match="--abstain-below must be a reliability in \\[0, 1\\], got 1.5"):
        reliability.abstain(np.zeros(3), proba(3), 1.5)
    with pytest.raises(ValueError, match="NaN"):
        reliability.margin(np.full((2, 8), np.nan))


def test_a_perfect_model_has_a_flat_curve_at_100_percent():
    curve = reliability.coverage_curve(np.random.default_rng(0).random(100), np.ones(100, dtype=bool))
    assert curve["accuracy"] == [1.0] * 20
    assert curve["coverage"][-1] == 1.0 and reliability.area_under_curve(curve) == 1.0


def test_a_score_that_ranks_right_above_wrong_lifts_the_curve_and_a_blind_one_does_not():
    rng = np.random.default_rng(0)
    correct = rng.random(1000) < 0.6
    informed = correct + rng.normal(0, 0.3, 1000)
    curve = reliability.coverage_curve(informed, correct)
    assert curve["accuracy"][0] > 0.95 and curve["accuracy"][-1] == pytest.approx(correct.mean())
    blind = reliability.area_under_curve(reliability.coverage_curve(rng.random(1000), correct))
    assert blind == pytest.approx(correct.mean(), abs=0.06)
    assert reliability.area_under_curve(curve) > blind + 0.15
