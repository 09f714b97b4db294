"""Geometry of a pixelated detector and calibration-aware, count-conserving resampling.

Shared by simulation, acquisition and preprocessing. Units: angles in mrad, sampling in mrad per
pixel, positions and centres in pixels (px). Patterns are ``(..., Qx, Qy)``; the zero angle sits at
index ``n // 2`` along each axis unless a centre is given (see ``shared/CONVENTIONS.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Center = tuple[float, float]


def validate_patterns(patterns: np.ndarray, name: str = "patterns") -> np.ndarray:
    """Return ``patterns`` as a real array of ndim ≥ 2 (..., Qx, Qy); raise a one-line ValueError otherwise.

    Rejects complex or non-numeric arrays, fewer than 2 dimensions, empty pattern axes and NaN/inf.
    """
    p = np.asarray(patterns)
    if p.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (..., Qx, Qy), got shape {p.shape}; "
            "pass a 2-D pattern or a stack of them"
        )
    if p.dtype == bool or not (np.issubdtype(p.dtype, np.integer) or np.issubdtype(p.dtype, np.floating)):
        raise ValueError(f"{name} must be a real numeric array, got dtype {p.dtype}; take abs()**2 or .real first")
    if p.shape[-1] == 0 or p.shape[-2] == 0:
        raise ValueError(f"{name} has an empty pattern axis, shape {p.shape}; pass non-empty patterns")
    if np.issubdtype(p.dtype, np.floating) and not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or inf; clean or mask the input (e.g. np.nan_to_num) first")
    return p


def check_sampling(value: float, name: str) -> float:
    """A positive finite sampling (mrad/px) as float; one-line ValueError otherwise."""
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in mrad per pixel, got {value!r}") from None
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"{name} must be a positive finite number of mrad per pixel, got {value!r}")
    return s


def check_shape(shape: tuple[int, int], name: str = "shape") -> tuple[int, int]:
    """A pattern shape (nQx, nQy) of positive ints as a tuple; one-line ValueError otherwise."""
    try:
        values = tuple(shape)
    except TypeError:
        raise ValueError(f"{name} must be a pair of positive ints (nQx, nQy), got {shape!r}") from None
    if len(values) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                                   for v in values):
        raise ValueError(f"{name} must be a pair of positive ints (nQx, nQy), got {shape!r}")
    return int(values[0]), int(values[1])


def check_pair(value: tuple[float, float], name: str, what: str = "a pair (along Qx, along Qy)") -> tuple[float, float]:
    """Two finite numbers, or a one-line ValueError naming ``name``."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {what} of finite numbers, got {value!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"{name} must be {what} of finite numbers, got {value!r}")
    return a, b


def check_center(center: Center | None, shape: tuple[int, int], name: str) -> Center:
    """A zero-angle position (cx, cy) in px, ``(nQx // 2, nQy // 2)`` when None."""
    if center is None:
        return float(shape[0] // 2), float(shape[1] // 2)
    return check_pair(center, name, "pixel coordinates (cx, cy) or None")


@dataclass(frozen=True)
class DetectorGeometry:
    """A pixelated detector: ``shape`` (nQx, nQy) px, ``sampling_mrad`` mrad/px, zero angle at ``center_px``.

    ``center_px`` (px, may be fractional) defaults to ``(nQx // 2, nQy // 2)``, the project convention.
    """

    shape: tuple[int, int]
    sampling_mrad: float
    center_px: Center | None = None

    def __post_init__(self) -> None:
        shape = check_shape(self.shape)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "sampling_mrad", check_sampling(self.sampling_mrad, "sampling_mrad"))
        if self.center_px is not None:
            object.__setattr__(self, "center_px", check_center(self.center_px, shape, "center_px"))

    @property
    def center(self) -> Center:
        """Zero-angle position (cx, cy) in px, with the default filled in."""
        return check_center(self.center_px, self.shape, "center_px")

    def angles_mrad(self) -> tuple[np.ndarray, np.ndarray]:
        """Angles (mrad) of the pixel centres along Qx and along Qy: ``(i − c) · sampling``."""
        cx, cy = self.center
        return ((np.arange(self.shape[0]) - cx) * self.sampling_mrad,
                (np.arange(self.shape[1]) - cy) * self.sampling_mrad)


