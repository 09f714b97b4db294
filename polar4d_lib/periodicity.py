"""Where in the unit cell decisions fail, and how much a pattern at each probe position can tell.

- :func:`fractional_positions` / :func:`fold`: probe positions of a raster as fractions of the unit cell
  (the lattice is periodic, so every position is one of the cell's), and any per-position value averaged
  over bins of the cell;
- :func:`lattice_spectrum`: the power spectrum of per-position maps over a scan, and the share of its
  power at the lattice's harmonics;
- :func:`bhattacharyya_distances` and :func:`bayes_accuracy`: the information in one pattern from the
  physics alone — how distinguishable the class-conditional patterns are under Poisson counting at a dose,
  and the accuracy of the Bayes-optimal observer that knows them (a ceiling for any model);
- :func:`column_site`: which projected column a probe position sits on (the [001] perovskite cell: A at
  the corner, B–O at the centre, O at the edge centres; ``structure._SITES``);
- :class:`PeriodicitySettings` and :func:`build`: the error-periodicity chapter's scans of perfect crystal
  from random points of the cell, and the ideal patterns of its information map (a profile's
  ``periodicity`` section; simulated and cached as the domain-gap suites are).

Lengths Å, doses electrons per pattern.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.special import logsumexp

from polar4d_lib import conventions
from polar4d_lib.acquisition import Acquisition
from polar4d_lib.simulation import ProbeSettings, SimulationSettings


def fractional_positions(shape: Sequence[int], step_A: float, origin_A: Sequence[float] = (0.0, 0.0),
                         a_A: float = conventions.A_A) -> np.ndarray:
    """Fractional cell coordinates (Rx, Ry, 2) in [0, 1) of a raster of ``shape`` positions at ``step_A``
    starting at ``origin_A`` (x-major, as ``simulation.region_grid_positions``), in a lattice of period ``a_A``
    with a lattice point at 0."""
    if not step_A > 0 or not a_A > 0:
        raise ValueError(f"step and lattice period must be positive, got {step_A} and {a_A} Å")
    rx, ry = (int(n) for n in shape)
    x = float(origin_A[0]) + np.arange(rx) * float(step_A)
    y = float(origin_A[1]) + np.arange(ry) * float(step_A)
    gx, gy = np.meshgrid(x, y, indexing="ij")
    return np.mod(np.stack([gx, gy], axis=-1) / float(a_A), 1.0)


def bin_index(fractions: np.ndarray, bins: int) -> np.ndarray:
    """The bin (…, 2) int of fractional coordinates (…, 2): bin ``i`` is centred on ``i / bins`` of the cell
    (so a raster at a/``bins`` from a lattice point puts one position in each)."""
    return np.mod(np.rint(np.asarray(fractions) * bins).astype(int), bins)


def fold(values: np.ndarray, fractions: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``values`` (…) averaged over the cell bins (:func:`bin_index`) of their ``fractions`` (…, 2):
    (mean (bins, bins) with NaN in empty bins, counts (bins, bins) int)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    b = bin_index(fractions, bins).reshape(-1, 2)
    if len(b) != len(v):
        raise ValueError(f"{len(v)} values but {len(b)} positions to fold them by")
    flat = b[:, 0] * bins + b[:, 1]
    counts = np.bincount(flat, minlength=bins * bins)
    sums = np.bincount(flat, weights=v, minlength=bins * bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return mean.reshape(bins, bins), counts.reshape(bins, bins)


def lattice_spectrum(maps: np.ndarray, step_A: float, a_A: float = conventions.A_A) -> tuple[np.ndarray, float, float]:
    """Mean power spectrum of per-position maps (N, Rx, Ry) (each's mean removed; fftshifted, so the zero
    frequency is at the centre), the share of its power at the harmonics of the lattice (frequencies
    (h, k)/a, zero excluded, each on its nearest bin), and the share a map of white noise would have there."""
    m = np.asarray(maps, dtype=np.float64)
    m = m - m.mean(axis=(-2, -1), keepdims=True)
    power = (np.abs(np.fft.fft2(m)) ** 2).mean(axis=0)
    rx, ry = power.shape
    on = _harmonic_bins(rx, step_A, a_A)[:, None] & _harmonic_bins(ry, step_A, a_A)[None, :]
    on[0, 0] = False
    total = power.sum() - power[0, 0]
    share = float(power[on].sum() / total) if total > 0 else float("nan")
    return np.fft.fftshift(power), share, float(on.sum() / (power.size - 1))


def _harmonic_bins(n: int, step_A: float, a_A: float) -> np.ndarray:
    """(n,) bool: the FFT bins of an n-position axis at ``step_A`` nearest to a whole number of cycles per
    cell ``a_A`` (zero included)."""
    f = np.fft.fftfreq(n, d=step_A) * a_A  # cycles per cell
    out = np.zeros(n, dtype=bool)
    top = int(np.floor(np.abs(f).max() + 1e-9))
    half_bin = 0.5 * a_A / (n * step_A)
    for h in range(-top, top + 1):
        nearest = int(np.argmin(np.abs(f - h)))
        out[nearest] |= abs(f[nearest] - h) <= half_bin + 1e-9
    return out


def bhattacharyya_distances(means: np.ndarray, dose: float) -> np.ndarray:
    """Bhattacharyya distances (…, C, C) between Poisson-counted patterns whose expected fractions of the
    beam per pixel are ``means`` (…, C, P) (pixels flattened), at ``dose`` electrons per pattern:
    D = dose/2 · Σ (√p_i − √p_j)² (0 for identical patterns; the Bayes error of telling two apart is at most
    exp(−D)/2)."""
    if not dose > 0:
        raise ValueError(f"dose must be positive electrons per pattern, got {dose}")
    r = np.sqrt(np.clip(np.asarray(means, dtype=np.float64), 0, None))
    sq = (r ** 2).sum(-1)
    d2 = sq[..., :, None] + sq[..., None, :] - 2 * np.einsum("...ip,...jp->...ij", r, r)
    return 0.5 * float(dose) * np.clip(d2, 0, None)


def bayes_accuracy(means: np.ndarray, dose: float, samples: int = 16, seed: int = 0,
                   floor: float = 1e-6) -> np.ndarray:
    """Accuracy of the Bayes-optimal observer at each position: ``means`` (Pos, C, N, P) are the expected
    fractions of the beam per pixel of class C under N equally likely nuisance draws (probe, thickness…);
    ``samples`` Poisson patterns at ``dose`` are drawn per class and draw, and each is assigned the class
    whose likelihood, averaged over the draws, is highest. ``floor``: the smallest expected count per pixel
    (a dark pixel would otherwise rule a class out on one stray electron). (Pos,) float64 — a ceiling
    for any model that sees those patterns through a detector no better than the simulation's."""
    m = np.asarray(means, dtype=np.float64)
    if m.ndim != 4:
        raise ValueError(f"means must be (positions, classes, draws, pixels), got shape {m.shape}")
    if not dose > 0:
        raise ValueError(f"dose must be positive electrons per pattern, got {dose}")
    pos, c, n, p = m.shape
    rng = np.random.default_rng(seed)
    out = np.empty(pos)
    truth = np.repeat(np.arange(c), n * samples)
    for i in range(pos):
        lam = np.maximum(float(dose) * m[i].reshape(c * n, p), floor)
        x = rng.poisson(np.repeat(lam, samples, axis=0))  # (C·N·samples, P), class-major
        loglik = x @ np.log(lam).T - lam.sum(axis=1)  # (C·N·samples, C·N)
        per_class = logsumexp(loglik.reshape(len(x), c, n), axis=2)
        out[i] = float(np.mean(per_class.argmax(axis=1) == truth))
    return out


