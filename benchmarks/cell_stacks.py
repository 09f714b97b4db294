"""What a coarse scan's cell holds beyond its mean: its 16 patterns kept apart, registered to the lattice.

A scan at a/4 (0.99 Å, coarser than λ/(2α) = 0.52 Å at 200 keV, 24 mrad) sees 4 × 4 probe positions per
unit cell. Their mean — what the shipped model classifies — depends on where the raster sits on the
columns, and even on noise-free means of training specimens the shipped model gets the diagonal classes
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

With ``--realistic`` it goes end to end instead: the training specimens' sub-rasters are recorded on random
detectors of the profile's realistic ranges (sampling, size, centre offset; 10⁵–10⁷ electrons per
sub-raster; :func:`recorded_stacks`), the D4 stack network is trained on them as fractions of each stack's
total, and every scan of the profile's realistic (choosing) scans at a step ≥ λ/(2α) is classified position
by position the way ``polar4d predict`` places its window (one cell from the scan step or the lattice the
scan shows, grown to ``--min-electrons``), its window folded by :func:`polar4d_lib.pacbed.cell_stack` —
printed beside the shipped model's scores for the same scans from its card. The independent test scans
(``realistic_test``) are left alone: nothing is to be chosen on them.

Patterns are rebinned to 16 × 16 px at 4.5 mrad/px (±36 mrad), square-rooted and standardised per pixel
on the training part; Adam (lr 1e-3), batch 128, ``--epochs`` epochs, one seed; D4 only where named. With
``--electrons E`` every sub-raster's 16 patterns share E electrons (Poisson), the mean as their average.
This measures information, not a shippable recipe: the shipped model's own recipe (D4 symmetry,
detectors, 60 000 averages) does better on means than this plain CNN does.

Usage: python benchmarks/cell_stacks.py [--data data/robust.zarr] [--seed 888] [--epochs 12]
       [--electrons E ...] [--d4] | [--realistic [--profile robust] [--min-electrons 2e6]]
About 25 s per input and dose at 12 epochs on 2 cores (1 min with D4), plus 30 s to build the stacks
(the ``robust`` dataset is read whole: 4.5 GB in memory); ``--realistic --epochs 24`` about 7 min.
Prints measured figures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from polar4d_lib import conventions, detector, pacbed, robustness, study
from polar4d_lib.datasets import open_dataset
from polar4d_lib.models.networks import custom_cnn

SIZE, SAMPLING_MRAD = 16, 4.5
STRIDE = 2


def sub_raster_members(dataset) -> np.ndarray:
    """Every group's stride-2 sub-rasters (its four origins) as the indices (M, 16) of their patterns in
    raster order (x-major)."""
    groups = study.position_groups(dataset)
    raster = study.raster_indices(dataset, (STRIDE,), groups)
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


def recorded_stacks(dataset, members: np.ndarray, profile: str, seed: int) -> np.ndarray:
    """The sub-rasters ``members`` (M, 16) recorded as a scan would record them: every 16 of them on one
    random detector of ``profile``'s realistic ranges (its sampling, size, centre offset), holding
    10⁵–10⁷ electrons per sub-raster, rebinned to SIZE px at SAMPLING_MRAD around the detector's nominal
    centre (:func:`polar4d_lib.robustness.record_on_detectors`). (M, 16, SIZE, SIZE) counts."""
    ranges = robustness.RealisticRanges.for_profile(profile)
    sampling = float(dataset.attrs["q_sampling_mrad"])
    patterns = dataset["patterns"]
    out = np.empty((len(members), 16, SIZE, SIZE), np.float32)
    chunk = 1024
    for start in tqdm(range(0, len(members), chunk), desc="recording sub-rasters", unit="chunk", leave=False):
        rows = members[start:start + chunk]
        order = np.argsort(rows.ravel())  # zarr reads rows in increasing order
        raw = np.empty((rows.size,) + tuple(patterns.shape[1:]), np.float32)
        raw[order] = patterns.oindex[rows.ravel()[order]]
        recorded = robustness.record_on_detectors(raw, sampling, ranges, seed + start, SAMPLING_MRAD, SIZE,
                                                  per_detector=256, electrons=(1e5 / 16, 1e7 / 16))
        out[start:start + len(rows)] = recorded.reshape(len(rows), 16, SIZE, SIZE)
    return out


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
    """The 8 images of every stack (4 × 4 positions in raster order) under the square's symmetry
    (:func:`polar4d_lib.conventions.d4_operations`), acting alike on the patterns and on the grid of
    positions, each re-registered by its dark field: (8, M, 16, SIZE, SIZE) and the classes (8, M)."""
    grids = stacks.reshape(len(stacks), 4, 4, SIZE, SIZE)
    images, classes = [], []
    for on_pattern, on_class in conventions.d4_operations():
        moved = on_pattern(grids)  # the patterns (last two axes)
        moved = np.moveaxis(on_pattern(np.moveaxis(moved, (1, 2), (-2, -1))), (-2, -1), (1, 2))  # the positions
        images.append(register_dark_field(np.ascontiguousarray(moved).reshape(stacks.shape)))
        classes.append(on_class(y))
    return np.stack(images), np.stack(classes)


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


def per_stack_fractions(stacks: np.ndarray) -> np.ndarray:
    """Counts (..., 16, Qx, Qy) as fractions of each stack's mean pattern total: what a scan of unknown
    dose can do."""
    return stacks / np.maximum(stacks.sum(axis=(-3, -2, -1), keepdims=True) / stacks.shape[-3], 1e-12)


def score_realistic(proba, scans: list, window_A: float, min_electrons: float) -> list[dict]:
    """Classify every probe position of each scan as ``polar4d predict`` places a model's window on it
    (:func:`polar4d_lib.pacbed.window_px`: one cell from the scan step or its lattice, grown to
    ``min_electrons``; moved inwards at the edges), from the window folded into a cell stack by the
    lattice period (cell over step, else :func:`polar4d_lib.pacbed.lattice_period_px`)."""
    rows = []
    for item in tqdm(scans, desc="realistic scans", unit="scan", leave=False):
        scan = item.scan
        rx, ry = scan.data.shape[:2]
        data = detector.resample(scan.data.astype(np.float32), scan.q_sampling_mrad, SAMPLING_MRAD, (SIZE, SIZE))
        period = window_A / scan.scan_step_A if scan.scan_step_A else pacbed.lattice_period_px(scan.data)
        n, _ = pacbed.window_px(window_A, scan.scan_step_A, scan.data, min_electrons)
        classes, cache = np.full((rx, ry), -1, np.int64), {}
        for i in range(rx if period is not None else 0):  # no lattice seen: nothing classified
            for j in range(ry):
                a, b = (int(np.clip(k - n // 2, 0, max(0, size - n))) for k, size in ((i, rx), (j, ry)))
                if (a, b) not in cache:
                    stack = per_stack_fractions(pacbed.cell_stack(data[a:a + n, b:b + n], period))
                    cache[(a, b)] = int(proba(d4_stacks(stack[None], np.zeros(1, np.int64))[0]).argmax())
                classes[i, j] = cache[(a, b)]
        majority = int(np.bincount(classes[classes >= 0], minlength=conventions.N_CLASSES).argmax())
        rows.append({"scan": item.name, "share_correct": float(np.mean(classes == item.label)),
                     "majority_correct": majority == item.label, "true_step_A": item.description["true_step_A"]})
    return rows


def realistic(args: argparse.Namespace) -> None:
    """``--realistic``: train the D4 stack network on recorded sub-rasters of the training specimens and
    score the profile's realistic (choosing) scans coarser than λ/(2α), beside the shipped model's card."""
    import json

    from polar4d_lib.cli import default_model_path
    from polar4d_lib.datasets import load_profile

    start = time.perf_counter()
    dataset = open_dataset(args.data)
    members = sub_raster_members(dataset)
    labels = np.asarray(dataset["label"])[members[:, 0]]
    train = ~np.isin(members[:, 0], study.make_split(dataset, "blocked", args.seed).test)
    stacks = recorded_stacks(dataset, members[train], args.profile, args.seed)
    images, classes = d4_stacks(stacks, labels[train])
    print(f"{args.data}: {train.sum()} recorded stride-{STRIDE} sub-rasters of the training specimens "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    proba = fit_network(per_stack_fractions(images), classes, np.arange(train.sum()), args.epochs, args.seed)
    limit = robustness.alias_free_step_A()[1]
    scans = [s for s in robustness.realistic_scans(robustness.RealisticRanges.for_profile(args.profile))
             if s.description["true_step_A"] >= limit]
    window_A = float(load_profile(args.profile, "default_model")["averages"]["window_A"])
    rows = score_realistic(proba, scans, window_A, args.min_electrons)
    card = default_model_path().with_name("MODEL_CARD.json")
    shipped = {}
    if card.exists():
        numbers = json.loads(card.read_text())
        chosen = next(c for c in numbers["candidates"] if c["kind"] == numbers["chosen"])
        shipped = {r["scan"]: r for r in chosen["scans"]}
    print(f"{'scan':>28} | stack, D4 | shipped model (card)")
    for r in rows:
        old = shipped.get(r["scan"])
        print(f"{r['scan']:>28} | {100 * r['share_correct']:8.1f}% | "
              + (f"{100 * old['share_correct']:.1f}%" if old else "-"))
    both = [shipped[r["scan"]] for r in rows if r["scan"] in shipped]
    print(f"{len(rows)} scans at steps ≥ λ/(2α) = {limit:.2f} Å, {args.min_electrons:.2g} e per window: stack, D4 "
          f"{100 * np.mean([r['share_correct'] for r in rows]):.1f}% of patterns right, "
          f"{sum(r['majority_correct'] for r in rows)}/{len(rows)} majorities"
          + (f"; shipped model {100 * np.mean([r['share_correct'] for r in both]):.1f}%, "
             f"{sum(r['majority_correct'] for r in both)}/{len(both)}" if both else "")
          + f" ({time.perf_counter() - start:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/robust.zarr")
    parser.add_argument("--seed", type=int, default=888, help="seed of the blocked split and the training")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--electrons", type=float, nargs="*", default=[],
                        help="electrons per sub-raster (all 16 patterns); none: noise-free only")
    parser.add_argument("--d4", action="store_true", help="also the dark-field stacks with D4 symmetry (slower)")
    parser.add_argument("--realistic", action="store_true",
                        help="instead: the D4 stacks on random detectors, scored on the profile's realistic "
                             "(choosing) scans at steps ≥ λ/(2α), as predict would fold them")
    parser.add_argument("--profile", default="robust", help="whose realistic ranges and scans (--realistic)")
    parser.add_argument("--min-electrons", type=float, default=2e6, help="electrons per window (--realistic)")
    args = parser.parse_args()
    if args.realistic:
        return realistic(args)
    start = time.perf_counter()
    dataset = open_dataset(args.data)
    try:
        stacks, y, fracs, members = sub_raster_stacks(dataset, float(dataset.attrs["q_sampling_mrad"]))
    except ValueError as error:  # not a cell_grid dataset, or a raster stride 2 does not divide
        raise SystemExit(f"{args.data}: {error}") from None
    test = np.isin(members[:, 0], study.make_split(dataset, "blocked", args.seed).test)
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


if __name__ == "__main__":
    main()
