"""The ``polar4d`` command: ``simulate``, ``info``, ``train``, ``predict``, ``default-model``, ``book`` and
``benchmark``.

Errors a user can fix (bad arguments, missing or foreign files) end in one line on stderr naming the
problem and the fix, and exit status 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from polar4d_lib import config, profiles, reliability, streaming


#: The shipped default model (data/MODEL_CARD.md says how it was made); .pt for a network, .npz otherwise.
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "data" / "default_model.pt"


def default_model_path() -> Path:
    """The shipped default model file (whichever of .pt / .npz exists; the .pt name if neither)."""
    for path in (DEFAULT_MODEL, DEFAULT_MODEL.with_suffix(".npz")):
        if path.exists():
            return path
    return DEFAULT_MODEL


class UsageError(Exception):
    """A problem with the user's input; printed as one line."""


def _parse_sets(items: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``key=value`` pairs → (config overrides, dataset parameter overrides). Values are YAML."""
    config_values, spec_values = {}, {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {item!r} is not key=value; e.g. --set probe_settings=4")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise UsageError(f"--set {item!r}: {raw!r} is not a valid value; quote lists like --set 'variants=[0, 4]'") from None
        if key.startswith("config."):
            config_values[key.removeprefix("config.")] = value
        elif key in config.as_dict() and key != "seed":
            config_values[key] = value
        else:
            spec_values[key] = value
    return config_values, spec_values


def _simulate(args: argparse.Namespace) -> int:
    from polar4d_lib import datasets

    config_values, spec_values = _parse_sets(args.set)
    with config.set(config_values):
        spec = datasets.spec_for_profile(args.profile, spec_values)
        out = datasets.build(spec, args.out, profile=args.profile, num_workers=args.workers, scheduler=args.scheduler)
        print(datasets.describe(datasets.open_dataset(out)))
    return 0


def _info(args: argparse.Namespace) -> int:
    from polar4d_lib import datasets

    dataset = datasets.open_dataset(args.path)
    print(datasets.describe(dataset))
    if args.verify:
        ok = dataset.verify()
        print(f"checksum       {'ok' if ok else 'MISMATCH: the arrays changed since they were written'}")
        return 0 if ok else 1
    return 0


def _train(args: argparse.Namespace) -> int:
    from polar4d_lib import experiments

    out = Path(args.out)
    _, overrides = _parse_sets(args.set)
    model, scores = experiments.train_and_evaluate(
        args.model, args.data, args.profile, args.seed if args.seed is not None else config.get("seed"),
        split_kind=args.split, overrides=overrides,
        checkpoint_path=out.with_name(out.name + ".checkpoint") if args.model in _network_kinds() else None,
    )
    model.save(out)
    print(f"{args.model} trained on {scores['n_train']} patterns ({scores['split']}); saved {out}")
    print(f"test: accuracy {scores['accuracy']:.3f}, macro-F1 {scores['macro_f1']:.3f}, "
          f"mean angular error {scores['mean_angular_error_deg']:.1f}°")
    return 0


def _default_model(args: argparse.Namespace) -> int:
    from polar4d_lib.default_model import build_default_model, retest_default_model

    out = Path(args.out)
    if out.suffix not in (".pt", ".npz"):
        raise UsageError(f"--out {out.name} must end in .pt (a network) or .npz (pca-knn, physics)")
    command = "polar4d " + " ".join(shlex.quote(a) for a in (args.argv or []))
    if args.retest:
        model, numbers = retest_default_model(out, args.profile, command=command, card=args.card)
        print(f"scored {out} on the independent test scans again; rewrote its model card's test section")
    elif args.data is None:
        raise UsageError("default-model needs --data (a dataset from polar4d simulate), or --retest to score a built model again")
    else:
        model, numbers = build_default_model(args.data, args.profile, out, seed=args.seed, candidates=args.candidates,
                                             command=command, card=args.card, add=args.add)
        chosen = next(c for c in numbers["candidates"] if c["kind"] == numbers["chosen"])["realistic"]
        print(f"chose {model.kind}: {100 * chosen['mean_share_correct']:.1f} % of patterns right on {chosen['scans']} realistic "
              f"scans, majority right on {100 * chosen['majority_correct']:.0f} %; wrote {numbers['model']} and its model card")
    if "test" in numbers:
        test = numbers["test"]["realistic"]
        print(f"on {test['scans']} independent test scans (chosen on none of them): {100 * test['mean_share_correct']:.1f} % "
              f"of patterns right, majority right on {100 * test['majority_correct']:.0f} %")
    return 0


def _network_kinds() -> tuple[str, ...]:
    from polar4d_lib.models import NEURAL_KINDS

    return NEURAL_KINDS


def _predict(args: argparse.Namespace) -> int:
    from polar4d_lib import io
    from polar4d_lib.models import load_model
    from polar4d_lib.predict import predict_scan

    out = Path(args.out)
    if out.suffix not in (".npz", ".h5"):
        raise UsageError(f"--out {out.name} must end in .npz or .h5")
    model_path = Path(args.model) if args.model else default_model_path()
    if not model_path.exists():
        raise FileNotFoundError(
            f"no model at {model_path}; pass --model PATH (train one with `polar4d train`)"
        )
    scan = io.read_scan(args.input, q_sampling_mrad=args.q_pixel_size_mrad, energy_kev=args.energy_kev,
                        semiangle_mrad=args.semiangle_mrad, scan_rotation_deg=args.scan_rotation_deg,
                        scan_step_A=args.scan_step_a)
    prediction = predict_scan(load_model(model_path), scan, abstain_below=args.abstain_below,
                              window_px=args.window_px, dose_e_per_pattern=args.dose_e_per_pattern,
                              abstain_score=args.abstain_score, memory_limit_gb=args.memory_limit,
                              progress=True, scheduler=args.scheduler)
    for key in ("coarse_step_warning", "low_dose_warning"):
        if prediction.metadata[key]:
            print(f"polar4d predict: warning: {prediction.metadata[key]}", file=sys.stderr)
    io.write_predictions(out, prediction.class_map, prediction.probabilities, prediction.angle_deg,
                         prediction.metadata, prediction.irregularity)
    png = out.with_suffix(".png")
    from polar4d_lib import plotting

    plotting.save_class_map(prediction.class_map, png, title=f"{Path(args.input).name}: {prediction.metadata['model_kind']}",
                            irregularity=prediction.irregularity, irregularity_label=prediction.metadata["irregularity"])
    counts = np.bincount(prediction.class_map[prediction.class_map >= 0].ravel(), minlength=8)
    from polar4d_lib.conventions import CLASS_NAMES

    majority = CLASS_NAMES[int(counts.argmax())] if counts.sum() else "none"
    print(f"wrote {out} and {png}: {scan.data.shape[0]}×{scan.data.shape[1]} positions, majority class {majority}, "
          f"{int((prediction.class_map < 0).sum())} abstained; averaged over {prediction.metadata['averaging']}")
    return 0


def _book(args: argparse.Namespace) -> int:
    from polar4d_lib import book

    config_values, _ = _parse_sets(args.set)
    with config.set(config_values):
        index = book.run(args.profile, build_html=not args.no_html, force=args.force)
    print(f"open {index}")
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    import subprocess

    from polar4d_lib import benchmarking

    results_dir = Path(args.results_dir).resolve()
    plan = benchmarking.plan(args.profile, args.names)
    failed = []
    for bench, skipped in plan:
        if skipped:
            print(f"skipped {bench.name}: {skipped}")
            continue
        command = benchmarking.command(bench, args.profile, results_dir, sys.executable)
        print(f"running {bench.name}: {' '.join(shlex.quote(c) for c in command[1:])}", flush=True)
        if subprocess.run(command, cwd=benchmarking.ROOT).returncode != 0:
            failed.append(bench.name)
            continue
        for name in bench.outputs():
            print(f"wrote {results_dir / f'{name}.json'}")
    if failed:
        print(f"polar4d benchmark: failed: {', '.join(failed)} (their output is above)", file=sys.stderr)
        return 1
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog.split()[0]} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="polar4d", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sim = sub.add_parser("simulate", help="simulate a dataset of KNN diffraction patterns (zarr)")
    sim.add_argument("--profile", choices=profiles.names(), default="default")
    sim.add_argument("--out", required=True, help="output path ending in .zarr")
    sim.add_argument("--scheduler", default=None, help="dask.distributed scheduler address (default: local)")
    sim.add_argument("--workers", type=int, default=None, help="local worker processes (default: config num_workers)")
    sim.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a dataset parameter (e.g. probe_settings=4, simulation.q_sampling_mrad=1.0) "
                          "or a config value (cache_dir=..., num_workers=2)")
    sim.set_defaults(func=_simulate)

    info = sub.add_parser("info", help="print what a dataset holds")
    info.add_argument("path")
    info.add_argument("--verify", action="store_true", help="recompute the content checksum")
    info.set_defaults(func=_info)

    tr = sub.add_parser("train", help="train a model on a simulated dataset and score it on held-out data")
    tr.add_argument("--data", required=True, help="a dataset (.zarr) from polar4d simulate")
    tr.add_argument("--model", required=True, metavar="KIND",
                    choices=[f"{e}-{h}" for e in ("cnn", "resnet", "vgg") for h in ("cls", "reg", "proto")] + ["pca-knn", "physics", "linear"],
                    help="{cnn,resnet,vgg}-{cls,reg,proto} | pca-knn | physics | linear")
    tr.add_argument("--profile", choices=profiles.names(), default="default")
    tr.add_argument("--seed", type=int, default=None)
    tr.add_argument("--split", choices=["blocked", "random"], default="blocked")
    tr.add_argument("--out", required=True, help="model file (.pt for networks, .npz for pca-knn, physics and linear)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a training setting (max_epochs=3, augmentation=true, ...)")
    tr.set_defaults(func=_train)

    pr = sub.add_parser("predict", help="map the polarization of a measured or simulated scan")
    pr.add_argument("input", help="a 4D-STEM scan, read lazily where the format allows: a 4D .npy (Rx, Ry, Qx, Qy), "
                                  "py4DSTEM EMD 1.0, and through RosettaSciIO Merlin .mib, blockfile .blo, NCEM/Prismatic/"
                                  "Velox .emd, DM3/DM4, EMPAD .xml, TVIPS, arina _master.h5")
    pr.add_argument("--out", required=True, help="output .npz or .h5 (a .png of the class map is written beside it)")
    pr.add_argument("--model", default=None, help="model file (default: the shipped default model)")
    pr.add_argument("--energy-kev", type=float, default=None)
    pr.add_argument("--semiangle-mrad", type=float, default=None)
    pr.add_argument("--q-pixel-size-mrad", type=float, default=None, help="detector sampling (mrad/px)")
    pr.add_argument("--scan-rotation-deg", type=float, default=None)
    pr.add_argument("--scan-step-A", dest="scan_step_a", type=float, default=None,
                    help="probe step (Å); sets the position-averaging window of a PACBED model (default: from the file, "
                         "else from the lattice seen in the scan)")
    pr.add_argument("--window-px", type=int, default=None,
                    help="average each pattern with its neighbours over N × N positions (overrides the model's window; 1 = none)")
    pr.add_argument("--dose-e-per-pattern", type=float, default=None,
                    help="electrons per pattern, for data not recorded in counts (default: the mean pattern sum); "
                         "at a low dose a PACBED model's window grows until it holds the electrons the model needs")
    pr.add_argument("--abstain-below", type=float, default=None,
                    help="class −1 where the decision's reliability (--abstain-score, 0–1) is lower")
    pr.add_argument("--abstain-score", choices=list(reliability.SCORES), default=reliability.DEFAULT,
                    help="the reliability --abstain-below thresholds: the top class probability, the margin between "
                         "the top two, or 1 − normalised entropy (default: the error-periodicity chapter's best)")
    pr.add_argument("--memory-limit", type=float, default=streaming.DEFAULT_MEMORY_LIMIT_GB, metavar="GB",
                    help="read the scan a chunk of rows at a time so that this process stays within GB "
                         f"(default {streaming.DEFAULT_MEMORY_LIMIT_GB:g}); the maps do not depend on it")
    pr.add_argument("--scheduler", default=None, metavar="ADDRESS",
                    help="map the scan's chunks on the workers of this dask.distributed scheduler (tcp://host:8786), "
                         "which read the input file themselves; the maps are the same")
    pr.set_defaults(func=_predict)

    dm = sub.add_parser("default-model", help="train the candidates, keep the most robust on realistic scans, write a model card")
    dm.add_argument("--data", default=None, help="a dataset (.zarr) from polar4d simulate (the robust profile's)")
    dm.add_argument("--profile", choices=[p for p in profiles.names() if profiles.has_section(p, "default_model")], default="robust")
    dm.add_argument("--seed", type=int, default=888)
    dm.add_argument("--candidates", nargs="+", default=None, metavar="KIND",
                    help="kinds to train and compare (default: default_model.candidates_for the profile: "
                         "linear cnn-cls pca-knn physics, and cnn-stack where the profile has a stack_model section)")
    dm.add_argument("--add", action="store_true",
                    help="add --candidates to the card beside --out (same profile, seed and data): train only them, "
                         "keep the card's other rows, and replace its model only if one of them is more robust")
    dm.add_argument("--out", required=True, help="model file (.pt; .npz if pca-knn or physics wins); MODEL_CARD.md goes beside it")
    dm.add_argument("--card", default=None, help="model card path (default: MODEL_CARD.md beside --out)")
    dm.add_argument("--retest", action="store_true",
                    help="train nothing: score the model at --out on the profile's independent test scans again "
                         "(after their draw changed) and rewrite its card's test section")
    dm.set_defaults(func=_default_model)

    bk = sub.add_parser("book", help="run the notebooks for a profile with papermill and build the book")
    bk.add_argument("--profile", choices=profiles.names(), default="default")
    bk.add_argument("--no-html", action="store_true", help="execute the notebooks only")
    bk.add_argument("--force", action="store_true", help="re-execute notebooks even when up to date")
    bk.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    bk.set_defaults(func=_book)

    from polar4d_lib import benchmarking

    be = sub.add_parser("benchmark", help="run the benchmarks that fit a profile; each writes results/benchmarks/<name>.json")
    be.add_argument("names", nargs="*", metavar="NAME",
                    help=f"benchmarks to run (default: all that fit the profile): {', '.join(benchmarking.BENCHMARKS)}")
    be.add_argument("--profile", choices=benchmarking.profiles(), default="smoke",
                    help="the sizes to run at (smoke: a minute or two on 2 cores)")
    be.add_argument("--results-dir", default=str(benchmarking.RESULTS_DIR), help="where the JSON files go")
    be.set_defaults(func=_benchmark)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except (UsageError, ValueError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"polar4d {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"polar4d {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
