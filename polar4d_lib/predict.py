"""A whole scan in, polarization maps out.

The model replays its own preprocessing (resampling from the scan's angular sampling to the model's,
centring, crop, normalisation); this module undoes the scan rotation, runs the model over the scan and
shapes the maps. A model trained on position-averaged patterns (``Preprocessor.average_window_A``) sees
every pattern averaged with its neighbours over that window (:mod:`polar4d_lib.pacbed`); the window in
probe positions comes from the scan step, else from the lattice seen in the scan, or ``window_px``.
A stack model (``cnn-stack``, :mod:`polar4d_lib.models.stack`) sees instead each window folded into the
parts of the unit cell (:func:`pacbed.cell_stack`, :func:`stack_probabilities`), at the lattice period:
cell over scan step, else the period seen in the scan.
``scan_rotation_deg`` R is the rotation of the recorded patterns relative to the scan
frame (the acquisition model's ``rotate_scan(patterns, R)``), so the patterns are rotated by −R first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from polar4d_lib import acquisition, conventions, pacbed
from polar4d_lib.io import Scan
from polar4d_lib.models.base import circular_mean_deg


@dataclass
class Prediction:
    """Maps over the scan: ``class_map`` (int8 Rx×Ry, −1 = abstained), ``probabilities`` (float32
    Rx×Ry×8), ``angle_deg`` (Rx×Ry, degrees from +x towards +y), and what produced them."""

    class_map: np.ndarray
    probabilities: np.ndarray
    angle_deg: np.ndarray
    metadata: dict[str, Any]


def averaging_window(
    model: Any, scan: Scan, window_px: int | None = None, dose_e_per_pattern: float | None = None,
    period: tuple[float, str] | None = None,
) -> tuple[int, str]:
    """Probe positions per side over which ``model`` wants the patterns of ``scan`` averaged, and why:
    ``window_px`` if given, 1 for a single-pattern model, else :func:`pacbed.window_px` (one cell, grown
    to the electrons the model needs at the scan's dose: ``dose_e_per_pattern``, else its counts; for a
    stack model the fewest positions that cover its cells, so that every part of the cell is reached, of
    the period it folds at: ``period`` as :func:`cell_period_px` gives it, which it calls where None)."""
    if window_px is not None:
        n = pacbed._check_window(window_px)
        return n, f"{n} × {n} positions (given)"
    window_A = getattr(model.preprocessor, "average_window_A", None)
    if window_A is None:
        return 1, "single patterns (the model was trained on single patterns)"
    stack = is_stack_model(model)
    if stack and period is None:
        period = cell_period_px(model, scan)
    return pacbed.window_px(window_A, scan.scan_step_A, scan.data,
                            getattr(model.preprocessor, "average_min_electrons", None), dose_e_per_pattern,
                            whole_cell=stack, period=period)


#: How far (positions) a lattice period read from a scan may fall below a stack model's parts per cell
#: and still be taken as that many: the period is read to about ±0.1 position (a parabola through the
#: autocorrelation's peak), so a scan at a/4 can read as 3.9 positions.
LATTICE_PERIOD_TOLERANCE_PX = 0.25


def is_stack_model(model: Any) -> bool:
    """Whether ``model`` classifies cell stacks (``models.STACK_KINDS``) rather than patterns."""
    from polar4d_lib.models import STACK_KINDS

    return getattr(model, "kind", None) in STACK_KINDS


def cell_period_px(model: Any, scan: Scan) -> tuple[float, str]:
    """The unit cell's period in probe positions that a stack model folds ``scan`` with, and how it was
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


def refusal(model: Any, scan: Scan) -> str | None:
    """Why :func:`predict_scan` would refuse to map ``scan`` with ``model`` (a stack model needs a cell of
    at least its parts per side, and a known step or a visible lattice), or None where it maps it."""
    if not is_stack_model(model):
        return None
    try:
        cell_period_px(model, scan)
    except ValueError as error:
        return str(error)
    return None


def stack_probabilities(model: Any, data: np.ndarray, sampling_mrad: float, window: int, period_px: float,
                        chunk: int = 2048) -> np.ndarray:
    """Class probabilities (Rx, Ry, 8) of a stack model at every position of a scan (Rx, Ry, Qx, Qy) at
    ``sampling_mrad``: the ``window`` × ``window`` positions around each (:func:`pacbed.window_starts`)
    folded at ``period_px`` into the model's parts (:func:`pacbed.cell_stack`) on the model's own grid.
    Positions that share a window share its stack, so each distinct window is classified once, ``chunk``
    stacks at a time."""
    rx, ry, qx, qy = data.shape
    pre = model.preprocessor
    grid = np.asarray(pre.transform(data.reshape(rx * ry, qx, qy), sampling_mrad), dtype=np.float32)
    grid = grid.reshape(rx, ry, pre.size, pre.size)
    sx, sy = pacbed.window_starts(rx, window), pacbed.window_starts(ry, window)
    ux, ix = np.unique(sx, return_inverse=True)
    uy, iy = np.unique(sy, return_inverse=True)
    starts = [(a, b) for a in ux for b in uy]
    proba = np.empty((len(starts), conventions.N_CLASSES), dtype=np.float32)
    for c in range(0, len(starts), chunk):
        stacks = np.stack([pacbed.cell_stack(grid[a:a + window, b:b + window], period_px, model.bins)
                           for a, b in starts[c:c + chunk]])
        proba[c:c + len(stacks)] = model.predict_proba(stacks, pre.sampling_mrad)
    return proba.reshape(len(ux), len(uy), -1)[ix.ravel()][:, iy.ravel()]


