"""A whole scan in, polarization maps out.

The model replays its own preprocessing (resampling from the scan's angular sampling to the model's,
centring, crop, normalisation); its input kind (``model.input_kind``, :mod:`polar4d_lib.inputs`) turns the
scan into the model's inputs — single patterns, each pattern averaged with its neighbours over the model's
window (PACBED), or each window folded into the parts of the unit cell — and maps the probabilities back to
the scan's positions, with the window and cell period it took (from the scan step, else from the lattice
seen in the scan, or ``window_px``). This module asks it once, abstains and shapes the maps.
``scan_rotation_deg`` R is the rotation of the recorded patterns relative to the scan
frame (the acquisition model's ``rotate_scan(patterns, R)``), so the patterns are rotated by −R first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from polar4d_lib import conventions, irregularity, pacbed, reliability
from polar4d_lib.io import Scan


@dataclass
class Prediction:
    """Maps over the scan: ``class_map`` (int8 Rx×Ry, −1 = abstained), ``probabilities`` (float32
    Rx×Ry×8), ``angle_deg`` (Rx×Ry, degrees from +x towards +y), ``irregularity`` (float32 Rx×Ry, higher =
    more likely a defect or a domain wall: :data:`polar4d_lib.irregularity.DEFAULT`), and what produced them."""

    class_map: np.ndarray
    probabilities: np.ndarray
    angle_deg: np.ndarray
    metadata: dict[str, Any]
    irregularity: np.ndarray | None = None


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
    dose_e_per_pattern: float | None = None, abstain_score: str = reliability.DEFAULT,
    memory_limit_gb: float | None = None, progress: bool = False, scheduler: str | None = None,
) -> Prediction:
    """Run ``model`` (a fitted PolarizationModel) over every pattern of ``scan``.

    Positions whose reliability ``abstain_score`` (:mod:`polar4d_lib.reliability`; by default the margin
    between the two most probable classes) is below ``abstain_below`` get class −1 (abstained): not every
    probe position carries enough information to be classified. ``window_px`` overrides the
    window of the model's input kind (:meth:`polar4d_lib.inputs.InputKind.window`; 1 = none);
    ``dose_e_per_pattern`` supplies the dose (e/pattern) for data not recorded in counts. The scan is read
    a chunk of rows at a time, this process within ``memory_limit_gb`` (GB; None: the rows within a fixed
    working memory, :mod:`polar4d_lib.streaming`), so it may be a lazily read file larger than memory;
    ``progress`` shows a bar over the chunks; ``scheduler`` (a dask.distributed scheduler's address) maps the
    chunks on its workers, which read the scan's file themselves: the same maps.
    """
    sampling = scan.require_sampling()
    if abstain_below is not None:
        reliability.check_threshold(abstain_below)
    if abstain_score not in reliability.SCORES:
        raise ValueError(f"--abstain-score {abstain_score!r} is unknown; use one of {', '.join(reliability.SCORES)}")
    rx, ry = scan.data.shape[:2]
    kind = model.input_kind
    if dose_e_per_pattern is None and window_px is None and getattr(model.preprocessor, "average_min_electrons", None):
        dose_e_per_pattern = pacbed.dose_per_pattern(scan.data)  # read once, for the window and the warning
    maps = kind.map_scan(model, scan, window_px, dose_e_per_pattern, memory_limit_gb=memory_limit_gb, progress=progress,
                         scheduler=scheduler)
    window = maps.window_px
    proba = np.asarray(maps.probabilities, dtype=np.float32)
    classes = np.asarray(maps.classes, dtype=np.int8)
    angle = np.asarray(maps.angle_deg, dtype=np.float32)
    if abstain_below is not None:
        classes = reliability.abstain(classes, proba, abstain_below, abstain_score)
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
        "abstain_score": abstain_score,
        "scan_step_A": scan.scan_step_A,
        "average_window_px": window,
        "averaging": maps.averaging,
        "cell_period_px": maps.cell_period_px,
        "decisions": list(maps.decisions) if maps.decisions else None,
        "decision_stride_px": maps.decision_stride,
        "memory_limit_gb": memory_limit_gb,
        "scheduler": scheduler,
        "notes": scan.notes,
        "coarse_step_warning": kind.coarse_step_warning(model, scan),
        "low_dose_warning": low_dose_warning(model, scan, window, dose_e_per_pattern) if window_px is None else None,
    }
    period = maps.cell_period_px or (conventions.A_A / scan.scan_step_A if scan.scan_step_A else None)
    metadata["irregularity"] = irregularity.DEFAULT
    metadata["irregularity_period_px"] = period
    return Prediction(classes.reshape(rx, ry), proba.reshape(rx, ry, -1), angle.reshape(rx, ry), metadata,
                      irregularity.score(proba.reshape(rx, ry, -1), period))
