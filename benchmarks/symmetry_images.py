"""What the shipped model's average over symmetric images buys on the independent test scans, and what it costs.

The ``cnn-stack`` model predicts the mean of its probabilities over 16 images of each cell stack: the 8
symmetries of the square, each also with the stack rolled by half a cell (:func:`polar4d_lib.models.stack.
stack_operations`). Every image is one network pass, so the images set the cost of a decision. This scores
the model on the profile's independent test scans (``realistic_test``: the model card's draw) as
``polar4d predict`` maps them, averaging over all 16 images and over subsets of them (the 8 of the square,
the identity and 180° rotation each with the half-cell roll, the identity with the half-cell roll, the
identity alone), and records the share of patterns right, the worst scan, the scans whose majority is right
and the time each took.

Usage: python benchmarks/symmetry_images.py [--model data/default_model.pt] [--profile robust]
       [--results-dir results/benchmarks]
The test scans are simulated once and cached (about a minute to read back; hours the first time).
Prints measured figures and records them in results/benchmarks/symmetry_images.json
(:func:`polar4d_lib.benchmarking.record`); nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

from polar4d_lib import benchmarking, realistic
from polar4d_lib.benchmarking import RESULTS_DIR
from polar4d_lib.cli import default_model_path
from polar4d_lib.models import load_model, stack

#: name → which of stack_operations(bins, half_cell=True) are averaged (indices; 8 + i is i rolled by half a cell).
SUBSETS = {
    "16 (the square's 8, each also rolled by half a cell)": list(range(16)),
    "8 (the square's 8)": list(range(8)),
    "4 (identity and 180°, each also rolled)": [0, 2, 8, 10],
    "2 (identity, and rolled by half a cell)": [0, 8],
    "1 (identity)": [0],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a cnn-stack model (default: the shipped one)")
    parser.add_argument("--profile", default="robust", help="whose realistic_test draw to score on")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    args = parser.parse_args()
    model = load_model(args.model or default_model_path())
    if model.kind != stack.KIND or not model.half_cell:
        raise SystemExit(f"{model.kind} is not a cnn-stack model with half_cell: nothing to compare")
    ranges = realistic.test_ranges(args.profile)
    if ranges is None:
        raise SystemExit(f"profile {args.profile!r} has no realistic_test section")
    scans = realistic.realistic_scans(ranges)
    operations = stack.stack_operations(model.bins, True)
    figures = []
    for name, chosen in SUBSETS.items():
        def images(x, chosen=chosen):
            indices = stack.image_indices(model.bins, True, x.shape[-1])
            flat = x.reshape(len(x), -1)
            for c in chosen:
                mirror, k, _ = operations[c]
                yield flat[:, indices[c]].reshape(x.shape), (lambda cl, m=mirror, t=k: stack.move_classes(cl, m, t))

        model._symmetric_images = images
        start = time.perf_counter()
        summary = realistic.summary(realistic.score_scans(model, scans))
        seconds = time.perf_counter() - start
        print(f"{name}: {100 * summary['mean_share_correct']:.2f} % right, worst scan "
              f"{100 * summary['min_share_correct']:.1f} %, majority right on {100 * summary['majority_correct']:.1f} % "
              f"of {summary['scans']} scans, {seconds:.1f} s")
        figures += [
            benchmarking.figure(f"{name}: patterns right", 100 * summary["mean_share_correct"], "%",
                                f"mean over {summary['scans']} independent test scans"),
            benchmarking.figure(f"{name}: worst scan", 100 * summary["min_share_correct"], "%"),
            benchmarking.figure(f"{name}: scans with the right majority", 100 * summary["majority_correct"], "%"),
            benchmarking.figure(f"{name}: time to map the scans", seconds, "s"),
        ]
    path = benchmarking.record("symmetry_images", figures, args.profile,
                               {"model": str(args.model or default_model_path()), "scans": len(scans)},
                               title="The shipped model's symmetric images: accuracy on the test scans against cost",
                               results_dir=args.results_dir)
    print(f"recorded {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
