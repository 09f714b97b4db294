"""What a coarse scan's cell holds beyond its mean: its 16 patterns kept apart, registered to the lattice.

A scan at a/4 (0.99 Å, coarser than λ/(2α) = 0.52 Å at 200 keV, 24 mrad) sees 4 × 4 probe positions per
unit cell. Their mean — what a model of means (``cnn-cls`` on PACBEDs) classifies — depends on where the raster sits on the
columns, and even on noise-free means of training specimens such a model gets the diagonal classes
only about 70 % right (``benchmarks/coarse_rasters.py``). The 16 patterns themselves say where each was
taken. This trains the paper's CNN (:func:`polar4d_lib.models.networks.custom_cnn`) once per input on the
stride-2 sub-rasters of a ``cell_grid`` dataset's training specimens (every group's four origins) and
scores it on the blocked split's held-out specimens, from

- ``mean``: the sub-raster's mean pattern (one channel);
- ``stack, true registration``: its 16 patterns as 16 channels, ordered by the quarter of the cell each
  lies in (from the dataset's ``position_frac``: a scan does not know these);
- ``stack, dark-field registration``: the 16 patterns in raster order, rolled so that the position with
  the most dark-field intensity comes first (:func:`polar4d_lib.pacbed.cell_stack`) — what a scan can
  do itself once it knows its lattice period;
- with ``--d4``, ``stack, dark-field registration, D4``: the same, each training stack seen as a random one
  of its 8 images under the square's symmetry — which acts alike on the patterns and on the 4 × 4 grid of
  positions, the class mapping as CONVENTIONS.md says — and each test stack classified by the mean
  probability over its 8 images (as the shipped model's ``d4_average``).

The library's ``cnn-stack`` model (:mod:`polar4d_lib.models.stack`) is this input made a shippable
recipe (detectors, doses, whole a/8 rasters as well, early stopping) and ``polar4d predict`` folds
scans for it; the default model's card scores it on the realistic scans.

Patterns are rebinned to 16 × 16 px at 4.5 mrad/px (±36 mrad), square-rooted and standardised per pixel
on the training part; Adam (lr 1e-3), batch 128, ``--epochs`` epochs, one seed; D4 only where named. With
``--electrons E`` every sub-raster's 16 patterns share E electrons (Poisson), the mean as their average.
This measures information, not a shippable recipe: the default model's recipe for means (D4 symmetry,
detectors, 60 000 averages) does better on means than this plain CNN does.

Usage: python benchmarks/cell_stacks.py [--data data/robust.zarr] [--seed 888] [--epochs 12]
       [--electrons E ...] [--d4] [--results-dir results/benchmarks]
About 25 s per input and dose at 12 epochs on 2 cores (1 min with D4), plus 30 s to build the stacks
(the ``robust`` dataset is read whole: 4.5 GB in memory).
Prints measured figures and records them in results/benchmarks/cell_stacks.json
(:func:`polar4d_lib.benchmarking.record`); nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from polar4d_lib import conventions, detector, evaluation, pacbed
from polar4d_lib.datasets import open_dataset
from polar4d_lib.inputs import position_groups, raster_indices
from polar4d_lib.models.networks import custom_cnn
from polar4d_lib.models.stack import move_classes, move_stacks, part_operations

SIZE, SAMPLING_MRAD = 16, 4.5
STRIDE = 2


def sub_raster_members(dataset) -> np.ndarray:
    """Every group's stride-2 sub-rasters (its four origins) as the indices (M, 16) of their patterns in
    raster order (x-major)."""
    groups = position_groups(dataset)
    raster = raster_indices(dataset, (STRIDE,), groups)
    out = []
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        for ox in range(STRIDE):
            for oy in range(STRIDE):
                chosen = members[pacbed.sub_raster(raster[members], STRIDE, (ox, oy))]
                out.append(chosen[np.lexsort((raster[chosen, 1], raster[chosen, 0]))])
    return np.stack(out)


def sub_raster_stacks(dataset, sampling_mrad: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every stride-2 sub-raster as a (M, 16, SIZE, SIZE) stack of rebinned patterns in raster order, their
    labels, the ``position_frac`` (M, 16, 2) of their members and their member indices (M, 16)."""
    members = sub_raster_members(dataset)
    patterns = detector.resample(np.asarray(dataset["patterns"]), sampling_mrad, SAMPLING_MRAD, (SIZE, SIZE))
    frac = np.asarray(dataset["position_frac"])
    return patterns[members].astype(np.float32), np.asarray(dataset["label"])[members[:, 0]], frac[members], members


