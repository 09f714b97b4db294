"""How much a default-model recipe (``--kind``, default the shipped model's) depends on its seed, and what the mean of several seeds' networks gets.

The default model is one network trained with one seed (which draws the blocked split, the training
inputs, their detectors and the initial weights). This trains the same recipe (``polar4d default-model
--candidates KIND``) with each of the paper's five seeds — resumably, one model per kind and seed under
``--workdir``; the shipped model counts for its own seed — and prints, per seed and as mean ± std, the
holdout accuracy (each seed on its own held-out specimens) and the realistic scans by scan step. Where the
profile has independent test scans (``realistic_test``), every seed is scored on them too (cached per seed
under ``--workdir``): picking the best seed on the first scans is a choice, and only the second set tells
what it is worth. ``--min-electrons E`` scores every seed on both sets with E electrons per window (the
window grows by whole cells at low dose until it holds them). With
``--mean`` it also scores the mean of the seeds' probabilities (an ensemble) on the realistic scans, which
no seed trained on (slow: every model runs over every scan again; models of means only).

Usage: python benchmarks/default_model_seeds.py [--kind cnn-stack] [--data data/robust.zarr] [--profile robust]
       [--seeds 888 1212 3000 5000 7000] [--workdir .cache/polar4d/default_model_seeds] [--mean]
       [--min-electrons E] [--results-dir results/benchmarks]
Takes about 13 min per seed to train cnn-cls on 2 cores. Prints measured figures and records them in
results/benchmarks/default_model_seeds.json (:func:`polar4d_lib.benchmarking.record`); nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from polar4d_lib import conventions, experiments, inputs, realistic
from polar4d_lib.cli import default_model_path
from polar4d_lib.default_model import build_default_model
from polar4d_lib.models import load_model
from polar4d_lib.models.base import circular_mean_deg


class MeanOfModels:
    """The mean of the members' probabilities; they must share one preprocessing (one recipe)."""

    def __init__(self, members: list) -> None:
        if any(m.preprocessor.to_dict() != members[0].preprocessor.to_dict() for m in members):
            raise ValueError("the members were trained with different preprocessing; average only one recipe's seeds")
        self.members, self.preprocessor, self.kind, self.metadata = members, members[0].preprocessor, "mean", {}

    def predict_maps(self, patterns: np.ndarray, sampling_mrad: float):
        proba = np.mean([m.predict_proba(patterns, sampling_mrad) for m in self.members], axis=0).astype(np.float32)
        return proba, np.argmax(proba, axis=1).astype(np.int8), circular_mean_deg(proba)


def shipped_card() -> dict | None:
    """The shipped model's card numbers, or None where it has none."""
    path = default_model_path().with_name("MODEL_CARD.json")
    return json.loads(path.read_text()) if path.exists() else None


def seed_run(kind: str, data: str, profile: str, seed: int, workdir: Path) -> tuple[dict, Path]:
    """The card numbers and model path of ``kind`` trained with ``seed``: the shipped model's if it is this
    recipe and seed, else the run under ``workdir`` (trained now if missing; an interrupted run resumes)."""
    numbers = shipped_card()
    if numbers is not None and numbers["seed"] == seed and numbers["chosen"] == kind and numbers["profile"] == profile:
        return numbers, Path(numbers["model"])
    card = workdir / kind / str(seed) / "MODEL_CARD.json"
    if not card.exists():
        build_default_model(data, profile, card.with_name("model.pt"), seed=seed, candidates=[kind],
                            command=f"benchmarks/default_model_seeds.py seed {seed}")
    numbers = json.loads(card.read_text())
    return numbers, Path(numbers["model"])


def row(name: str, holdout: float | None, by_step: dict, overall: float) -> str:
    cells = [f"{name:>12}", f"{100 * holdout:6.1f}" if holdout is not None else "     -", f"{100 * overall:5.1f}"]
    for s in by_step.values():
        cells.append(f"{100 * s['mean_share_correct']:6.1f} {100 * s['majority_correct']:5.0f}")
    return " | ".join(cells)


