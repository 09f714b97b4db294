"""Domain-gap measures (polar4d_lib.shift): MMD² and the Fréchet distance on Gaussian samples with known
answers, their input checks, and the feature vectors ``embed`` takes from each kind of model.

Models are tiny (a PCA-kNN with 5 components, a cnn-cls trained for one epoch) on the constructed tilted-disk
patterns of test_physics_baseline, on a 16 px grid at 3 mrad/px, so everything runs in seconds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from polar4d_lib import config, shift
from polar4d_lib.models.neural import NeuralModel
from polar4d_lib.models.pca_knn import PCAKNNModel
from polar4d_lib.preprocessing import Preprocessor
from test_physics_baseline import SAMPLING, dipole_patterns

SHIFTS_SD = (0.0, 0.5, 1.0, 2.0)


def small_preprocessor() -> Preprocessor:
    """16 px at 3 mrad/px (±24 mrad: the bright-field disk of dipole_patterns) around the nominal centre."""
    return Preprocessor(sampling_mrad=3.0, size=16, center="nominal")


def gaussian(n: int, mean: np.ndarray, cov: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """n points whose sample mean and sample covariance (ddof 1) are exactly ``mean`` and ``cov``."""
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample covariance exactly I
    return mean + z @ np.linalg.cholesky(cov).T


def sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


# --- the two distances ----------------------------------------------------------------------------------

def test_identical_sets_have_no_gap():
    x = np.random.default_rng(0).standard_normal((300, 6))
    far = x + np.array([2.0, 0, 0, 0, 0, 0])
    assert abs(shift.frechet_distance(x, x)) < 1e-9
    # the unbiased estimate of an identical pair is −2/n·(1 − mean off-diagonal kernel): tiny, not 0
    assert abs(shift.mmd2(x, x)) < 0.05 * shift.mmd2(x, far)
    assert shift.mmd2(x, x, bandwidth=1.0) <= 0  # k(x, y) pairs each point with itself (k = 1), the others do not


def test_both_grow_with_a_planted_mean_shift():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 8))
    y = rng.standard_normal((400, 8))
    mmd, frechet = [], []
    for s in SHIFTS_SD:
        shifted = y + s * np.eye(8)[0]  # s standard deviations along the first feature
        mmd.append(shift.mmd2(x, shifted))
        frechet.append(shift.frechet_distance(x, shifted))
    assert np.all(np.diff(mmd) > 0), mmd
    assert np.all(np.diff(frechet) > 0), frechet
    assert mmd[-1] > 10 * abs(mmd[0])
    # the Fréchet distance is the squared mean shift plus the sampling noise of two 400-point covariances
    assert np.allclose(frechet, np.square(SHIFTS_SD), atol=0.3), frechet


def test_frechet_matches_the_closed_form():
    rng = np.random.default_rng(2)
    mu1, mu2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, 2.0])
    # diagonal covariances: Σᵢ (√aᵢ − √bᵢ)²
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    x, y = gaussian(200, mu1, np.diag(a), rng), gaussian(300, mu2, np.diag(b), rng)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert shift.frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)
    # general covariances: Tr(Σ1 + Σ2 − 2 (Σ1^½ Σ2 Σ1^½)^½), computed here by eigendecompositions
    m1, m2 = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(3), m2 @ m2.T + 0.1 * np.eye(3)
    x, y = gaussian(200, mu1, s1, rng), gaussian(200, mu2, s2, rng)
    root1 = sqrtm_psd(s1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * sqrtm_psd(root1 @ s2 @ root1))
    assert shift.frechet_distance(x, y) == pytest.approx(expected, rel=1e-8)
    assert shift.frechet_distance(x, y) == pytest.approx(shift.frechet_distance(y, x), rel=1e-8)


def test_more_features_than_points():
    """D > N: singular covariances get a ridge; the result stays finite, ≥ 0, and sees a shift."""
    x = np.random.default_rng(3).standard_normal((20, 100))
    same = shift.frechet_distance(x, x)
    moved = shift.frechet_distance(x, x + 1.0)
    assert np.isfinite(same) and same >= 0 and moved == pytest.approx(100.0, rel=1e-6)
    assert same < 1e-6 * moved
    assert np.isfinite(shift.mmd2(x, x + 1.0))


def test_mmd_subsamples_with_its_seed():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((500, 4)), rng.standard_normal((400, 4)) + 0.5
    first = shift.mmd2(x, y, max_samples=100, seed=7)
    assert first == shift.mmd2(x, y, max_samples=100, seed=7)
    assert first != shift.mmd2(x, y, max_samples=100, seed=8)
    assert shift.mmd2(x, y, bandwidth=2.0) != shift.mmd2(x, y, bandwidth=0.5)


GOOD = np.zeros((5, 3)) + np.arange(5)[:, None]


@pytest.mark.parametrize("measure", [shift.mmd2, shift.frechet_distance], ids=["mmd2", "frechet"])
@pytest.mark.parametrize("x, y, message", [
    (np.zeros(5), GOOD, "x must be a 2-D array"),
    (GOOD, np.zeros((2, 2, 3)), "y must be a 2-D array"),
    (GOOD[:1], GOOD, "x needs at least 2 rows"),
    (GOOD, np.where(GOOD == 2, np.nan, GOOD), "y contains NaN or inf"),
    (np.where(GOOD == 1, np.inf, GOOD), GOOD, "x contains NaN or inf"),
    (GOOD, GOOD[:, :2], "same number of features D, got 3 and 2"),
], ids=["1d", "3d", "one-row", "nan", "inf", "dimensions"])
def test_bad_inputs_are_refused(measure, x, y, message):
    with pytest.raises(ValueError, match=message):
        measure(x, y)


def test_mmd_refuses_a_bad_bandwidth():
    with pytest.raises(ValueError, match="bandwidth must be a positive number"):
        shift.mmd2(GOOD, GOOD, bandwidth=0.0)


# --- feature vectors of models ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def patterns():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 8, 48)
    return dipole_patterns(labels * 45.0, 0.1, 0.05, rng), labels


def test_embed_pca_knn(patterns):
    x, y = patterns
    model = PCAKNNModel(small_preprocessor(), n_components=5).fit(x, y, SAMPLING)
    e = shift.embed(model, x[:10], SAMPLING)
    assert e.shape == (10, 5) and e.dtype == np.float64
    assert np.allclose(e, model.embed(x[:10], SAMPLING))


def test_embed_network_is_its_hidden_layer(patterns):
    x, y = patterns
    with config.set({"progress_bar": False}):
        model = NeuralModel("cnn-cls", small_preprocessor(), max_epochs=1, batch_size=16, seed=0).fit(x, y, SAMPLING)
    model.train_config = dataclasses.replace(model.train_config, batch_size=7)  # several batches, the last short
    e = shift.embed(model, x, SAMPLING)
    assert e.shape == (len(x), 512) and e.dtype == np.float64
    with torch.no_grad():
        direct = model.network.eval().features(model._inputs(x, SAMPLING)).numpy()
    assert np.allclose(e, direct, atol=1e-5)
    assert not model.network.training
    # a strong planted shift (a broad diffuse background) opens a wider gap than a fresh in-domain draw
    rng = np.random.default_rng(6)
    fresh = dipole_patterns(rng.integers(0, 8, 48) * 45.0, 0.1, 0.05, rng)
    k = (np.arange(64) - 32) * SAMPLING
    background = 0.5 * np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * 15.0 ** 2))
    train, near, far = (shift.embed(model, p, SAMPLING) for p in (x, fresh, fresh + background))
    assert shift.mmd2(train, near) < shift.mmd2(train, far)
    assert shift.frechet_distance(train, near) < shift.frechet_distance(train, far)


def test_embed_falls_back_to_preprocessed_patterns(patterns):
    x, _ = patterns

    class Other:
        preprocessor = small_preprocessor()

    e = shift.embed(Other(), x[:4], SAMPLING)
    assert e.shape == (4, 16 * 16) and e.dtype == np.float64
    with pytest.raises(ValueError, match="has no preprocessor"):
        shift.embed(object(), x[:4], SAMPLING)


def test_embed_unfitted_network_is_refused(patterns):
    with pytest.raises(ValueError, match="not fitted"):
        shift.embed(NeuralModel("cnn-cls", small_preprocessor()), patterns[0][:2], SAMPLING)
