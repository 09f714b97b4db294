"""Patterns per second: the randomised PRISM builder against plain multislice on the same specimen.

Usage: python benchmarks/simulation_speed.py [--lateral-cells 4] [--thickness-nm 20] [--patterns 1024]
       [--profile NAME] [--results-dir results/benchmarks]
Prints measured figures and records them in results/benchmarks/simulation_speed.json
(:func:`polar4d_lib.benchmarking.record`); nothing is asserted (speed goals live here, not in tests).
"""

from __future__ import annotations

import argparse
import time

import dask
import numpy as np

from polar4d_lib.benchmarking import RESULTS_DIR, figure, record
from polar4d_lib.simulation import (
    PrismSpecimen, ProbeSettings, SimulationSettings, multislice_patterns, random_positions,
)
from polar4d_lib.structure import knn_supercell


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lateral-cells", type=int, default=4)
    p.add_argument("--thickness-nm", type=float, default=20.0)
    p.add_argument("--patterns", type=int, default=1024, help="random (position, aberration) draws for PRISM")
    p.add_argument("--multislice-patterns", type=int, default=32)
    p.add_argument("--positions-per-setting", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", default="custom", help="the profile recorded with the figures (polar4d benchmark passes it)")
    p.add_argument("--results-dir", default=str(RESULTS_DIR), help="where simulation_speed.json is written")
    args = p.parse_args(argv)

    settings = SimulationSettings()
    specimen = knn_supercell(0, args.lateral_cells, args.thickness_nm, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    extent = specimen.atoms.cell.lengths()[:2]
    probes = [
        ProbeSettings(defocus_nm=rng.uniform(-5, 5), astigmatism_nm=rng.uniform(0, 2),
                      astigmatism_angle_deg=rng.uniform(0, 180))
        for _ in range(args.patterns)
    ]
    positions = random_positions(args.patterns, extent, rng)
    n_settings = max(1, args.patterns // args.positions_per_setting)
    with dask.config.set(scheduler="synchronous"):
        t0 = time.perf_counter()
        prism = PrismSpecimen(specimen.atoms, settings, specimen.a_A, [args.thickness_nm])
        t_build = time.perf_counter() - t0
        # As the dataset builder draws: each probe setting at several random positions.
        t0 = time.perf_counter()
        for i in range(n_settings):
            block = positions[i * args.positions_per_setting:(i + 1) * args.positions_per_setting]
            prism.patterns(probes[i], block)
        t_batch = time.perf_counter() - t0
        n_batch = n_settings * args.positions_per_setting
        # The worst case: every pattern with its own aberrations.
        m = args.multislice_patterns
        t0 = time.perf_counter()
        for probe, pos in zip(probes[:m], positions[:m]):
            prism.patterns(probe, pos[None])
        t_single = time.perf_counter() - t0
        # Plain multislice: one probe setting scanned over the same positions (potential built once).
        t0 = time.perf_counter()
        ms_out = multislice_patterns(specimen.atoms, probes[0], positions[:m], settings, specimen.a_A, [args.thickness_nm])
        t_ms = time.perf_counter() - t0
        prism_same = prism.patterns(probes[0], positions[:m])
    err = np.abs(prism_same - ms_out).max() / ms_out.max()
    per_ms = t_ms / m
    print(f"specimen          {args.lateral_cells}×{args.lateral_cells} cells, {specimen.thickness_nm:.1f} nm, {len(specimen.atoms)} atoms, 1 core")
    print(f"S-matrix          {t_build:.1f} s once, {prism.nbytes / 1e6:.0f} MB")
    print(f"PRISM, builder    {t_batch / n_batch * 1e3:.1f} ms per pattern ({n_batch / t_batch:.0f} patterns/s): "
          f"{n_settings} random probe settings × {args.positions_per_setting} random positions")
    print(f"PRISM, 1 per call {t_single / m * 1e3:.1f} ms per pattern ({m / t_single:.0f} patterns/s): own aberrations each")
    print(f"multislice        {per_ms * 1e3:.1f} ms per pattern ({1 / per_ms:.1f} patterns/s): one probe, {m} positions in one scan")
    total = t_build + t_batch
    print(f"randomised build  {n_batch / total:.1f} patterns/s including the S-matrix vs {1 / per_ms:.1f} by multislice "
          f"({per_ms * n_batch / total:.1f}×); break-even at {t_build / (per_ms - t_batch / n_batch):.0f} patterns per specimen")
    print(f"max |PRISM − multislice| / max = {err:.2e}")
    figures = [
        figure("S-matrix build (once per specimen)", t_build, "s"),
        figure("S-matrix size", prism.nbytes / 1e6, "MB"),
        figure("PRISM, builder: time per pattern", t_batch / n_batch * 1e3, "ms",
               f"{n_settings} random probe settings × {args.positions_per_setting} random positions"),
        figure("PRISM, builder: patterns per second", n_batch / t_batch, "patterns/s"),
        figure("PRISM, own aberrations per pattern: time per pattern", t_single / m * 1e3, "ms"),
        figure("multislice, one probe: time per pattern", per_ms * 1e3, "ms", f"{m} positions in one scan"),
        figure("randomised build incl. the S-matrix: patterns per second", n_batch / total, "patterns/s"),
        figure("randomised build incl. the S-matrix against multislice", per_ms * n_batch / total, "×"),
        figure("max |PRISM − multislice| / max", err, "fraction of the maximum"),
    ]
    if per_ms > t_batch / n_batch:  # no break-even where PRISM per pattern is not faster
        figures.insert(-1, figure("break-even", t_build / (per_ms - t_batch / n_batch), "patterns per specimen"))
    path = record("simulation_speed", figures, args.profile, {
        "lateral_cells": args.lateral_cells, "thickness_nm": float(specimen.thickness_nm), "atoms": len(specimen.atoms),
        "patterns": args.patterns, "multislice_patterns": m, "positions_per_setting": args.positions_per_setting,
        "seed": args.seed, "scheduler": "dask synchronous (1 core)"},
        title="Simulation speed: randomised PRISM builder against plain multislice", results_dir=args.results_dir)
    print(f"recorded {path}")


if __name__ == "__main__":
    main()
