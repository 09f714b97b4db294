"""Experiments: train a model variant on a simulated dataset and score it on held-out data.

Used by ``polar4d train``, ``polar4d default-model`` and the training chapter. The run takes its sizes from a
profile section (:mod:`polar4d_lib.recipes`), its split from :func:`polar4d_lib.evaluation.make_split` (the
headline holds out whole specimens, the paper's random 80/10/10 split over patterns is kept for comparison),
and its inputs from the model's input kind (:mod:`polar4d_lib.inputs`: single patterns, position averages or
cell stacks); it scores the model on the test part, un-augmented, by :func:`polar4d_lib.evaluation.evaluate`.
Results are written as JSON by :func:`write_json`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from polar4d_lib import evaluation, models
from polar4d_lib.atomic import atomic_write
from polar4d_lib.datasets import Dataset, open_dataset
from polar4d_lib.evaluation import Split
from polar4d_lib.preprocessing import com_filter
from polar4d_lib.recipes import TrainSettings, make_model


def training_indices(dataset: Dataset, split: Split, settings: TrainSettings, seed: int) -> np.ndarray:
    """The training patterns after the optional centre-of-mass filter and subsampling."""
    train = split.train
    if settings.com_filter:
        groups = dataset["unit"][train] * 1000 + np.unique(dataset["thickness_nm"], return_inverse=True)[1][train]
        keep = com_filter(dataset["patterns"][train], float(dataset.attrs["q_sampling_mrad"]), groups)
        train = train[keep]
    if settings.max_train_patterns is not None and len(train) > settings.max_train_patterns:
        train = np.sort(np.random.default_rng(seed).choice(train, settings.max_train_patterns, replace=False))
    return train


def train_and_evaluate(
    kind: str, dataset_path: str | os.PathLike, profile: str, seed: int, split_kind: str = "blocked",
    overrides: dict[str, Any] | None = None, checkpoint_path: str | os.PathLike | None = None,
    stage: str = "train",
) -> tuple[models.PolarizationModel, dict[str, Any]]:
    """Train ``kind`` with the profile's ``stage`` settings on the dataset's training part and score it
    on its test part (un-augmented)."""
    settings = TrainSettings.for_profile(profile, overrides, stage)
    dataset = open_dataset(dataset_path)
    split = evaluation.make_split(dataset, split_kind, seed)
    train = training_indices(dataset, split, settings, seed)
    model = make_model(kind, settings, seed)
    parts = model.input_kind.training_inputs(dataset, split, train, settings, profile, seed)
    (x_train, y_train), (x_test, y_test) = parts.train, parts.test
    fit_kwargs: dict[str, Any] = {}
    if kind in models.NEURAL_KINDS:
        # No held-out validation part (too few specimens and probe settings): the network keeps a
        # seeded 10 % of its training patterns for early stopping instead.
        fit_kwargs = {"validation": parts.validation, "checkpoint_path": checkpoint_path}
    model.fit(x_train, y_train, parts.fit_sampling_mrad, **fit_kwargs)
    scores = evaluation.evaluate(model, x_test, y_test, parts.test_sampling_mrad)
    model.metadata.update({
        "dataset": str(dataset_path), "dataset_sha256": dataset.attrs.get("content_sha256"), "profile": profile,
        "split": split.describe(), "train_settings": json.loads(json.dumps(asdict(settings))), "test_scores": plain(scores),
    })
    return model, {"kind": kind, "seed": seed, "split": split.describe(), "n_train": int(len(x_train)),
                   "test_inputs": parts.test_inputs, **plain(scores)}


def plain(value: Any) -> Any:
    """JSON-ready copy (numpy scalars and arrays to Python)."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def write_json(data: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically."""
    text = json.dumps(plain(data), indent=2)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


#: The column name of the shipped default model in the chapters' tables.
SHIPPED = "cnn-stack (shipped)"


def chapter_models(results_dir: str | os.PathLike, profile: str, kinds: list[str] | None = None,
                   shipped: bool = True) -> dict[str, Any]:
    """The models a chapter maps with, by column name (:func:`polar4d_lib.evaluation.column_name`): those of
    ``kinds`` (None: every one) that chapter 02 saved in ``results_dir/models``, then the shipped default
    model as :data:`SHIPPED`. A missing folder or kind is a FileNotFoundError saying what to run."""
    from polar4d_lib.cli import default_model_path

    folder = Path(results_dir) / "models"
    if not folder.exists():
        raise FileNotFoundError(f"{folder} missing; run chapter 02_training with profile={profile!r} first "
                                f"(polar4d book --profile {profile})")
    fitted = {}
    for path in sorted(folder.iterdir()):
        model = models.load_model(path)
        if kinds is None or model.kind in kinds:
            fitted[evaluation.column_name(model.kind)] = model
    missing = sorted(set(kinds or ()) - {m.kind for m in fitted.values()})
    if missing:
        raise FileNotFoundError(f"no trained {', '.join(missing)} in {folder}; drop them from `kinds` or train "
                                "them in chapter 02_training")
    if shipped:
        fitted[SHIPPED] = models.load_model(default_model_path())
    return fitted