def scored_scans(path: Path, ranges: realistic.RealisticRanges, scans: list, cache: Path,
                 min_electrons: float | None) -> list[dict]:
    """The model at ``path`` scored on the scans of ``ranges`` (``scans`` is filled once and shared), with
    ``min_electrons`` per window if given; cached at ``cache`` under the ranges, model and electrons."""
    model = load_model(path)
    if min_electrons is not None:
        model.preprocessor.average_min_electrons = float(min_electrons)
    key = json.dumps({"ranges": dataclasses.asdict(ranges), "model": str(path), "mtime": path.stat().st_mtime,
                      "min_electrons": model.preprocessor.average_min_electrons}, sort_keys=True, default=list)
    if cache.exists() and json.loads(cache.read_text()).get("key") == key:
        return json.loads(cache.read_text())["rows"]
    if not scans:
        scans.extend(realistic.realistic_scans(ranges))
    rows = realistic.score_scans(model, scans)
    cache.parent.mkdir(parents=True, exist_ok=True)
    experiments.write_json({"key": key, "rows": rows}, cache)
    return rows


def print_table(results: dict[int, tuple[float, list[dict]]]) -> int:
    """Print, per seed and as mean ± std, the holdout accuracy and the scored scans by scan step; return
    the seed with the highest share of all patterns right."""
    steps = None
    table = []
    for seed, (holdout, rows) in results.items():
        by_step = realistic.summary_by_step(rows)
        steps = steps or list(by_step)
        if list(by_step) != steps:
            raise SystemExit(f"seed {seed} was judged on other scan steps ({list(by_step)} vs {steps}); rerun it")
        table.append((seed, holdout, realistic.summary(rows)["mean_share_correct"], by_step))
    print(f"{'seed':>12} | {'holdout':>6} | {'all':>5} | " + " | ".join(f"{s:.3f} Å: right  maj" for s in steps))
    for seed, holdout, overall, by_step in table:
        print(row(str(seed), holdout, by_step, overall))
    columns = np.array([[h, o] + [b[s]["mean_share_correct"] for s in steps] for _, h, o, b in table])
    std = columns.std(0, ddof=1) if len(columns) > 1 else np.zeros(columns.shape[1])
    print(f"{'mean ± std':>12} | " + " | ".join(f"{100 * m:.1f} ± {100 * d:.1f}" for m, d in zip(columns.mean(0), std)))
    return max(table, key=lambda t: t[2])[0]


def seed_figures(name: str, results: dict[int, tuple[float, list[dict]]], holdout: bool) -> list[dict]:
    """The figures :func:`print_table` prints for one set of scans: each seed's share of all patterns right,
    and the mean and std over the seeds of all patterns and of each scan step (and, with ``holdout``, of the
    holdout accuracy, each seed on its own held-out specimens)."""
    from polar4d_lib.benchmarking import figure

    out = [figure(f"{name} scans, seed {seed}: patterns right", 100 * realistic.summary(rows)["mean_share_correct"], "%")
           for seed, (_, rows) in results.items()]
    columns: dict[str, list[float]] = {"holdout": [h for h, _ in results.values()]} if holdout else {}
    columns[f"{name} scans: patterns right"] = [realistic.summary(r)["mean_share_correct"] for _, r in results.values()]
    for _, rows in results.values():
        for step, summary in realistic.summary_by_step(rows).items():
            columns.setdefault(f"{name} scans: patterns right at {step:.3f} Å", []).append(summary["mean_share_correct"])
    for quantity, values in columns.items():
        out.append(figure(f"{quantity}, mean over seeds", 100 * float(np.mean(values)), "%", f"{len(values)} seeds"))
        if len(values) > 1:
            out.append(figure(f"{quantity}, std over seeds", 100 * float(np.std(values, ddof=1)), "%"))
    return out


