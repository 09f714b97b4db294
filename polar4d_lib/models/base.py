"""One estimator interface for every polarization model (scikit-learn style).

A model takes raw diffraction patterns (N, Qx, Qy) *with their angular sampling* (mrad/px): it replays the
preprocessing it was trained with (resampling to its own sampling, centring, crop, normalisation) itself,
so callers never preprocess by hand. ``predict`` returns classes 0–7 (int8), ``predict_proba`` (N, 8)
float32 probabilities. ``save``/``load`` use safe formats only: torch state dicts read back with
``weights_only=True`` (``.pt``) or plain arrays in ``.npz`` read with ``allow_pickle=False``; the
preprocessing, angular sampling and training metadata travel inside as JSON text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from polar4d_lib import conventions
from polar4d_lib.atomic import atomic_write

#: kind → class, filled by ``register``.
REGISTRY: dict[str, type["PolarizationModel"]] = {}


def register(cls: type["PolarizationModel"]) -> type["PolarizationModel"]:
    """Class decorator: make a model class loadable by its ``kinds``."""
    for kind in cls.kinds:
        REGISTRY[kind] = cls
    return cls


class PolarizationModel:
    """Base class. Subclasses set ``kinds`` and implement ``fit``, ``predict_proba``, ``_state`` and
    ``_from_state``."""

    kinds: ClassVar[tuple[str, ...]] = ()
    suffix: ClassVar[str] = ".npz"
    #: What the class reads, as :mod:`polar4d_lib.inputs` names it: ``"patterns"`` (one each, or window means
    #: where the preprocessor records ``average_window_A``) or another input kind's ``reads``.
    reads: ClassVar[str] = "patterns"

    def __init__(self, kind: str, preprocessor: Any, metadata: dict[str, Any] | None = None) -> None:
        if kind not in self.kinds:
            raise ValueError(f"model kind {kind!r} unknown for {type(self).__name__}; use one of {self.kinds}")
        self.kind = kind
        self.preprocessor = preprocessor
        self.metadata: dict[str, Any] = dict(metadata or {})

    @property
    def input_kind(self) -> Any:
        """How a scan or a dataset becomes this model's inputs (:func:`polar4d_lib.inputs.for_model`)."""
        from polar4d_lib import inputs

        return inputs.for_model(self)

    # --- the estimator interface -------------------------------------------------------------
    def fit(self, patterns: np.ndarray, labels: np.ndarray, sampling_mrad: float, **kwargs: Any) -> "PolarizationModel":
        raise NotImplementedError

    def predict_proba(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        raise NotImplementedError

    def predict(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """Most probable class of each pattern (int8, 0–7)."""
        return np.argmax(self.predict_proba(patterns, sampling_mrad), axis=-1).astype(np.int8)

    def predict_angle_deg(self, patterns: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """Predicted in-plane polarization angle (degrees from +x towards +y): the circular mean of the
        class angles weighted by the probabilities (regressors override with their own angle)."""
        return circular_mean_deg(self.predict_proba(patterns, sampling_mrad))

    def predict_maps(self, patterns: np.ndarray, sampling_mrad: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(predict_proba, predict, predict_angle_deg) together — what a scan needs — from one pass: the
        probabilities, their argmax and their circular mean. A model whose classes or angles are not those
        of its probabilities (a regressor, the physics baseline) overrides this."""
        proba = self.predict_proba(patterns, sampling_mrad)
        return proba, np.argmax(proba, axis=-1).astype(np.int8), circular_mean_deg(proba)

    # --- persistence -------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """What travels with the weights: kind, preprocessing, sampling, training metadata."""
        return {"kind": self.kind, "preprocessor": self.preprocessor.to_dict(), "metadata": self.metadata,
                "format": 1}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model atomically (temporary file, then rename). Returns the path."""
        path = Path(path)
        if path.suffix != self.suffix:
            raise ValueError(f"a {self.kind} model is saved as {self.suffix}; got {path.name}")
        return atomic_write(path, self._write)

    def _write(self, path: str) -> None:
        arrays = self._state()
        np.savez(path, __header__=np.array(json.dumps(self.header())), **arrays)

    def _state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @classmethod
    def _from_state(cls, header: dict[str, Any], state: dict[str, Any]) -> "PolarizationModel":
        raise NotImplementedError


def angle_deg(vectors: np.ndarray) -> np.ndarray:
    """Angle (degrees in [0, 360), from +x towards +y) of vectors (..., 2). A tiny negative angle would
    wrap to exactly 360.0 under ``% 360`` in floating point; it is folded to 0 instead."""
    vectors = np.asarray(vectors, dtype=float)
    angle = np.degrees(np.arctan2(vectors[..., 1], vectors[..., 0])) % 360.0
    return np.where(angle >= 360.0, 0.0, angle)


def circular_mean_deg(proba: np.ndarray) -> np.ndarray:
    """Circular mean of the class angles weighted by class probabilities (N, 8), degrees in [0, 360)."""
    angles = np.radians(conventions.CLASS_ANGLES_DEG)
    return angle_deg(np.stack([proba @ np.cos(angles), proba @ np.sin(angles)], axis=-1))


def load_model(path: str | os.PathLike) -> PolarizationModel:
    """Load any polar4d model saved with ``save`` (no code is loaded from the file)."""
    import polar4d_lib.models  # noqa: F401  (registers every model class)

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}; train one with `polar4d train` or omit --model")
    if path.suffix == ".pt":
        import torch

        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or "header" not in blob:
            raise ValueError(f"{path} is not a polar4d model (no header); retrain it with polar4d train")
        header, state = json.loads(blob["header"]), blob
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "__header__" not in data:
                raise ValueError(f"{path} is not a polar4d model (no header); retrain it with polar4d train")
            header = json.loads(str(data["__header__"]))
            state = {k: data[k] for k in data.files if k != "__header__"}
    else:
        raise ValueError(f"{path} is neither .pt nor .npz; polar4d models are saved in one of those")
    kind = header.get("kind")
    if kind not in REGISTRY:
        raise ValueError(f"{path} holds a model of unknown kind {kind!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[kind]._from_state(header, state)
