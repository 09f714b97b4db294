"""Position-averaged convergent-beam electron diffraction (PACBED) over a window of probe positions.

A single pattern of a sub-ångström probe mostly shows where the probe sits relative to the atomic
columns; the polar displacement is a small asymmetry on top, and at some probe positions it is not
visible at all (the periodic misclassifications of the paper). The mean of the patterns over one unit
cell of probe positions removes the position dependence and keeps the polarity (LeBeau et al. 2010,
PACBED). A model trained on such averages (``Preprocessor.average_window_A``) is applied to a scan by
replacing every pattern with the mean of the ``n × n`` positions around it, ``n`` = the window over the
scan step; the class map keeps the scan's pixels, its resolution becomes the window.

- :func:`average_scan`: the sliding ``n × n`` mean over the scan axes (whole windows, moved inwards at the edges).
- :func:`lattice_period_px`: the scan's lattice period in probe positions, from the autocorrelation of a
  virtual dark-field image, for files whose scan step is unknown.
- :func:`window_px`: the window in positions for a scan (from its step, else its lattice, else 1), grown
  by whole cells until it holds the electrons the model needs (``Preprocessor.average_min_electrons``):
  the polar asymmetry is about 1 % of a PACBED, so telling 8 directions apart needs ~10⁵–10⁶ electrons
  per window, more than one cell of positions collects at 10³ e/pattern.
- :func:`alias_free_step_A`: the scan step λ/(2α) below which a one-cell mean does not depend on where the
  raster sits (coarser scans alias the position dependence into the mean).
- :func:`cell_stack`: a window's patterns folded into one mean per part of the unit cell (bins × bins),
  registered by the brightest dark-field part: what a scan coarser than λ/(2α) holds beyond its mean
  (``benchmarks/cell_stacks.py``).
- :func:`dose_per_pattern`: electrons per pattern of a scan recorded in counts (None for simulated
  fractions of the beam, which carry no shot noise).
- :func:`group_averages`: training averages of random subsets of simulated patterns that share a
  specimen, thickness and probe (random positions, or one probe setting's whole cell raster: ``cell_grid``),
  or of every s-th position of that raster (:func:`raster_index`): what a coarser scan averages.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from polar4d_lib.io import in_memory

#: A lattice counts as seen when the autocorrelation of the dark-field image at one period reaches this
#: fraction of its value at zero lag (a perfect lattice gives 1, noise ~0).
MIN_LATTICE_CORRELATION = 0.3


def alias_free_step_A(energy_kev: float, semiangle_mrad: float) -> float:
    """The scan step (Å) below which a raster's mean over whole cells does not depend on where the raster
    sits: λ/(2α). The patterns vary with the probe position only at spatial frequencies up to 2α/λ (pairs
    of the probe's plane waves interfere), so a finer raster samples that variation without aliasing
    (:func:`polar4d_lib.simulation.raster_origin_dependence` measures it). 200 keV, 24 mrad: 0.52 Å, so
    a/8 = 0.49 Å of KNN is exact and a/4 = 0.99 Å is not."""
    if not (math.isfinite(energy_kev) and energy_kev > 0 and math.isfinite(semiangle_mrad) and semiangle_mrad > 0):
        raise ValueError(f"need a beam energy (keV) and a convergence semi-angle (mrad) > 0, got {energy_kev!r}, "
                         f"{semiangle_mrad!r}; pass --energy-kev and --semiangle-mrad")
    from polar4d_lib.simulation import wavelength_A  # abTEM: imported only when asked

    return wavelength_A(energy_kev) / (2e-3 * semiangle_mrad)


def _check_window(window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"the averaging window is a number of probe positions ≥ 1, got {window!r}")
    return int(window)


def window_starts(size: int, window: int) -> np.ndarray:
    """Where the window of ``window`` positions around each of ``size`` positions along a scan axis
    starts: i − n//2, moved inwards at the edges so that the window stays whole (0 where the window is
    longer than the scan). (size,) int."""
    n = _check_window(window)
    return np.clip(np.arange(size) - n // 2, 0, max(0, size - n))


def window_means(data: np.ndarray, starts_x: np.ndarray, starts_y: np.ndarray, window: int) -> np.ndarray:
    """The mean of the ``window × window`` patterns of ``data`` (Rx, Ry, Qx, Qy) starting at each pair of
    ``starts_x`` (Dx,) and ``starts_y`` (Dy,) (a window longer than an axis takes the whole axis):
    (Dx, Dy, Qx, Qy) float32. Summed in float64 one window row at a time, so a window's mean does not
    depend on which other windows are asked for (a chunked map equals the whole-scan map)."""
    data = np.asarray(data)
    if data.ndim != 4:
        raise ValueError(f"position averaging needs a 4D scan (Rx, Ry, Qx, Qy), got shape {data.shape}")
    n = _check_window(window)
    nx, ny = min(n, data.shape[0]), min(n, data.shape[1])
    sx, sy = np.asarray(starts_x, dtype=np.int64), np.asarray(starts_y, dtype=np.int64)
    rows = np.zeros((len(sx),) + data.shape[1:], dtype=np.float64)
    for k in range(nx):
        rows += data[sx + k]
    out = np.zeros((len(sx), len(sy)) + data.shape[2:], dtype=np.float64)
    for k in range(ny):
        out += rows[:, sy + k]
    return (out / (nx * ny)).astype(np.float32)


def average_scan(data: np.ndarray, window: int) -> np.ndarray:
    """Each pattern of a scan (Rx, Ry, Qx, Qy) replaced by the mean of the ``window × window`` probe
    positions around it (positions i − n//2 … i − n//2 + n − 1 along each axis). Near the scan's edges
    the window moves inwards so that it stays whole (a whole number of cells keeps the average free of
    the probe's position in the cell); a window longer than the scan takes the whole scan along that
    axis. float32 (:func:`window_means` at every position's :func:`window_starts`)."""
    data = np.asarray(data)
    if data.ndim != 4:
        raise ValueError(f"position averaging needs a 4D scan (Rx, Ry, Qx, Qy), got shape {data.shape}")
    n = _check_window(window)
    if n == 1:
        return data.astype(np.float32, copy=True)
    sx, ix = np.unique(window_starts(data.shape[0], n), return_inverse=True)
    sy, iy = np.unique(window_starts(data.shape[1], n), return_inverse=True)
    return window_means(data, sx, sy, n)[ix.ravel()][:, iy.ravel()]


#: Bytes of float64 a lazily read scan (np.memmap, dask array) is reduced in at a time by the scan-wide
#: statistics below (:func:`dose_per_pattern`, :func:`dark_field_image`), so that they never hold it whole.
BLOCK_BYTES = 2**27


def row_blocks(data: np.ndarray) -> Iterator[np.ndarray]:
    """``data`` (Rx, ...) as in-memory blocks of whole rows of the first axis, in its own dtype: an
    in-memory array at once, a lazily read one (np.memmap, dask array) about :data:`BLOCK_BYTES` at a time
    (counted as float64); a lazily read block with NaN or inf is a one-line error."""
    lazy = not in_memory(data)
    n = data.shape[0]
    row = 8 * int(np.prod(data.shape[1:], dtype=np.int64))
    step = max(1, BLOCK_BYTES // max(row, 1)) if lazy else max(n, 1)
    for start in range(0, n, step):
        block = data[start:start + step]
        block = np.asarray(block.compute() if hasattr(block, "compute") else block)
        if lazy and np.issubdtype(block.dtype, np.floating) and not np.isfinite(block).all():
            raise ValueError(f"the scan contains NaN or inf (rows {start}–{start + len(block) - 1}); mask or "
                             "replace bad pixels first")
        yield block


#: Scan-wide statistics of the last few lazily read scans (id → (the array, its value)), so that a file is
#: read once for each however many callers ask (the window, the cell period, the coarse-step warning).
_LAZY_STATISTICS: OrderedDict[tuple[str, int], tuple[Any, Any]] = OrderedDict()
LAZY_STATISTICS_KEPT = 8


def once_per_lazy_scan(statistic: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``statistic(data)`` computed once per lazily read scan (a dask array or memory map: a pass over its
    file, which does not change under it) and remembered for the last :data:`LAZY_STATISTICS_KEPT`; an
    in-memory array is computed every time (remembering it would keep the array alive)."""

    @functools.wraps(statistic)
    def remembered(data: Any) -> Any:
        if in_memory(data):
            return statistic(data)
        key = (statistic.__name__, id(data))
        if key in _LAZY_STATISTICS and _LAZY_STATISTICS[key][0] is data:
            _LAZY_STATISTICS.move_to_end(key)
            return _LAZY_STATISTICS[key][1]
        value = statistic(data)
        _LAZY_STATISTICS[key] = (data, value)
        while len(_LAZY_STATISTICS) > LAZY_STATISTICS_KEPT:
            _LAZY_STATISTICS.popitem(last=False)
        return value

    return remembered


def dark_field_image(data: np.ndarray) -> np.ndarray:
    """A calibration-free virtual dark-field image (Rx, Ry): the intensity in the detector pixels that
    are dark (below 20 % of the maximum) in the scan's mean pattern, i.e. outside the bright-field disk.
    Leading axes of an in-memory array (..., Rx, Ry, Qx, Qy) are separate scans, each with its own mean
    pattern (:func:`cell_stacks` registers many windows' stacks at once). A lazily read scan is read twice,
    block by block (:func:`row_blocks`)."""
    if in_memory(data):
        data = np.asarray(data, dtype=np.float64)
        dark = _dark_pixels(data.mean(axis=(-4, -3))).astype(np.float64)
        return np.einsum("...xyij,...ij->...xy", data, dark)
    mean = sum(block.sum(axis=(0, 1), dtype=np.float64) for block in row_blocks(data)) / (data.shape[0] * data.shape[1])
    dark = _dark_pixels(mean).astype(np.float64)
    return np.concatenate([np.tensordot(block, dark, axes=([2, 3], [0, 1])) for block in row_blocks(data)])


def _dark_pixels(mean: np.ndarray) -> np.ndarray:
    """The pixels of mean patterns (..., Qx, Qy) below 20 % of each one's brightest (outside the bright-field
    disk): bool, same shape."""
    return mean < 0.2 * mean.max(axis=(-2, -1), keepdims=True)


def _autocorrelation(image: np.ndarray) -> np.ndarray:
    """Normalised linear autocorrelation (lags ≥ 0 along both axes), 1 at zero lag."""
    f = image - image.mean()
    shape = [2 * s for s in f.shape]
    spectrum = np.fft.rfft2(f, shape)
    acf = np.fft.irfft2(spectrum * spectrum.conj(), shape)[: f.shape[0], : f.shape[1]]
    overlap = np.outer(np.arange(f.shape[0], 0, -1), np.arange(f.shape[1], 0, -1))
    acf = acf / overlap
    return acf / acf[0, 0] if acf[0, 0] > 0 else np.zeros_like(acf)


@once_per_lazy_scan
def lattice_period_px(data: np.ndarray) -> float | None:
    """The lattice period of a scan in probe positions (mean over x and y), or None where no lattice
    shows: the first lag (≥ 2 positions, ≤ half the scan) at which the autocorrelation of
    :func:`dark_field_image` has a local maximum above ``MIN_LATTICE_CORRELATION`` and at least 80 % of
    the highest such maximum (whole multiples of the period are maxima too), refined to a fraction of a
    position by the parabola through that maximum and its neighbours."""
    image = dark_field_image(data)
    if min(image.shape) < 4 or not np.ptp(image) > 0:
        return None
    acf = _autocorrelation(image)
    periods = []
    for profile in (acf[:, 0], acf[0, :]):
        lags = np.arange(2, len(profile) // 2 + 1)
        if len(lags) == 0:
            return None
        peaks = [lag for lag in lags if profile[lag] >= profile[lag - 1] and
                 (lag + 1 >= len(profile) or profile[lag] >= profile[lag + 1])]
        peaks = [lag for lag in peaks if profile[lag] >= MIN_LATTICE_CORRELATION]
        if not peaks:
            return None
        best = max(profile[lag] for lag in peaks)  # multiples of the period peak about as high: take the first
        lag = next(lag for lag in peaks if profile[lag] >= 0.8 * best)
        periods.append(lag + _parabola_peak(profile, lag))
    return float(np.mean(periods))


def _parabola_peak(profile: np.ndarray, lag: int) -> float:
    """Where, relative to ``lag`` (in ±0.5), the parabola through the profile at lag − 1, lag, lag + 1
    peaks: the period to a fraction of a position (a step rarely divides the cell); 0 at the profile's end
    or where the three values do not curve down."""
    if lag + 1 >= len(profile):
        return 0.0
    below, at, above = (float(v) for v in profile[lag - 1:lag + 2])
    curvature = below - 2 * at + above
    return float(np.clip(0.5 * (below - above) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0


def cell_stack(window: np.ndarray, period_px: float, bins: int = 4) -> np.ndarray:
    """The patterns of a scan window (Wx, Wy, Qx, Qy) folded into the unit cell: the mean of those whose
    position lies in each of ``bins`` × ``bins`` equal parts of the cell (position i along an axis, taken
    at the middle of its step, is in part ⌊bins · (((i + ½) / ``period_px``) mod 1)⌋; the lattice period in
    positions, axes along the scan's: at 4 or 8 positions per cell no position lies within a quarter step
    of a part's edge, so a period read from the scan a little off folds the same),
    rolled so that the part with the most dark-field intensity (:func:`dark_field_image`) comes first —
    the same stack wherever the raster starts. Returns (bins², Qx, Qy) float32, parts x-major. A coarse
    scan's mean mixes these parts with weights set by where its raster sits; kept apart, they say it."""
    window = np.asarray(window)
    if window.ndim != 4:
        raise ValueError(f"a cell stack needs a 4D scan window (Wx, Wy, Qx, Qy), got shape {window.shape}")
    return cell_stacks(window, [0], [0], window.shape[:2], period_px, bins)[0, 0]


def cell_stacks(data: np.ndarray, starts_x: np.ndarray, starts_y: np.ndarray, window: int | tuple[int, int],
                period_px: float, bins: int = 4) -> np.ndarray:
    """:func:`cell_stack` of every window of ``data`` (Rx, Ry, Qx, Qy) that starts at a pair of ``starts_x``
    (Dx,) and ``starts_y`` (Dy,) and spans ``window`` positions (per axis; a window longer than an axis
    takes the whole axis): (Dx, Dy, bins², Qx, Qy) float32. Each window is folded from its own first
    position, summed in float64 one window row at a time, so a window's stack does not depend on which
    other windows are asked for."""
    data = np.asarray(data)
    if data.ndim != 4:
        raise ValueError(f"cell stacks need a 4D scan (Rx, Ry, Qx, Qy), got shape {data.shape}")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins is a whole number of parts per cell side ≥ 1, got {bins!r}")
    if not (isinstance(period_px, (int, float, np.number)) and math.isfinite(period_px) and period_px >= bins):
        raise ValueError(f"the lattice period must be at least {bins} positions to fill {bins} parts per cell, "
                         f"got {period_px!r}; scan finer or use fewer bins")
    shape = (window, window) if isinstance(window, (int, np.integer)) else tuple(window)
    nx, ny = (min(_check_window(int(w)), size) for w, size in zip(shape, data.shape[:2]))
    part = [np.floor(bins * np.mod((np.arange(n) + 0.5) / float(period_px), 1.0)).astype(np.int64) % bins
            for n in (nx, ny)]
    counts = [np.bincount(p, minlength=bins) for p in part]
    if any(np.any(c == 0) for c in counts):
        raise ValueError(f"the window ({nx} × {ny} positions) does not reach every part "
                         f"of a cell of {period_px:g} positions; use a window of at least one cell")
    sx, sy = np.asarray(starts_x, dtype=np.int64), np.asarray(starts_y, dtype=np.int64)
    rows = np.zeros((len(sx), bins) + data.shape[1:], dtype=np.float64)  # (Dx, bins, Ry, Qx, Qy)
    for k in range(nx):
        rows[:, part[0][k]] += data[sx + k]
    sums = np.zeros((len(sx), bins, len(sy), bins) + data.shape[2:], dtype=np.float64)
    for k in range(ny):
        sums[:, :, :, part[1][k]] += rows[:, :, sy + k]
    grid = sums.transpose(0, 2, 1, 3, 4, 5) / np.multiply.outer(counts[0], counts[1])[:, :, None, None]
    # registration: the part with the most intensity in each stack's dark field first
    brightest = dark_field_image(grid).reshape(len(sx), len(sy), -1).argmax(axis=-1)
    ix, iy = np.divmod(brightest, bins)
    a = (np.arange(bins)[None, None, :] + ix[..., None]) % bins  # (Dx, Dy, bins)
    b = (np.arange(bins)[None, None, :] + iy[..., None]) % bins
    d0, d1 = np.indices((len(sx), len(sy)))
    rolled = grid[d0[..., None, None], d1[..., None, None], a[..., :, None], b[..., None, :]]
    return rolled.reshape(len(sx), len(sy), bins * bins, *data.shape[2:]).astype(np.float32)


def resampled_raster(raster: np.ndarray, period_px: float, origin: Sequence[float], window: int) -> np.ndarray:
    """The ``window`` × ``window`` patterns a scan at ``period_px`` positions per cell would record, starting
    at ``origin`` (fractions of the cell along x and y), taken from the one-cell raster (n, n, Qx, Qy) of the
    same probe: position i lies at origin + i / ``period_px`` of the cell, and each is the raster's pattern
    nearest to it (the crystal is periodic, so the raster wraps). Emulates scans whose step does not divide
    the cell (their parts of the cell hold unequal shares of positions at shifting offsets) from a raster
    that does; the positions are off by at most half a raster step. (window, window, Qx, Qy)."""
    raster = np.asarray(raster)
    if raster.ndim != 4 or raster.shape[0] != raster.shape[1]:
        raise ValueError(f"a cell raster is (n, n, Qx, Qy), got shape {raster.shape}")
    window = _check_window(window)
    if not (math.isfinite(period_px) and period_px > 0):
        raise ValueError(f"the lattice period is a number of positions > 0, got {period_px!r}")
    n = raster.shape[0]
    nearest = [np.mod(np.rint(n * (float(o) + np.arange(window) / period_px)).astype(np.int64), n) for o in origin]
    return raster[np.ix_(nearest[0], nearest[1])]


@once_per_lazy_scan
def dose_per_pattern(data: np.ndarray) -> float | None:
    """Mean electrons per pattern of a scan (..., Qx, Qy) recorded in counts: the mean pattern sum. None
    where the patterns sum to at most 1 (fractions of the incident beam: a noise-free simulation). A
    lazily read scan is summed block by block (:func:`row_blocks`)."""
    count = int(np.prod(data.shape[:-2], dtype=np.int64))
    total = sum(float(block.sum(dtype=np.float64)) for block in row_blocks(data)) if count else 0.0
    mean = total / count if count else 0.0
    return None if mean <= 1.0 + 1e-6 else mean


def covering_px(period_px: float, cells: int = 1) -> int:
    """The fewest probe positions along an axis that cover ``cells`` unit cells of ``period_px`` positions
    each, ⌈cells · period⌉ (at least 1): a window that reaches every part of the cell even where the step
    does not divide it."""
    return max(1, math.ceil(cells * period_px - 1e-6))


def window_px(
    window_A: float, scan_step_A: float | None = None, data: np.ndarray | None = None,
    min_electrons: float | None = None, dose_e_per_pattern: float | None = None, whole_cell: bool = False,
    period: tuple[float, str] | None = None,
) -> tuple[int, str]:
    """Probe positions per side of the averaging window for a scan, and how it was found: from the scan
    step (Å) when known, else from the lattice seen in ``data`` (one period ≈ one cell), else 1. With
    ``min_electrons``, a window of n × n positions that collects fewer electrons (at
    ``dose_e_per_pattern``, else :func:`dose_per_pattern` of ``data``) grows to m × m cells. A cell of p
    positions (p = ``window_A`` / step, or the lattice period) is round(p) positions, m cells m·round(p);
    with ``whole_cell`` (a window folded into the parts of the cell, :func:`cell_stack`) they are the
    fewest positions that cover them (:func:`covering_px`), so that a step that does not divide the cell
    still reaches every part of it. ``period``: the cell's period in positions and how it was found, where
    the caller has it already (then neither the step nor ``data``'s lattice is read for it)."""
    period, note = period if period is not None else _cell_period_px(window_A, scan_step_A, data)
    if period is None:
        return 1, note

    def cells(m: int) -> int:
        return covering_px(period, m) if whole_cell else m * max(1, round(period))

    n = cells(1)
    note = f"{n} × {n} positions ({note})"
    if min_electrons is None or n == 1:
        return n, note
    dose = dose_e_per_pattern if dose_e_per_pattern is not None else (dose_per_pattern(data) if data is not None else None)
    if dose is None:
        return n, note + "; noise-free patterns (fractions of the beam)"
    if not (math.isfinite(dose) and dose > 0):
        raise ValueError(f"the dose is electrons per pattern > 0, got {dose!r}; pass --dose-e-per-pattern")
    m = max(1, math.ceil(math.sqrt(min_electrons / (dose * n * n)) - 1e-9))
    if m == 1:
        return n, note + f"; {dose * n * n:.2g} e per window at {dose:.2g} e/pattern"
    return cells(m), (f"{cells(m)} × {cells(m)} positions ({m} × {m} cells: at {dose:.2g} e/pattern one cell "
                      f"collects {dose * n * n:.2g} e, the model needs ≥ {min_electrons:.2g} e per window)")


def _cell_period_px(window_A: float, scan_step_A: float | None, data: np.ndarray | None) -> tuple[float | None, str]:
    """One cell's period in probe positions and how it was found (``window_A`` over the step, else the
    lattice of ``data``), or None and why not."""
    if not (isinstance(window_A, (int, float)) and math.isfinite(window_A) and window_A > 0):
        raise ValueError(f"the averaging window is a length in Å > 0, got {window_A!r}")
    if scan_step_A is not None:
        if not (math.isfinite(scan_step_A) and scan_step_A > 0):
            raise ValueError(f"scan step must be a length in Å > 0, got {scan_step_A!r}; pass --scan-step-A")
        return window_A / scan_step_A, f"{window_A:g} Å at a {scan_step_A:g} Å step"
    if data is not None:
        period = lattice_period_px(data)
        if period is not None:
            return period, f"scan step unknown; one lattice period of the scan, {period:.1f} positions"
    return None, ("single patterns (scan step unknown and no lattice seen in the scan): pass --scan-step-A "
                  "for position averaging")


def _group_members(groups: np.ndarray, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct groups (sorted) and, for each, the ascending indices of its ``n`` patterns."""
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must hold one value per pattern, shape ({n},), got {groups.shape}")
    names, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse.ravel(), kind="stable")
    return names, np.split(order, np.cumsum(np.bincount(inverse.ravel(), minlength=len(names)))[:-1])


def raster_index(position_frac: np.ndarray, groups: np.ndarray, n: int) -> np.ndarray:
    """Each pattern's (i, j) (N, 2) int on its group's ``n`` × ``n`` raster of one cell (``cell_grid``
    data): its fractional cell position (N, 2) relative to the group's first pattern, in steps of 1/n."""
    frac = np.asarray(position_frac, dtype=np.float64)
    _, members = _group_members(groups, len(frac))
    out = np.empty((len(frac), 2), dtype=np.int64)
    for m in members:
        steps = (frac[m] - frac[m[0]]) * n
        index = np.round(steps)
        if np.abs(steps - index).max() > 0.05:
            raise ValueError(f"the positions of a group are not on a {n} × {n} raster of one cell; "
                             "raster strides need a dataset simulated with cell_grid: true")
        out[m] = np.mod(index, n).astype(np.int64)
    return out


def sub_raster(raster: np.ndarray, stride: int, origin: Sequence[int]) -> np.ndarray:
    """Which of the patterns with raster indices ``raster`` (N, 2) lie on every ``stride``-th position in
    x and y from ``origin`` (i, j): (N,) bool."""
    return np.all(np.mod(np.asarray(raster) - np.asarray(origin), stride) == 0, axis=1)


def group_averages(
    patterns: np.ndarray, groups: np.ndarray, sizes: Sequence[int], n: int, seed: int,
    labels: np.ndarray | None = None, raster: np.ndarray | None = None, strides: Sequence[int] = (1,),
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` means of patterns (N, Qx, Qy) that share a group, the group drawn uniformly. Each mean
    takes a stride drawn uniformly from ``strides`` (repeat one to weight it): stride 1 a random subset
    whose size is drawn uniformly from ``sizes`` = (low, high) (capped at the group's size); stride s > 1
    the whole sub-raster of every s-th position in x and y from a random origin — what a scan at s times
    the raster's step averages over one cell — which needs each pattern's ``raster`` index (N, 2), see
    :func:`raster_index`. Returns the averages (n, Qx, Qy) float32 and the index of a member of each (to
    carry labels)."""
    patterns = np.asarray(patterns)
    names, members = _group_members(groups, len(patterns))
    low, high = (int(s) for s in sizes)
    if not 1 <= low <= high:
        raise ValueError(f"subset sizes are (low, high) with 1 ≤ low ≤ high, got {tuple(sizes)}")
    strides = [int(s) for s in strides]
    if not strides or min(strides) < 1:
        raise ValueError(f"raster strides are whole numbers ≥ 1, got {strides}")
    if max(strides) > 1 and raster is None:
        raise ValueError("raster strides > 1 need each pattern's raster index (pacbed.raster_index)")
    if labels is not None:
        labels = np.asarray(labels)
        for g, m in zip(names, members):
            if len(np.unique(labels[m])) > 1:
                raise ValueError(f"group {g} mixes classes; average only patterns of one specimen and probe")
    rng = np.random.default_rng(seed)
    out = np.empty((int(n),) + patterns.shape[1:], dtype=np.float32)
    first = np.empty(int(n), dtype=np.int64)
    for i in range(int(n)):
        m = members[rng.integers(len(members))]
        stride = strides[rng.integers(len(strides))] if len(strides) > 1 else strides[0]
        if stride == 1:
            k = min(int(rng.integers(low, high + 1)), len(m))
            chosen = rng.choice(m, k, replace=False)
        else:
            origin = rng.integers(stride, size=2)
            chosen = m[sub_raster(raster[m], stride, origin)]
            if not len(chosen):  # a partial group (subsampled training patterns): any member stands in
                chosen = m[:1]
        out[i] = patterns[chosen].mean(axis=0)
        first[i] = chosen[0]
    return out, first


def full_group_averages(patterns: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean of every group's patterns (G, Qx, Qy) and the index of a member of each."""
    patterns = np.asarray(patterns)
    _, members = _group_members(groups, len(patterns))
    out = np.stack([patterns[m].mean(axis=0) for m in members]).astype(np.float32)
    return out, np.array([m[0] for m in members], dtype=np.int64)