def main(argv: list[str] | None = None) -> None:
    from polar4d_lib.benchmarking import RESULTS_DIR, record

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shipped = shipped_card()
    parser.add_argument("--kind", default=shipped["chosen"] if shipped else "cnn-cls",
                        help="the candidate whose recipe is trained with each seed (default: the shipped model's)")
    parser.add_argument("--data", default="data/robust.zarr")
    parser.add_argument("--profile", default="robust")
    parser.add_argument("--seeds", type=int, nargs="+", default=[888, 1212, 3000, 5000, 7000])
    parser.add_argument("--workdir", default=".cache/polar4d/default_model_seeds")
    parser.add_argument("--mean", action="store_true", help="also score the mean of the seeds' probabilities")
    parser.add_argument("--min-electrons", type=float, default=None,
                        help="score every seed with this many electrons per window (default: each model's own)")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where default_model_seeds.json is written")
    args = parser.parse_args(argv)
    figures = []
    if args.mean and inputs.of_model_kind(args.kind, conventions.A_A).folds_cell:  # a default model reads one-cell windows
        raise SystemExit(f"--mean averages models of position means; {args.kind} reads cell stacks: leave --mean out")
    workdir = Path(args.workdir)
    runs = {seed: seed_run(args.kind, args.data, args.profile, seed, workdir) for seed in args.seeds}
    choosing_ranges = realistic.RealisticRanges.for_profile(args.profile)
    sets = {"choosing": choosing_ranges, "test": realistic.test_ranges(args.profile)}
    cards = {seed: next(c for c in numbers["candidates"] if c["kind"] == args.kind) for seed, (numbers, _) in runs.items()}
    electrons = f"{args.min_electrons:.2g} e per window for every seed" if args.min_electrons else "each seed's own electrons per window"
    print(f"{args.kind} of profile {args.profile} on {args.data}, {electrons}; realistic scans: % of patterns right and "
          "% of scans with the right majority, by scan step")
    chosen_seed = None
    for name, ranges in sets.items():
        if ranges is None:
            continue
        scans: list = []
        rows = {}
        for seed, (_, path) in runs.items():
            if name == "choosing" and args.min_electrons is None:
                rows[seed] = cards[seed]["scans"]  # what default-model scored
                continue
            rows[seed] = scored_scans(path, ranges, scans, workdir / args.kind / str(seed) / f"{name}_scans.json",
                                      args.min_electrons)
        print(f"\n{name} scans (seed {ranges.seed}, disorder seeds {list(ranges.disorder_seeds)}"
              + ("; nothing is chosen on them):" if name == "test" else "):"))
        best = print_table({seed: (cards[seed]["holdout"]["accuracy"], r) for seed, r in rows.items()})
        figures += seed_figures(name, {seed: (cards[seed]["holdout"]["accuracy"], r) for seed, r in rows.items()},
                                holdout=name == "choosing")
        print(f"most robust (the share of all realistic patterns right, default-model's criterion): seed {best}")
        if name == "choosing":
            chosen_seed = best
        else:
            print(f"the seed most robust on the choosing scans ({chosen_seed}) gets "
                  f"{100 * realistic.summary(rows[chosen_seed])['mean_share_correct']:.1f} % here")
    if args.mean and len(runs) > 1:
        scans = realistic.realistic_scans(choosing_ranges)
        mean = MeanOfModels([load_model(path) for _, path in runs.values()])
        rows = realistic.score_scans(mean, scans)
        print(row(f"mean of {len(runs)}", None, realistic.summary_by_step(rows), realistic.summary(rows)["mean_share_correct"])
              + "   (no holdout: the seeds held out different specimens)")
    recorded = record("default_model_seeds", figures, args.profile, {
        "kind": args.kind, "data": str(args.data), "seeds": list(args.seeds), "min_electrons": args.min_electrons},
        title=f"Seed spread of the {args.kind} default-model recipe", results_dir=args.results_dir)
    print(f"recorded {recorded}")


if __name__ == "__main__":
    main()