def overlap_matrix(n_in: int, sampling_in_mrad: float, center_in_px: float,
                   n_out: int, sampling_out_mrad: float, center_out_px: float) -> np.ndarray:
    """1-D rebinning matrix W (n_out × n_in), float64.

    ``W[i, j]`` is the length (mrad) of the overlap of output pixel ``i`` with input pixel ``j``
    divided by the input pixel length, so a column sums to the fraction of input pixel ``j`` that
    the output grid covers (1 when fully covered). Pixel ``j`` spans
    ``[(j − c − ½)·s, (j − c + ½)·s]`` mrad.
    """
    edges_in = (np.arange(n_in + 1) - center_in_px - 0.5) * sampling_in_mrad
    edges_out = (np.arange(n_out + 1) - center_out_px - 0.5) * sampling_out_mrad
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return np.clip(hi - lo, 0.0, None) / sampling_in_mrad


def resample(
    patterns: np.ndarray,
    sampling_in_mrad: float,
    sampling_out_mrad: float,
    shape_out: tuple[int, int],
    center_in_px: Center | None = None,
    center_out_px: Center | None = None,
) -> np.ndarray:
    """Rebin patterns (..., Qx, Qy) from one detector calibration to another, conserving counts.

    Each input pixel is a uniform density over its square; each output pixel receives the integral
    over its own square (exact area-overlap rebinning). Input pixel ``j`` is centred at angle
    ``(j − c_in)·s_in`` mrad and output pixel ``i`` at ``(i − c_out)·s_out`` mrad; centres (px,
    fractional allowed) default to ``n // 2`` of each grid. The transform is separable:
    ``out = Wx @ p @ Wyᵀ`` (= ``einsum('ij,...jk,lk->...il', Wx, p, Wy)``), vectorised over the
    leading axes. The total is conserved exactly when the output field of view covers the input's
    nonzero region; whatever falls outside is dropped. Output is float32 for float32 input and
    float64 otherwise.
    """
    p = validate_patterns(patterns)
    s_in = check_sampling(sampling_in_mrad, "sampling_in_mrad")
    s_out = check_sampling(sampling_out_mrad, "sampling_out_mrad")
    nx_out, ny_out = check_shape(shape_out, "shape_out")
    nx_in, ny_in = p.shape[-2:]
    cx_in, cy_in = check_center(center_in_px, (nx_in, ny_in), "center_in_px")
    cx_out, cy_out = check_center(center_out_px, (nx_out, ny_out), "center_out_px")

    dtype = np.float32 if p.dtype == np.float32 else np.float64
    wx = overlap_matrix(nx_in, s_in, cx_in, nx_out, s_out, cx_out).astype(dtype)
    wy = overlap_matrix(ny_in, s_in, cy_in, ny_out, s_out, cy_out).astype(dtype)
    # Two large products over all patterns at once (not one small one per pattern): Qy first, then Qx.
    flat = p.astype(dtype, copy=False).reshape(-1, nx_in, ny_in)
    n = len(flat)
    rows = (flat.reshape(n * nx_in, ny_in) @ wy.T).reshape(n, nx_in, ny_out)
    out = np.ascontiguousarray(rows.transpose(0, 2, 1)).reshape(n * ny_out, nx_in) @ wx.T  # (n·ny_out, nx_out)
    return np.ascontiguousarray(out.reshape(n, ny_out, nx_out).transpose(0, 2, 1)).reshape(*p.shape[:-2], nx_out, ny_out)


def center_of_mass_mrad(patterns: np.ndarray, sampling_mrad: float, center_px: Center | None = None) -> np.ndarray:
    """Centre of mass of pattern(s) (..., Qx, Qy) in mrad from the zero angle (default pixel n//2):
    an array (..., 2) of (θx, θy). It moves opposite to the projected electric field the probe sees."""
    p = validate_patterns(patterns)
    shape = check_shape(p.shape[-2:], "pattern shape")
    center = check_center(center_px, shape, "center_px")
    sampling = check_sampling(sampling_mrad, "sampling_mrad")
    ax = (np.arange(shape[0]) - center[0]) * sampling
    ay = (np.arange(shape[1]) - center[1]) * sampling
    total = p.sum(axis=(-2, -1))
    if np.any(total <= 0):
        raise ValueError("a pattern has no positive intensity; its centre of mass is undefined")
    cx = np.einsum("...ij,i->...", p, ax) / total
    cy = np.einsum("...ij,j->...", p, ay) / total
    return np.stack([cx, cy], axis=-1)
