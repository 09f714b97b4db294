"""Input kinds: how a scan, or a dataset's parts, become a model's inputs.

A model reads one of the input kinds registered here (:data:`REGISTRY`, the one place a new case is added):

- ``single-patterns``: every probe position's pattern as recorded;
- ``window-means``: every pattern replaced by the mean of the window of positions around it (PACBED,
  :mod:`polar4d_lib.pacbed`): a model whose preprocessor records ``average_window_A`` (Å);
- ``cell-stacks``: every window folded into the parts of the unit cell (:func:`pacbed.cell_stack`): a model
  class that reads stacks (``reads = "cell-stacks"``, :mod:`polar4d_lib.models.stack`).

A model's input kind (``model.input_kind``, :func:`for_model`) follows from what its class reads
(``PolarizationModel.reads``) and whether its preprocessor records a window. Each input kind turns

- a scan (:class:`polar4d_lib.io.Scan`) into the model's inputs and their probabilities back into maps over
  the scan's positions, with the window, the cell period and why (:meth:`InputKind.map_scan`, what
  :func:`polar4d_lib.predict.predict_scan` asks once), and says why it would refuse a scan or distrust it
  (:meth:`InputKind.refusal`, :meth:`InputKind.coarse_step_warning`);
- a dataset's training, validation and test parts into the model's inputs (:meth:`InputKind.training_inputs`,
  what :func:`polar4d_lib.experiments.train_and_evaluate` asks), with the constructor options its recipe
  adds (:meth:`InputKind.model_options`).

The geometry (windows, lattice periods, folding, averaging) is :mod:`polar4d_lib.pacbed`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from tqdm.auto import tqdm

from polar4d_lib import acquisition, conventions, pacbed, streaming
from polar4d_lib.io import Scan

if TYPE_CHECKING:  # only for hints: these import this module's callers
    from polar4d_lib.datasets import Dataset
    from polar4d_lib.evaluation import Split
    from polar4d_lib.recipes import TrainSettings

#: (inputs, labels) of one part of a dataset.
Part = tuple[np.ndarray, np.ndarray]


@dataclass
class ScanMaps:
    """A scan's model outputs, one row per position (Rx·Ry, x-major): ``probabilities`` (N, 8), ``classes``
    (N,), ``angle_deg`` (N,, degrees from +x towards +y); the averaging window in positions per side and how
    it was found; the cell period (positions) the windows were folded at, None where nothing was folded."""

    probabilities: np.ndarray
    classes: np.ndarray
    angle_deg: np.ndarray
    window_px: int
    averaging: str
    cell_period_px: float | None = None
    #: Decisions along x and y (:func:`polar4d_lib.streaming.decision_grid`) and the positions between them.
    decisions: tuple[int, int] | None = None
    decision_stride: int = 1


@dataclass
class TrainingInputs:
    """A dataset's parts as a model's inputs: ``train``, ``validation`` (None where the split has none) and
    ``test`` (inputs, labels); the angular sampling (mrad/px) the model is fitted at and the test inputs are
    at; what the test inputs are (for the scores' record)."""

    train: Part
    validation: Part | None
    test: Part
    fit_sampling_mrad: float
    test_sampling_mrad: float
    test_inputs: str


@dataclass(frozen=True)
class Decisions:
    """Where a map's decisions are and how they read the scan: the input kind's name, the decisions' window
    starts along x and y (:func:`polar4d_lib.streaming.decision_grid`), the window (positions per side), the
    cell period it is folded at (positions; None: not folded), the scan's angular sampling (mrad/px) and
    rotation (degrees), the decision rows per model call and the scan's rows."""

    kind: str
    starts_x: np.ndarray
    starts_y: np.ndarray
    window: int
    period: float | None
    sampling_mrad: float
    rotation_deg: float
    per_group: int
    size_x: int


def decide_chunk(model: Any, rows_of: Callable[[int, int], np.ndarray], decisions: Decisions, first: int, stop: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model's probabilities (n, Dy, 8), classes (n, Dy) and angles (n, Dy) for decision rows ``first`` …
    ``stop`` − 1: the scan rows their windows cover, read by ``rows_of(lo, hi)`` (:meth:`Scan.rows`), rotated
    into the scan frame, prepared by the input kind once (:meth:`InputKind.prepare`) and decided a row group
    at a time (:meth:`InputKind.decide`). Runs where the chunk is mapped: here or on a dask worker."""
    kind, d = get(decisions.kind), decisions
    lo, hi = streaming.rows_spanned(d.starts_x, d.window, d.size_x, first, stop)
    rows = rows_of(lo, hi)
    rows = into_scan_frame(rows.reshape(-1, *rows.shape[2:]), d.rotation_deg).reshape(rows.shape)
    block = kind.prepare(model, rows, d.sampling_mrad)
    del rows
    out = [kind.decide(model, block, d.starts_x[g:min(g + d.per_group, stop)] - lo, d.starts_y, d.window, d.period,
                       d.sampling_mrad) for g in range(first, stop, d.per_group)]
    return tuple(np.concatenate([o[i] for o in out]) for i in range(3))


class InputKind:
    """Base class: one way a model reads a scan. Subclasses set ``name``, ``reads`` (the model classes'
    ``reads`` it serves), ``windowed`` (whether it serves models with a window: True, False or None for
    either), and override what differs."""

    name: ClassVar[str] = ""
    reads: ClassVar[str] = "patterns"
    windowed: ClassVar[bool | None] = None
    #: Whether the model keeps the parts of a unit cell apart (then no cell mean aliases).
    folds_cell: ClassVar[bool] = False
    #: The profile section a default-model candidate of this kind trains from (``polar4d default-model``).
    recipe_section: ClassVar[str] = "default_model"

    def __repr__(self) -> str:
        return f"<input kind {self.name}>"

    # --- a scan --------------------------------------------------------------------------------
    def window(self, model: Any, scan: Scan, window_px: int | None = None,
               dose_e_per_pattern: float | None = None) -> tuple[int, str, float | None]:
        """Probe positions per side of the window each position's input is made from, how it was found,
        and the cell period (positions) it is folded at (None: not folded). ``window_px`` if given."""
        n = pacbed._check_window(window_px)
        return n, f"{n} × {n} positions (given)", None

    def map_scan(self, model: Any, scan: Scan, window_px: int | None = None, dose_e_per_pattern: float | None = None,
                 memory_limit_gb: float | None = None, progress: bool = False, scheduler: str | None = None) -> ScanMaps:
        """``scan`` in, the model's outputs at its positions out (:class:`ScanMaps`). ``window_px``
        overrides the window, ``dose_e_per_pattern`` (e/pattern) the dose of data not in counts. The scan is
        read a chunk of scan rows at a time (:func:`decide_chunk`), this process within ``memory_limit_gb``
        (GB; None: the scan rows within :data:`streaming.DEFAULT_WORKING_BYTES`; :mod:`polar4d_lib.streaming`),
        with a progress bar where ``progress``; ``scheduler``: a dask.distributed scheduler's address whose
        workers map the chunks, reading the scan's file themselves. The maps depend on neither."""
        window, note, period = self.window(model, scan, window_px, dose_e_per_pattern)
        rx, ry, qx, qy = scan.data.shape
        stride = self.decision_stride(model, window, period)
        xs, xi = streaming.decision_grid(rx, window, stride)
        ys, yi = streaming.decision_grid(ry, window, stride)
        decisions = Decisions(self.name, xs, ys, window, period, scan.require_sampling(), scan.scan_rotation_deg,
                              streaming.group_rows(len(ys)), rx)
        plan = streaming.chunks(xs, window, rx, ry * qx * qy * 4, decisions.per_group,
                                streaming.available_bytes(memory_limit_gb), memory_limit_gb)
        if scheduler is None:
            results = (decide_chunk(model, scan.rows, decisions, first, stop) for first, stop in plan)
        else:
            results = streaming.on_cluster(scheduler, decide_chunk, model, streaming.file_rows(scan), decisions, plan)
        proba = np.empty((len(xs), len(ys), conventions.N_CLASSES), dtype=np.float32)
        classes = np.empty((len(xs), len(ys)), dtype=np.int64)
        angle = np.empty((len(xs), len(ys)), dtype=np.float32)
        bar = tqdm(total=len(plan), desc="scan rows", unit="chunk", disable=not progress or len(plan) < 2)
        for (first, stop), (p, c, a) in zip(plan, results):
            proba[first:stop], classes[first:stop], angle[first:stop] = p, c, a
            bar.update()
        bar.close()

        def spread(a: np.ndarray) -> np.ndarray:
            return a[xi][:, yi].reshape((rx * ry,) + a.shape[2:])

        return ScanMaps(spread(proba), spread(classes), spread(angle), window, note, period, (len(xs), len(ys)), stride)

    def decision_stride(self, model: Any, window: int, period: float | None) -> int:
        """Positions between neighbouring decisions (:func:`polar4d_lib.streaming.decision_grid`): 1, each
        position its own window."""
        return 1

    def prepare(self, model: Any, rows: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """Scan rows (n, Ry, Qx, Qy) in the scan frame as the decisions read them (here: as they are)."""
        return rows

    def decide(self, model: Any, block: np.ndarray, starts_x: np.ndarray, starts_y: np.ndarray, window: int,
               period: float | None, sampling_mrad: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The model's probabilities (Dx, Dy, 8), classes (Dx, Dy) and angles (Dx, Dy, degrees) for the
        windows of ``block`` (:meth:`prepare`'s) starting at ``starts_x`` × ``starts_y``: here the mean of
        each window's patterns (:func:`pacbed.window_means`; the pattern itself for a window of 1)."""
        if window == 1:  # a position's own pattern: a view where the decisions are consecutive positions
            contiguous = [np.array_equal(s, np.arange(s[0], s[0] + len(s))) for s in (starts_x, starts_y)]
            patterns = block[slice(starts_x[0], starts_x[-1] + 1) if contiguous[0] else starts_x]
            patterns = patterns[:, slice(starts_y[0], starts_y[-1] + 1) if contiguous[1] else starts_y]
        else:
            patterns = pacbed.window_means(block, starts_x, starts_y, window)
        dx, dy = patterns.shape[:2]
        proba, classes, angle = model.predict_maps(patterns.reshape(dx * dy, *patterns.shape[2:]), sampling_mrad)
        return (np.asarray(proba).reshape(dx, dy, -1), np.asarray(classes).reshape(dx, dy),
                np.asarray(angle).reshape(dx, dy))

    def refusal(self, model: Any, scan: Scan) -> str | None:
        """Why :meth:`map_scan` would refuse ``scan``, or None where it maps it."""
        return None

    def coarse_step_warning(self, model: Any, scan: Scan) -> str | None:
        """A one-line warning where the scan step makes the map less reliable, or None."""
        return None

    # --- a dataset -----------------------------------------------------------------------------
    def model_options(self, kind: str, settings: "TrainSettings") -> dict[str, Any]:
        """Constructor options a model of ``kind`` reading this input kind takes from ``settings``
        (beyond the recipe's common ones); refuses settings it cannot train from."""
        return {}

    def training_inputs(self, dataset: "Dataset", split: "Split", train: np.ndarray, settings: "TrainSettings",
                        profile: str, seed: int) -> TrainingInputs:
        """The model's inputs for the training patterns ``train`` and the split's validation and test parts
        (``profile`` for what realistic recording it asks, ``seed`` for its draws)."""
        raise NotImplementedError


#: name → input kind, filled by :func:`register`.
REGISTRY: dict[str, InputKind] = {}


def register(cls: type[InputKind]) -> type[InputKind]:
    """Class decorator: make an input kind known by its ``name``."""
    REGISTRY[cls.name] = cls()
    return cls


def get(name: str) -> InputKind:
    """The input kind called ``name``; a one-line error naming the known ones otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown input kind {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def of_model_kind(kind: str, average_window_A: float | None) -> InputKind:
    """The input kind of a model of ``kind`` whose preprocessor records ``average_window_A`` (Å, None: no
    window): the one that serves what the kind's class reads, with or without a window."""
    from polar4d_lib.models import REGISTRY as MODELS

    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; use one of {', '.join(MODELS)}")
    reads, windowed = MODELS[kind].reads, average_window_A is not None
    found = [k for k in REGISTRY.values() if k.reads == reads and k.windowed in (None, windowed)]
    if len(found) != 1:
        raise ValueError(f"no single input kind serves a {kind} model (reads {reads!r}, "
                         f"{'with' if windowed else 'without'} a window); known: {', '.join(REGISTRY)}")
    return found[0]


def for_model(model: Any) -> InputKind:
    """``model``'s input kind (:func:`of_model_kind` of its kind and its preprocessor's window)."""
    return of_model_kind(model.kind, getattr(model.preprocessor, "average_window_A", None))


def into_scan_frame(patterns: np.ndarray, rotation_deg: float) -> np.ndarray:
    """Patterns (N, Qx, Qy) recorded at a scan rotation of ``rotation_deg`` rotated by −``rotation_deg``
    into the scan frame (the acquisition model's ``rotate_scan``)."""
    return acquisition.rotate_scan(patterns, -rotation_deg) if rotation_deg else patterns


def in_scan_frame(patterns: np.ndarray, scan: Scan) -> np.ndarray:
    """Patterns (N, Qx, Qy) of ``scan`` rotated by −``scan_rotation_deg`` into the scan frame."""
    return into_scan_frame(patterns, scan.scan_rotation_deg)


# --- the input kinds ------------------------------------------------------------------------------

@register
class SinglePatterns(InputKind):
    """Each position's pattern as recorded (a window only where the caller gives one)."""

    name = "single-patterns"
    windowed = False

    def window(self, model: Any, scan: Scan, window_px: int | None = None,
               dose_e_per_pattern: float | None = None) -> tuple[int, str, float | None]:
        if window_px is not None:
            return super().window(model, scan, window_px)
        return 1, "single patterns (the model was trained on single patterns)", None

    def training_inputs(self, dataset: "Dataset", split: "Split", train: np.ndarray, settings: "TrainSettings",
                        profile: str, seed: int) -> TrainingInputs:
        """The dataset's patterns and labels at its own sampling."""
        sampling = float(dataset.attrs["q_sampling_mrad"])
        patterns, labels = dataset["patterns"], dataset["label"]
        validation = (patterns[split.val], labels[split.val]) if len(split.val) else None
        return TrainingInputs((patterns[train], labels[train]), validation, (patterns[split.test], labels[split.test]),
                              sampling, sampling, "single patterns")


@register
class WindowMeans(SinglePatterns):
    """Each pattern replaced by the mean of the window around it (PACBED): one cell of positions, grown by
    whole cells until it holds the electrons the model asks of a window (``average_min_electrons``)."""

    name = "window-means"
    windowed = True

    def window(self, model: Any, scan: Scan, window_px: int | None = None,
               dose_e_per_pattern: float | None = None) -> tuple[int, str, float | None]:
        """The window of :func:`pacbed.window_px`: one cell (from the scan step, else the lattice seen in
        the scan), grown to the electrons the model needs at the scan's dose (``dose_e_per_pattern``, else
        its counts)."""
        if window_px is not None:
            return InputKind.window(self, model, scan, window_px)
        pre = model.preprocessor
        n, note = pacbed.window_px(pre.average_window_A, scan.scan_step_A, scan.data,
                                   getattr(pre, "average_min_electrons", None), dose_e_per_pattern)
        return n, note, None

    def coarse_step_warning(self, model: Any, scan: Scan) -> str | None:
        """A one-line warning when the scan step is not below λ/(2α) (:func:`pacbed.alias_free_step_A`):
        each cell's mean then depends on where the raster sits. The step is the scan's, else one model window
        (a cell) over the lattice period seen in the scan; energy and semi-angle are the scan's, else the
        study's probe (:class:`simulation.ProbeSettings`)."""
        from polar4d_lib.simulation import ProbeSettings

        window_A = model.preprocessor.average_window_A
        step, how = scan.scan_step_A, ""
        if step is None:
            period = pacbed.lattice_period_px(scan.data)
            if period is None:
                return None
            step, how = window_A / period, f" (one cell of {window_A:g} Å over the lattice period, {period:.1f} positions)"
        study = ProbeSettings()
        energy = scan.energy_kev if scan.energy_kev is not None else study.energy_kev
        alpha = scan.semiangle_mrad if scan.semiangle_mrad is not None else study.semiangle_mrad
        limit = pacbed.alias_free_step_A(energy, alpha)
        if step < limit:
            return None
        assumed = ("" if scan.energy_kev is not None and scan.semiangle_mrad is not None
                   else " (assumed; pass --energy-kev and --semiangle-mrad)")
        return (f"scan step {step:.2f} Å{how} is not below λ/(2α) = {limit:.2f} Å at {energy:g} keV, {alpha:g} mrad"
                f"{assumed}: each cell's mean depends on where the raster sits, so the map is less reliable "
                f"(see the model card's scores by scan step); scan at steps below {limit:.2f} Å")

    def training_inputs(self, dataset: "Dataset", split: "Split", train: np.ndarray, settings: "TrainSettings",
                        profile: str, seed: int) -> TrainingInputs:
        """:func:`averaged_parts`, training and validation recorded :func:`on_detectors` where
        ``averages.detectors`` asks (then fitted at the model's sampling)."""
        if settings.averages is None:
            raise ValueError("a model with an averaging window (preprocessor average_window_A) trains on position "
                             "averages: give the profile section an averages setting")
        sampling = float(dataset.attrs["q_sampling_mrad"])
        training, validation, test = averaged_parts(dataset, split, train, settings, seed)
        fit_sampling = sampling
        if settings.averages.get("detectors"):
            training = on_detectors(training, sampling, settings, profile, seed)
            validation = on_detectors(validation, sampling, settings, profile, seed + 1)
            fit_sampling = settings.preprocessor_for().sampling_mrad
        return TrainingInputs(training, validation, test, fit_sampling, sampling, "whole-group position averages")


#: How far (positions) a lattice period read from a scan may fall below a stack model's parts per cell
#: and still be taken as that many: the period is read to about ±0.1 position (a parabola through the
#: autocorrelation's peak), so a scan at a/4 can read as 3.9 positions.
LATTICE_PERIOD_TOLERANCE_PX = 0.25


@register
class CellStacks(InputKind):
    """Each window folded into the model's ``bins`` × ``bins`` parts of the unit cell (:func:`pacbed.cell_stack`)
    at the lattice period: cell over scan step, else the period seen in the scan."""

    name = "cell-stacks"
    reads = "cell-stacks"
    folds_cell = True
    recipe_section = "stack_model"

    def cell_period_px(self, model: Any, scan: Scan) -> tuple[float, str]:
        """The unit cell's period in probe positions that ``model`` folds ``scan`` with, and how it was
        found: its window (one cell, Å) over the scan step, else :func:`pacbed.lattice_period_px`. One-line
        errors where neither is known, or where the cell has fewer positions per side than the model's parts."""
        window_A = model.preprocessor.average_window_A
        if scan.scan_step_A is not None:
            period, how = window_A / scan.scan_step_A, f"{window_A:g} Å cell at a {scan.scan_step_A:g} Å step"
        else:
            period = pacbed.lattice_period_px(scan.data)
            if period is None:
                raise ValueError(f"the {model.kind} model folds each window into the unit cell, but the scan step is "
                                 "unknown and no lattice shows in the scan; pass --scan-step-A")
            how = "the lattice period seen in the scan (scan step unknown)"
            if model.bins - LATTICE_PERIOD_TOLERANCE_PX <= period < model.bins:  # a/4 read as 3.98: it is a/4
                period, how = float(model.bins), how + f", {period:.2f} positions taken as {model.bins}"
        if period < model.bins:
            raise ValueError(f"the scan has {period:.2f} probe positions per unit cell ({how}); the {model.kind} model "
                             f"folds a cell into {model.bins} × {model.bins} parts and needs at least {model.bins}: "
                             f"scan at steps ≤ {window_A / model.bins:.2f} Å")
        rx, ry = scan.data.shape[:2]
        if min(rx, ry) < period:
            raise ValueError(f"the scan ({rx} × {ry} positions) is smaller than one unit cell ({period:.1f} positions, "
                             f"{how}); the {model.kind} model needs at least one whole cell: scan a larger field")
        return float(period), how

    def window(self, model: Any, scan: Scan, window_px: int | None = None,
               dose_e_per_pattern: float | None = None) -> tuple[int, str, float | None]:
        """The cell period (:meth:`cell_period_px`) and the window folded at it: ``window_px`` if given, else
        the fewest positions that cover one cell, grown by whole cells to the electrons the model needs
        (:func:`pacbed.window_px` with ``whole_cell``)."""
        period, how = self.cell_period_px(model, scan)
        if window_px is not None:
            n, note, _ = InputKind.window(self, model, scan, window_px)
        else:
            pre = model.preprocessor
            n, note = pacbed.window_px(pre.average_window_A, scan.scan_step_A, scan.data,
                                       getattr(pre, "average_min_electrons", None), dose_e_per_pattern,
                                       whole_cell=True, period=(period, how))
        note += f"; folded into {model.bins} × {model.bins} parts of a cell of {period:.2f} positions ({how})"
        return n, note, period

    def decision_stride(self, model: Any, window: int, period: float | None) -> int:
        """A model's map resolution is its window of at least a cell: decisions one part of a cell apart
        (⌊period / bins⌋ positions, 2 at a/8 with 4 × 4 parts, 1 at a/4) place a wall as well as a
        decision at every position, at a fraction of the cost."""
        return max(1, int(period // model.bins)) if period else 1

    def prepare(self, model: Any, rows: np.ndarray, sampling_mrad: float) -> np.ndarray:
        """Each pattern on the model's own grid (its preprocessor: sampling, size, centre): (n, Ry, size, size)."""
        pre = model.preprocessor
        grid = pre.transform(rows.reshape(-1, *rows.shape[2:]), sampling_mrad)
        return np.asarray(grid, dtype=np.float32).reshape(rows.shape[:2] + grid.shape[1:])

    def decide(self, model: Any, block: np.ndarray, starts_x: np.ndarray, starts_y: np.ndarray, window: int,
               period: float | None, sampling_mrad: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each window folded at ``period`` into the model's parts (:func:`pacbed.cell_stacks`); classes and
        angles from the probabilities."""
        from polar4d_lib.models.base import circular_mean_deg

        stacks = pacbed.cell_stacks(block, starts_x, starts_y, window, period, model.bins)
        dx, dy = stacks.shape[:2]
        proba = model.predict_proba(stacks.reshape(dx * dy, *stacks.shape[2:]), model.preprocessor.sampling_mrad)
        return (proba.reshape(dx, dy, -1), np.argmax(proba, axis=1).reshape(dx, dy),
                circular_mean_deg(proba).reshape(dx, dy))

    def refusal(self, model: Any, scan: Scan) -> str | None:
        """Why the model cannot fold ``scan`` (a cell of fewer positions per side than its parts, or neither a
        known step nor a visible lattice), or None."""
        try:
            self.cell_period_px(model, scan)
        except ValueError as error:
            return str(error)
        return None

    def model_options(self, kind: str, settings: "TrainSettings") -> dict[str, Any]:
        """``bins`` and ``half_cell`` of the ``cell_stacks`` section, which a stack model needs."""
        if settings.cell_stacks is None:
            raise ValueError(f"{kind} trains on cell stacks: use a profile stage with a cell_stacks section "
                             "(robust's stack_model, as polar4d default-model does) and a cell_grid dataset")
        stacks = settings.cell_stacks
        return {"bins": int(stacks.get("bins", 4)), "half_cell": bool(stacks.get("half_cell", True))}

    def training_inputs(self, dataset: "Dataset", split: "Split", train: np.ndarray, settings: "TrainSettings",
                        profile: str, seed: int) -> TrainingInputs:
        """:func:`cell_stack_parts`: recorded training and validation stacks at the model's sampling,
        noise-free test stacks at the dataset's."""
        training, validation, test = cell_stack_parts(dataset, split, settings, profile, seed)
        return TrainingInputs(training, validation, test, settings.preprocessor_for().sampling_mrad,
                              float(dataset.attrs["q_sampling_mrad"]), "noise-free cell stacks of whole groups")


# --- a dataset's parts as inputs ------------------------------------------------------------------

def position_groups(dataset: "Dataset") -> np.ndarray:
    """One id per (specimen, thickness, probe setting): the patterns a position average may mix."""
    keys = np.stack([dataset["unit"], dataset["thickness_nm"], dataset["probe_setting"]], axis=1)
    return np.unique(keys, axis=0, return_inverse=True)[1].ravel()


def raster_indices(dataset: "Dataset", strides: tuple[int, ...], groups: np.ndarray | None = None) -> np.ndarray:
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
    dataset: "Dataset", split: "Split", train: np.ndarray, settings: "TrainSettings", seed: int
) -> tuple[Part, Part | None, Part]:
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
    dataset: "Dataset", split: "Split", settings: "TrainSettings", profile: str, seed: int,
) -> tuple[Part, Part | None, Part]:
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
    parts: Part | None, sampling_mrad: float, settings: "TrainSettings", profile: str, seed: int
) -> Part | None:
    """(patterns, labels) recorded on random detectors (``averages.detectors``), at the model's sampling
    on the canvas its centre search sees (the crop plus ``SEARCH_MARGIN_PX`` each side); None
    stays None."""
    if parts is None:
        return None
    from polar4d_lib import realistic
    from polar4d_lib.preprocessing import SEARCH_MARGIN_PX

    pre = settings.preprocessor_for()
    ranges = realistic.RealisticRanges.for_profile(profile)
    electrons = (settings.averages or {}).get("electrons")
    x = realistic.record_on_detectors(parts[0], sampling_mrad, ranges, seed, pre.sampling_mrad,
                                       pre.size + 2 * SEARCH_MARGIN_PX,
                                       electrons=tuple(electrons) if electrons is not None else None)
    return x, parts[1]
