"""Recipes: what a profile section says to train — the sizes of a run (:class:`TrainSettings`, the
``train``, ``default_model`` and ``stack_model`` sections of ``profiles.yaml``) and the new, unfitted model
they make (:func:`make_model`). The run itself is :func:`polar4d_lib.experiments.train_and_evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from polar4d_lib import config, conventions, inputs, models, profiles
from polar4d_lib.augmentation import AugmentationConfig
from polar4d_lib.preprocessing import Preprocessor


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
