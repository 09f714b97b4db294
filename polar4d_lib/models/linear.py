"""A linear classifier: StandardScaler → multinomial LogisticRegression on preprocessed patterns.

The polar signal of a position-averaged pattern is a small asymmetry (about 1 % of its intensity,
``benchmarks/tilt_vs_polarization.py``) riding on nuisances — mistilt, K/Na disorder, thickness — that
change it as much but in other directions; a linear read-out with all 8 D4 images of every training
pattern (``d4``: mirror and rotate the centred crop, map the class by ``conventions``) learns those
directions from few specimens. Patterns are preprocessed by the model's
:class:`~polar4d_lib.preprocessing.Preprocessor` and flattened to ``size²`` features.

``predict_proba`` is the softmax of the linear scores. Saved without pickles (``.npz``): the scaler's
``mean_``/``scale_`` and the regression's ``coef_``/``intercept_``, rounded to float32 at fit time; the model
always predicts from those stored arrays, so a loaded model gives identical predictions.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from polar4d_lib import conventions
from polar4d_lib.models.base import PolarizationModel, register
from polar4d_lib.models.pca_knn import _labels, floored_scale
from polar4d_lib.preprocessing import Preprocessor


def d4_images(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 images of centred square patterns (N, n, n) under the symmetry group of the square
    (:func:`polar4d_lib.conventions.d4_operations`) with their classes mapped alike: (8N, n, n), (8N,)."""
    ops = conventions.d4_operations()
    return np.concatenate([f(x) for f, _ in ops]), np.concatenate([g(y) for _, g in ops]).astype(np.int8)


@register
class LinearModel(PolarizationModel):
    """StandardScaler (spread floored as in PCA-kNN) → LogisticRegression(``C``, lbfgs, ``max_iter``) on the
    flattened preprocessed patterns, trained on their 8 D4 images when ``d4``; at most ``max_patterns`` of
    those (a seeded random subset) go into the fit, which bounds its memory (8 B per pixel and pattern)."""

    kinds = ("linear",)
    suffix = ".npz"

    def __init__(self, preprocessor: Preprocessor | None = None, *, C: float = 0.1, max_iter: int = 300,
                 d4: bool = True, max_patterns: int | None = 50000, seed: int = 888, kind: str = "linear",
                 metadata: dict[str, Any] | None = None) -> None:
        super().__init__(kind, preprocessor if preprocessor is not None else Preprocessor(), metadata)
        if not float(C) > 0 or int(max_iter) < 1:
            raise ValueError(f"C must be > 0 and max_iter ≥ 1, got {C} and {max_iter}")
        if max_patterns is not None and int(max_patterns) < 1:
            raise ValueError(f"max_patterns must be ≥ 1 or None, got {max_patterns}")
        self.C, self.max_iter, self.d4, self.seed = float(C), int(max_iter), bool(d4), int(seed)
        self.max_patterns = None if max_patterns is None else int(max_patterns)
        self._arrays: dict[str, np.ndarray] | None = None

    def params(self) -> dict[str, Any]:
        """The constructor parameters (saved with the model)."""
        return {"C": self.C, "max_iter": self.max_iter, "d4": self.d4, "max_patterns": self.max_patterns, "seed": self.seed}

    def _fitted(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            raise ValueError("the linear model is not fitted; call fit(patterns, labels, sampling_mrad) or load one")
        return self._arrays

    def fit(self, patterns: np.ndarray, labels: np.ndarray, sampling_mrad: float, **kwargs: Any) -> "LinearModel":
        """Fit the scaler and the regression on the preprocessed patterns (and their D4 images). Extra
        keyword arguments are recorded in the metadata; networks' ``validation``/``checkpoint_path`` are
        not used (a convex fit needs no early stopping)."""
        x = self.preprocessor.transform(patterns, sampling_mrad)
        y = _labels(labels, len(x))
        class_counts = np.bincount(y, minlength=conventions.N_CLASSES).tolist()
        if self.d4:
            x, y = d4_images(x, y)
        if self.max_patterns is not None and len(x) > self.max_patterns:
            keep = np.sort(np.random.default_rng(self.seed).choice(len(x), self.max_patterns, replace=False))
            x, y = x[keep], y[keep]
        x = x.reshape(len(x), -1).astype(np.float64)
        scaler = StandardScaler().fit(x)
        scale = floored_scale(scaler.scale_)
        z = (x - scaler.mean_) / scale
        with warnings.catch_warnings():  # an unconverged fit is recorded in the metadata instead
            warnings.simplefilter("ignore", ConvergenceWarning)
            reg = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed).fit(z, y)
        coef = np.zeros((conventions.N_CLASSES, x.shape[1]), np.float32)
        intercept = np.full(conventions.N_CLASSES, -np.inf, np.float32)  # a class never seen: probability 0
        classes = reg.classes_.astype(int)
        if len(classes) == 2:  # sklearn keeps one score for two classes: class 1 against class 0
            coef[classes[1]], intercept[classes[1]] = reg.coef_[0], reg.intercept_[0]
            coef[classes[0]], intercept[classes[0]] = 0.0, 0.0
        else:
            coef[classes], intercept[classes] = reg.coef_, reg.intercept_
        self._arrays = {"scaler_mean": scaler.mean_.astype(np.float32), "scaler_scale": scale.astype(np.float32),
                        "coef": coef, "intercept": intercept}
        self.metadata.update({
            "n_train": int(len(labels)), "n_fit": int(len(x)), "train_sampling_mrad": float(sampling_mrad),
            "class_counts": class_counts,
            "iterations": int(np.max(reg.n_iter_)), "converged": bool(np.max(reg.n_iter_) < self.max_iter),
            **{k: v for k, v in kwargs.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))},
        })
        return self

    def predict_proba(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """Softmax of the linear scores (N, 8) float32."""
        a = self._fitted()
        x = np.asarray(self.preprocessor.transform(patterns, sampling_mrad), dtype=np.float64)
        x = x.reshape(len(x), -1)
        z = (x - a["scaler_mean"].astype(np.float64)) / a["scaler_scale"].astype(np.float64)
        scores = z @ a["coef"].astype(np.float64).T + a["intercept"].astype(np.float64)
        scores -= scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    # --- persistence ------------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        return {**super().header(), "params": self.params()}

    def _state(self) -> dict[str, np.ndarray]:
        return dict(self._fitted())

    @classmethod
    def _from_state(cls, header: dict[str, Any], state: dict[str, Any]) -> "LinearModel":
        model = cls(Preprocessor.from_dict(header["preprocessor"]), **header["params"], kind=header["kind"],
                    metadata=header.get("metadata"))
        model._arrays = {k: np.asarray(state[k], dtype=np.float32) for k in ("scaler_mean", "scaler_scale", "coef", "intercept")}
        return model
