"""How much a small mistilt changes the position-averaged pattern (PACBED over one unit cell), against
how much the polarization does — per thickness.

For one polarization variant it simulates the PACBED of: the reference (no tilt), the same crystal
mistilted by each of ``--tilts`` (mrad), the opposite polarization, the polarization turned by 90°, and
another K/Na disorder seed. Each difference is printed as the relative L1 distance to the reference
(Σ|a − b| / Σ a, %) and as the part of the difference that is odd under inversion of the pattern
(the polarity signal: a centrosymmetric crystal gives a Friedel-symmetric PACBED in the kinematic limit).

Usage: python benchmarks/tilt_vs_polarization.py [--variant 0] [--cells 2] [--thicknesses 15.8 31.6 47.4]
       [--profile NAME] [--results-dir results/benchmarks]
Prints measured figures and records them in results/benchmarks/tilt_vs_polarization.json
(:func:`polar4d_lib.benchmarking.record`); nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from polar4d_lib import conventions
from polar4d_lib.benchmarking import RESULTS_DIR, figure, record
from polar4d_lib.simulation import PrismSpecimen, ProbeSettings, SimulationSettings, cell_grid_positions
from polar4d_lib.structure import knn_supercell


def pacbed(variant: int, tilt: tuple[float, float], args: argparse.Namespace, seed: int = 0) -> np.ndarray:
    """Cell-averaged patterns (T, Qx, Qy) over an n × n grid of one unit cell."""
    specimen = knn_supercell(variant, args.cells, max(args.thicknesses), seed=seed)
    settings = SimulationSettings(phonon_configs=args.phonons)
    prism = PrismSpecimen(specimen.atoms, settings, specimen.a_A, list(args.thicknesses), tilt_mrad=tilt, seed=seed)
    positions = cell_grid_positions(specimen.a_A, args.grid)
    return prism.patterns(ProbeSettings(), positions).mean(axis=1)


def opposite(variant: int) -> int:
    return int(np.flatnonzero((conventions.VARIANTS == -conventions.VARIANTS[variant]).all(1))[0])


def turned(variant: int) -> int:
    v = conventions.VARIANTS[variant]
    target = np.array([-v[1], v[0], v[2]])
    return int(np.flatnonzero((conventions.VARIANTS == target).all(1))[0])


def distances(ref: np.ndarray, other: np.ndarray, flip: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per thickness: relative L1 distance (%), its inversion-odd part (%), and its projection on the
    polarization-flip direction as a fraction of half the flip (≥ 1: enough to move a nearest-mean
    classifier from this polarization to the opposite one)."""
    diff = other - ref
    axis = flip.reshape(len(flip), -1)
    along = (diff.reshape(len(diff), -1) * axis).sum(1) / (axis**2).sum(1)
    # zero angle sits at pixel n // 2, so inversion maps pixel i to (−i) mod n: reverse, then roll by one
    odd = 0.5 * (diff - np.roll(diff[:, ::-1, ::-1], 1, axis=(1, 2)))
    total = ref.sum(axis=(1, 2))
    return 100 * np.abs(diff).sum(axis=(1, 2)) / total, 100 * np.abs(odd).sum(axis=(1, 2)) / total, 2 * along


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", type=int, default=0, help="polarization variant 0–11 (conventions.VARIANTS)")
    p.add_argument("--cells", type=int, default=2, help="lateral cells of the periodic supercell")
    p.add_argument("--thicknesses", type=float, nargs="+", default=[15.8, 31.6, 47.4], help="nm")
    p.add_argument("--tilts", type=float, nargs="+", default=[0.1, 0.25, 0.5], help="mistilt along x, mrad")
    p.add_argument("--grid", type=int, default=8, help="positions per cell edge")
    p.add_argument("--phonons", type=int, default=0, help="frozen-phonon configurations (0 = static)")
    p.add_argument("--profile", default="custom", help="the profile recorded with the figures (polar4d benchmark passes it)")
    p.add_argument("--results-dir", default=str(RESULTS_DIR), help="where tilt_vs_polarization.json is written")
    args = p.parse_args(argv)

    start = time.perf_counter()
    ref = pacbed(args.variant, (0.0, 0.0), args)
    rows = [(f"tilt {t} mrad (x)", pacbed(args.variant, (t, 0.0), args)) for t in args.tilts]
    rows += [(f"tilt {t} mrad (y)", pacbed(args.variant, (0.0, t), args)) for t in args.tilts[-1:]]
    flipped = pacbed(opposite(args.variant), (0.0, 0.0), args)
    rows.append((f"opposite polarization (variant {opposite(args.variant)})", flipped))
    rows.append((f"polarization turned 90° (variant {turned(args.variant)})", pacbed(turned(args.variant), (0.0, 0.0), args)))
    rows.append(("another K/Na disorder seed", pacbed(args.variant, (0.0, 0.0), args, seed=1)))
    print(f"variant {args.variant} {conventions.VARIANTS[args.variant]}, {args.cells}×{args.cells} cells, "
          f"{args.grid}×{args.grid} positions, phonons {args.phonons}; {time.perf_counter() - start:.0f} s")
    head = "".join(f"{t:>20.1f} nm" for t in args.thicknesses)
    print(f"{'change of the PACBED: L1 % (odd part %) [along flip]':52s}{head}")
    figures = []
    for name, other in rows:
        l1, odd, along = distances(ref, other, flipped - ref)
        print(f"{name:52s}" + "".join(f"{a:>6.2f} ({b:4.2f}) [{c:+5.2f}]" for a, b, c in zip(l1, odd, along)))
        for t, a, b, c in zip(args.thicknesses, l1, odd, along):
            figures += [figure(f"{name}, {t:g} nm: change of the PACBED (L1)", a, "%"),
                        figure(f"{name}, {t:g} nm: its inversion-odd part", b, "%"),
                        figure(f"{name}, {t:g} nm: along the polarization flip", c, "half flips",
                               "≥ 1 moves a nearest-mean classifier to the opposite polarization")]
    path = record("tilt_vs_polarization", figures, args.profile, {
        "variant": args.variant, "cells": args.cells, "thicknesses_nm": list(args.thicknesses),
        "tilts_mrad": list(args.tilts), "grid": args.grid, "phonons": args.phonons},
        title="Mistilt and K/Na disorder against polarization: change of a one-cell PACBED", results_dir=args.results_dir)
    print(f"recorded {path}")


if __name__ == "__main__":
    main()