def coarse_step_warning(model: Any, scan: Scan) -> str | None:
    """A one-line warning when ``model`` averages over a cell and the scan step is not below λ/(2α)
    (:func:`pacbed.alias_free_step_A`): each cell's mean then depends on where the raster sits. The step is
    the scan's, else one model window (a cell) over the lattice period seen in the scan; energy and
    semi-angle are the scan's, else the study's probe (:class:`simulation.ProbeSettings`)."""
    from polar4d_lib.simulation import ProbeSettings

    window_A = getattr(model.preprocessor, "average_window_A", None)
    if window_A is None or is_stack_model(model):  # a stack keeps the parts of the cell apart
        return None
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


def low_dose_warning(model: Any, scan: Scan, window: int, dose_e_per_pattern: float | None = None) -> str | None:
    """A one-line warning when the averaging ``window`` (positions per side) that the dose calls for is
    clipped by the scan's size, so that even the whole scan holds fewer electrons than ``model`` asks of a
    window (``average_min_electrons``): every position then shares one under-dosed mean."""
    needed = getattr(model.preprocessor, "average_min_electrons", None)
    rx, ry = scan.data.shape[:2]
    if needed is None or (window <= rx and window <= ry):
        return None
    dose = dose_e_per_pattern if dose_e_per_pattern is not None else pacbed.dose_per_pattern(scan.data)
    if dose is None:
        return None
    held = dose * min(window, rx) * min(window, ry)
    if held >= needed:
        return None
    return (f"the scan ({rx} × {ry} positions at {dose:.3g} e/pattern) holds {held:.2g} electrons, fewer than the "
            f"{needed:.2g} the model asks of a window: every position gets the one mean of the whole scan and the "
            "map is unreliable; scan a larger field or at a higher dose")


def _in_scan_frame(patterns: np.ndarray, scan: Scan) -> np.ndarray:
    """Patterns (N, Qx, Qy) of ``scan`` rotated by −``scan_rotation_deg`` into the scan frame."""
    return acquisition.rotate_scan(patterns, -scan.scan_rotation_deg) if scan.scan_rotation_deg else patterns


def predict_scan(
    model: Any, scan: Scan, abstain_below: float | None = None, window_px: int | None = None,
    dose_e_per_pattern: float | None = None,
) -> Prediction:
    """Run ``model`` (a fitted PolarizationModel) over every pattern of ``scan``.

    Patterns whose highest class probability is below ``abstain_below`` get class −1 (abstained):
    not every probe position carries enough information to be classified. ``window_px`` overrides the
    position-averaging window (:func:`averaging_window`; 1 = none); ``dose_e_per_pattern`` supplies the
    dose (e/pattern) for data not recorded in counts.
    """
    sampling = scan.require_sampling()
    if abstain_below is not None and not 0.0 <= abstain_below <= 1.0:
        raise ValueError(f"--abstain-below must be a probability in [0, 1], got {abstain_below}")
    rx, ry, qx, qy = scan.data.shape
    cell = cell_period_px(model, scan) if is_stack_model(model) else None
    window, window_note = averaging_window(model, scan, window_px, dose_e_per_pattern, cell)
    period = None
    if cell is not None:
        period, how = cell
        window_note += f"; folded into {model.bins} × {model.bins} parts of a cell of {period:.2f} positions ({how})"
        patterns = _in_scan_frame(scan.data.reshape(rx * ry, qx, qy), scan)
        proba = stack_probabilities(model, patterns.reshape(rx, ry, qx, qy), sampling, window, period).reshape(rx * ry, -1)
        classes, angle = np.argmax(proba, axis=1), circular_mean_deg(proba)
    else:
        data = pacbed.average_scan(scan.data, window) if window > 1 else scan.data
        proba, classes, angle = model.predict_maps(_in_scan_frame(data.reshape(rx * ry, qx, qy), scan), sampling)
    proba = np.asarray(proba, dtype=np.float32)
    classes = np.asarray(classes, dtype=np.int8)
    angle = np.asarray(angle, dtype=np.float32)
    if abstain_below is not None:
        classes = np.where(proba.max(axis=-1) < abstain_below, np.int8(-1), classes).astype(np.int8)
    metadata = {
        "model_kind": model.kind,
        "model_metadata": model.metadata,
        "preprocessor": model.preprocessor.to_dict(),
        "input": scan.source,
        "input_shape": list(scan.data.shape),
        "q_sampling_mrad": sampling,
        "energy_kev": scan.energy_kev,
        "semiangle_mrad": scan.semiangle_mrad,
        "scan_rotation_deg": scan.scan_rotation_deg,
        "abstain_below": abstain_below,
        "scan_step_A": scan.scan_step_A,
        "average_window_px": window,
        "averaging": window_note,
        "cell_period_px": period,
        "notes": scan.notes,
        "coarse_step_warning": coarse_step_warning(model, scan),
        "low_dose_warning": low_dose_warning(model, scan, window, dose_e_per_pattern) if window_px is None else None,
    }
    return Prediction(classes.reshape(rx, ry), proba.reshape(rx, ry, -1), angle.reshape(rx, ry), metadata)
