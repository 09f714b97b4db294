"""Preprocessing of diffraction patterns for the models: resample → centre → crop → normalise.

Each step is a small documented function; :class:`Preprocessor` chains them, is stored inside every
fitted model (``to_dict``/``from_dict``, plain JSON) and replays them on new data, so a model can be
given raw patterns at any detector calibration.

1. :func:`resample_to` rebins the patterns to the model's angular sampling (mrad/px) with
   ``detector.resample`` (count-conserving), zero angle kept at pixel ``n // 2``, on a canvas large
   enough for the whole input field of view.
2. A centre (px, fractional) is found on that canvas: :func:`dataset_center_px` (the paper's: mean,
   over all patterns given together, of the centroid of each pattern's bright pixels), per pattern
   :func:`disk_center_px` (the bright-field disk's centroid), or the nominal ``n // 2``.
3. :func:`crop` cuts a ``size × size`` window whose pixel ``size // 2`` sits on that centre. A
   fractional centre is honoured exactly: the window is the count-conserving area-overlap rebinning of
   ``detector.resample`` at unit sampling (a sub-pixel shift, which for a pure shift reduces to
   linear interpolation between neighbouring pixels) — never rounded to the nearest pixel. Where the
   window leaves the pattern it is padded with zeros.
4. :func:`normalize` scales each pattern: ``minmax`` (paper), ``log`` (log1p then minmax),
   ``total`` (divide by the pattern's sum) or ``none``.

:func:`com_filter` is the paper's training-set filter on centre-of-mass shifts (training only).

Units: angles mrad, sampling mrad per pixel, centres px in the frame of the array they refer to.
Patterns are ``(N, Qx, Qy)`` or one ``(Qx, Qy)`` (see ``shared/CONVENTIONS.md``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from polar4d_lib import config, detector

CENTER_METHODS = ("dataset", "pattern", "nominal")
NORMALIZATIONS = ("minmax", "log", "total", "none")
#: Pixels within this relative distance below the percentile value count as bright, so that a
#: flat-topped disk (synthetic or saturated patterns) is one level rather than a float-rounding lottery.
BRIGHT_RTOL = 1e-4
#: The bright-field disk is the region brighter than this fraction of the pattern's bright percentile.
DISK_LEVEL = 0.2
#: Centres are looked for within the model's crop plus this margin (px at the model's sampling) on each side.
SEARCH_MARGIN_PX = 8
#: Patterns handled at once by :meth:`Preprocessor.transform` (bounds the temporary memory).
CHUNK = 2048
#: Resampled canvases a 'dataset'-centred transform keeps rather than resampling twice (bytes).
KEPT_CANVAS_BYTES = 2**28


# --- checks --------------------------------------------------------------------------------------

def _check_sampling(sampling_mrad: float | None, name: str = "sampling_mrad") -> float:
    if sampling_mrad is None:
        raise ValueError("angular sampling unknown: pass sampling_mrad (mrad/px) or --q-pixel-size-mrad")
    return detector.check_sampling(sampling_mrad, name)


def _check_stack(patterns: np.ndarray) -> np.ndarray:
    """(N, Qx, Qy) view of a stack or of one pattern; one-line ValueError for anything else."""
    p = np.asarray(patterns)
    if p.ndim not in (2, 3):
        raise ValueError(
            f"patterns must have 2 (Qx, Qy) or 3 (N, Qx, Qy) dimensions, got shape {p.shape}; "
            "reshape a 4D scan to (Rx*Ry, Qx, Qy) first"
        )
    p = detector.validate_patterns(p)
    return p[None] if p.ndim == 2 else p


def _check_percentile(percentile: float) -> float:
    q = float(percentile)
    if not 0.0 < q < 100.0:
        raise ValueError(f"bright percentile must lie in (0, 100), got {percentile!r}")
    return q


def _centroid_px(mask: np.ndarray) -> np.ndarray:
    """Centroid (cx, cy) in px of each boolean mask (N, Qx, Qy); n // 2 where a mask is empty."""
    nx, ny = mask.shape[-2:]
    count = mask.sum(axis=(-2, -1)).astype(np.float64)
    cx = mask.sum(axis=-1) @ np.arange(nx, dtype=np.float64)
    cy = mask.sum(axis=-2) @ np.arange(ny, dtype=np.float64)
    empty = count == 0
    safe = np.where(empty, 1.0, count)
    return np.stack([np.where(empty, nx // 2, cx / safe), np.where(empty, ny // 2, cy / safe)], axis=-1)


def _percentile_per_pattern(p: np.ndarray, percentile: float) -> np.ndarray:
    return np.percentile(p.reshape(len(p), -1), percentile, axis=1)


# --- step 1: resampling ----------------------------------------------------------------------------

def canvas_shape(shape_in: tuple[int, int], sampling_in_mrad: float, sampling_out_mrad: float) -> tuple[int, int]:
    """Even canvas shape (px) at ``sampling_out_mrad`` whose pixel ``n // 2`` is the zero angle and
    which holds the whole field of view of a ``shape_in`` detector at ``sampling_in_mrad`` centred at
    its own ``n // 2``."""
    out = []
    for n in shape_in:
        c = n // 2
        half = max(c + 0.5, n - c - 0.5) * sampling_in_mrad / sampling_out_mrad  # output px
        out.append(2 * math.ceil(half + 0.5 - 1e-9))
    return out[0], out[1]


def resample_to(patterns: np.ndarray, sampling_in_mrad: float, sampling_out_mrad: float) -> np.ndarray:
    """Patterns (..., Qx, Qy) at ``sampling_in_mrad`` rebinned to ``sampling_out_mrad`` (mrad/px).

    Count-conserving (``detector.resample``); the zero angle stays at pixel ``n // 2`` of both grids;
    the output canvas (:func:`canvas_shape`) holds the whole input field of view, so no count is lost.
    Equal samplings return the input unchanged (as float). float32 in → float32 out, else float64.
    """
    p = detector.validate_patterns(patterns)
    s_in = _check_sampling(sampling_in_mrad, "sampling_in_mrad")
    s_out = _check_sampling(sampling_out_mrad, "sampling_out_mrad")
    if s_in == s_out:
        return p if p.dtype in (np.float32, np.float64) else p.astype(np.float64)
    return detector.resample(p, s_in, s_out, canvas_shape(p.shape[-2:], s_in, s_out))


# --- step 2: centres --------------------------------------------------------------------------------

def bright_centroids_px(patterns: np.ndarray, percentile: float = 95.0) -> np.ndarray:
    """Per pattern, the centroid (cx, cy) in px of its bright pixels: those at or above the pattern's
    ``percentile``-th intensity percentile (within ``BRIGHT_RTOL``). The centroid is of the pixel
    mask (unweighted), as in the paper's scripts. Returns (N, 2)."""
    p = _check_stack(patterns)
    q = _percentile_per_pattern(p, _check_percentile(percentile))
    threshold = q - BRIGHT_RTOL * np.abs(q)
    return _centroid_px(p >= threshold[:, None, None])


def dataset_center_px(patterns: np.ndarray, percentile: float = 95.0) -> tuple[float, float]:
    """The paper's dataset centre (cx, cy) in px: the mean over all patterns of
    :func:`bright_centroids_px`. Pass a whole scan or dataset at once — it is one centre for all."""
    c = bright_centroids_px(patterns, percentile)
    if len(c) == 0:
        raise ValueError("no patterns given; the dataset centre needs at least one pattern")
    return float(c[:, 0].mean()), float(c[:, 1].mean())


def disk_center_px(patterns: np.ndarray, percentile: float = 95.0) -> np.ndarray:
    """Per-pattern bright-field disk centre (N, 2) in px: the centroid of the pixels brighter than
    ``DISK_LEVEL`` (a fifth) of the pattern's ``percentile``-th intensity percentile (the disk's level
    when the disk covers more than 100 − percentile % of the pattern). The mask is unweighted, so
    intensity moving inside the disk does not move the centre, only the disk's outline does. An empty
    pattern gets ``n // 2``. Vectorised over patterns.

    On thin specimens the outline itself follows the probe's position (on the smoke dataset, 2–4 nm,
    these centres scatter by about 1 px and correlate at ≈ 0.9 with the centre of mass), so centring
    each pattern on it removes much of the centre-of-mass signal: prefer the 'dataset' centre unless
    the pattern centre drifts across the scan (descan).
    """
    p = _check_stack(patterns)
    q = _percentile_per_pattern(p, _check_percentile(percentile))
    mask = (p > DISK_LEVEL * q[:, None, None]) & (q[:, None, None] > 0)
    return _centroid_px(mask)


def find_centers_px(patterns: np.ndarray, method: str, percentile: float = 95.0) -> np.ndarray:
    """Centre (N, 2) in px of each pattern by ``method``: 'dataset' (one shared centre,
    :func:`dataset_center_px`), 'pattern' (:func:`disk_center_px`) or 'nominal' (``n // 2``)."""
    p = _check_stack(patterns)
    if method == "dataset":
        return np.tile(np.asarray(dataset_center_px(p, percentile)), (len(p), 1))
    if method == "pattern":
        return disk_center_px(p, percentile)
    if method == "nominal":
        return np.tile(np.asarray([p.shape[-2] // 2, p.shape[-1] // 2], dtype=np.float64), (len(p), 1))
    raise ValueError(f"centre method {method!r} unknown; use one of {', '.join(CENTER_METHODS)}")


# --- step 3: crop -----------------------------------------------------------------------------------

def _shift_window_1d(p: np.ndarray, start: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Along ``axis`` (1 or 2) of (N, Qx, Qy): output pixel i covers input coordinates
    [start + i − ½, start + i + ½] (input pixel j covers [j − ½, j + ½]); its value is the
    area-weighted sum (1 − f)·p[j0 + i] + f·p[j0 + i + 1], j0 = ⌊start⌋, f = start − j0, zero outside."""
    n = p.shape[axis]
    j0 = np.floor(start).astype(np.int64)
    f = (start - j0).astype(p.dtype)
    if np.all(start == start[0]):  # one window for all patterns: a plain gather along the axis
        index = j0[0] + np.arange(size + 1)
        valid = ((index >= 0) & (index < n)).astype(p.dtype)
        taken = np.take(p, np.clip(index, 0, n - 1), axis=axis)
        shape = [1, 1, 1]
        shape[axis] = size + 1
        taken = taken * valid.reshape(shape)
        lo, hi = (taken[:, :-1], taken[:, 1:]) if axis == 1 else (taken[:, :, :-1], taken[:, :, 1:])
        return lo if f[0] == 0 else (1 - f[0]) * lo + f[0] * hi
    index = j0[:, None] + np.arange(size + 1)[None, :]  # (N, size + 1)
    valid = (index >= 0) & (index < n)
    index = np.clip(index, 0, n - 1)
    if axis == 1:
        taken = np.take_along_axis(p, index[:, :, None], axis=1) * valid[:, :, None]
        return (1 - f)[:, None, None] * taken[:, :-1] + f[:, None, None] * taken[:, 1:]
    taken = np.take_along_axis(p, index[:, None, :], axis=2) * valid[:, None, :]
    return (1 - f)[:, None, None] * taken[:, :, :-1] + f[:, None, None] * taken[:, :, 1:]


def crop(patterns: np.ndarray, center_px: np.ndarray | tuple[float, float], size: int = 64) -> np.ndarray:
    """A ``size × size`` window of each pattern with pixel ``size // 2`` on ``center_px``.

    ``center_px`` is one (cx, cy) for all patterns or (N, 2), in px, fractional allowed. The window is
    exactly ``detector.resample(p, 1, 1, (size, size), center_in_px=c, center_out_px=(size // 2,) * 2)``
    (count-conserving sub-pixel shift, no rounding), computed vectorised with one centre per pattern;
    outside the pattern it is zero. Returns (N, size, size) in the input's float dtype.
    """
    p = _check_stack(patterns)
    if not (isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0):
        raise ValueError(f"crop size must be a positive int (px), got {size!r}")
    p = p if p.dtype in (np.float32, np.float64) else p.astype(np.float64)
    c = np.asarray(center_px, dtype=np.float64)
    c = np.broadcast_to(c, (len(p), 2)) if c.shape == (2,) else c
    if c.shape != (len(p), 2) or not np.all(np.isfinite(c)):
        raise ValueError(f"center_px must be finite (cx, cy) or one per pattern ({len(p)}, 2), got shape {np.shape(center_px)}")
    start = c - size // 2
    out = _shift_window_1d(p, start[:, 0], size, axis=1)
    return np.ascontiguousarray(_shift_window_1d(out, start[:, 1], size, axis=2))


# --- step 4: normalisation --------------------------------------------------------------------------

def _minmax(p: np.ndarray) -> np.ndarray:
    lo = p.min(axis=(-2, -1), keepdims=True)
    span = p.max(axis=(-2, -1), keepdims=True) - lo
    return np.where(span > 0, (p - lo) / np.where(span > 0, span, 1), 0).astype(p.dtype)


def normalize(patterns: np.ndarray, method: str = "minmax") -> np.ndarray:
    """Per-pattern normalisation of (N, Qx, Qy) or (Qx, Qy):

    - ``minmax`` (paper): (p − min) / (max − min), each pattern to [0, 1] (a flat pattern → 0);
    - ``log``: log1p of the pattern clipped at 0 (counts or fractions), then minmax;
    - ``total``: p / sum(p), a pattern of unit total (a pattern summing to ≤ 0 → 0);
    - ``none``: unchanged.
    """
    p = np.asarray(patterns)
    p = p if p.dtype in (np.float32, np.float64) else p.astype(np.float64)
    if method == "minmax":
        return _minmax(p)
    if method == "log":
        return _minmax(np.log1p(np.clip(p, 0, None)))
    if method == "total":
        total = p.sum(axis=(-2, -1), keepdims=True)
        return np.where(total > 0, p / np.where(total > 0, total, 1), 0).astype(p.dtype)
    if method == "none":
        return p
    raise ValueError(f"normalisation {method!r} unknown; use one of {', '.join(NORMALIZATIONS)}")


# --- the chain ----------------------------------------------------------------------------------------

@dataclass
class Preprocessor:
    """The preprocessing a model was trained with, replayed on any input.

    ``sampling_mrad`` (mrad/px) and ``size`` (px) are the model's input grid; ``center`` is
    'dataset' (paper: the mean bright-pixel centroid of all patterns passed in one call, so pass a
    whole scan at once), 'pattern' (per-pattern bright-field disk centre) or 'nominal' (``n // 2``);
    ``bright_percentile`` the percentile defining bright pixels; ``normalize`` one of
    ``NORMALIZATIONS`` (see :func:`normalize`). ``average_window_A`` (Å, None = single patterns): the
    model was trained on position-averaged patterns (PACBED over about this length of probe positions,
    :mod:`polar4d_lib.pacbed`), so a scan is averaged over that window before :meth:`transform`;
    ``average_min_electrons`` (None = any): the electrons an average needs for this model, so at a low
    dose the window grows by whole cells until it collects them (:func:`polar4d_lib.pacbed.window_px`).
    """

    sampling_mrad: float = 1.5
    size: int = 64
    center: str = "dataset"
    bright_percentile: float = 95.0
    normalize: str = "minmax"
    average_window_A: float | None = None
    average_min_electrons: float | None = None

    def __post_init__(self) -> None:
        self.sampling_mrad = detector.check_sampling(self.sampling_mrad, "Preprocessor.sampling_mrad")
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) or self.size < 1:
            raise ValueError(f"Preprocessor.size must be a positive int (px), got {self.size!r}")
        self.size = int(self.size)
        if self.center not in CENTER_METHODS:
            raise ValueError(f"Preprocessor.center {self.center!r} unknown; use one of {', '.join(CENTER_METHODS)}")
        self.bright_percentile = _check_percentile(self.bright_percentile)
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"Preprocessor.normalize {self.normalize!r} unknown; use one of {', '.join(NORMALIZATIONS)}")
        if self.average_window_A is not None:
            w = self.average_window_A
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
                raise ValueError(f"Preprocessor.average_window_A must be a length in Å > 0 or None, got {w!r}")
            self.average_window_A = float(w)
        if self.average_min_electrons is not None:
            e = self.average_min_electrons
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e <= 0:
                raise ValueError(f"Preprocessor.average_min_electrons must be a number of electrons > 0 or None, got {e!r}")
            self.average_min_electrons = float(e)

    def transform(self, patterns: np.ndarray, sampling_mrad: float | None) -> np.ndarray:
        """Raw patterns (N, Qx, Qy) or (Qx, Qy) at ``sampling_mrad`` (mrad/px) → float32
        (N, size, size): :func:`resample_to` → centre → :func:`crop` → :func:`normalize`, in chunks of
        ``CHUNK`` patterns (the 'dataset' centre is still one for all)."""
        sampling = _check_sampling(sampling_mrad)
        p = _check_stack(patterns)
        if len(p) == 0:
            raise ValueError("no patterns given (N = 0); pass at least one pattern")
        chunks = [slice(i, i + CHUNK) for i in range(0, len(p), CHUNK)]
        canvas = lambda s: resample_to(p[s].astype(np.float32, copy=False), sampling, self.sampling_mrad)  # noqa: E731
        out = np.empty((len(p), self.size, self.size), dtype=np.float32)
        if self.center != "dataset":
            for s in chunks:
                c = canvas(s)
                out[s] = normalize(crop(c, self._centers(c), self.size), self.normalize)
            return out
        # one centre for all: the canvases are kept until it is known (a prediction's row group: one
        # resampling instead of two) unless they would take more than KEPT_CANVAS_BYTES (a training set)
        side = canvas_shape(p.shape[-2:], sampling, self.sampling_mrad)
        keep = len(p) * side[0] * side[1] * 4 <= KEPT_CANVAS_BYTES
        canvases = [canvas(s) for s in chunks] if keep else None
        shared = sum(self._centers(canvases[i] if keep else canvas(s), "bright").sum(axis=0)
                     for i, s in enumerate(chunks)) / len(p)
        for i, s in enumerate(chunks):
            out[s] = normalize(crop(canvases[i] if keep else canvas(s), shared, self.size), self.normalize)
        return out

    def _centers(self, canvas: np.ndarray, how: str | None = None) -> np.ndarray:
        """Centres (N, 2) in canvas px, looked for within ``size + 2 · SEARCH_MARGIN_PX`` px around the
        canvas's zero angle: the bright-field disk then covers the same share of the searched pixels
        whatever the detector's field of view (on a 256 px detector at 1.9 mrad/px the disk is 1 % of
        the canvas, below the bright percentile), and the centre stays near the detector's centre."""
        n = self.size + 2 * SEARCH_MARGIN_PX
        lo = [max(0, d // 2 - n // 2) for d in canvas.shape[-2:]]
        window = canvas[..., lo[0]:lo[0] + n, lo[1]:lo[1] + n]
        if how == "bright":
            found = bright_centroids_px(window, self.bright_percentile)
        else:
            found = find_centers_px(window, self.center, self.bright_percentile)
        return found + np.asarray(lo, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able parameters."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessor":
        """The preprocessor of ``to_dict``; a one-line error on unknown keys."""
        config.check_known_keys(d, {f.name for f in fields(cls)}, "preprocessing parameter")
        return cls(**d)


# --- the paper's filter -------------------------------------------------------------------------------

def com_filter(
    patterns: np.ndarray, sampling_mrad: float | None, groups: np.ndarray | None = None, threshold: float = 1.0
) -> np.ndarray:
    """The paper's training filter: a bool mask (N,) of the patterns to keep.

    Per group (a scan; e.g. ``unit * 100 + thickness index`` for simulated datasets; None = one
    group): the centre of mass of every pattern (``detector.center_of_mass_mrad``, raw intensities),
    its shift (mrad) from the group's mean centre of mass, min–max normalised within the group; keep
    the patterns whose normalised shift exceeds ``threshold`` × the group's mean normalised shift.
    A group whose shifts are all equal keeps nothing. In the paper (threshold 1) about 40–45 % of the
    patterns survive. For training data only; never filter evaluation data.
    """
    sampling = _check_sampling(sampling_mrad)
    p = _check_stack(patterns)
    t = float(threshold)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"threshold must be a finite number ≥ 0, got {threshold!r}")
    g = np.zeros(len(p), dtype=np.int64) if groups is None else np.asarray(groups)
    if g.shape != (len(p),):
        raise ValueError(f"groups must hold one value per pattern, shape ({len(p)},), got {g.shape}")
    com = np.concatenate([detector.center_of_mass_mrad(p[i:i + CHUNK], sampling) for i in range(0, len(p), CHUNK)])
    keep = np.zeros(len(p), dtype=bool)
    for value in np.unique(g):
        members = np.flatnonzero(g == value)
        shift = np.linalg.norm(com[members] - com[members].mean(axis=0), axis=1)
        span = shift.max() - shift.min()
        norm = (shift - shift.min()) / span if span > 0 else np.zeros_like(shift)
        keep[members] = norm > t * norm.mean()
    return keep
