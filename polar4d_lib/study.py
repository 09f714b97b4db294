"""The benchmark study: train a model variant on a simulated dataset and score it on held-out data.

Used by ``polar4d train`` and the training chapter. The headline split holds out whole specimens
(another K/Na arrangement, with unseen probe settings and positions), one per class wherever a class has
two specimens or more, and otherwise whole probe settings of a specimen; the paper's random 80/10/10
split over patterns is kept for comparison. Sizes (epochs, seeds, how many patterns) come from the
``train`` section of ``profiles.yaml``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polar4d_lib import config, conventions, evaluation, inputs, models, profiles
from polar4d_lib.atomic import atomic_write
from polar4d_lib.augmentation import AugmentationConfig
from polar4d_lib.datasets import Dataset, open_dataset
from polar4d_lib.preprocessing import Preprocessor, com_filter


@dataclass(frozen=True)
class TrainSettings:
    """Sizes of a training run (a profile's ``train`` section)."""

    max_epochs: int = 20
    batch_size: int = 128
    lr: float = 2e-4
    patience: int = 5
    seeds: tuple[int, ...] = (888, 1212, 3000, 5000, 7000)
    max_train_patterns: int | None = None
    depth: dict[str, int] = field(default_factory=lambda: {"resnet": 18, "vgg": 11})
    #: False, True (the paper's three) or AugmentationConfig fields (e.g. ``{d4: true, poisson_p: 0.5}``).
    augmentation: bool | dict[str, Any] = False
    com_filter: bool = False
    preprocessor: dict[str, Any] = field(default_factory=dict)
    #: Variants also trained on the paper's random split (None: all); the book's profiles keep it short.
    random_split_kinds: tuple[str, ...] | None = None
    #: Train and test on position-averaged patterns (PACBED, :mod:`polar4d_lib.pacbed`): ``window_A`` (Å, default one cell)
    #: the model records for scans, ``sizes`` [low, high] patterns per training average, ``n`` averages
    #: drawn for training (a tenth as many for validation), ``detectors`` true to record the training and
    #: validation averages on random detectors of the profile's ``realistic`` ranges
    #: (:func:`polar4d_lib.realistic.record_on_detectors`), ``electrons`` [low, high] the electrons per
    #: recorded average (log-uniform; default: the dose of a mean of 1–100 positions), ``min_electrons`` the
    #: electrons per window the model asks of a scan (its window grows at low dose), ``strides`` the raster
    #: strides a training average is drawn from (default [1]; 2 = every other position of a ``cell_grid``
    #: raster, what a scan at twice its step averages over one cell). None: single patterns.
    averages: dict[str, Any] | None = None
    #: Networks predict the mean of their probabilities over the 8 symmetric images of each input
    #: (``NeuralModel.d4_average``): exactly equivariant maps; 8 network passes per prediction.
    d4_average: bool = False
    #: Train a stack model (``cnn-stack``) on cell stacks of a ``cell_grid`` dataset's rasters
    #: (:func:`polar4d_lib.inputs.cell_stack_parts`): ``bins`` parts per cell side, ``strides`` the raster strides a stack is
    #: folded from (1: the whole a/8 raster, 2: every other position, what a scan at a/4 records),
    #: ``electrons`` [low, high] per recorded stack (log-uniform, on random detectors of the profile's
    #: ``realistic`` ranges), ``window_A`` and ``min_electrons`` as for ``averages``,
    #: ``off_grid_per_raster`` further stacks per raster of scans at a random period in
    #: ``off_grid_periods`` [low, high] positions per cell (steps that do not divide the cell,
    #: :func:`polar4d_lib.pacbed.resampled_raster`; default none), ``half_cell`` (default true) the
    #: two-site reading of :mod:`polar4d_lib.models.stack`. None: no stacks.
    cell_stacks: dict[str, Any] | None = None

    def augmentation_config(self) -> AugmentationConfig | None:
        """The augmentation of networks' training batches, or None."""
        if isinstance(self.augmentation, dict):
            return AugmentationConfig.from_dict(self.augmentation)
        return AugmentationConfig() if self.augmentation else None

    def preprocessor_for(self) -> Preprocessor:
        """The profile's preprocessing, with the averaging window when training on averages."""
        values = dict(self.preprocessor)
        windows = self.averages if self.averages is not None else self.cell_stacks
        if windows is not None:
            values["average_window_A"] = float(windows.get("window_A", conventions.A_A))
            if windows.get("min_electrons") is not None:
                values["average_min_electrons"] = float(windows["min_electrons"])
        return Preprocessor(**values)

    @classmethod
    def for_profile(cls, profile: str, overrides: dict[str, Any] | None = None, stage: str = "train") -> "TrainSettings":
        """The ``stage`` section of a profile ('train' for the study, 'default_model' for the shipped
        model), ``overrides`` replacing its keys."""
        values = {**profiles.section(profile, stage), **(overrides or {})}
        config.check_known_keys(values, cls.__dataclass_fields__, "training setting", KeyError)
        if "seeds" in values:
            values["seeds"] = tuple(int(s) for s in values["seeds"])
        if values.get("random_split_kinds") is not None:
            values["random_split_kinds"] = tuple(values["random_split_kinds"])
        if values.get("averages") is not None:
            averages = dict(values["averages"])
            config.check_known_keys(averages, {"window_A", "sizes", "n", "detectors", "electrons", "min_electrons", "strides"}, "averages setting", KeyError)
            values["averages"] = averages
        if values.get("cell_stacks") is not None:
            stacks = dict(values["cell_stacks"])
            config.check_known_keys(stacks, {"bins", "strides", "electrons", "window_A", "min_electrons", "half_cell",
                                             "off_grid_periods", "off_grid_per_raster"}, "cell_stacks setting", KeyError)
            values["cell_stacks"] = stacks
        return cls(**values)


@dataclass
class Split:
    """Index arrays into a dataset and how they were made."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    kind: str

    def describe(self) -> str:
        return f"{self.kind}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test patterns"


def specimen_split(dataset: Dataset, seed: int) -> Split:
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


def make_split(dataset: Dataset, kind: str, seed: int) -> Split:
    """``'blocked'`` (:func:`specimen_split`, the headline) or ``'random'`` (the paper's 80/10/10)."""
    if kind == "blocked":
        return specimen_split(dataset, seed)
    if kind == "random":
        train, val, test = evaluation.random_split(len(dataset), seed=seed)
        return Split(train, val, test, "random 80/10/10 over patterns (paper)")
    raise ValueError(f"unknown split {kind!r}; use 'blocked' or 'random'")


def make_model(kind: str, settings: TrainSettings, seed: int) -> models.PolarizationModel:
    """A new model of ``kind`` with the profile's sizes."""
    preprocessor = settings.preprocessor_for()
    if kind in models.NETWORK_KINDS:
        encoder = kind.split("-")[0]
        return models.create(
            kind, preprocessor=preprocessor, depth=settings.depth.get(encoder),
            augmentation=settings.augmentation_config(),
            max_epochs=settings.max_epochs, batch_size=settings.batch_size, patience=settings.patience, seed=seed,
            lr=settings.lr, d4_average=settings.d4_average,
        )
    if kind in models.NEURAL_KINDS:  # the other networks: options of the input kind they read (cell stacks)
        options = inputs.of_model_kind(kind, preprocessor.average_window_A).model_options(kind, settings)
        return models.create(kind, preprocessor=preprocessor, max_epochs=settings.max_epochs,
                             batch_size=settings.batch_size, patience=settings.patience, seed=seed, lr=settings.lr,
                             d4_average=settings.d4_average, **options)
    if kind == "pca-knn":
        return models.create(kind, preprocessor=preprocessor, seed=seed)
    if kind == "linear":
        augmentation = settings.augmentation_config()
        return models.create(kind, preprocessor=preprocessor, seed=seed, d4=bool(augmentation and augmentation.d4))
    model = models.create(kind)  # the physics baseline keeps its own preprocessing, and the window
    if settings.averages is not None:
        model.preprocessor.average_window_A = preprocessor.average_window_A
        model.preprocessor.average_min_electrons = preprocessor.average_min_electrons
    return model


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
    split = make_split(dataset, split_kind, seed)
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
        "split": split.describe(), "train_settings": json.loads(json.dumps(asdict(settings))), "test_scores": _plain(scores),
    })
    return model, {"kind": kind, "seed": seed, "split": split.describe(), "n_train": int(len(x_train)),
                   "test_inputs": parts.test_inputs, **_plain(scores)}


def _plain(value: Any) -> Any:
    """JSON-ready copy (numpy scalars and arrays to Python)."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def write_json(data: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically."""
    text = json.dumps(_plain(data), indent=2)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))
