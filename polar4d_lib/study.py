"""The benchmark study: train a model variant on a simulated dataset and score it on held-out data.

Used by ``polar4d train`` and the training chapter. The headline split holds out whole specimens
(another K/Na arrangement, with unseen probe settings and positions), one per class wherever a class has
two specimens or more, and otherwise whole probe settings of a specimen; the paper's random 80/10/10
split over patterns is kept for comparison. Sizes (epochs, seeds, how many patterns) come from the
``train`` section of ``profiles.yaml``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polar4d_lib import config, conventions, evaluation, models, pacbed, profiles
from polar4d_lib.atomic import atomic_write
from polar4d_lib.augmentation import AugmentationConfig
from polar4d_lib.datasets import Dataset, open_dataset
from polar4d_lib.preprocessing import SEARCH_MARGIN_PX, Preprocessor, com_filter


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
    #: (:func:`cell_stack_parts`): ``bins`` parts per cell side, ``strides`` the raster strides a stack is
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
    if kind in models.STACK_KINDS:
        stacks = settings.cell_stacks or {}
        return models.create(kind, preprocessor=preprocessor, bins=int(stacks.get("bins", 4)),
                             half_cell=bool(stacks.get("half_cell", True)), max_epochs=settings.max_epochs,
                             batch_size=settings.batch_size, patience=settings.patience, seed=seed, lr=settings.lr,
                             d4_average=settings.d4_average)
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


def position_groups(dataset: Dataset) -> np.ndarray:
    """One id per (specimen, thickness, probe setting): the patterns a position average may mix."""
    keys = np.stack([dataset["unit"], dataset["thickness_nm"], dataset["probe_setting"]], axis=1)
    return np.unique(keys, axis=0, return_inverse=True)[1].ravel()


def raster_indices(dataset: Dataset, strides: tuple[int, ...], groups: np.ndarray | None = None) -> np.ndarray:
    """Every pattern's (i, j) on its probe setting's cell raster (:func:`polar4d_lib.pacbed.raster_index`),
    after checking that the dataset has such rasters (``cell_grid``) and that ``strides`` divide them."""
    p = dataset.attrs["parameters"]
    if not p.get("cell_grid"):
        raise ValueError("averages.strides > 1 need a dataset simulated with cell_grid: true (whole cell rasters); "
                         "drop strides or simulate with cell_grid")
    side = math.isqrt(int(p["positions_per_setting"]))
    if any(side % s for s in strides):
        raise ValueError(f"averages.strides {list(strides)} must divide the {side} × {side} cell raster of the dataset")
    return pacbed.raster_index(dataset["position_frac"], position_groups(dataset) if groups is None else groups, side)


def averaged_parts(
    dataset: Dataset, split: Split, train: np.ndarray, settings: TrainSettings, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None, tuple[np.ndarray, np.ndarray]]:
    """(patterns, labels) for training, validation (None if the split has none) and test of a model
    trained on position averages: random subsets of ``settings.averages['sizes']`` patterns of one
    group for training and validation, each test group's whole mean for testing."""
    patterns, labels, groups = dataset["patterns"], dataset["label"], position_groups(dataset)
    av = settings.averages or {}
    sizes, n = av.get("sizes", (1, 16)), int(av.get("n", 8 * len(train)))
    strides = tuple(int(s) for s in av.get("strides", (1,)))
    raster = raster_indices(dataset, strides, groups) if max(strides) > 1 else None
    x, first = pacbed.group_averages(patterns[train], groups[train], sizes, n, seed, labels[train],
                                     None if raster is None else raster[train], strides)
    training = (x, labels[train][first])
    validation = None
    if len(split.val):
        x, first = pacbed.group_averages(patterns[split.val], groups[split.val], sizes, max(1, n // 10), seed + 1,
                                         raster=None if raster is None else raster[split.val], strides=strides)
        validation = (x, labels[split.val][first])
    x, first = pacbed.full_group_averages(patterns[split.test], groups[split.test])
    return training, validation, (x, labels[split.test][first])


def cell_stack_parts(
    dataset: Dataset, split: Split, settings: TrainSettings, profile: str, seed: int,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None, tuple[np.ndarray, np.ndarray]]:
    """(stacks, labels) for training, validation (None if the split has none) and test of a stack model
    (``settings.cell_stacks``): every probe setting's cell raster of a ``cell_grid`` dataset folded by
    :func:`pacbed.cell_stack` into bins × bins parts, once per origin of each stride; training and
    validation also get ``off_grid_per_raster`` stacks of each raster as scans at a random period in
    ``off_grid_periods`` would record it from a random origin (:func:`pacbed.resampled_raster`), over one
    or two cells, with the window ``polar4d predict`` takes (the fewest positions that cover them). Training and
    validation stacks are recorded on random detectors of ``profile``'s realistic ranges
    (:func:`polar4d_lib.realistic.record_on_detectors`, every 16 stacks sharing one, the stack holding a
    log-uniform number of electrons in ``electrons``) at the model's sampling and size, and registered again
    (noise can move the brightest part); each stride gives as many stacks per raster, (largest stride)²,
    so a stride-1 raster is recorded that many times. Test stacks are the noise-free folds at the
    dataset's sampling (the holdout, like the whole-group means of :func:`averaged_parts`)."""
    from polar4d_lib import realistic

    cs = settings.cell_stacks or {}
    bins = int(cs.get("bins", 4))
    strides = tuple(int(s) for s in cs.get("strides", (1,)))
    low, high = (float(e) for e in cs.get("electrons", (1e5, 1e7)))
    if not dataset.attrs["parameters"].get("cell_grid"):
        raise ValueError(f"cell stacks are folded from whole cell rasters; {dataset.path} was not simulated with "
                         "cell_grid: true (use the robust profile's dataset)")
    groups = position_groups(dataset)
    raster = raster_indices(dataset, strides, groups)
    side = math.isqrt(int(dataset.attrs["parameters"]["positions_per_setting"]))
    if any(side // s < bins for s in strides):
        raise ValueError(f"cell_stacks.strides {list(strides)} leave fewer than bins = {bins} positions per side of the "
                         f"{side} × {side} cell raster; use smaller strides or fewer bins")
    sampling = float(dataset.attrs["q_sampling_mrad"])
    labels, patterns = dataset["label"], dataset.group["patterns"]
    pre = settings.preprocessor_for()
    ranges = realistic.RealisticRanges.for_profile(profile)
    largest = max(strides)
    parts = bins * bins
    off_grid = int(cs.get("off_grid_per_raster", 0))
    periods = tuple(float(p) for p in cs.get("off_grid_periods", (bins, side)))
    if off_grid < 0 or len(periods) != 2 or not bins <= periods[0] <= periods[1]:
        raise ValueError(f"cell_stacks.off_grid_per_raster is a count ≥ 0 and off_grid_periods [low, high] positions "
                         f"per cell with {bins} ≤ low ≤ high (the model's parts), got {off_grid!r}, {list(periods)}")

    def record(ideal: np.ndarray, record_seed: int) -> np.ndarray:
        recorded = realistic.record_on_detectors(
            ideal.reshape(-1, *ideal.shape[2:]), sampling, ranges, record_seed, pre.sampling_mrad, pre.size,
            per_detector=16 * parts, electrons=(low / parts, high / parts)).reshape(len(ideal), parts, pre.size, pre.size)
        return np.stack([pacbed.cell_stack(s.reshape(bins, bins, pre.size, pre.size), bins, bins) for s in recorded])

    def folds(rows: np.ndarray, record_seed: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Stacks of the groups of ``rows``, read and recorded 64 groups at a time (the ideal folds of a
        whole split would not fit in memory)."""
        out, classes = [], []
        rows = np.sort(rows)
        chunk_groups = np.unique(groups[rows])
        for start in range(0, len(chunk_groups), 64):
            members = rows[np.isin(groups[rows], chunk_groups[start:start + 64])]
            block = patterns.oindex[members]
            ideal = []
            for g in np.unique(groups[members]):
                local = np.flatnonzero(groups[members] == g)
                for stride in strides:
                    n = side // stride
                    copies = (largest // stride) ** 2 if record_seed is not None else 1
                    for ox in range(stride):
                        for oy in range(stride):
                            on = local[pacbed.sub_raster(raster[members[local]], stride, (ox, oy))]
                            on = on[np.lexsort((raster[members[on], 1], raster[members[on], 0]))]
                            stack = pacbed.cell_stack(block[on].reshape(n, n, *block.shape[1:]), n, bins)
                            ideal.append((stack, labels[members[on[0]]], copies))
                if record_seed is not None and off_grid:
                    on = local[np.lexsort((raster[members[local], 1], raster[members[local], 0]))]
                    cell = block[on].reshape(side, side, *block.shape[1:])
                    rng = np.random.default_rng([record_seed, int(g), 3])
                    for _ in range(off_grid):
                        period, cells = float(rng.uniform(*periods)), int(rng.integers(1, 3))
                        scan = pacbed.resampled_raster(cell, period, rng.uniform(0, 1, 2), pacbed.covering_px(period, cells))
                        ideal.append((pacbed.cell_stack(scan, period, bins), labels[members[on[0]]], 1))
            # copies apart, so that each lands on another detector
            ideal = [(s, k) for c in range(largest ** 2) for s, k, copies in ideal if copies > c]
            stacks = np.stack([s for s, _ in ideal])
            out.append(stacks if record_seed is None else record(stacks, record_seed + start))
            classes += [k for _, k in ideal]
        return np.concatenate(out), np.asarray(classes, dtype=np.int64)

    training = folds(split.train, seed)
    validation = folds(split.val, seed + 1) if len(split.val) else None
    return training, validation, folds(split.test, None)


def on_detectors(
    parts: tuple[np.ndarray, np.ndarray] | None, sampling_mrad: float, settings: TrainSettings, profile: str, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """(patterns, labels) recorded on random detectors (``averages.detectors``), at the model's sampling
    on the canvas its centre search sees (the crop plus ``SEARCH_MARGIN_PX`` each side); None
    stays None."""
    if parts is None:
        return None
    from polar4d_lib import realistic

    pre = settings.preprocessor_for()
    ranges = realistic.RealisticRanges.for_profile(profile)
    electrons = (settings.averages or {}).get("electrons")
    x = realistic.record_on_detectors(parts[0], sampling_mrad, ranges, seed, pre.sampling_mrad,
                                       pre.size + 2 * SEARCH_MARGIN_PX,
                                       electrons=tuple(electrons) if electrons is not None else None)
    return x, parts[1]


def train_and_evaluate(
    kind: str, dataset_path: str | os.PathLike, profile: str, seed: int, split_kind: str = "blocked",
    overrides: dict[str, Any] | None = None, checkpoint_path: str | os.PathLike | None = None,
    stage: str = "train",
) -> tuple[models.PolarizationModel, dict[str, Any]]:
    """Train ``kind`` with the profile's ``stage`` settings on the dataset's training part and score it
    on its test part (un-augmented)."""
    settings = TrainSettings.for_profile(profile, overrides, stage)
    if kind in models.STACK_KINDS and settings.cell_stacks is None:
        raise ValueError(f"{kind} trains on cell stacks: use a profile stage with a cell_stacks section "
                         "(robust's stack_model, as polar4d default-model does) and a cell_grid dataset")
    dataset = open_dataset(dataset_path)
    sampling = float(dataset.attrs["q_sampling_mrad"])
    split = make_split(dataset, split_kind, seed)
    train = training_indices(dataset, split, settings, seed)
    model = make_model(kind, settings, seed)
    fit_sampling = sampling
    if kind in models.STACK_KINDS:
        (x_train, y_train), validation, (x_test, y_test) = cell_stack_parts(dataset, split, settings, profile, seed)
        fit_sampling = settings.preprocessor_for().sampling_mrad
    elif settings.averages is not None:
        (x_train, y_train), validation, (x_test, y_test) = averaged_parts(dataset, split, train, settings, seed)
        if settings.averages.get("detectors"):
            (x_train, y_train) = on_detectors((x_train, y_train), sampling, settings, profile, seed)
            validation = on_detectors(validation, sampling, settings, profile, seed + 1)
            fit_sampling = settings.preprocessor_for().sampling_mrad
    else:
        patterns, labels = dataset["patterns"], dataset["label"]  # read here only: the others read what they need
        x_train, y_train, x_test, y_test = patterns[train], labels[train], patterns[split.test], labels[split.test]
        validation = (patterns[split.val], labels[split.val]) if len(split.val) else None
    fit_kwargs: dict[str, Any] = {}
    if kind in models.NEURAL_KINDS:
        # No held-out validation part (too few specimens and probe settings): the network keeps a
        # seeded 10 % of its training patterns for early stopping instead.
        fit_kwargs = {"validation": validation, "checkpoint_path": checkpoint_path}
    model.fit(x_train, y_train, fit_sampling, **fit_kwargs)
    if kind in models.STACK_KINDS:  # stacks, not patterns: the same evaluation path's metrics
        scores = evaluation.metrics(np.asarray(y_test, dtype=np.int64),
                                    np.asarray(model.predict(x_test, sampling)).astype(np.int64))
    else:
        scores = evaluation.evaluate(model, x_test, y_test, sampling)
    model.metadata.update({
        "dataset": str(dataset_path), "dataset_sha256": dataset.attrs.get("content_sha256"), "profile": profile,
        "split": split.describe(), "train_settings": json.loads(json.dumps(asdict(settings))), "test_scores": _plain(scores),
    })
    test = ("noise-free cell stacks of whole groups" if kind in models.STACK_KINDS
            else "whole-group position averages" if settings.averages is not None else "single patterns")
    return model, {"kind": kind, "seed": seed, "split": split.describe(), "n_train": int(len(x_train)),
                   "test_inputs": test, **_plain(scores)}


def _plain(value: Any) -> Any:
    """JSON-ready copy (numpy scalars and arrays to Python)."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def write_json(data: Any, path: str | os.PathLike) -> Path:
    """Write JSON atomically."""
    text = json.dumps(_plain(data), indent=2)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))
