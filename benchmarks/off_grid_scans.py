"""How a model maps realistic scans at scan steps and thicknesses that neither its training nor its judging used.

The default model's training rasters and both sets of realistic scans step at a/8 and a/4 (0.494 and
0.988 Å) and are 15.8, 31.6 and 47.4 nm thick. A microscopist scans at whatever step the field of view
asks for, which rarely divides the cell: at 0.4 Å a cell is 9.9 positions, so ``polar4d predict`` folds
each window at a fractional period and the parts of the cell hold unequal shares of positions. This
draws new realistic scans like the independent test scans (same ranges, held-out disorder seeds, a random
raster origin, random detectors; every other scan without a step) at each ``--steps`` and
``--thicknesses``, one specimen per class (another ``--seed``), and prints for the model given (default:
the shipped one) the share of patterns right and the scans with the right majority per step, and every
scan below the 95 % aim. Nothing is chosen on these scans.

Usage: python benchmarks/off_grid_scans.py [--model data/default_model.pt] [--profile robust]
       [--steps 0.4 0.6 0.75] [--thicknesses 20 40] [--seed 2031] [--workers 2] [--results-dir results/benchmarks]
Simulating 8 specimens per step takes about 10 min per step on one core (cached in .cache/polar4d/scans);
``--workers`` simulates specimens in parallel processes. Prints measured figures and records them in
results/benchmarks/off_grid_scans.json (:func:`polar4d_lib.benchmarking.record`); nothing is asserted.
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from polar4d_lib import realistic
from polar4d_lib.cli import default_model_path
from polar4d_lib.model_card import TARGET_SHARE
from polar4d_lib.models import load_model


def off_grid_ranges(profile: str, step_A: float, thicknesses_nm: tuple[float, ...], seed: int) -> realistic.RealisticRanges:
    """The profile's independent test ranges at one scan step and other thicknesses, one specimen per
    class drawn with ``seed``, every raster from a random origin, no coarser strides."""
    ranges = realistic.test_ranges(profile)
    if ranges is None:
        raise SystemExit(f"profile {profile!r} has no realistic_test section to draw scans like")
    return replace(ranges, step_A=float(step_A), thicknesses_nm=tuple(float(t) for t in thicknesses_nm), seed=seed,
                   specimens_per_class=1, strides=(1,), random_origin=True)


def main(argv: list[str] | None = None) -> None:
    from polar4d_lib.benchmarking import RESULTS_DIR, figure, record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a model file (default: the shipped default model)")
    parser.add_argument("--profile", default="robust")
    parser.add_argument("--steps", type=float, nargs="+", default=[0.4, 0.6, 0.75], help="scan steps (Å)")
    parser.add_argument("--thicknesses", type=float, nargs="+", default=[20.0, 40.0], help="thicknesses (nm)")
    parser.add_argument("--seed", type=int, default=2031)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where off_grid_scans.json is written")
    parser.add_argument("--card", default=None, metavar="MODEL_CARD.json",
                        help="also write the figures into this model card's section on steps that do not divide the "
                             "cell (its .json and the .md beside it; the card of --model)")
    args = parser.parse_args(argv)
    figures = []
    path = args.model or default_model_path()
    model = load_model(path)
    all_ranges = [off_grid_ranges(args.profile, s, args.thicknesses, args.seed) for s in args.steps]
    specs = [spec for ranges in all_ranges for spec in realistic.realistic_specs(ranges)]
    with ProcessPoolExecutor(max(1, args.workers)) as pool:  # fills the cache; realistic_scans reads it
        list(pool.map(realistic.simulate_realistic, specs))
    print(f"{model.kind} ({path}) on realistic scans off its training steps: {args.thicknesses} nm, seed {args.seed}, "
          f"disorder seeds {list(all_ranges[0].disorder_seeds)}, random raster origins")
    rows, per_step = [], []
    for ranges in all_ranges:
        scored = realistic.score_scans(model, realistic.realistic_scans(ranges))
        s = realistic.summary(scored)
        per_step.append({"step_A": ranges.step_A, **s})
        print(f"step {ranges.step_A:.3g} Å (a/{realistic.RealisticScanSpec.a_A / ranges.step_A:.2f}), {s['scans']} scans: "
              f"{100 * s['mean_share_correct']:.1f} % of patterns right, worst scan {100 * s['min_share_correct']:.1f} %, "
              f"majority right on {100 * s['majority_correct']:.0f} %")
        figures += [figure(f"step {ranges.step_A:.3g} Å: patterns right", 100 * s["mean_share_correct"], "%", f"{s['scans']} scans"),
                    figure(f"step {ranges.step_A:.3g} Å: worst scan", 100 * s["min_share_correct"], "%"),
                    figure(f"step {ranges.step_A:.3g} Å: scans with the right majority", 100 * s["majority_correct"], "%")]
        for r in scored:
            if r["share_correct"] < TARGET_SHARE or not r["majority_correct"]:
                print(f"    {r['scan']}: {100 * r['share_correct']:.1f} % right, majority {r['majority_class']}, "
                      f"{r['dose_e_per_pattern']:.3g} e/pattern, window {r['window_px']} px, "
                      f"step {'given' if r['scan_step_A'] else 'unknown'}")
        rows += scored
    s = realistic.summary(rows)
    print(f"all {s['scans']} scans: {100 * s['mean_share_correct']:.1f} % of patterns right, "
          f"majority right on {100 * s['majority_correct']:.1f} %")
    figures += [figure("all steps: patterns right", 100 * s["mean_share_correct"], "%", f"{s['scans']} scans"),
                figure("all steps: scans with the right majority", 100 * s["majority_correct"], "%")]
    recorded = record("off_grid_scans", figures, args.profile, {
        "model": str(path), "model_kind": model.kind, "steps_A": list(args.steps), "thicknesses_nm": list(args.thicknesses),
        "seed": args.seed, "disorder_seeds": list(all_ranges[0].disorder_seeds)},
        title="Off-grid scan steps: realistic scans at steps that do not divide the cell", results_dir=args.results_dir)
    print(f"recorded {recorded}")
    if args.card:
        write_card(Path(args.card), per_step, args, argv)


def write_card(card: Path, per_step: list[dict], args: argparse.Namespace, argv: list[str] | None) -> None:
    """The card's ``off_grid`` section: these steps' summaries, the command and the commit that measured them."""
    import shlex
    import sys

    from polar4d_lib import benchmarking, model_card

    numbers = model_card.read(card)
    command = "python benchmarks/off_grid_scans.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    numbers["off_grid"] = {"steps": per_step, "thicknesses_nm": list(args.thicknesses), "seed": args.seed,
                           "measured_by": f"`{command}`", "commit": benchmarking.commit()}
    model_card.write(numbers, card.with_suffix(".md"))
    print(f"wrote the off-grid section of {card.with_suffix('.md')}")


if __name__ == "__main__":
    main()
