"""Splits, metrics and the paper's table — scored on un-augmented data only.

Splits, one family: :func:`make_split` gives a :class:`Split` of a dataset, ``'blocked'``
(:func:`specimen_split`, the headline: whole specimens — another K/Na arrangement, with unseen probe
settings and positions — are held out, one per class wherever a class has two specimens or more, else whole
probe settings of a specimen) or ``'random'`` (:func:`random_split`, the paper's 80/10/10 over patterns,
kept for comparison; neighbouring, nearly identical patterns land in train and test). Metrics: accuracy,
macro-F1, the 8 × 8 confusion matrix, mean angular error (degrees), the share of patterns predicted as the
dataset's label and the majority class (the paper's per-dataset score). :func:`evaluate` is the only
scoring path: it calls nothing but ``model.predict`` on the patterns as given, so no training-time
augmentation can reach a score. :func:`aggregate` gives mean ± std over seeds and :func:`paper_table` the
paper's layout (rows = test sets, columns = the ten variants + the physics baseline).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from polar4d_lib import conventions

if TYPE_CHECKING:
    from polar4d_lib.datasets import Dataset

#: The paper's columns ({Conv, VGG, ResNet} × {Reg, Cls, Proto} + PCA) and the physics baseline, in order.
PAPER_COLUMNS: tuple[str, ...] = tuple(
    f"{enc}-{head}" for enc in ("Conv", "VGG", "ResNet") for head in ("Reg", "Cls", "Proto")
) + ("PCA", "Physics")

#: Metrics that :func:`aggregate` summarises as mean ± std over seeds.
SCALAR_METRICS: tuple[str, ...] = (
    "accuracy", "macro_f1", "mean_angular_error_deg", "share_correct", "majority_correct", "n",
)

_ENCODERS = {"cnn": "Conv", "conv": "Conv", "vgg": "VGG", "resnet": "ResNet"}
_HEADS = {"reg": "Reg", "cls": "Cls", "proto": "Proto"}


# --- splits -----------------------------------------------------------------------------------------

def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    f = tuple(float(x) for x in fractions)
    if len(f) != 3 or min(f) < 0 or abs(sum(f) - 1.0) > 1e-9 or f[0] <= 0:
        raise ValueError(f"fractions must be (train, val, test) ≥ 0 with train > 0 summing to 1, got {fractions!r}")
    return f  # type: ignore[return-value]


def random_split(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                 seed: int = 888) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paper's split: a random permutation of ``n`` patterns cut into train/val/test index arrays
    (sizes ``round(f·n)`` for val and test, the rest train; each sorted)."""
    f = _check_fractions(fractions)
    if int(n) < 1:
        raise ValueError(f"n must be a positive number of patterns, got {n!r}")
    order = np.random.default_rng(seed).permutation(int(n))
    n_val, n_test = int(round(f[1] * n)), int(round(f[2] * n))
    n_train = int(n) - n_val - n_test
    parts = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
    return tuple(np.sort(p).astype(np.int64) for p in parts)  # type: ignore[return-value]


@dataclass
class Split:
    """Index arrays into a dataset and how they were made."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    kind: str

    def describe(self) -> str:
        return f"{self.kind}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test patterns"


def specimen_split(dataset: "Dataset", seed: int) -> Split:
    """Hold out, for each class, one whole specimen (if the class has ≥ 2) or else one whole probe
    setting of each of its specimens, for test and again for validation; the rest trains."""
    labels, unit, setting = dataset["label"], dataset["unit"], dataset["probe_setting"]
    rng = np.random.default_rng(seed)
    part = np.zeros(len(labels), dtype=np.int8)  # 0 train, 1 val, 2 test
    for k in range(conventions.N_CLASSES):
        in_class = labels == k
        units = np.unique(unit[in_class])
        if len(units) == 0:
            continue
        if len(units) >= 3:
            test_u, val_u = rng.choice(units, 2, replace=False)
            part[in_class & (unit == test_u)] = 2
            part[in_class & (unit == val_u)] = 1
            continue
        if len(units) == 2:
            test_u = rng.choice(units)
            part[in_class & (unit == test_u)] = 2
            units = units[units != test_u]
        for u in units:  # validation (and test, for a single specimen) from whole probe settings
            settings = np.unique(setting[in_class & (unit == u)])
            if len(settings) < 2:
                raise ValueError(f"class {conventions.class_name(k)} has too few specimens and probe settings to "
                                 "hold any out; simulate more probe_settings or disorder_seeds")
            chosen = rng.permutation(settings)
            if not np.any(part[in_class] == 2):
                part[in_class & (unit == u) & (setting == chosen[0])] = 2
                chosen = chosen[1:]
            if len(chosen) >= 2:
                part[in_class & (unit == u) & (setting == chosen[0])] = 1
    idx = np.arange(len(labels))
    return Split(idx[part == 0], idx[part == 1], idx[part == 2], "held-out specimens / probe settings")


def make_split(dataset: "Dataset", kind: str, seed: int) -> Split:
    """``'blocked'`` (:func:`specimen_split`, the headline) or ``'random'`` (the paper's 80/10/10)."""
    if kind == "blocked":
        return specimen_split(dataset, seed)
    if kind == "random":
        train, val, test = random_split(len(dataset), seed=seed)
        return Split(train, val, test, "random 80/10/10 over patterns (paper)")
    raise ValueError(f"unknown split {kind!r}; use 'blocked' or 'random'")


# --- metrics ----------------------------------------------------------------------------------------

def _labels(values: Any, name: str) -> np.ndarray:
    y = np.asarray(values)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer array of classes 0–7, got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= conventions.N_CLASSES):
        raise ValueError(f"{name} holds classes outside 0–7; map names with conventions.class_index first")
    return y.astype(np.int64)