#: projected column sites of the [001] cell (fractional x, y): A at the corner, B–O at the centre, O at the
#: edge centres (``structure._SITES`` projected along z).
SITES: dict[str, tuple[tuple[float, float], ...]] = {
    "A column": ((0.0, 0.0),),
    "B–O column": ((0.5, 0.5),),
    "O column": ((0.5, 0.0), (0.0, 0.5)),
}


def column_site(fractions: np.ndarray, radius: float = 0.125) -> np.ndarray:
    """The column site (…) str each fractional position (…, 2) lies within ``radius`` (fraction of a) of
    (:data:`SITES`, periodic), else "between columns"."""
    f = np.asarray(fractions, dtype=np.float64)
    out = np.full(f.shape[:-1], "between columns", dtype=object)
    for name, points in SITES.items():
        for point in points:
            d = np.mod(f - np.asarray(point) + 0.5, 1.0) - 0.5
            out[np.hypot(d[..., 0], d[..., 1]) <= radius] = name
    return out


# --- the chapter's scans ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PeriodicitySettings:
    """A profile's ``periodicity`` section: the scans of perfect crystal whose errors are folded, and the
    information map's nuisance draws (lengths Å, thicknesses nm, defocus nm, dose e/pattern)."""

    seed: int = 5050
    classes: tuple[int, ...] = tuple(range(conventions.N_CLASSES))
    #: K/Na disorder of every specimen: a seed no training set and no other chapter uses.
    disorder_seed: int = 301
    #: Unit cells per side of each specimen and of each scan's raster.
    cells: int = 2
    thicknesses_nm: tuple[float, ...] = (19.75, 39.5)
    step_A: float = conventions.A_A / 8
    #: Scans per class and thickness, each from its own random point of the cell.
    origins: int = 1
    #: The probe's defocus of each scan is drawn from these; they are also the information map's nuisance draws.
    defocus_nm: tuple[float, ...] = (-5.0, 0.0, 5.0)
    #: The information map's K/Na arrangements (disorder seeds; none: the scans' own), nuisance draws with the
    #: defoci and thicknesses — an observer that knew the scans' own arrangement would have it easier.
    information_disorder_seeds: tuple[int, ...] = ()
    #: The detector of every scan: the simulation's sampling and size, this dose, a PSF, a background with
    #: dark noise and a random centre offset up to ``center_offset_max_px``.
    dose_e_per_pattern: float = 3e4
    psf_sigma_px: float = 1.0
    background_counts: float = 0.05
    dark_noise_sigma: float = 0.3
    center_offset_max_px: float = 1.0
    #: Bins per side of the folded cell; the information map is computed at the bins' centres (a raster at
    #: a/bins from the lattice point).
    bins: int = 8
    #: Poisson patterns per class and draw of the Bayes observer at each position, and the doses (e/pattern)
    #: its ceiling is computed at besides the scans' (at a high dose every position may tell every class apart).
    samples: int = 16
    information_doses: tuple[float, ...] = (1e2, 1e3)
    simulation: SimulationSettings = SimulationSettings()
    a_A: float = conventions.A_A

    @classmethod
    def for_profile(cls, profile: str, overrides: dict[str, Any] | None = None) -> "PeriodicitySettings":
        """The ``periodicity`` section of ``profile`` (profiles.yaml), ``overrides`` replacing its keys."""
        from polar4d_lib import profiles

        values = profiles.settings_values(cls, profile, "periodicity", overrides,
                                          ("classes", "thicknesses_nm", "defocus_nm", "information_doses",
                                           "information_disorder_seeds"),
                                          {"simulation": SimulationSettings})
        return cls(**values)

    def variants(self) -> list[int]:
        """One variant per class (the first of each), class order."""
        return conventions.first_variants(self.classes)


