"""The ``polar4d`` command: ``simulate``, ``info`` and ``book``.

Errors a user can fix (bad arguments, missing or foreign files) end in one line on stderr naming the
problem and the fix, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

import yaml

from polar4d_lib import config


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


def _book(args: argparse.Namespace) -> int:
    from polar4d_lib import book

    config_values, _ = _parse_sets(args.set)
    with config.set(config_values):
        index = book.run(args.profile, build_html=not args.no_html, force=args.force)
    print(f"open {index}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog.split()[0]} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="polar4d", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sim = sub.add_parser("simulate", help="simulate a dataset of KNN diffraction patterns (zarr)")
    sim.add_argument("--profile", choices=["smoke", "default", "robust", "paper"], default="default")
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

    bk = sub.add_parser("book", help="run the notebooks for a profile with papermill and build the book")
    bk.add_argument("--profile", choices=["smoke", "default", "robust", "paper"], default="default")
    bk.add_argument("--no-html", action="store_true", help="execute the notebooks only")
    bk.add_argument("--force", action="store_true", help="re-execute notebooks even when up to date")
    bk.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    bk.set_defaults(func=_book)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
