"""How much to trust one decision: reliability scores of class probabilities, and abstention.

A score maps class probabilities (..., 8) to a number in [0, 1], higher = more reliable. :data:`SCORES` is
the one place a score is added; :data:`DEFAULT` is the one ``polar4d predict --abstain-below`` uses — the
best of them in the error-periodicity chapter (``notebooks/04_error_periodicity.py``, by the area under the
selective-accuracy curve of the shipped model). A decision is kept when its score is at least the
threshold: threshold 0 keeps every decision; a threshold of 1 keeps only certain ones (score exactly 1).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def _checked(probabilities: np.ndarray) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim < 1 or p.shape[-1] < 2:
        raise ValueError(f"class probabilities need a class axis of ≥ 2 entries last, got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("class probabilities contain NaN or infinity; check the model's output")
    return np.clip(p, 0.0, 1.0)


def top_probability(probabilities: np.ndarray) -> np.ndarray:
    """The highest class probability (1/C for a uniform guess … 1 for certainty)."""
    return _checked(probabilities).max(axis=-1)


def margin(probabilities: np.ndarray) -> np.ndarray:
    """The highest class probability minus the second highest (0 … 1)."""
    p = np.sort(_checked(probabilities), axis=-1)
    return p[..., -1] - p[..., -2]


def certainty(probabilities: np.ndarray) -> np.ndarray:
    """1 − the Shannon entropy of the probabilities over its maximum log C (0 for a uniform guess, 1 for certainty)."""
    p = _checked(probabilities)
    logs = np.log(np.where(p > 0, p, 1.0))
    return np.clip(1.0 + (p * logs).sum(axis=-1) / np.log(p.shape[-1]), 0.0, 1.0)


#: name → score of class probabilities (..., C) → (...) in [0, 1], higher = more reliable.
SCORES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "probability": top_probability,
    "margin": margin,
    "certainty": certainty,
}
#: The score ``polar4d predict --abstain-below`` thresholds (see the module docstring).
DEFAULT = "margin"


def score(probabilities: np.ndarray, name: str = DEFAULT) -> np.ndarray:
    """The reliability ``name`` (:data:`SCORES`) of class probabilities (..., C): (...) float64 in [0, 1]."""
    if name not in SCORES:
        raise KeyError(f"no reliability score {name!r}; the scores are {', '.join(SCORES)}")
    return SCORES[name](probabilities)


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float in [0, 1], else ValueError naming the flag."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"--abstain-below must be a reliability in [0, 1], got {threshold}")
    return float(threshold)


def abstain(classes: np.ndarray, probabilities: np.ndarray, threshold: float, name: str = DEFAULT) -> np.ndarray:
    """``classes`` (...) int8 with −1 where the reliability ``name`` of ``probabilities`` (..., C) is below ``threshold``."""
    keep = score(probabilities, name) >= check_threshold(threshold)
    return np.where(keep, np.asarray(classes), -1).astype(np.int8)


def coverage_curve(reliability: np.ndarray, correct: np.ndarray,
                   coverages: np.ndarray | None = None) -> dict[str, list[float]]:
    """Selective accuracy against coverage: keep the most reliable share ``c`` of decisions (ties broken
    by order) and score those. ``coverages`` default: 0.05, 0.10, …, 1. Returns ``{"coverage": […],
    "accuracy": […], "threshold": […]}`` (threshold: the lowest score kept)."""
    r = np.asarray(reliability, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=bool).ravel()
    if r.shape != ok.shape or r.size == 0:
        raise ValueError(f"reliability and correct need the same non-zero length, got {r.size} and {ok.size}")
    coverages = np.linspace(0.05, 1.0, 20) if coverages is None else np.asarray(coverages, dtype=np.float64)
    order = np.argsort(-r, kind="stable")
    hits = np.cumsum(ok[order])
    kept = np.clip(np.ceil(coverages * r.size).astype(int), 1, r.size)
    return {"coverage": [float(c) for c in kept / r.size], "accuracy": [float(a) for a in hits[kept - 1] / kept],
            "threshold": [float(t) for t in r[order][kept - 1]]}


def area_under_curve(curve: dict[str, list[float]]) -> float:
    """Mean selective accuracy over the curve's coverages (1 for a perfect model, its accuracy for a score
    that knows nothing): how well a score ranks right above wrong decisions."""
    return float(np.mean(curve["accuracy"]))
