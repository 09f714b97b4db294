"""How well a model classifies one-cell PACBEDs of coarse scans, against those of fine scans.

A ``cell_grid`` dataset (the ``robust`` profile) scans every probe setting over one unit cell on an
n × n raster. A scan at s times that step sees only every s-th position: a sub-raster of (n/s)² positions
whose mean still depends on where the probe sits relative to the columns. For the blocked split's
held-out specimens this prints, per class, the share of noise-free means classified right — whole
rasters against the s² sub-rasters of each raster — for the model given (default: the shipped one); a
stack model (``cnn-stack``) gets each (sub-)raster folded into its cell stack instead of its mean.

Usage: python benchmarks/coarse_rasters.py [--data data/robust.zarr] [--model data/default_model.pt]
       [--stride 2] [--seed 888] [--results-dir results/benchmarks]
Prints measured figures and records them in results/benchmarks/coarse_rasters.json
(:func:`polar4d_lib.benchmarking.record`); nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from polar4d_lib import conventions, evaluation, pacbed
from polar4d_lib.cli import default_model_path
from polar4d_lib.datasets import open_dataset
from polar4d_lib.inputs import position_groups, raster_indices
from polar4d_lib.models import load_model


def raster_inputs(dataset, indices: np.ndarray, stride: int, bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Means (M, Qx, Qy) of every stride-``stride`` sub-raster of each group among ``indices`` — or, with
    ``bins``, their cell stacks (M, bins², Qx, Qy) (:func:`pacbed.cell_stack`, for a stack model) — and
    their labels."""
    groups = position_groups(dataset)[indices]
    raster = raster_indices(dataset, (stride,))[indices]
    patterns, labels = dataset["patterns"][indices], dataset["label"][indices]
    side = math.isqrt(int(dataset.attrs["parameters"]["positions_per_setting"])) // stride
    inputs, truth = [], []
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        for ox in range(stride):
            for oy in range(stride):
                chosen = members[pacbed.sub_raster(raster[members], stride, (ox, oy))]
                chosen = chosen[np.lexsort((raster[chosen, 1], raster[chosen, 0]))]
                if bins is None:
                    inputs.append(patterns[chosen].mean(axis=0))
                else:
                    inputs.append(pacbed.cell_stack(patterns[chosen].reshape(side, side, *patterns.shape[1:]), side, bins))
                truth.append(labels[chosen[0]])
    return np.stack(inputs), np.asarray(truth)


def main(argv: list[str] | None = None) -> None:
    from polar4d_lib.benchmarking import RESULTS_DIR, figure, record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/robust.zarr")
    parser.add_argument("--model", default=None, help="a saved model (default: the shipped default model)")
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--seed", type=int, default=888, help="seed of the blocked split (the model's)")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where coarse_rasters.json is written")
    args = parser.parse_args(argv)
    figures = []
    dataset = open_dataset(args.data)
    model = load_model(args.model or default_model_path())
    test = evaluation.make_split(dataset, "blocked", args.seed).test
    sampling = float(dataset.attrs["q_sampling_mrad"])
    print(f"model {model.kind} ({args.model or default_model_path()}); held-out specimens of {args.data}")
    print(f"{'raster':>22} | {'all':>6} | " + " | ".join(f"{n:>5}" for n in conventions.CLASS_NAMES) + " | inputs | s")
    for stride in (1, args.stride):
        start = time.perf_counter()
        try:
            x, y = raster_inputs(dataset, test, stride, getattr(model, "bins", None) if model.input_kind.folds_cell else None)
        except ValueError as error:  # not a cell_grid dataset, or a stride that does not divide its rasters
            raise SystemExit(f"{args.data}: {error}") from None
        right = model.predict(x, sampling) == y
        per_class = [f"{100 * right[y == k].mean():5.1f}" if np.any(y == k) else "    -" for k in range(conventions.N_CLASSES)]
        name = "whole raster" if stride == 1 else f"stride-{stride} sub-rasters"
        print(f"{name:>22} | {100 * right.mean():5.1f}% | " + " | ".join(per_class)
              + f" | {len(y):5d} | {time.perf_counter() - start:.0f}")
        figures.append(figure(f"{name}: inputs right", 100 * right.mean(), "%", f"{len(y)} noise-free inputs"))
        figures += [figure(f"{name}: {conventions.CLASS_NAMES[k]} right", 100 * right[y == k].mean(), "%")
                    for k in range(conventions.N_CLASSES) if np.any(y == k)]
    path = record("coarse_rasters", figures, str(dataset.attrs.get("profile", "unknown")), {
        "data": str(args.data), "model": str(args.model or default_model_path()), "model_kind": model.kind,
        "stride": args.stride, "seed": args.seed},
        title="Coarse rasters: one-cell inputs of held-out specimens, whole rasters against sub-rasters",
        results_dir=args.results_dir)
    print(f"recorded {path}")


if __name__ == "__main__":
    main()