def angular_error_deg(y_true: np.ndarray, pred_angle_deg: np.ndarray) -> np.ndarray:
    """Circular difference (degrees, 0–180) between predicted angles and the true classes' angles."""
    true = conventions.CLASS_ANGLES_DEG[_labels(y_true, "y_true")]
    diff = np.abs(np.asarray(pred_angle_deg, dtype=float) - true) % 360.0
    return np.minimum(diff, 360.0 - diff)


def _label_set(dataset_label: Any) -> list[int]:
    if isinstance(dataset_label, (str, int, np.integer)):
        return [conventions.class_index(dataset_label)]
    return sorted({conventions.class_index(k) for k in dataset_label})


def label_set_scores(y_pred: np.ndarray, dataset_label: Any) -> tuple[float, bool]:
    """The paper's scores of predicted classes against a label a test set carries as a whole (a class, a name,
    or several): the share of predictions in it, and whether the most frequent prediction is in it."""
    p = _labels(y_pred, "y_pred")
    accepted = _label_set(dataset_label)
    majority = int(np.argmax(np.bincount(p, minlength=conventions.N_CLASSES)))
    return float(np.mean(np.isin(p, accepted))), majority in accepted


def metrics(y_true: np.ndarray, y_pred: np.ndarray, dataset_label: Any = None,
            pred_angle_deg: np.ndarray | None = None) -> dict[str, Any]:
    """Scores of predicted classes against true ones.

    ``dataset_label`` (a class, a name, or several, e.g. ``("RM", "RD")`` for a scan labelled "RM or RD")
    is the label a test set carries as a whole; ``share_correct`` is the share of patterns predicted as
    it (the paper's score; per-pattern accuracy when None) and ``majority_correct`` whether the most
    frequent prediction is it. ``pred_angle_deg`` (continuous angles) replaces the predicted classes'
    angles in the angular error. macro-F1 is sklearn's over the classes present in truth or prediction.
    """
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if len(t) != len(p) or len(t) == 0:
        raise ValueError(f"y_true and y_pred must be equally long and non-empty, got {len(t)} and {len(p)}")
    angles = conventions.CLASS_ANGLES_DEG[p] if pred_angle_deg is None else np.asarray(pred_angle_deg, float)
    if angles.shape != t.shape:
        raise ValueError(f"pred_angle_deg must have one angle per pattern, got shape {angles.shape}")
    counts = np.bincount(p, minlength=conventions.N_CLASSES)
    majority = int(np.argmax(counts))
    if dataset_label is not None:
        share, majority_ok = label_set_scores(p, dataset_label)
    else:
        share, majority_ok = float(accuracy_score(t, p)), majority == int(np.argmax(np.bincount(t)))
    return {
        "n": int(len(t)),
        "accuracy": float(accuracy_score(t, p)),
        "macro_f1": float(f1_score(t, p, average="macro", zero_division=0)),
        "confusion": confusion_matrix(t, p, labels=np.arange(conventions.N_CLASSES)),
        "mean_angular_error_deg": float(np.mean(angular_error_deg(t, angles))),
        "share_correct": share,
        "majority_class": majority,
        "majority_correct": bool(majority_ok),
    }


