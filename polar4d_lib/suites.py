"""Test suites of the domain-gap chapter: named, cached sets of simulated scans that no model trains on.

A suite is a list of :class:`SuiteScan` — a recorded scan (:class:`polar4d_lib.io.Scan`), the classes
accepted as right for it, the table row or the sweep (factor, value) it belongs to — built from a
profile's ``domain_gap`` section (:class:`GapSettings`):

- **synthetic rows** (analogues of the paper's 1S–7S): one specimen per class at a K/Na disorder seed never
  trained on, per lateral supercell size and thickness, scanned over the whole supercell and recorded on
  the simulation's ideal detector (no noise), as the training data are;
- **realistic rows** (analogues of 1E–5E): :mod:`polar4d_lib.realistic`'s held-out scans (frozen phonons,
  mistilt, aberrations, random detectors), at each raster stride, with the detector's PSF, background and
  dark noise off (as the default model is judged) and on (the acquisition model fully on);
- **one-factor sweeps**: from the training conditions (the sweep base: an ideal detector, no aberrations,
  the base thickness, a raster at the base step), one nuisance at a time over its values
  (:data:`FACTORS`, the one place a factor is added).

Every specimen is a PRISM scattering matrix built once (:class:`SpecimenUnit`, cached by its parameters and
the rasters drawn from it, simulated in parallel like a dataset's units); probe aberrations, scan steps and
thicknesses are drawn from it without rebuilding. Lengths Å, thicknesses nm, angles mrad, doses e/pattern.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from polar4d_lib import cache, config, conventions, evaluation, pacbed, realistic
from polar4d_lib.acquisition import Acquisition
from polar4d_lib.io import Scan
from polar4d_lib.simulation import PrismSpecimen, ProbeSettings, SimulationSettings, region_grid_positions
from polar4d_lib.structure import knn_supercell

SCHEMA = 1


@dataclass(frozen=True)
class Raster:
    """A raster: the probe, the step (Å), where it starts in the cell (Å) and how many unit cells per side it
    covers (None: the whole supercell; the crystal is periodic, so one cell holds every distinct position)."""

    probe: ProbeSettings = ProbeSettings()
    step_A: float = conventions.A_A / 4
    origin_A: tuple[float, float] = (0.0, 0.0)
    cells: int | None = None


@dataclass(frozen=True)
class SpecimenUnit:
    """One single-domain specimen of ``variant`` (``cells`` × ``cells`` unit cells, K/Na disorder
    ``disorder_seed``, mistilt ``tilt_mrad``, exit planes at ``thicknesses_nm``) and the rasters drawn from its
    scattering matrix: the unit of simulation and of the cache."""

    variant: int
    thicknesses_nm: tuple[float, ...]
    rasters: tuple[Raster, ...]
    cells: int = 2
    disorder_seed: int = 201
    tilt_mrad: tuple[float, float] = (0.0, 0.0)
    simulation: SimulationSettings = SimulationSettings()
    a_A: float = conventions.A_A

    def key(self) -> str:
        from polar4d_lib.datasets import versions

        return cache.key({"schema": SCHEMA, "unit": asdict(self), "versions": versions()})

    def simulate(self) -> dict[str, np.ndarray]:
        """Ideal patterns of every raster, ``r<i>``: (T, Rx, Ry, Qx, Qy) float32 (fractions of the beam)."""
        specimen = knn_supercell(self.variant, self.cells, max(self.thicknesses_nm), self.a_A, seed=self.disorder_seed)
        prism = PrismSpecimen(specimen.atoms, self.simulation, self.a_A, list(self.thicknesses_nm),
                              tilt_mrad=self.tilt_mrad, seed=self.disorder_seed)
        size = (self.cells * self.a_A,) * 2
        out = {}
        for i, raster in enumerate(self.rasters):
            covered = (min(raster.cells or self.cells, self.cells) * self.a_A,) * 2
            positions, shape = region_grid_positions(raster.origin_A, covered, raster.step_A)
            patterns = prism.patterns(raster.probe, np.mod(positions, size))
            out[f"r{i}"] = patterns.reshape((len(self.thicknesses_nm),) + shape + patterns.shape[-2:]).astype(np.float32)
        return out


def simulate_units(units: Sequence[Any], cache_dir: str | Path | None = None, num_workers: int | None = None,
                   folder: str = "suites", desc: str = "simulating test specimens") -> list[dict[str, np.ndarray]]:
    """The patterns of every unit (anything with ``key()`` and ``simulate()``: a :class:`SpecimenUnit`, a
    defect specimen), from the cache (``folder`` of it) or simulated in parallel (one unit per core, as
    :func:`polar4d_lib.datasets.run_units`) and cached."""
    from polar4d_lib.datasets import run_units

    path = {unit.key(): cache.path(folder, unit.key(), cache_dir) for unit in units}
    todo = list({unit.key(): unit for unit in units if not path[unit.key()].exists()}.values())
    workers = int(config.resolve("num_workers", num_workers) or os.cpu_count() or 1)
    run_units(todo, lambda unit, arrays: cache.save(path[unit.key()], arrays), workers, config.get("scheduler"),
              desc=desc)
    return [cache.load(path[unit.key()]) for unit in units]


@dataclass
class SuiteScan:
    """A scan of a suite: its ``row`` (a table row, or a sweep's factor), the sweep ``value`` (None for
    rows), the classes ``accepted`` as right, and how it was made (``description``)."""

    row: str
    value: float | None
    name: str
    scan: Scan
    accepted: tuple[int, ...]
    description: dict[str, Any] = field(default_factory=dict)

    def patterns(self) -> np.ndarray:
        """The scan's patterns (Rx·Ry, Qx, Qy), x-major, in the scan's frame (as a model reads them)."""
        from polar4d_lib import inputs

        rx, ry, qx, qy = self.scan.data.shape
        return inputs.in_scan_frame(self.scan.data.reshape(rx * ry, qx, qy), self.scan)


# --- the sweeps ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Condition:
    """What one swept scan is made of: specimen parameters, a raster, the thickness read (nm) and the
    detector (``acquisition``; None: the simulation's ideal one)."""

    cells: int
    disorder_seed: int
    tilt_mrad: tuple[float, float]
    raster: Raster
    thickness_nm: float
    acquisition: Acquisition | None = None


@dataclass(frozen=True)
class Factor:
    """A nuisance swept alone: its unit, how a value changes the base :class:`Condition`, what it is, and its
    value in the training conditions (None: they have none, e.g. no dose on the ideal detector)."""

    unit: str
    apply: Callable[[Condition, float, "GapSettings"], Condition]
    description: str
    base: Callable[["GapSettings"], float | None] = lambda s: 0.0


def _probe(condition: Condition, **changes: float) -> Condition:
    return replace(condition, raster=replace(condition.raster, probe=replace(condition.raster.probe, **changes)))


def _detector(condition: Condition, settings: "GapSettings", **changes: Any) -> Condition:
    """The simulation's ideal detector (its sampling and size, no noise) with ``changes``."""
    sim = settings.simulation
    base = Acquisition(sampling_out_mrad=sim.q_sampling_mrad, shape_out=tuple(sim.detector_shape), seed=settings.seed)
    return replace(condition, acquisition=replace(base, **changes))


def _sampling(condition: Condition, value: float, settings: "GapSettings") -> Condition:
    field_mrad = settings.simulation.q_sampling_mrad * max(settings.simulation.detector_shape) / 2
    size = 2 * math.ceil(field_mrad / value)  # the same field of view (mrad) at every sampling
    return _detector(condition, settings, sampling_out_mrad=float(value), shape_out=(size, size))


def _step(condition: Condition, value: float, settings: "GapSettings") -> Condition:
    """A raster at a/value over the whole supercell: a step off the cell's grid needs more than one cell to
    hold a cell's worth of positions."""
    return replace(condition, raster=replace(condition.raster, step_A=settings.a_A / float(value), cells=None))


#: factor → how it is swept. A new nuisance is one entry here (and its values in profiles.yaml).
FACTORS: dict[str, Factor] = {
    "dose": Factor("e/pattern", lambda c, v, s: _detector(c, s, dose_e_per_pattern=float(v)),
                   "electrons per pattern (Poisson noise)", lambda s: None),
    "thickness": Factor("nm", lambda c, v, s: replace(c, thickness_nm=float(v)), "specimen thickness",
                        lambda s: s.thickness_nm),
    "defocus": Factor("nm", lambda c, v, s: _probe(c, defocus_nm=float(v)), "probe defocus (+ overfocus)"),
    "astigmatism": Factor("nm", lambda c, v, s: _probe(c, astigmatism_nm=float(v), astigmatism_angle_deg=30.0),
                          "twofold astigmatism |C12| at 30°"),
    "mistilt": Factor("mrad", lambda c, v, s: replace(c, tilt_mrad=(float(v), 0.0)), "zone-axis mistilt along x"),
    "center offset": Factor("px", lambda c, v, s: _detector(c, s, center_offset_px=(float(v), float(v) / 2)),
                            "zero angle off the detector's centre by (v, v/2) px"),
    "detector sampling": Factor("mrad/px", _sampling, "detector sampling at the same field of view",
                                lambda s: s.simulation.q_sampling_mrad),
    "PSF": Factor("px", lambda c, v, s: _detector(c, s, psf_sigma_px=float(v)), "detector point-spread σ"),
    "background": Factor("counts/px", lambda c, v, s: _detector(c, s, background_counts=float(v), dark_noise_sigma=float(v) ** 0.5,
                                                                dose_e_per_pattern=s.background_dose_e_per_pattern),
                         "constant background with dark noise of its square root, at the background sweep's dose"),
    "K/Na disorder": Factor("seed", lambda c, v, s: replace(c, disorder_seed=int(v)),
                            "another random K/Na arrangement (seed), none of them trained on", lambda s: s.disorder_seed),
    "scan step": Factor("positions per cell", _step, "raster step a/v (v not whole: steps off the cell's grid)",
                        lambda s: s.a_A / s.step_A),
}


# --- the settings ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GapSettings:
    """A profile's ``domain_gap`` section: the test suites' sizes (lengths Å, thicknesses nm)."""

    seed: int = 4040
    classes: tuple[int, ...] = tuple(range(conventions.N_CLASSES))
    #: K/Na disorder of the synthetic rows and the sweep base: seeds no training set uses.
    disorder_seed: int = 201
    #: The sweep base (the training conditions: the simulation's detector, no noise): supercell, thickness,
    #: raster step; the background sweep records at ``background_dose_e_per_pattern`` (counts need a dose).
    cells: int = 2
    thickness_nm: float = 19.75
    step_A: float = conventions.A_A / 4
    background_dose_e_per_pattern: float = 1e5
    #: Unit cells per side the synthetic rows' and sweeps' rasters cover (None: the whole supercell).
    scan_cells: int | None = None
    #: The model kinds the sweeps score (None: every model of the chapter; the shipped model always).
    sweep_kinds: tuple[str, ...] | None = None
    #: Synthetic rows: every class at each of these supercells × thicknesses.
    synthetic_cells: tuple[int, ...] = (2, 3)
    synthetic_thicknesses_nm: tuple[float, ...] = (19.75, 49.375)
    #: Realistic rows: the profile's ``realistic`` section with these replaced, and the detector effects of the
    #: acquisition model fully on (:class:`polar4d_lib.realistic.RealisticRanges` fields).
    realistic: dict[str, Any] = field(default_factory=dict)
    #: A counting detector's blur, stray background and read noise (px, counts/px, counts): at 10^3 e/pattern
    #: on 256 × 256 px a background of 0.05 counts/px is 3 times the signal.
    full_acquisition: dict[str, Any] = field(default_factory=lambda: {
        "psf_max_px": 1.5, "background_counts": 0.05, "dark_noise_sigma": 0.3})
    #: factor (:data:`FACTORS`) → values.
    sweeps: dict[str, tuple[float, ...]] = field(default_factory=dict)
    #: The paper's ablation, retrained here: ``kinds`` (model kinds), ``train`` (training-setting overrides
    #: common to every regime, :class:`polar4d_lib.recipes.TrainSettings` fields) and ``regimes`` (name →
    #: the overrides that make it). Empty: no ablation.
    ablation: dict[str, Any] = field(default_factory=dict)
    simulation: SimulationSettings = SimulationSettings()
    a_A: float = conventions.A_A

    def __post_init__(self) -> None:
        unknown = sorted(set(self.sweeps) - set(FACTORS))
        if unknown:
            raise KeyError(f"unknown sweep factor {unknown[0]!r}; the factors are {', '.join(FACTORS)}")

    @classmethod
    def for_profile(cls, profile: str, overrides: dict[str, Any] | None = None) -> "GapSettings":
        """The ``domain_gap`` section of ``profile`` (profiles.yaml), ``overrides`` replacing its keys."""
        from polar4d_lib import profiles

        values = profiles.settings_values(cls, profile, "domain_gap", overrides,
                                          ("classes", "synthetic_cells", "synthetic_thicknesses_nm", "sweep_kinds"),
                                          {"simulation": SimulationSettings})
        if "sweeps" in values:
            values["sweeps"] = {k: tuple(v) for k, v in values["sweeps"].items()}
        return cls(**values)

    def base(self) -> Condition:
        return Condition(self.cells, self.disorder_seed, (0.0, 0.0), Raster(step_A=self.step_A, cells=self.scan_cells),
                         self.thickness_nm)

    def variants(self) -> list[int]:
        """One variant per class (the first of each), class order."""
        return conventions.first_variants(self.classes)


# --- building the suites ------------------------------------------------------------------------------------

def condition_scans(conditions: Sequence[tuple[str, float | None, Condition, int]], settings: GapSettings,
                    cache_dir: str | Path | None = None) -> list[SuiteScan]:
    """Scans of (row, value, condition, variant) tuples: conditions that share a specimen share one
    :class:`SpecimenUnit` (built once, every raster they need drawn from it)."""
    thicknesses = tuple(sorted({c.thickness_nm for _, _, c, _ in conditions}))
    specimen_of = lambda c, v: (v, c.cells, c.disorder_seed, c.tilt_mrad)  # noqa: E731
    rasters: dict[tuple, list[Raster]] = {}
    for _, _, c, v in conditions:
        rasters.setdefault(specimen_of(c, v), [])
        if c.raster not in rasters[specimen_of(c, v)]:
            rasters[specimen_of(c, v)].append(c.raster)
    units = {key: SpecimenUnit(variant=key[0], thicknesses_nm=thicknesses, rasters=tuple(r), cells=key[1],
                               disorder_seed=key[2], tilt_mrad=key[3], simulation=settings.simulation, a_A=settings.a_A)
             for key, r in rasters.items()}
    arrays = dict(zip(units, simulate_units(list(units.values()), cache_dir)))
    out = []
    for n, (row, value, c, variant) in enumerate(conditions):
        key = specimen_of(c, variant)
        ideal = arrays[key][f"r{rasters[key].index(c.raster)}"][thicknesses.index(c.thickness_nm)]
        sampling = settings.simulation.q_sampling_mrad
        acquisition = None if c.acquisition is None else replace(c.acquisition, seed=c.acquisition.seed + n)
        recorded, sampling = (ideal, sampling) if acquisition is None else acquisition.apply(ideal, sampling)
        label = int(conventions.VARIANT_CLASSES[variant])
        name = f"{conventions.class_name(label)} {row}" + ("" if value is None else f" = {value:g}")
        scan = Scan(recorded, sampling, c.raster.probe.energy_kev, c.raster.probe.semiangle_mrad,
                    c.raster.step_A, 0.0, f"test scan {name}")
        description = {"variant": variant, "cells": c.cells, "thickness_nm": c.thickness_nm,
                       "disorder_seed": c.disorder_seed, "tilt_mrad": list(c.tilt_mrad),
                       "true_step_A": c.raster.step_A,
                       "defocus_nm": c.raster.probe.defocus_nm, "astigmatism_nm": c.raster.probe.astigmatism_nm,
                       "sampling_mrad": sampling, "detector_px": int(recorded.shape[-1]), "scan_shape": list(recorded.shape[:2]),
                       "acquisition": None if acquisition is None else asdict(acquisition)}
        out.append(SuiteScan(row, value, name, scan, (label,), description))
    return out


Conditions = list[tuple[str, float | None, Condition, int]]


def synthetic_conditions(settings: GapSettings) -> Conditions:
    """Every class at each synthetic supercell and thickness, ideal detector: rows "S <cells>×<cells>, <t> nm"."""
    base = settings.base()
    return [(f"S {cells}×{cells}, {t:g} nm", None, replace(base, cells=cells, thickness_nm=t), v)
            for cells in settings.synthetic_cells for t in settings.synthetic_thicknesses_nm for v in settings.variants()]


def sweep_conditions(settings: GapSettings) -> Conditions:
    """Every class at every value of every sweep (row = the factor's name, value = its value)."""
    base = settings.base()
    return [(factor, float(value), FACTORS[factor].apply(base, value, settings), v)
            for factor, values in settings.sweeps.items() for value in values for v in settings.variants()]


def realistic_ranges(profile: str, settings: GapSettings, full: bool) -> realistic.RealisticRanges:
    """The realistic rows' ranges: the profile's ``realistic`` section with ``settings.realistic`` replacing
    its keys, and (``full``) the detector effects of ``settings.full_acquisition`` on."""
    return realistic.RealisticRanges.for_profile(profile, {**settings.realistic,
                                                           **(settings.full_acquisition if full else {})})


def realistic_rows(profile: str, settings: GapSettings, cache_dir: str | Path | None = None) -> list[SuiteScan]:
    """:func:`polar4d_lib.realistic.realistic_scans` of :func:`realistic_ranges`, without and with the detector
    effects: rows "R <detector>, a/<n>"."""
    out = []
    for full, detector in ((False, "realistic detectors"), (True, "+ PSF, background")):
        ranges = realistic_ranges(profile, settings, full)
        for item in realistic.realistic_scans(ranges, cache_dir):
            per_cell = settings.a_A / item.description["true_step_A"]
            out.append(SuiteScan(f"R {detector}, a/{per_cell:.3g}", None, item.name, item.scan, (item.label,),
                                 item.description))
    return out


def build(profile: str, settings: GapSettings | None = None,
          cache_dir: str | Path | None = None) -> tuple[list[SuiteScan], list[SuiteScan]]:
    """(rows, sweeps) of ``profile``'s ``domain_gap`` section: the synthetic and realistic rows' scans and the
    sweeps' scans. The synthetic rows and the sweeps share their specimens (built once)."""
    settings = GapSettings.for_profile(profile) if settings is None else settings
    synthetic = synthetic_conditions(settings)
    scans = condition_scans(synthetic + sweep_conditions(settings), settings, cache_dir)
    return scans[:len(synthetic)] + realistic_rows(profile, settings, cache_dir), scans[len(synthetic):]


def row_names(scans: Sequence[SuiteScan]) -> list[str]:
    """The rows of ``scans`` in order of appearance."""
    return list(dict.fromkeys(s.row for s in scans))


# --- scoring ------------------------------------------------------------------------------------------------

def pooled_probabilities(probabilities: np.ndarray, window: int) -> np.ndarray:
    """A map's class probabilities (Rx, Ry, 8) averaged over the ``window`` × ``window`` positions around each
    (:func:`polar4d_lib.pacbed.average_scan`: whole windows, moved inwards at the edges): pooling decisions,
    not patterns. (Rx, Ry, 8) float32."""
    p = np.asarray(probabilities, dtype=np.float32)
    return pacbed.average_scan(p[:, :, None, :], window)[:, :, 0, :]


def cell_window(item: SuiteScan, a_A: float = conventions.A_A) -> int:
    """Probe positions per side of one unit cell of ``item``'s raster (its true step), at least 1."""
    return max(1, int(round(a_A / item.description["true_step_A"])))


def score(model: Any, scans: Sequence[SuiteScan], cells: Sequence[float] = (0, 1)) -> list[dict[str, Any]]:
    """Each scan mapped as ``polar4d predict`` maps it (the model's input kind), then scored per position with
    its probabilities pooled over windows of ``cells`` unit cells (0: the model's own map, no pooling): for
    each, the share of positions whose class is accepted and whether the majority class is (keys
    ``share_<c>``, ``majority_<c>``). A scan the model refuses (e.g. a step too coarse to fold) scores None,
    with the reason under ``refused``."""
    rows = []
    kind = model.input_kind
    for item in scans:
        row: dict[str, Any] = {"row": item.row, "value": item.value, "scan": item.name, "refused": kind.refusal(model, item.scan)}
        rx, ry = item.scan.data.shape[:2]
        maps = None if row["refused"] else kind.map_scan(model, item.scan)
        for c in cells:
            key = f"{c:g}"
            if maps is None:
                row[f"share_{key}"] = row[f"majority_{key}"] = None
                continue
            proba = maps.probabilities.reshape(rx, ry, -1)
            if c > 0:
                proba = pooled_probabilities(proba, max(1, int(round(c * cell_window(item)))))
            classes = proba.reshape(rx * ry, -1).argmax(axis=1) if c > 0 else np.asarray(maps.classes).ravel()
            share, majority = evaluation.label_set_scores(classes, item.accepted)
            row[f"share_{key}"], row[f"majority_{key}"] = share, bool(majority)
        row["window_px"] = None if maps is None else maps.window_px
        row["scan_px"] = min(rx, ry)
        rows.append(row)
    return rows
