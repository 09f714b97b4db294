"""Irregularity of a polarization map: where the decisions look unlike their surroundings, computed from the
predictions alone — the map a microscopist reads for defects and domain walls.

A score maps class probabilities (Rx, Ry, 8) — and, where known, the cell period in positions — to a map
(Rx, Ry), higher = more likely a defect or a wall. The scores disagree with neighbours (the 8 around each
position, edges repeated), measure the decision's own uncertainty, or do either after the periodic part is
removed: the mean of the score over every position at the same place in the unit cell (the error-periodicity
chapter's folding, by positions modulo the period) is subtracted, so errors that repeat with the lattice do
not read as defects. :data:`SCORES` is the one place a score is added; :data:`DEFAULT` is the one
``polar4d predict`` writes (the best for the shipped model in the defect chapter,
``notebooks/05_defects.py``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from polar4d_lib import conventions, reliability
from polar4d_lib.models.base import circular_mean_deg

_OFFSETS = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0)]


def _checked(probabilities: np.ndarray) -> np.ndarray:
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 3 or p.shape[-1] != conventions.N_CLASSES:
        raise ValueError(f"a probability map must be (Rx, Ry, {conventions.N_CLASSES}), got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("the probability map contains NaN or infinity; check the model's output")
    return p


def _neighbours(values: np.ndarray) -> np.ndarray:
    """The 8 neighbours (8, Rx, Ry, …) of every position of ``values`` (Rx, Ry, …), edges repeated."""
    pad = ((1, 1), (1, 1)) + ((0, 0),) * (values.ndim - 2)
    padded = np.pad(values, pad, mode="edge")
    rx, ry = values.shape[:2]
    return np.stack([padded[1 + dx:1 + dx + rx, 1 + dy:1 + dy + ry] for dx, dy in _OFFSETS])


def disagreement(probabilities: np.ndarray, period_px: float | None = None) -> np.ndarray:
    """Share of the 8 neighbours whose class differs from the position's (0 … 1)."""
    classes = _checked(probabilities).argmax(axis=-1)
    return (_neighbours(classes) != classes[None]).mean(axis=0)


def angle_change(probabilities: np.ndarray, period_px: float | None = None) -> np.ndarray:
    """Mean angle (degrees, 0 … 180) between the position's probability-weighted polarization direction and
    its 8 neighbours'."""
    theta = circular_mean_deg(_checked(probabilities))
    diff = np.abs(np.mod(_neighbours(theta) - theta[None] + 180.0, 360.0) - 180.0)
    return diff.mean(axis=0)


def entropy(probabilities: np.ndarray, period_px: float | None = None) -> np.ndarray:
    """The normalised entropy of the position's probabilities (0 certain … 1 uniform)."""
    return 1.0 - reliability.certainty(_checked(probabilities))


def periodic_part_removed(values: np.ndarray, period_px: float | None) -> np.ndarray:
    """``values`` (Rx, Ry) minus their mean over the positions at the same place in the unit cell: positions
    binned by their index modulo ``period_px`` (round(period) bins per side); None or a period under 2
    positions: returned unchanged."""
    v = np.asarray(values, dtype=np.float64)
    if period_px is None or not period_px >= 2:
        return v
    bins = int(round(period_px))
    rx, ry = v.shape
    bx = np.floor(np.mod(np.arange(rx), period_px) / period_px * bins).astype(int)
    by = np.floor(np.mod(np.arange(ry), period_px) / period_px * bins).astype(int)
    flat = (bx[:, None] * bins + by[None, :]).ravel()
    sums = np.bincount(flat, weights=v.ravel(), minlength=bins * bins)
    counts = np.bincount(flat, minlength=bins * bins)
    return v - (sums / np.maximum(counts, 1))[flat].reshape(rx, ry)


def _without_periodic(score: Callable[[np.ndarray, float | None], np.ndarray]):
    def removed(probabilities: np.ndarray, period_px: float | None = None) -> np.ndarray:
        return periodic_part_removed(score(probabilities, period_px), period_px)

    removed.__name__ = f"{score.__name__}_periodic_part_removed"
    removed.__doc__ = f"{score.__doc__.splitlines()[0]} Its periodic part removed (:func:`periodic_part_removed`)."
    return removed


#: name → score of a probability map (Rx, Ry, 8) and the cell period (positions, or None) → (Rx, Ry).
SCORES: dict[str, Callable[[np.ndarray, float | None], np.ndarray]] = {
    "neighbour disagreement": disagreement,
    "neighbour disagreement, periodic part removed": _without_periodic(disagreement),
    "angle change": angle_change,
    "angle change, periodic part removed": _without_periodic(angle_change),
    "entropy": entropy,
    "entropy, periodic part removed": _without_periodic(entropy),
}
#: The score ``polar4d predict`` writes as ``irregularity``: the defect chapter's best for the shipped model
#: (default profile: mean of its ROC AUC over vacancies, a vacancy cluster and walls 0.564; angle change 0.495).
DEFAULT = "entropy, periodic part removed"


def score(probabilities: np.ndarray, period_px: float | None = None, name: str = DEFAULT) -> np.ndarray:
    """The irregularity ``name`` (:data:`SCORES`) of a probability map (Rx, Ry, 8): (Rx, Ry) float32."""
    if name not in SCORES:
        raise KeyError(f"no irregularity score {name!r}; the scores are {', '.join(SCORES)}")
    return SCORES[name](probabilities, period_px).astype(np.float32)