def evaluate(model: Any, patterns: np.ndarray, labels: np.ndarray, sampling_mrad: float,
             dataset_label: Any = None) -> dict[str, Any]:
    """Score a fitted model on its raw inputs at ``sampling_mrad`` mrad/px: patterns (N, Qx, Qy), or
    whatever its input kind makes of them (cell stacks (N, parts, Qx, Qy), :mod:`polar4d_lib.inputs`).

    The evaluation path: only ``model.predict`` is called (it replays the model's stored preprocessing,
    never augmentation), then :func:`metrics`. Deterministic for a deterministic model.
    """
    y = _labels(labels, "labels")
    if np.ndim(patterns) < 3 or len(patterns) != len(y):
        raise ValueError(f"patterns must be (N, Qx, Qy) (or cell stacks (N, parts, Qx, Qy)) with one label each, "
                         f"got {np.shape(patterns)} and {len(y)} labels")
    pred = np.asarray(model.predict(patterns, sampling_mrad)).astype(np.int64)
    return metrics(y, pred, dataset_label=dataset_label)


def aggregate(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds of per-seed :func:`metrics` dicts.

    Scalar metrics (``SCALAR_METRICS``) become ``{"mean", "std", "n_seeds"}`` (std with ddof = 1, 0 for one
    seed); ``confusion`` is summed over seeds; ``majority_class`` becomes the list of per-seed values.
    """
    if not results:
        raise ValueError("aggregate needs at least one per-seed metrics dict")
    out: dict[str, Any] = {}
    for key in SCALAR_METRICS:
        if all(key in r for r in results):
            v = np.array([float(r[key]) for r in results])
            out[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                        "n_seeds": len(v)}
    if all("confusion" in r for r in results):
        out["confusion"] = np.sum([np.asarray(r["confusion"]) for r in results], axis=0)
    if all("majority_class" in r for r in results):
        out["majority_class"] = [int(r["majority_class"]) for r in results]
    return out


# --- the paper's table ------------------------------------------------------------------------------

def column_name(model_name: str) -> str:
    """The paper-table column of a model name or kind: ``'resnet18-cls'`` → ``'ResNet-Cls'``,
    ``'pca-knn'`` → ``'PCA'``, ``'physics'`` → ``'Physics'``; column names pass through."""
    if model_name in PAPER_COLUMNS:
        return model_name
    name = model_name.strip().lower()
    if name in ("pca", "pca-knn", "pca_knn"):
        return "PCA"
    if name == "physics":
        return "Physics"
    m = re.fullmatch(r"(cnn|conv|vgg|resnet)\d*[-_ ](reg|cls|proto)", name)
    if m is None:
        raise ValueError(f"model {model_name!r} has no paper-table column; use a kind like 'cnn-cls', "
                         f"'pca-knn', 'physics' or one of {PAPER_COLUMNS}")
    return f"{_ENCODERS[m.group(1)]}-{_HEADS[m.group(2)]}"


def _summary(value: Any, metric: str) -> tuple[float, float]:
    if isinstance(value, Mapping) and metric in value and isinstance(value[metric], Mapping):
        return float(value[metric]["mean"]), float(value[metric]["std"])  # already aggregated
    if isinstance(value, Mapping):
        value = [value]  # one seed
    agg = aggregate(list(value))
    if metric not in agg:
        raise ValueError(f"results have no metric {metric!r}; use one of {SCALAR_METRICS}")
    return agg[metric]["mean"], agg[metric]["std"]


def paper_table(results: Mapping[tuple[str, str], Any], metric: str = "share_correct",
                percent: bool = True, decimals: int = 1) -> "pandas.DataFrame":  # noqa: F821
    """The paper's table: rows = test sets (in first-seen order), columns = ``PAPER_COLUMNS``, cells
    ``"mean ± std"`` of ``metric`` (in % when ``percent``), ``"–"`` where a model was not run.

    ``results`` maps ``(test_set_name, model_name)`` to per-seed metric dicts (a list), one dict, or an
    :func:`aggregate` output; model names are kinds or column names (see :func:`column_name`).
    """
    import pandas as pd

    rows: list[str] = []
    cells: dict[tuple[str, str], str] = {}
    scale = 100.0 if percent else 1.0
    for (test_set, model_name), value in results.items():
        if test_set not in rows:
            rows.append(test_set)
        column = column_name(model_name)
        if (test_set, column) in cells:
            raise ValueError(f"two results for test set {test_set!r} and column {column}; give each model once")
        mean, std = _summary(value, metric)
        cells[(test_set, column)] = f"{mean * scale:.{decimals}f} ± {std * scale:.{decimals}f}"
    table = pd.DataFrame([[cells.get((r, c), "–") for c in PAPER_COLUMNS] for r in rows],
                         index=pd.Index(rows, name="test set"), columns=list(PAPER_COLUMNS))
    return table
