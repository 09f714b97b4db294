"""A whole scan in, polarization maps out.

The model replays its own preprocessing (resampling from the scan's angular sampling to the model's,
centring, crop, normalisation); this module undoes the scan rotation, runs the model over the scan and
shapes the maps. A model trained on position-averaged patterns (``Preprocessor.average_window_A``) sees
every pattern averaged with its neighbours over that window (:mod:`polar4d_lib.pacbed`); the window in
probe positions comes from the scan step, else from the lattice seen in the scan, or ``window_px``.
``scan_rotation_deg`` R is the rotation of the recorded patterns relative to the scan
frame (the acquisition model's ``rotate_scan(patterns, R)``), so the patterns are rotated by −R first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from polar4d_lib import acquisition, pacbed
from polar4d_lib.io import Scan


@dataclass
class Prediction:
    """Maps over the scan: ``class_map`` (int8 Rx×Ry, −1 = abstained), ``probabilities`` (float32
    Rx×Ry×8), ``angle_deg`` (Rx×Ry, degrees from +x towards +y), and what produced them."""

    class_map: np.ndarray
    probabilities: np.ndarray
    angle_deg: np.ndarray
    metadata: dict[str, Any]


def averaging_window(
    model: Any, scan: Scan, window_px: int | None = None, dose_e_per_pattern: float | None = None
) -> tuple[int, str]:
    """Probe positions per side over which ``model`` wants the patterns of ``scan`` averaged, and why:
    ``window_px`` if given, 1 for a single-pattern model, else :func:`pacbed.window_px` (one cell, grown
    to the electrons the model needs at the scan's dose: ``dose_e_per_pattern``, else its counts)."""
    if window_px is not None:
        n = pacbed._check_window(window_px)
        return n, f"{n} × {n} positions (given)"
    window_A = getattr(model.preprocessor, "average_window_A", None)
    if window_A is None:
        return 1, "single patterns (the model was trained on single patterns)"
    return pacbed.window_px(window_A, scan.scan_step_A, scan.data,
                            getattr(model.preprocessor, "average_min_electrons", None), dose_e_per_pattern)


def coarse_step_warning(model: Any, scan: Scan) -> str | None:
    """A one-line warning when ``model`` averages over a cell and the scan step is not below λ/(2α)
    (:func:`pacbed.alias_free_step_A`): each cell's mean then depends on where the raster sits. The step is
    the scan's, else one model window (a cell) over the lattice period seen in the scan; energy and
    semi-angle are the scan's, else the study's probe (:class:`simulation.ProbeSettings`)."""
    from polar4d_lib.simulation import ProbeSettings

    window_A = getattr(model.preprocessor, "average_window_A", None)
    if window_A is None:
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
    window, window_note = averaging_window(model, scan, window_px, dose_e_per_pattern)
    data = pacbed.average_scan(scan.data, window) if window > 1 else scan.data
    patterns = data.reshape(rx * ry, qx, qy)
    if scan.scan_rotation_deg:
        patterns = acquisition.rotate_scan(patterns, -scan.scan_rotation_deg)
    proba, classes, angle = model.predict_maps(patterns, sampling)
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
        "notes": scan.notes,
        "coarse_step_warning": coarse_step_warning(model, scan),
        "low_dose_warning": low_dose_warning(model, scan, window, dose_e_per_pattern) if window_px is None else None,
    }
    return Prediction(classes.reshape(rx, ry), proba.reshape(rx, ry, -1), angle.reshape(rx, ry), metadata)
