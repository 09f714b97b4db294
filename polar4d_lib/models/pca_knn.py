"""PCA-kNN: the paper's scikit-learn pipeline StandardScaler → PCA(20) → KNeighborsClassifier(5).

Patterns are preprocessed by the model's :class:`~polar4d_lib.preprocessing.Preprocessor` (resampled to
its sampling, centred, cropped, normalised) and flattened to vectors of ``size²`` features.
``predict_proba`` is the neighbour vote over all 8 classes (a column for a class absent from training
is 0; with ``weights='uniform'`` every entry is a multiple of 1/k).

Saved without pickles (``.npz``): the scaler's ``mean_``/``scale_``, the PCA's ``components_``/``mean_``/
``explained_variance_`` (and ``whiten``), the training embeddings and labels. The fitted arrays are rounded
to float32 once at fit time and the kNN index is built from those rounded arrays, so a loaded model
rebuilds exactly the same pipeline and gives identical predictions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from polar4d_lib import conventions
from polar4d_lib.models.base import PolarizationModel, register
from polar4d_lib.preprocessing import Preprocessor


#: Smallest per-pixel spread the scaler divides by, as a share of the median spread.
SCALE_FLOOR = 1e-2


def floored_scale(scale: np.ndarray) -> np.ndarray:
    """A fitted scaler's per-pixel spread, floored at ``SCALE_FLOOR`` of its median: pixels that hardly
    vary in training (far outside the disk) would be divided by ~1e-15 and blow an unseen pattern's
    value there up to ~1e12."""
    return np.maximum(scale, SCALE_FLOOR * np.median(scale))


def _labels(labels: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be {n} integer classes (one per pattern), got {y.dtype} {y.shape}")
    if y.min() < 0 or y.max() >= conventions.N_CLASSES:
        raise ValueError("labels must be classes 0–7; map names with conventions.class_index first")
    return y.astype(np.int8)


@register
class PCAKNNModel(PolarizationModel):
    """StandardScaler → PCA(``n_components``, whiten, ``random_state=seed``) → kNN(``n_neighbors``, ``weights``)
    on flattened preprocessed patterns (the paper's defaults: 20 components, 5 neighbours, min–max
    normalisation, dataset-mean centre)."""

    kinds = ("pca-knn",)
    suffix = ".npz"

    def __init__(self, preprocessor: Preprocessor | None = None, *, n_components: int = 20, n_neighbors: int = 5,
                 weights: str = "uniform", whiten: bool = False, seed: int = 888, kind: str = "pca-knn",
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(kind, preprocessor if preprocessor is not None else Preprocessor(), metadata)
        if int(n_components) < 1 or int(n_neighbors) < 1:
            raise ValueError(f"n_components and n_neighbors must be ≥ 1, got {n_components} and {n_neighbors}")
        if weights not in ("uniform", "distance"):
            raise ValueError(f"weights must be 'uniform' or 'distance', got {weights!r}")
        self.n_components, self.n_neighbors = int(n_components), int(n_neighbors)
        self.weights, self.whiten, self.seed = weights, bool(whiten), int(seed)
        self.pipeline: Pipeline | None = None

    def params(self) -> dict[str, Any]:
        """The constructor parameters (saved with the model)."""
        return {"n_components": self.n_components, "n_neighbors": self.n_neighbors, "weights": self.weights,
                "whiten": self.whiten, "seed": self.seed}

    # --- features --------------------------------------------------------------------------------
    def features(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """Preprocessed, flattened patterns (N, size²) float64."""
        x = self.preprocessor.transform(patterns, sampling_mrad)
        return np.asarray(x, dtype=np.float64).reshape(len(x), -1)

    def embed(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """PCA embedding (N, n_components) of raw patterns (what the kNN compares)."""
        return self._fitted()[:-1].transform(self.features(patterns, sampling_mrad))

    def _fitted(self) -> Pipeline:
        if self.pipeline is None:
            raise ValueError("the PCA-kNN model is not fitted; call fit(patterns, labels, sampling_mrad) or load one")
        return self.pipeline

    def _new_pipeline(self) -> Pipeline:
        return Pipeline([
            ("scaler", StandardScaler()),
            ("pca", PCA(n_components=self.n_components, whiten=self.whiten, random_state=self.seed)),
            ("knn", KNeighborsClassifier(n_neighbors=self.n_neighbors, weights=self.weights)),
        ])

    # --- estimator interface ---------------------------------------------------------------------
    def fit(self, patterns: np.ndarray, labels: np.ndarray, sampling_mrad: float, **kwargs: Any) -> "PCAKNNModel":
        """Fit scaler and PCA on the preprocessed patterns, then the kNN on their (float32-rounded)
        embeddings. Extra keyword arguments are recorded in the metadata (e.g. ``data=...``)."""
        x = self.features(patterns, sampling_mrad)
        y = _labels(labels, len(x))
        if self.n_components > min(x.shape):
            raise ValueError(f"n_components={self.n_components} exceeds min(patterns, features)={min(x.shape)}; "
                             "lower n_components or pass more patterns")
        if self.n_neighbors > len(x):
            raise ValueError(f"n_neighbors={self.n_neighbors} exceeds the {len(x)} training patterns; lower it")
        pipe = self._new_pipeline()
        scaler = pipe.named_steps["scaler"].fit(x)
        scaler.scale_ = floored_scale(scaler.scale_)
        pipe.named_steps["pca"].fit(scaler.transform(x))
        state = _arrays_of(pipe)  # round the fitted arrays to float32 once, then use those exactly
        _set_transform(pipe, state)
        embedding = pipe[:-1].transform(x).astype(np.float32)
        pipe[-1].fit(embedding.astype(np.float64), y)
        self.pipeline, self._embedding, self._train_labels = pipe, embedding, y
        self.metadata.update({
            "n_train": int(len(x)), "train_sampling_mrad": float(sampling_mrad),
            "class_counts": np.bincount(y, minlength=conventions.N_CLASSES).tolist(),
            "explained_variance_ratio": float(np.sum(pipe.named_steps["pca"].explained_variance_ratio_)),
            **{k: v for k, v in kwargs.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))},
        })
        return self

    def predict_proba(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """Neighbour vote (N, 8) float32: for ``weights='uniform'`` the share of the k nearest training
        embeddings in each class."""
        pipe = self._fitted()
        vote = pipe.predict_proba(self.features(patterns, sampling_mrad))
        proba = np.zeros((len(vote), conventions.N_CLASSES), dtype=np.float32)
        proba[:, pipe.classes_.astype(int)] = vote
        return proba

    # --- persistence ------------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        return {**super().header(), "params": self.params()}

    def _state(self) -> dict[str, np.ndarray]:
        pipe = self._fitted()
        return {**_arrays_of(pipe), "embedding": self._embedding, "train_labels": self._train_labels}

    @classmethod
    def _from_state(cls, header: dict[str, Any], state: dict[str, Any]) -> "PCAKNNModel":
        model = cls(Preprocessor.from_dict(header["preprocessor"]), **header["params"], kind=header["kind"],
                    metadata=header.get("metadata"))
        pipe = model._new_pipeline()
        _set_transform(pipe, state)
        embedding = np.asarray(state["embedding"], dtype=np.float32)
        labels = np.asarray(state["train_labels"]).astype(np.int8)
        pipe[-1].fit(embedding.astype(np.float64), labels)
        model.pipeline, model._embedding, model._train_labels = pipe, embedding, labels
        return model


def _arrays_of(pipe: Pipeline) -> dict[str, np.ndarray]:
    """The fitted scaler and PCA arrays, float32."""
    scaler, pca = pipe.named_steps["scaler"], pipe.named_steps["pca"]
    return {
        "scaler_mean": scaler.mean_.astype(np.float32), "scaler_scale": scaler.scale_.astype(np.float32),
        "pca_components": pca.components_.astype(np.float32), "pca_mean": pca.mean_.astype(np.float32),
        "pca_explained_variance": pca.explained_variance_.astype(np.float32),
        "pca_explained_variance_ratio": pca.explained_variance_ratio_.astype(np.float32),
        "pca_whiten": np.array(bool(pca.whiten)),
    }


def _set_transform(pipe: Pipeline, state: dict[str, np.ndarray]) -> None:
    """Set the fitted attributes of the scaler and PCA from stored arrays (as float64)."""
    scaler, pca = pipe.named_steps["scaler"], pipe.named_steps["pca"]
    scaler.mean_ = np.asarray(state["scaler_mean"], dtype=np.float64)
    scaler.scale_ = np.asarray(state["scaler_scale"], dtype=np.float64)
    scaler.var_ = scaler.scale_ ** 2
    scaler.n_features_in_ = len(scaler.mean_)
    scaler.n_samples_seen_ = 0
    components = np.asarray(state["pca_components"], dtype=np.float64)
    pca.components_ = components
    pca.mean_ = np.asarray(state["pca_mean"], dtype=np.float64)
    pca.explained_variance_ = np.asarray(state["pca_explained_variance"], dtype=np.float64)
    pca.explained_variance_ratio_ = np.asarray(state["pca_explained_variance_ratio"], dtype=np.float64)
    pca.whiten = bool(state["pca_whiten"])
    pca.n_components_, pca.n_features_in_ = components.shape
