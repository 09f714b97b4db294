"""The domain gap: how far a test set's feature distribution lies from the training set's.

A model is fitted on one distribution of patterns (simulated ones, say) and applied to another (a measured
scan). Both are first mapped to the model's own feature vectors by :func:`embed`; two distances between the
two clouds of vectors then measure the gap:

- :func:`mmd2`: the unbiased squared maximum mean discrepancy with a Gaussian kernel
  k(a, b) = exp(−|a − b|² / (2σ²)): the squared distance between the two distributions' kernel mean
  embeddings, 0 in expectation for equal distributions (the unbiased estimate can fall slightly below 0).
  Dimensionless (kernel values lie in [0, 1]; at most 2); it depends on σ, by default the median distance
  of the pooled sample, so compare values computed with one bandwidth.
- :func:`frechet_distance`: the Fréchet distance (squared 2-Wasserstein distance between the Gaussians with
  the sets' means and covariances, as in FID) |μx − μy|² + Tr(Σx + Σy − 2(ΣxΣy)^½), in squared units
  of the features; only the first two moments count.

Embeddings (:func:`embed`): a network's 512 hidden units (``PolarNet.features``) on its own preprocessed
inputs, PCA-kNN's PCA embedding, and for any other model its preprocessed patterns, flattened. The choice per
model class is the table ``EMBEDDINGS`` (subclasses inherit their parent's entry).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from scipy.linalg import sqrtm
from scipy.spatial.distance import cdist

from polar4d_lib import training
from polar4d_lib.models.neural import NeuralModel
from polar4d_lib.models.pca_knn import PCAKNNModel

#: Ridge (times the identity, in squared feature units) added to singular covariances in the Fréchet distance.
FRECHET_EPS = 1e-6


# --- feature vectors ------------------------------------------------------------------------------------

def _network_features(model: NeuralModel, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
    """The network's hidden units (N, 512) on the model's own preprocessed inputs: eval mode, no gradients,
    batched like :func:`training.forward_batches` (the outputs of ``PolarNet.features``; no D4 average)."""
    if model.network is None:
        raise ValueError(f"this {model.kind} model is not fitted; call fit() or load a saved model")
    x = model._inputs(patterns, sampling_mrad)
    network = model.network.to(model.device)
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            out = torch.cat([network.features(x[index].to(model.device)).cpu()
                             for index in training._batches(len(x), model.train_config.batch_size)])
    finally:
        network.train(was_training)
        model.network = network.cpu()
    return out.numpy().astype(np.float64)


def _pca_embedding(model: PCAKNNModel, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
    """What PCA-kNN's neighbour search compares: its PCA embedding (N, n_components)."""
    return model.embed(patterns, sampling_mrad)


def _preprocessed(model: Any, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
    """Any model: its preprocessed patterns, flattened (N, size²)."""
    preprocessor = getattr(model, "preprocessor", None)
    if preprocessor is None:
        raise ValueError(f"{type(model).__name__} has no preprocessor, so its feature vectors are unknown; "
                         "add an entry for it to shift.EMBEDDINGS")
    x = np.asarray(preprocessor.transform(patterns, sampling_mrad), dtype=np.float64)
    return x.reshape(len(x), -1)


#: Model class → its feature vectors (model, patterns, sampling_mrad) → (N, D); looked up along the class's
#: MRO (``cnn-stack``'s CellStackModel is a NeuralModel), :func:`_preprocessed` for every other class.
EMBEDDINGS: dict[type, Callable[[Any, np.ndarray, float], np.ndarray]] = {
    NeuralModel: _network_features,
    PCAKNNModel: _pca_embedding,
}


def embed(model: Any, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
    """Feature vectors (N, D) float64 of ``model`` for raw patterns (N, Qx, Qy) (or what the model reads,
    e.g. cell stacks) at ``sampling_mrad`` (mrad/px): see ``EMBEDDINGS``."""
    embedder = next((EMBEDDINGS[c] for c in type(model).__mro__ if c in EMBEDDINGS), _preprocessed)
    return np.asarray(embedder(model, patterns, sampling_mrad), dtype=np.float64)


# --- distances ------------------------------------------------------------------------------------------

def _check(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D) of feature vectors, got shape {x.shape}")
    if len(x) < 2:
        raise ValueError(f"{name} needs at least 2 rows (feature vectors), got {len(x)}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _check_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = _check(x, "x"), _check(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same number of features D, got {x.shape[1]} and {y.shape[1]}")
    return x, y


def mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None, seed: int = 0,
         max_samples: int = 2000) -> float:
    """Unbiased squared MMD (dimensionless) between the samples x (N, D) and y (M, D) with the Gaussian
    kernel exp(−d²/(2σ²)), σ = ``bandwidth`` (feature units) or, when None, the median pairwise distance of
    the pooled sample (nonzero distances; 1 if there are none). Each set larger than ``max_samples`` is
    subsampled without replacement by a RNG seeded with ``seed``."""
    x, y = _check_pair(x, y)
    if bandwidth is not None and not (np.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"bandwidth must be a positive number or None, got {bandwidth!r}")
    if int(max_samples) < 2:
        raise ValueError(f"max_samples must be at least 2, got {max_samples}")
    rng = np.random.default_rng(seed)
    x, y = (a[np.sort(rng.choice(len(a), max_samples, replace=False))] if len(a) > max_samples else a
            for a in (x, y))
    dxx, dyy, dxy = (cdist(a, b, "sqeuclidean") for a, b in ((x, x), (y, y), (x, y)))
    if bandwidth is None:
        pooled = np.concatenate([dxx[np.triu_indices(len(x), 1)], dyy[np.triu_indices(len(y), 1)], dxy.ravel()])
        pooled = pooled[pooled > 0]
        bandwidth = float(np.sqrt(np.median(pooled))) if len(pooled) else 1.0
    kxx, kyy, kxy = (np.exp(-d / (2.0 * bandwidth ** 2)) for d in (dxx, dyy, dxy))
    n, m = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2.0 * kxy.mean())


def frechet_distance(x: np.ndarray, y: np.ndarray, eps: float = FRECHET_EPS) -> float:
    """Fréchet distance |μx − μy|² + Tr(Σx + Σy − 2(ΣxΣy)^½) (squared feature units) between the Gaussians
    fitted to x (N, D) and y (M, D) (sample covariances). Where a covariance is singular (D ≥ N, or sqrtm
    fails) ``eps``·I is added to both; the real part, clipped at 0."""
    x, y = _check_pair(x, y)
    mu = x.mean(axis=0) - y.mean(axis=0)
    sx, sy = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    d = len(sx)
    ridge = eps * np.eye(d) if min(len(x), len(y)) <= d else np.zeros((d, d))
    root = sqrtm((sx + ridge) @ (sy + ridge))
    if not np.all(np.isfinite(root)):
        ridge = eps * np.eye(d)
        root = sqrtm((sx + ridge) @ (sy + ridge))
    value = mu @ mu + np.trace(sx) + np.trace(sy) + 2 * np.trace(ridge) - 2.0 * np.trace(root).real
    return float(max(value, 0.0))
