"""The linear classifier (polar4d_lib.models.linear): D4 images with their classes, learning every class
from two through D4, probabilities, exact save/load without pickles, and its place among the models."""

from __future__ import annotations

import numpy as np
import pytest

from polar4d_lib import conventions, models
from polar4d_lib.models.base import load_model
from polar4d_lib.models.linear import LinearModel, d4_images
from polar4d_lib.preprocessing import Preprocessor
from test_physics_baseline import SAMPLING, dipole_patterns


def test_d4_images_carry_the_class_of_the_direction_they_show():
    # a pattern tilted towards class k, imaged by the 8 symmetry operations, shows the classes its images
    # are labelled with: the direction of its first moment is the label's angle
    rng = np.random.default_rng(0)
    for k in (0, 1, 6):
        p = dipole_patterns(np.array([45.0 * k]), 0.3, 0.0, rng)
        images, labels = d4_images(p, np.array([k]))
        # the orbit of an axis class is the 4 axis classes, of a diagonal class the 4 diagonals, twice each
        assert images.shape == (8, 64, 64) and sorted(labels.tolist()) == sorted(2 * list(range(k % 2, 8, 2)))
        q = (np.arange(64) - 32) * SAMPLING
        mx = (images * q[None, :, None]).sum(axis=(1, 2))
        my = (images * q[None, None, :]).sum(axis=(1, 2))
        np.testing.assert_array_equal(conventions.class_from_angle(np.degrees(np.arctan2(my, mx))), labels)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)  # only classes 0 (RM) and 1 (RU) shown: D4 reaches all 8 from these
    patterns = dipole_patterns(labels * 45.0, 0.1, 0.05, rng)
    model = LinearModel(Preprocessor(center="nominal", size=32, sampling_mrad=3.0), C=0.1).fit(patterns, labels, SAMPLING)
    return model


def test_learns_every_class_from_two_through_d4(fitted):
    rng = np.random.default_rng(2)
    labels = np.arange(400) % 8
    patterns = dipole_patterns(labels * 45.0, 0.1, 0.05, rng)
    predicted = fitted.predict(patterns, SAMPLING)
    assert np.mean(predicted == labels) > 0.9
    assert set(predicted.tolist()) == set(range(8))
    without = LinearModel(Preprocessor(center="nominal", size=32, sampling_mrad=3.0), d4=False)
    train = np.random.default_rng(1).integers(0, 2, 300)
    without.fit(dipole_patterns(train * 45.0, 0.1, 0.05, np.random.default_rng(1)), train, SAMPLING)
    assert set(without.predict(patterns, SAMPLING).tolist()) <= {0, 1}  # never a class it was not shown
    assert fitted.metadata["n_fit"] == 8 * fitted.metadata["n_train"] == 2400
    capped = LinearModel(Preprocessor(center="nominal", size=32, sampling_mrad=3.0), max_patterns=500)
    capped.fit(dipole_patterns(train * 45.0, 0.1, 0.05, np.random.default_rng(1)), train, SAMPLING)
    assert capped.metadata["n_fit"] == 500 and np.mean(capped.predict(patterns, SAMPLING) == labels) > 0.6


def test_probabilities_and_exact_round_trip(fitted, tmp_path):
    patterns = dipole_patterns(np.array([0.0, 135.0, 270.0]), 0.1, 0.0, np.random.default_rng(3))
    proba = fitted.predict_proba(patterns, SAMPLING)
    assert proba.shape == (3, 8) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert fitted.predict_proba(patterns[0], SAMPLING).shape == (1, 8)  # one pattern (Qx, Qy)
    path = fitted.save(tmp_path / "linear.npz")
    with np.load(path, allow_pickle=False) as f:  # plain arrays, no pickles
        assert {"coef", "intercept", "scaler_mean", "scaler_scale"} <= set(f.files)
    loaded = load_model(path)
    assert isinstance(loaded, LinearModel) and loaded.params() == fitted.params()
    np.testing.assert_array_equal(loaded.predict_proba(patterns, SAMPLING), proba)
    with pytest.raises(ValueError, match=r"\.npz"):
        fitted.save(tmp_path / "linear.pt")


def test_errors_and_registry():
    with pytest.raises(ValueError, match="not fitted"):
        LinearModel().predict(np.zeros((1, 64, 64), np.float32), SAMPLING)
    with pytest.raises(ValueError, match="C must be > 0"):
        LinearModel(C=0)
    with pytest.raises(ValueError, match="labels must be"):
        LinearModel().fit(np.ones((2, 64, 64), np.float32), np.array([0, 9]), SAMPLING)
    assert "linear" in models.KNOWN_KINDS and "linear" not in models.ALL_KINDS  # not one of the study's ten
    assert isinstance(models.create("linear"), LinearModel)
