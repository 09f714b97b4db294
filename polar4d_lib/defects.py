"""Specimens with defects and their ground truth: the defect-correlation chapter's scans.

A :class:`DefectSpecimen` is one supercell — a single domain with oxygen vacancies placed column by column
(:class:`polar4d_lib.structure.OxygenVacancy`, their Nb neighbours relaxed), or two domains meeting at flat
walls (:func:`polar4d_lib.structure.wall_volume`; the supercell is periodic, so a wall at ``position`` cells
and one at 0) — scanned at several steps from random points of the cell. :func:`build` simulates every
specimen of a profile's ``defects`` section once (PRISM, cached and parallel as the domain-gap suites), and
records each raster at each dose with the detector's blur, background and dark noise, returning
:class:`DefectScan` s with per-position truth: the vacancy count of the column under the probe and the
distance to the nearest wall (cells).

Lengths Å, thicknesses nm, doses e/pattern.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from polar4d_lib import cache, conventions
from polar4d_lib.acquisition import Acquisition
from polar4d_lib.io import Scan
from polar4d_lib.simulation import PrismSpecimen, ProbeSettings, SimulationSettings, region_grid_positions
from polar4d_lib.structure import OxygenVacancy, cells_for_thickness, knn_supercell, wall_angle_deg, wall_volume

SCHEMA = 1


def wall_is_neutral(variant_a: int, variant_b: int, normal: str) -> bool:
    """Whether a wall normal to ``normal`` ('x' or 'y') between two variants carries no bound charge:
    (P_a − P_b) · n = 0."""
    axis = {"x": 0, "y": 1}[normal]
    return bool(conventions.VARIANTS[variant_a][axis] == conventions.VARIANTS[variant_b][axis])


@dataclass(frozen=True)
class Wall:
    """Two domains, ``variant_a`` then ``variant_b`` from ``position`` cells on along ``normal``."""

    variant_a: int
    variant_b: int
    normal: str = "x"
    position: int | None = None

    def describe(self) -> str:
        angle = wall_angle_deg(self.variant_a, self.variant_b)
        charge = "neutral" if wall_is_neutral(self.variant_a, self.variant_b, self.normal) else "charged"
        a, b = (conventions.class_name(int(conventions.VARIANT_CLASSES[v])) for v in (self.variant_a, self.variant_b))
        return f"{angle:.0f}° {charge} wall {a} | {b} (normal {self.normal})"


@dataclass(frozen=True)
class DefectSpecimen:
    """One supercell of ``cells`` × ``cells`` unit cells, ``thickness_nm`` thick, K/Na disorder
    ``disorder_seed``: a single domain of ``variant`` with ``vacancies`` (column (i, j) → count, placed at
    random depths drawn with ``seed``), or a ``wall``; scanned at each of ``steps_A`` from its ``origins_A``
    over the whole supercell with ``probe``. The unit of simulation and of the cache."""

    name: str
    cells: int
    thickness_nm: float
    steps_A: tuple[float, ...]
    origins_A: tuple[tuple[float, float], ...]
    #: "vacancies" (isolated vacancy columns), "cluster" (a block of neighbouring vacancy columns) or "wall".
    kind: str = "vacancies"
    variant: int = 0
    vacancies: tuple[tuple[int, int, int], ...] = ()
    wall: Wall | None = None
    nb_relaxation_A: float = 0.10
    disorder_seed: int = 401
    seed: int = 0
    tilt_mrad: tuple[float, float] = (0.0, 0.0)
    probe: ProbeSettings = ProbeSettings()
    simulation: SimulationSettings = SimulationSettings()
    a_A: float = conventions.A_A

    def key(self) -> str:
        from polar4d_lib.datasets import versions

        return cache.key({"schema": SCHEMA, "specimen": asdict(self), "versions": versions()})

    def structure(self):
        """The :class:`polar4d_lib.structure.Specimen` (atoms and truth maps)."""
        nz = cells_for_thickness(self.thickness_nm, self.a_A)
        rng = np.random.default_rng(self.seed)
        placed = []
        for i, j, count in self.vacancies:
            if count > nz:
                raise ValueError(f"{count} vacancies do not fit a column of {nz} cells; lower the count or thicken the specimen")
            placed += [OxygenVacancy((i, j, int(k)), "z", self.nb_relaxation_A)
                       for k in rng.choice(nz, size=count, replace=False)]
        if self.wall is not None:
            volume = wall_volume((self.cells, self.cells, nz), self.wall.variant_a, self.wall.variant_b,
                                 self.wall.normal, self.wall.position)
            return knn_supercell(volume, a_A=self.a_A, vacancies=placed, seed=self.disorder_seed)
        return knn_supercell(self.variant, self.cells, self.thickness_nm, self.a_A, vacancies=placed,
                             seed=self.disorder_seed)

    def rasters(self) -> list[tuple[np.ndarray, tuple[int, int]]]:
        """(positions (N, 2) Å, scan shape) of each step, x-major, over the whole supercell from its origin."""
        size = (self.cells * self.a_A,) * 2
        return [region_grid_positions(origin, size, step) for step, origin in zip(self.steps_A, self.origins_A)]

    def simulate(self) -> dict[str, np.ndarray]:
        """Ideal patterns ``r<i>`` (Rx, Ry, Qx, Qy) float32 of each raster (fractions of the beam)."""
        specimen = self.structure()
        prism = PrismSpecimen(specimen.atoms, self.simulation, self.a_A, [self.thickness_nm], tilt_mrad=self.tilt_mrad,
                              seed=self.disorder_seed)
        size = np.array([self.cells * self.a_A] * 2)
        out = {}
        for i, (positions, shape) in enumerate(self.rasters()):
            patterns = prism.patterns(self.probe, np.mod(positions, size))[0]
            out[f"r{i}"] = patterns.reshape(shape + patterns.shape[-2:]).astype(np.float32)
        return out

    def truth(self, positions_A: np.ndarray) -> dict[str, np.ndarray]:
        """Per probe position (N, 2) Å: ``class``, ``vacancies`` (count in the column under the probe) and
        ``wall_distance_cells`` (to the nearest wall plane; inf without a wall)."""
        specimen = self.structure()
        classes, vacancies = specimen.labels_at(np.mod(positions_A, self.cells * self.a_A))
        distance = np.full(len(positions_A), np.inf)
        if self.wall is not None:
            axis = {"x": 0, "y": 1}[self.wall.normal]
            planes = np.array([0, self.cells // 2 if self.wall.position is None else self.wall.position])
            x = np.mod(positions_A[:, axis] / self.a_A, self.cells)
            d = np.abs(x[:, None] - planes[None])
            distance = np.minimum(d, self.cells - d).min(axis=1)
        return {"class": classes.astype(np.int8), "vacancies": vacancies.astype(np.int16),
                "wall_distance_cells": distance}


@dataclass
class DefectScan:
    """One recorded scan of a :class:`DefectSpecimen`: at ``step_A`` from ``origin_A``, at ``dose``, and
    its truth maps (Rx, Ry): ``class``, ``vacancies``, ``wall_distance_cells``."""

    specimen: str
    step_A: float
    origin_A: tuple[float, float]
    dose: float
    scan: Scan
    truth: dict[str, np.ndarray]
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def positions_per_cell(self) -> float:
        return conventions.A_A / self.step_A


@dataclass(frozen=True)
class DefectSettings:
    """A profile's ``defects`` section (lengths Å, thicknesses nm, doses e/pattern)."""

    seed: int = 6060
    #: K/Na disorder of every specimen: a seed no training set and no other chapter uses.
    disorder_seed: int = 401
    cells: int = 4
    thickness_nm: float = 19.75
    #: The vacancy specimen: one domain of ``variant``; each count in ``columns_per_count`` random columns.
    variant: int = 0
    vacancy_counts: tuple[int, ...] = (1, 2, 4, 8)
    columns_per_count: int = 2
    #: The cluster specimen: a block of ``cluster_columns`` × ``cluster_columns`` neighbouring columns, each with
    #: ``cluster_count`` vacancies, at a random place (0 columns: no cluster specimen).
    cluster_columns: int = 2
    cluster_count: int = 4
    nb_relaxation_A: float = 0.10
    #: The wall specimens: (variant_a, variant_b, normal) each.
    walls: tuple[tuple[int, int, str], ...] = ((0, 3, "x"), (0, 2, "x"))
    #: Positions per cell of the rasters (a/n), each from a random point of the cell.
    steps_per_cell: tuple[float, ...] = (8.0, 4.0, 2.0)
    doses: tuple[float, ...] = (3e3, 3e4)
    #: Each specimen's zone-axis mistilt: a random direction, a random size up to this (mrad); frozen phonons
    #: through ``simulation.phonon_configs``.
    tilt_max_mrad: float = 0.5
    psf_sigma_px: float = 1.0
    background_counts: float = 0.05
    dark_noise_sigma: float = 0.3
    center_offset_max_px: float = 1.0
    simulation: SimulationSettings = SimulationSettings()
    a_A: float = conventions.A_A

    @classmethod
    def for_profile(cls, profile: str, overrides: dict[str, Any] | None = None) -> "DefectSettings":
        """The ``defects`` section of ``profile`` (profiles.yaml), ``overrides`` replacing its keys."""
        from polar4d_lib import profiles

        values = profiles.settings_values(cls, profile, "defects", overrides,
                                          ("vacancy_counts", "steps_per_cell", "doses"), {"simulation": SimulationSettings})
        if "walls" in values:
            values["walls"] = tuple(tuple(w) for w in values["walls"])
        return cls(**values)

    def o_sites_per_column(self) -> int:
        """Oxygen sites in one projected cell column (3 per cell, along the thickness)."""
        return 3 * cells_for_thickness(self.thickness_nm, self.a_A)

    def specimens(self) -> list[DefectSpecimen]:
        """The vacancy specimen, the cluster specimen and one specimen per wall, each with its rasters' random
        origins, mistilt and vacancy depths."""
        rng = np.random.default_rng(self.seed)
        columns = rng.permutation(self.cells * self.cells)
        vacancies = []
        for n, count in enumerate(self.vacancy_counts):
            for c in columns[n * self.columns_per_count:(n + 1) * self.columns_per_count]:
                vacancies.append((int(c // self.cells), int(c % self.cells), int(count)))
        if len(vacancies) > self.cells * self.cells:
            raise ValueError(f"{len(vacancies)} vacancy columns do not fit {self.cells} × {self.cells} cells")
        steps = tuple(self.a_A / n for n in self.steps_per_cell)
        common = dict(cells=self.cells, thickness_nm=self.thickness_nm, steps_A=steps, disorder_seed=self.disorder_seed,
                      simulation=self.simulation, a_A=self.a_A, nb_relaxation_A=self.nb_relaxation_A)
        def drawn() -> dict[str, Any]:
            """Each specimen's random rasters' origins, vacancy depths (seed) and mistilt."""
            origins = tuple(tuple(float(v) for v in rng.uniform(0, self.a_A, 2)) for _ in steps)
            angle, size = rng.uniform(0, 2 * np.pi), self.tilt_max_mrad * np.sqrt(rng.uniform())
            return {"origins_A": origins, "seed": int(rng.integers(2**31)),
                    "tilt_mrad": (float(size * np.cos(angle)), float(size * np.sin(angle)))}

        out = [DefectSpecimen("vacancies", kind="vacancies", variant=self.variant, vacancies=tuple(vacancies), **drawn(),
                              **common)]
        if self.cluster_columns:
            if self.cluster_columns >= self.cells:
                raise ValueError(f"a cluster of {self.cluster_columns} × {self.cluster_columns} columns leaves no perfect "
                                 f"column in {self.cells} × {self.cells} cells; lower cluster_columns or raise cells")
            i0, j0 = (int(v) for v in rng.integers(0, self.cells, 2))
            block = tuple(((i0 + di) % self.cells, (j0 + dj) % self.cells, int(self.cluster_count))
                          for di in range(self.cluster_columns) for dj in range(self.cluster_columns))
            out.append(DefectSpecimen(f"vacancy cluster ({self.cluster_columns} × {self.cluster_columns} columns)",
                                      kind="cluster", variant=self.variant, vacancies=block, **drawn(), **common))
        for a, b, normal in self.walls:
            wall = Wall(int(a), int(b), normal)
            out.append(DefectSpecimen(wall.describe(), kind="wall", wall=wall, **drawn(), **common))
        return out


def simulate(specimens: Sequence[DefectSpecimen], cache_dir: str | Path | None = None,
             num_workers: int | None = None) -> list[dict[str, np.ndarray]]:
    """The ideal patterns of every specimen (:meth:`DefectSpecimen.simulate`), from the cache
    (``.cache/polar4d/defects``) or simulated in parallel, as the domain-gap suites' specimens are."""
    from polar4d_lib import suites

    return suites.simulate_units(specimens, cache_dir, num_workers, folder="defects", desc="simulating defect specimens")


def build(settings: DefectSettings, cache_dir: str | Path | None = None) -> list[DefectScan]:
    """Every specimen's rasters recorded at every dose (the settings' detector, a random centre offset per
    scan), with their truth maps."""
    rng = np.random.default_rng(settings.seed + 1)
    specimens = settings.specimens()
    out = []
    for specimen, arrays in zip(specimens, simulate(specimens, cache_dir)):
        for i, ((positions, shape), step, origin) in enumerate(zip(specimen.rasters(), specimen.steps_A, specimen.origins_A)):
            truth = {k: v.reshape(shape) for k, v in specimen.truth(positions).items()}
            for dose in settings.doses:
                offset = rng.uniform(-1, 1, 2) * settings.center_offset_max_px
                acquisition = Acquisition(
                    dose_e_per_pattern=float(dose), psf_sigma_px=settings.psf_sigma_px,
                    background_counts=settings.background_counts, dark_noise_sigma=settings.dark_noise_sigma,
                    center_offset_px=(float(offset[0]), float(offset[1])), seed=int(rng.integers(2**31)))
                recorded, sampling = acquisition.apply(arrays[f"r{i}"], settings.simulation.q_sampling_mrad)
                name = f"{specimen.name}, a/{settings.a_A / step:.3g}, {dose:.0e} e"
                scan = Scan(recorded, sampling, specimen.probe.energy_kev, specimen.probe.semiangle_mrad, step, 0.0,
                            f"defect scan {name}")
                out.append(DefectScan(specimen.name, step, origin, float(dose), scan, truth,
                                      {"acquisition": asdict(acquisition), "tilt_mrad": list(specimen.tilt_mrad),
                                       "phonon_configs": specimen.simulation.phonon_configs}))
    return out


def x_cells(item: DefectScan, axis: int = 0) -> np.ndarray:
    """The probe's coordinate along ``axis`` (cells from the supercell's origin, not wrapped) of each raster
    row (axis 0) or column (axis 1) of ``item``."""
    n = item.scan.data.shape[axis]
    return (item.origin_A[axis] + np.arange(n) * item.step_A) / conventions.A_A


def locate_wall(classes: np.ndarray, x: np.ndarray, plane: float, before: int, after: int,
                half_width: float) -> tuple[float, float]:
    """Where a map of ``classes`` (Rx, Ry; rows at ``x`` cells) changes from class ``before`` to ``after``
    near the wall plane at ``plane`` cells: the split within ``half_width`` cells of it that the most
    positions agree with (class ``before`` below it, ``after`` above). (position in cells, the share of the
    positions in the window that agree); (nan, nan) when no row lies on each side."""
    rows = np.flatnonzero(np.abs(x - plane) <= half_width)
    if len(rows) < 2:
        return float("nan"), float("nan")
    xs = x[rows]
    is_before = (np.asarray(classes)[rows] == before).mean(axis=1)
    is_after = (np.asarray(classes)[rows] == after).mean(axis=1)
    splits = (xs[:-1] + xs[1:]) / 2
    agree = [(is_before[:k + 1].sum() + is_after[k + 1:].sum()) / len(rows) for k in range(len(splits))]
    best = int(np.argmax(agree))
    return float(splits[best]), float(agree[best])


def wall_planes(specimen: DefectSpecimen, x: np.ndarray, margin: float = 0.5) -> list[tuple[float, int, int]]:
    """The wall planes (cells, unwrapped) a raster with rows at ``x`` crosses at least ``margin`` cells from
    its ends, each with the variants' classes before and after it."""
    wall = specimen.wall
    if wall is None:
        return []
    position = specimen.cells // 2 if wall.position is None else wall.position
    a, b = (int(conventions.VARIANT_CLASSES[v]) for v in (wall.variant_a, wall.variant_b))
    out = []
    for m in range(int(np.floor(x.min() / specimen.cells)) - 1, int(np.ceil(x.max() / specimen.cells)) + 1):
        for plane, before, after in ((m * specimen.cells, b, a), (m * specimen.cells + position, a, b)):
            if x.min() + margin <= plane <= x.max() - margin:
                out.append((float(plane), before, after))
    return out