def register_true(stacks: np.ndarray, fracs: np.ndarray) -> np.ndarray:
    """Each stack's patterns ordered by the quarter of the unit cell (x, then y) their position lies in."""
    quarter = np.floor(np.mod(fracs, 1.0) * 4).astype(int)
    order = np.argsort(quarter[..., 0] * 4 + quarter[..., 1], axis=1)
    return np.take_along_axis(stacks, order[:, :, None, None], axis=1)


def register_dark_field(stacks: np.ndarray) -> np.ndarray:
    """Each stack (4 × 4 positions in raster order, one cell at a/4) as :func:`pacbed.cell_stack` folds it:
    rolled so that its highest dark-field position is first."""
    return np.stack([pacbed.cell_stack(stack.reshape(4, 4, SIZE, SIZE), 4) for stack in stacks])


def d4_stacks(stacks: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 images of every stack (4 × 4 positions in raster order) under the square's symmetry, acting
    alike on the patterns and on the grid of positions, registered by the dark field: the library's
    :func:`polar4d_lib.models.stack.part_operations` on the registered stacks. (8, M, 16, SIZE, SIZE) and
    the classes (8, M)."""
    registered = torch.from_numpy(register_dark_field(stacks))
    operations = part_operations(4)
    return (np.stack([move_stacks(registered, m, k, p).numpy() for m, k, p in operations]),
            np.stack([move_classes(y, m, k) for m, k, _ in operations]))


def fit_network(images: np.ndarray, classes: np.ndarray, train: np.ndarray, epochs: int, seed: int):
    """Train the custom CNN on ``images`` (K, M, C, SIZE, SIZE) — K images of each input (1, or the 8 of
    :func:`d4_stacks`), of which a random one is seen per epoch — with labels ``classes`` (K, M), on the
    inputs ``train``. Returns a function from images (K, N, C, SIZE, SIZE) to class probabilities (N, 8)
    in the frame of image 0 (the mean over the K images)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = np.sqrt(np.clip(images, 0, None))
    mu, sd = x[:, train].mean((0, 1)), x[:, train].std((0, 1)) + 1e-6
    x = torch.from_numpy(((x - mu) / sd).astype(np.float32))
    encoder, n = custom_cnn(SIZE, channels=images.shape[2])
    net = nn.Sequential(encoder, nn.Linear(n, 512), nn.ReLU(), nn.Linear(512, conventions.N_CLASSES))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    labels = torch.from_numpy(classes.astype(np.int64))
    for _ in tqdm(range(epochs), desc="training", unit="epoch", leave=False):
        for batch in np.array_split(rng.permutation(train), max(1, len(train) // 128)):
            op = torch.from_numpy(rng.integers(len(x), size=len(batch)))
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[op, batch]), labels[op, batch]).backward()
            opt.step()
    net.eval()
    ops = conventions.d4_operations()

    def proba(inputs: np.ndarray) -> np.ndarray:
        z = torch.from_numpy(((np.sqrt(np.clip(inputs, 0, None)) - mu) / sd).astype(np.float32))
        with torch.no_grad():
            p = [torch.softmax(net(z[k]), 1).numpy() for k in range(len(z))]
        if len(p) == 1:
            return p[0]
        # original class j is image k's class map(j)
        return np.mean([p[k][:, ops[k][1](np.arange(conventions.N_CLASSES))] for k in range(len(p))], axis=0)

    return proba


def train_and_score(x: np.ndarray, y: np.ndarray, test: np.ndarray, epochs: int, seed: int,
                    d4: bool = False) -> np.ndarray:
    """Train on ``x[~test]`` and return whether each ``x[test]`` is classified right. With ``d4``
    (dark-field-registered stacks): every training stack is seen as a random one of its 8 symmetric
    images each epoch, and a test stack is classified by the mean probability over its 8 images."""
    images, classes = d4_stacks(x, y) if d4 else (x[None], y[None])
    proba = fit_network(images, classes, np.flatnonzero(~test), epochs, seed)
    return proba(images[:, test]).argmax(1) == y[test]


def main(argv: list[str] | None = None) -> None:
    from polar4d_lib.benchmarking import RESULTS_DIR, figure, record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/robust.zarr")
    parser.add_argument("--seed", type=int, default=888, help="seed of the blocked split and the training")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--electrons", type=float, nargs="*", default=[],
                        help="electrons per sub-raster (all 16 patterns); none: noise-free only")
    parser.add_argument("--d4", action="store_true", help="also the dark-field stacks with D4 symmetry (slower)")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where cell_stacks.json is written")
    args = parser.parse_args(argv)
    figures = []
    start = time.perf_counter()
    dataset = open_dataset(args.data)
    try:
        stacks, y, fracs, members = sub_raster_stacks(dataset, float(dataset.attrs["q_sampling_mrad"]))
    except ValueError as error:  # not a cell_grid dataset, or a raster stride 2 does not divide
        raise SystemExit(f"{args.data}: {error}") from None
    test = np.isin(members[:, 0], evaluation.make_split(dataset, "blocked", args.seed).test)
    print(f"{args.data}: {len(y)} stride-{STRIDE} sub-rasters of 16 positions, {test.sum()} of held-out specimens "
          f"({time.perf_counter() - start:.0f} s to build)")
    print(f"{'electrons':>10} | {'input':>36} | {'all':>6} | " + " | ".join(f"{c:>4}" for c in conventions.CLASS_NAMES) + " | s")
    rng = np.random.default_rng([args.seed, 7])
    for electrons in [None, *args.electrons]:
        counts = stacks if electrons is None else rng.poisson(stacks * (electrons / 16)).astype(np.float32) / (electrons / 16)
        inputs = {"mean": counts.mean(axis=1, keepdims=True),
                  "stack, true registration": register_true(counts, fracs),
                  "stack, dark-field registration": register_dark_field(counts)}
        if args.d4:
            inputs["stack, dark-field registration, D4"] = counts
        for name, x in inputs.items():
            t = time.perf_counter()
            right = train_and_score(x, y, test, args.epochs, args.seed, d4=name.endswith("D4"))
            per_class = " | ".join(f"{100 * right[y[test] == k].mean():4.0f}" for k in range(conventions.N_CLASSES))
            dose = "noise-free" if electrons is None else f"{electrons:.2g}"
            print(f"{dose:>10} | {name:>36} | {100 * right.mean():5.1f}% | {per_class} | {time.perf_counter() - t:.0f}",
                  flush=True)
            figures.append(figure(f"{name}, {dose}: held-out sub-rasters right", 100 * right.mean(), "%",
                                  f"{int(test.sum())} held-out sub-rasters" + ("" if electrons is None else
                                                                                f", {electrons:.2g} e per sub-raster")))
    recorded = record("cell_stacks", figures, str(dataset.attrs.get("profile", "unknown")), {
        "data": str(args.data), "seed": args.seed, "epochs": args.epochs, "electrons": list(args.electrons),
        "d4": args.d4, "size_px": SIZE, "sampling_mrad": SAMPLING_MRAD, "stride": STRIDE},
        title="Cell stacks: a plain CNN on a/4 sub-rasters from their mean and from their 16 patterns",
        results_dir=args.results_dir)
    print(f"recorded {recorded}")


if __name__ == "__main__":
    main()
