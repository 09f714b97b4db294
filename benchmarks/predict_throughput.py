"""How fast ``polar4d predict`` maps a scan, where the time goes, and how much memory a scan larger than the
memory limit takes.

A synthetic scan (a lattice of 8 positions per KNN cell, a bright disk on a ``--detector-px`` detector at
1 mrad/px whose dark field changes over the cell, Poisson counts) is written as a 4D ``.npy`` and read the way
``polar4d predict`` reads files (a block of rows at a time). For each model given:

- patterns per second of :func:`polar4d_lib.predict.predict_scan`, everything included (reading, the scan
  frame, resampling to the model's grid, folding or averaging windows, the network with its symmetry
  averages, probabilities to classes and angles, the irregularity map), at a/8 and, for a model that folds
  cells, at a/4 (a decision per position there, a part of a cell apart at a/8);
- where that time goes, from a profile of the same call (:mod:`cProfile`): reading, resampling, folding,
  the network's inputs, the network's passes, the irregularity map, the rest;
- for a network, its work per image (FLOP, counted by :class:`torch.utils.flop_counter.FlopCounterMode`), its
  images per second on the prediction path, and the ceiling these set: images per second over the images
  each decision averages (16 for the shipped model), times the patterns per decision at that step.

Then, with ``--large-positions`` > 0, the command ``polar4d predict`` on a scan of that many positions per
side (larger than ``--memory-limit`` on disk) in a subprocess: its wall time and peak resident memory.

Usage: python benchmarks/predict_throughput.py [--positions 96] [--detector-px 96]
       [--models data/default_model.pt results/default/models/pca-knn.npz results/default/models/physics.npz]
       [--large-positions 256] [--memory-limit 2] [--profile default] [--results-dir results/benchmarks]
Prints measured figures and records them in results/benchmarks/predict_throughput.json
(:func:`polar4d_lib.benchmarking.record`); nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from polar4d_lib import benchmarking, conventions
from polar4d_lib.benchmarking import RESULTS_DIR, ROOT
from polar4d_lib.io import read_scan
from polar4d_lib.models import load_model
from polar4d_lib.predict import predict_scan

SAMPLING_MRAD = 1.0
#: Profile entries (file, function) whose cumulative time is a stage; none of them calls another.
STAGES = {
    "reading": [("io.py", "rows")],
    "rotating into the scan frame": [("inputs.py", "in_scan_frame")],
    "resampling and centring (Preprocessor.transform)": [("preprocessing.py", "transform")],
    "folding or averaging windows": [("pacbed.py", "cell_stacks"), ("pacbed.py", "window_means")],
    "the network's passes": [("training.py", "forward_batches")],
    "the irregularity map": [("irregularity.py", "score")],
}


def write_scan(path: Path, positions: int, detector_px: int, seed: int = 0) -> Path:
    """A synthetic scan (positions, positions, px, px) float32 counts at a/8, written a row at a time."""
    rng = np.random.default_rng(seed)
    q = np.arange(detector_px) - detector_px // 2
    disk = ((q[:, None] ** 2 + q[None, :] ** 2) < 24**2) * 40.0
    cell = disk + rng.uniform(0.5, 3.0, (8, 8, 1, 1)) * (1 + rng.random((8, 8, detector_px, detector_px)))
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(positions, positions, detector_px, detector_px))
    for i in range(positions):
        out[i] = rng.poisson(np.tile(cell[i % 8], (positions // 8 + 1, 1, 1))[:positions]).astype(np.float32)
    out.flush()
    del out
    return path


def stage_seconds(profile: cProfile.Profile) -> dict[str, float]:
    """Seconds per stage of :data:`STAGES` from ``profile`` (cumulative times)."""
    stats = pstats.Stats(profile).stats  # (file, line, function) → (calls, primitive, own, cumulative, callers)
    out = {}
    for stage, entries in STAGES.items():
        out[stage] = sum(v[3] for (file, _, name), v in stats.items()
                         if any(file.endswith(f) and name == n for f, n in entries))
    return out


def measure(model_path: Path, scan_path: Path, step_A: float, repeats: int = 2) -> tuple[float, dict[str, float], dict]:
    """Patterns per second of predict_scan (best of ``repeats``, after a warm-up), its stages, its metadata."""
    model = load_model(model_path)
    scan = read_scan(scan_path, q_sampling_mrad=SAMPLING_MRAD, scan_step_A=step_A, energy_kev=200.0, semiangle_mrad=24.0)
    n = scan.data.shape[0] * scan.data.shape[1]
    predict_scan(model, read_scan(scan_path, q_sampling_mrad=SAMPLING_MRAD, scan_step_A=step_A))  # warm-up
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        prediction = predict_scan(model, scan)
        best = min(best, time.perf_counter() - start)
    profile = cProfile.Profile()
    profile.enable()
    predict_scan(model, scan)
    profile.disable()
    stages = stage_seconds(profile)
    total = sum(pstats.Stats(profile).stats[key][3] for key in pstats.Stats(profile).stats
                if key[0].endswith("predict.py") and key[2] == "predict_scan")
    stages["the rest"] = max(0.0, total - sum(stages.values()))
    return n / best, {k: v / total for k, v in stages.items()}, prediction.metadata


def network_rate(model) -> tuple[float, float, int] | None:
    """For a network model: (GFLOP per image, images per second of its prediction path — channels-last
    batches of ``PREDICT_BATCH`` under inference mode —, images per decision: 1, or the symmetric images
    ``d4_average`` averages over); None for a model without a network. The network's ceiling in decisions per
    second is the rate over the images per decision, whatever the rest of ``predict`` costs."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from polar4d_lib import training
    from polar4d_lib.models.neural import PREDICT_BATCH

    network = getattr(model, "network", None)
    if network is None:
        return None
    channels = next(m for m in network.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
    size = model.preprocessor.size
    x = torch.randn(PREDICT_BATCH * 8, channels, size, size)
    images = sum(1 for _ in model._symmetric_images(x[:1])) if model.d4_average else 1
    network = network.eval().to(memory_format=torch.channels_last)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        network(x[:1])
    with torch.inference_mode():
        training.forward_batches(network, x, PREDICT_BATCH, channels_last=True)  # warm-up
        best = np.inf
        for _ in range(3):  # the best of three, as the maps' rates are the best of their repeats
            start = time.perf_counter()
            training.forward_batches(network, x, PREDICT_BATCH, channels_last=True)
            best = min(best, time.perf_counter() - start)
        rate = len(x) / best
    return counter.get_total_flops() / 1e9, rate, images


def large_scan(scan_path: Path, out: Path, memory_limit_gb: float, step_A: float) -> tuple[float, float]:
    """Wall time (s) and peak resident memory (GB) of ``polar4d predict`` on ``scan_path`` in a subprocess,
    its memory sampled every 20 ms (the kernel's own peak of a child counts the pages it shared with this
    process before it started the command)."""
    import psutil

    command = [sys.executable, "-m", "polar4d_lib.cli", "predict", str(scan_path), "--out", str(out),
               "--q-pixel-size-mrad", str(SAMPLING_MRAD), "--scan-step-A", str(step_A),
               "--memory-limit", str(memory_limit_gb)]
    start = time.perf_counter()
    process, peak = psutil.Popen(command, cwd=ROOT), 0
    while process.poll() is None:
        try:
            peak = max(peak, process.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    wall = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"polar4d predict failed (exit {process.returncode})")
    return wall, peak / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=96, help="positions per side of the throughput scan")
    parser.add_argument("--detector-px", type=int, default=96)
    parser.add_argument("--models", nargs="+", default=["data/default_model.pt", "results/default/models/pca-knn.npz",
                                                        "results/default/models/physics.npz"])
    parser.add_argument("--large-positions", type=int, default=0,
                        help="positions per side of the scan for the memory test (0: none; 256 at 96 px: 2.4 GB)")
    parser.add_argument("--memory-limit", type=float, default=2.0, help="GB, for the memory test")
    parser.add_argument("--repeats", type=int, default=2, help="timed maps per model and step (the best is kept)")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR))
    args = parser.parse_args()
    figures, parameters = [], vars(args).copy()
    a8, a4 = conventions.A_A / 8, conventions.A_A / 4
    with tempfile.TemporaryDirectory() as tmp:
        scan_path = write_scan(Path(tmp) / "scan.npy", args.positions, args.detector_px)
        for name in args.models:
            path = ROOT / name
            if not path.exists():
                print(f"skipped {name}: not there (the default book trains it)")
                continue
            model = load_model(path)
            kind = model.kind
            steps = [("a/8", a8)]
            if kind == "cnn-stack":
                steps.append(("a/4", a4))
            ceiling = network_rate(model)
            if ceiling is not None:
                gflop, images_per_s, images = ceiling
                print(f"{kind} network: {gflop * 1e3:.2f} MFLOP per image, {images_per_s:.0f} images/s "
                      f"({gflop * images_per_s:.0f} GFLOP/s), {images} images per decision")
                figures += [
                    benchmarking.figure(f"{kind} network: work per image", gflop * 1e3, "MFLOP"),
                    benchmarking.figure(f"{kind} network: images per second", images_per_s, "images/s",
                                        f"{gflop * images_per_s:.0f} GFLOP/s; batches of 256, channels-last, inference mode"),
                    benchmarking.figure(f"{kind} network: images per decision", images, "images",
                                        "the symmetric images its prediction averages over"),
                ]
            for label, step in steps:
                rate, stages, metadata = measure(path, scan_path, step, args.repeats)
                if ceiling is not None:
                    per_decision = args.positions**2 / (metadata["decisions"][0] * metadata["decisions"][1])
                    limit = ceiling[1] / ceiling[2] * per_decision
                    print(f"  the network alone allows at most {limit:.0f} patterns/s here")
                    figures.append(benchmarking.figure(
                        f"{kind} at {label}: the network's ceiling", limit, "patterns/s",
                        f"images per second over images per decision, times {per_decision:.1f} patterns per decision"))
                note = (f"{args.positions}² positions of {args.detector_px}² px at {label} from a .npy read a block at a time; "
                        f"{metadata['decisions'][0]}×{metadata['decisions'][1]} decisions, window {metadata['average_window_px']}")
                print(f"{kind} at {label}: {rate:.0f} patterns/s ({note})")
                figures.append(benchmarking.figure(f"{kind} at {label}: throughput", rate, "patterns/s", note))
                for stage, share in stages.items():
                    print(f"  {stage}: {100 * share:.0f} %")
                    figures.append(benchmarking.figure(f"{kind} at {label}: share of time in {stage}", 100 * share, "%"))
        if args.large_positions:
            big = write_scan(Path(tmp) / "large.npy", args.large_positions, args.detector_px, seed=1)
            size_gb = big.stat().st_size / 1e9
            wall, peak = large_scan(big, Path(tmp) / "large.npz", args.memory_limit, a8)
            n = args.large_positions**2
            print(f"large scan: {size_gb:.2f} GB on disk, --memory-limit {args.memory_limit:g} GB: {wall:.0f} s "
                  f"({n / wall:.0f} patterns/s with start-up), peak resident memory {peak:.2f} GB")
            figures += [
                benchmarking.figure("large scan: size on disk", size_gb, "GB", f"{args.large_positions}² positions of "
                                    f"{args.detector_px}² px float32"),
                benchmarking.figure("large scan: memory limit", args.memory_limit, "GB"),
                benchmarking.figure("large scan: peak resident memory of polar4d predict", peak, "GB"),
                benchmarking.figure("large scan: polar4d predict wall time", wall, "s", "the command, start-up included"),
            ]
    path = benchmarking.record("predict_throughput", figures, args.profile, parameters,
                               title="polar4d predict: throughput, time per stage, memory",
                               results_dir=args.results_dir)
    print(f"recorded {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
