"""Raster scans of specimens with domains: what a microscopist records, simulated.

A :class:`WallScanSpec` describes a two-domain specimen (a flat wall between two polarization variants,
see :func:`polar4d_lib.structure.wall_volume`) and a raster scan across it; :func:`simulate_wall_scan`
simulates it once per thickness series (PRISM: one S-matrix, one probe) and caches the result under a key
of every parameter and the library versions, so a chapter that shows it again costs nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from polar4d_lib import cache, conventions
from polar4d_lib.io import Scan
from polar4d_lib.simulation import ProbeSettings, SimulationSettings, region_grid_positions, scan_4d
from polar4d_lib.structure import cells_for_thickness, knn_supercell, wall_volume

SCHEMA = 1


@dataclass(frozen=True)
class WallScanSpec:
    """A wall normal to ``normal`` between ``variant_a`` (x or y below the middle) and ``variant_b``,
    in a square supercell of ``cells`` × ``cells`` unit cells (square: abTEM's pattern sampling is
    λ/extent, so a rectangle would give rectangular detector pixels), scanned with ``step_A`` over the whole supercell, at each
    thickness of ``thicknesses_nm`` (nm), with one probe."""

    variant_a: int = 0
    variant_b: int = 3
    normal: str = "x"
    cells: int = 6
    thicknesses_nm: tuple[float, ...] = (9.875, 19.75)
    step_A: float = 0.9875
    a_A: float = conventions.A_A
    disorder_seed: int = 0
    probe: ProbeSettings = ProbeSettings()
    simulation: SimulationSettings = field(default_factory=SimulationSettings)

    def key(self) -> str:
        from polar4d_lib.datasets import versions

        return cache.key({"schema": SCHEMA, "spec": asdict(self), "versions": versions()})


def simulate_wall_scan(spec: WallScanSpec, cache_dir: str | Path | None = None) -> tuple[dict[str, Scan], dict[str, np.ndarray]]:
    """Scans (name "<t> nm" → :class:`Scan`, Rx × Ry × Qx × Qy) and the true class map of each
    (Rx × Ry, the class of the column under the probe). Cached in ``cache_dir`` (default: the config's)."""
    def compute() -> dict[str, np.ndarray]:
        depth = cells_for_thickness(max(spec.thicknesses_nm), spec.a_A)
        volume = wall_volume((spec.cells, spec.cells, depth), spec.variant_a, spec.variant_b,
                             spec.normal)
        specimen = knn_supercell(volume, a_A=spec.a_A, seed=spec.disorder_seed)
        size = (spec.cells * spec.a_A, spec.cells * spec.a_A)
        positions, shape = region_grid_positions((0.0, 0.0), size, spec.step_A)
        patterns = scan_4d(specimen.atoms, spec.probe, positions, shape, spec.simulation, spec.a_A,
                           list(spec.thicknesses_nm), engine="prism", seed=spec.disorder_seed).astype(np.float32)
        labels = specimen.labels_at(positions)[0].reshape(shape).astype(np.int8)
        return {"patterns": patterns, "labels": labels}

    arrays = cache.cached(cache.path("scans", f"wall-{spec.key()}", cache_dir), compute)
    patterns, labels = arrays["patterns"], arrays["labels"]
    scans, truth = {}, {}
    for t, thickness in enumerate(spec.thicknesses_nm):
        name = f"{thickness:g} nm"
        scans[name] = Scan(patterns[t], spec.simulation.q_sampling_mrad, spec.probe.energy_kev,
                           spec.probe.semiangle_mrad, spec.step_A, 0.0, f"simulated wall scan, {name}")
        truth[name] = labels
    return scans, truth


def wall_scan_spec(profile: str, overrides: dict | None = None) -> WallScanSpec:
    """The ``explore`` section of a profile (profiles.yaml) as a :class:`WallScanSpec`."""
    from polar4d_lib import profiles

    values = profiles.settings_values(WallScanSpec, profile, "explore", overrides, ("thicknesses_nm",),
                                      {"probe": ProbeSettings, "simulation": SimulationSettings}, "wall-scan setting")
    return WallScanSpec(**values)