def build(settings: PeriodicitySettings, cache_dir: str | Path | None = None) -> tuple[list, np.ndarray]:
    """(scans, means): the folded scans — every class × thickness × origin, a raster over ``cells`` × ``cells``
    cells from a random point of the cell with a random defocus of ``defocus_nm``, recorded by the settings'
    detector (:class:`polar4d_lib.suites.SuiteScan`; ``description["origin_A"]`` and ``["fractions"]`` say where
    its positions are in the cell) — and the information map's ideal patterns ``means`` (bins², C, N, P):
    fractions of the beam per pixel at each bin centre, class, and nuisance draw (K/Na arrangement × thickness
    × defocus)."""
    from polar4d_lib import suites

    rng = np.random.default_rng(settings.seed)
    sim = settings.simulation
    conditions: suites.Conditions = []
    for variant in settings.variants():
        for t in settings.thicknesses_nm:
            for _ in range(settings.origins):
                origin = tuple(float(v) for v in rng.uniform(0, settings.a_A, 2))
                probe = ProbeSettings(defocus_nm=float(rng.choice(settings.defocus_nm)))
                offset = rng.uniform(-1, 1, 2) * settings.center_offset_max_px
                acquisition = Acquisition(
                    dose_e_per_pattern=settings.dose_e_per_pattern, psf_sigma_px=settings.psf_sigma_px,
                    background_counts=settings.background_counts, dark_noise_sigma=settings.dark_noise_sigma,
                    center_offset_px=(float(offset[0]), float(offset[1])), sampling_out_mrad=sim.q_sampling_mrad,
                    shape_out=tuple(sim.detector_shape), seed=int(rng.integers(2**31)))
                raster = suites.Raster(probe, settings.step_A, origin, settings.cells)
                conditions.append(("scan", None, suites.Condition(settings.cells, settings.disorder_seed, (0.0, 0.0),
                                                                  raster, t, acquisition), variant))
    n_scans = len(conditions)
    seeds = settings.information_disorder_seeds or (settings.disorder_seed,)
    for variant in settings.variants():
        for seed in seeds:
            for t in settings.thicknesses_nm:
                for defocus in settings.defocus_nm:
                    raster = suites.Raster(ProbeSettings(defocus_nm=float(defocus)), settings.a_A / settings.bins,
                                           (0.0, 0.0), 1)
                    conditions.append(("information", float(defocus), suites.Condition(
                        settings.cells, int(seed), (0.0, 0.0), raster, t, None), variant))
    gap = suites.GapSettings(simulation=sim, a_A=settings.a_A, seed=settings.seed)
    made = suites.condition_scans(conditions, gap, cache_dir)
    scans = made[:n_scans]
    for item, (_, _, condition, _) in zip(scans, conditions[:n_scans]):
        item.description["origin_A"] = list(condition.raster.origin_A)
        item.description["fractions"] = fractional_positions(item.scan.data.shape[:2], condition.raster.step_A,
                                                             condition.raster.origin_A, settings.a_A)
    ideal = np.stack([item.scan.data for item in made[n_scans:]])  # (C·T·D, bins, bins, Qx, Qy), class-major
    c, n = len(settings.classes), len(seeds) * len(settings.thicknesses_nm) * len(settings.defocus_nm)
    ideal = ideal.reshape(c, n, settings.bins ** 2, -1)
    return scans, np.ascontiguousarray(ideal.transpose(2, 0, 1, 3))
