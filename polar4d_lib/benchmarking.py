"""Benchmarks' figures as files: the one way a benchmark records what it measured, and the list of benchmarks.

:func:`record` writes ``results/benchmarks/<name>.json`` (atomically) with the machine, the date, the commit,
the profile, the parameters and the figures, each with its unit::

    {"name": str, "title": str,
     "machine": {"platform": str, "processor": str, "cores": int, "memory_gib": float, "python": str, "torch": str},
     "date": ISO-8601 UTC str, "commit": short git hash or null, "profile": str, "parameters": {...},
     "figures": [{"quantity": str, "value": float, "unit": str, "note": str (optional)}]}

A record of a past measurement (copied once from the README, ``parameters["recorded_from"]`` says where) keeps
the date, commit and machine as they were stated; a machine field the source did not state is null.

:data:`BENCHMARKS` lists the scripts in ``benchmarks/`` with their arguments for each profile they fit
(``polar4d benchmark --profile smoke|default``): the sizes are these arguments, nothing else. A benchmark
that reads the ``robust`` dataset or runs for a long time runs only when it is named and its inputs exist.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

from polar4d_lib.atomic import atomic_write

#: The repository (benchmarks/, results/).
ROOT = Path(__file__).resolve().parent.parent
#: Where benchmarks write their JSON unless told otherwise (``--results-dir``).
RESULTS_DIR = ROOT / "results" / "benchmarks"

MACHINE_KEYS = ("platform", "processor", "cores", "memory_gib", "python", "torch")
FIGURE_KEYS = ("quantity", "value", "unit", "note")


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        import psutil

        return psutil.virtual_memory().total / 2**30


def machine() -> dict[str, Any]:
    """This machine: platform, processor, the cores this process may use, memory (GiB), Python and torch."""
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"platform": platform.platform(), "processor": _processor(), "cores": int(cores),
            "memory_gib": round(_memory_gib(), 1), "python": platform.python_version(), "torch": torch_version}


def commit(root: Path = ROOT) -> str | None:
    """The short hash of the checked-out commit, or None outside a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def utc_now() -> str:
    """Now, ISO-8601 in UTC to the second (``2026-12-07T14:05:00Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def figure(quantity: str, value: float, unit: str, note: str | None = None) -> dict[str, Any]:
    """One figure of a record: what was measured, its value and its unit (and a note, if any)."""
    out: dict[str, Any] = {"quantity": quantity, "value": value, "unit": unit}
    if note:
        out["note"] = note
    return out


def _check_figures(figures: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    checked = []
    for i, f in enumerate(figures):
        unknown = set(f) - set(FIGURE_KEYS)
        if unknown:
            raise ValueError(f"figure {i}: unknown key {sorted(unknown)[0]!r} (a figure has {', '.join(FIGURE_KEYS)})")
        quantity, unit = f.get("quantity"), f.get("unit")
        if not isinstance(quantity, str) or not quantity:
            raise ValueError(f"figure {i}: 'quantity' must be a non-empty string")
        if not isinstance(unit, str) or not unit:
            raise ValueError(f"figure {i} ({quantity}): 'unit' must be a non-empty string (e.g. 's', '%', 'patterns')")
        try:
            value = float(f["value"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"figure {i} ({quantity}): 'value' must be a number") from None
        if not math.isfinite(value):
            raise ValueError(f"figure {i} ({quantity}): 'value' must be finite, not {value}")
        checked.append(figure(quantity, value, unit, f.get("note")))
    if not checked:
        raise ValueError("a record needs at least one figure")
    return checked


def record(name: str, figures: Iterable[Mapping[str, Any]], profile: str, parameters: Mapping[str, Any], *,
           title: str | None = None, results_dir: str | os.PathLike | None = None, date: str | None = None,
           commit_hash: str | None | bool = True, machine_info: Mapping[str, Any] | None = None) -> Path:
    """Write ``<results_dir>/<name>.json`` (default :data:`RESULTS_DIR`) atomically and return its path.

    ``figures``: dicts with ``quantity``, ``value`` (a finite number), ``unit`` and optionally ``note``
    (:func:`figure` makes one). ``parameters``: what the benchmark was run with (JSON-serialisable).
    ``date``, ``commit_hash`` and ``machine_info`` default to now, the checked-out commit and this machine;
    a record of a past measurement gives the ones it was made with (``commit_hash=None``: not known).
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"benchmark name {name!r} must be a plain file stem")
    if machine_info is None:
        machine_info = machine()
    unknown = set(machine_info) - set(MACHINE_KEYS)
    if unknown:
        raise ValueError(f"machine: unknown key {sorted(unknown)[0]!r} (a machine has {', '.join(MACHINE_KEYS)})")
    data = {
        "name": name,
        "title": title or name,
        "machine": {key: machine_info.get(key) for key in MACHINE_KEYS},
        "date": date or utc_now(),
        "commit": commit() if commit_hash is True else (commit_hash or None),
        "profile": str(profile),
        "parameters": {key: in_repository(value) for key, value in parameters.items()},
        "figures": _check_figures(figures),
    }
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    path = Path(results_dir if results_dir is not None else RESULTS_DIR) / f"{name}.json"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def in_repository(value: Any) -> Any:
    """A parameter as a record shows it: a path inside the repository (a string starting with :data:`ROOT`)
    relative to it, so that the published pages name no folder of the measuring machine; anything else
    as it is (lists and mappings item by item)."""
    if isinstance(value, str) and Path(value).is_absolute() and Path(value).resolve().is_relative_to(ROOT):
        return str(Path(value).resolve().relative_to(ROOT)) or "."
    if isinstance(value, (list, tuple)):
        return [in_repository(v) for v in value]
    if isinstance(value, Mapping):
        return {k: in_repository(v) for k, v in value.items()}
    return value


def load(path: str | os.PathLike) -> dict[str, Any]:
    """A record written by :func:`record`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_all(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Every benchmark file ``folder/*.json`` (as :func:`record` writes them), sorted by name; a file
    without one of the keys the performance page shows is an error naming the file and the key."""
    required = ("name", "title", "machine", "date", "commit", "profile", "parameters", "figures")
    benchmarks = []
    for path in sorted(Path(folder).glob("*.json")):
        record = load(path)
        missing = [key for key in required if key not in record]
        missing += [f"figures[{i}].{key}" for i, figure in enumerate(record.get("figures", []))
                    for key in ("quantity", "value", "unit") if key not in figure]
        if missing:
            raise ValueError(f"benchmark file {path} lacks {missing[0]!r}")
        benchmarks.append(record)
    return sorted(benchmarks, key=lambda record: record["name"])


@dataclass(frozen=True)
class Benchmark:
    """A script in ``benchmarks/``: its arguments for each profile it fits (the sizes), the inputs it reads
    (paths relative to the repository; it is skipped while one is missing), and, where it reads the
    ``robust`` dataset or runs long, why it runs only when named. ``takes_profile``: the script records the
    profile it is given (``--profile``); the others record the profile of the data they read."""

    name: str
    arguments: Mapping[str, tuple[str, ...]]
    needs: tuple[str, ...] = ()
    only_when_named: str = ""
    takes_profile: bool = True
    records: tuple[str, ...] = field(default=())

    @property
    def script(self) -> Path:
        return ROOT / "benchmarks" / f"{self.name}.py"

    def outputs(self) -> tuple[str, ...]:
        """The record names (``<name>.json`` files) a run writes."""
        return self.records or (self.name,)


_ROBUST = "data/robust.zarr"
_ROBUST_WHY = "reads the robust dataset (data/robust.zarr, 4.5 GB, built by polar4d simulate --profile robust)"

#: Every benchmark, with its sizes per profile. A profile that is not a key of ``arguments`` does not fit it.
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("simulation_speed", {
        "smoke": ("--lateral-cells", "1", "--thickness-nm", "4", "--patterns", "32", "--multislice-patterns", "4",
                  "--positions-per-setting", "8"),
        "default": ("--lateral-cells", "4", "--thickness-nm", "20", "--patterns", "1024", "--multislice-patterns", "32",
                    "--positions-per-setting", "16"),
    }),
    Benchmark("tilt_vs_polarization", {
        "smoke": ("--cells", "1", "--thicknesses", "4", "--tilts", "0.5", "--grid", "2"),
        "default": ("--cells", "2", "--thicknesses", "15.8", "31.6", "47.4", "--tilts", "0.1", "0.25", "0.5",
                    "--grid", "8"),
    }),
    Benchmark("coarse_rasters", {p: ("--data", _ROBUST) for p in ("smoke", "default")}, needs=(_ROBUST,),
              only_when_named=_ROBUST_WHY + ", about 1 min", takes_profile=False),
    Benchmark("cell_stacks", {p: ("--data", _ROBUST, "--d4", "--epochs", "24", "--electrons", "2e6")
                              for p in ("smoke", "default")}, needs=(_ROBUST,),
              only_when_named=_ROBUST_WHY + ", about 8 min", takes_profile=False),
    Benchmark("default_model_seeds", {p: ("--data", _ROBUST) for p in ("smoke", "default")}, needs=(_ROBUST,),
              only_when_named=_ROBUST_WHY + " and trains five seeds, about 25 min each", takes_profile=False),
    Benchmark("off_grid_scans", {p: ("--workers", "2") for p in ("smoke", "default")},
              only_when_named="simulates 8 realistic specimens per scan step, about 10 min per step on one core",
              takes_profile=False),
    Benchmark("predict_throughput", {
        "smoke": ("--positions", "16", "--detector-px", "32", "--models", "data/default_model.pt", "--repeats", "1"),
        "default": ("--positions", "96", "--large-positions", "256", "--memory-limit", "2"),
    }),
    Benchmark("symmetry_images", {p: () for p in ("smoke", "default")},
              only_when_named="scores the shipped model five times on the robust profile's independent test scans "
                              "(about 3 min with their simulations cached, hours without)", takes_profile=False),
    Benchmark("readme_commands", {p: () for p in ("smoke", "default")},
              only_when_named="clones the repository and runs the README's two set-up commands (about an hour)",
              takes_profile=False),
)}


def profiles() -> list[str]:
    """The profiles some benchmark has sizes for, in the order first seen."""
    return list(dict.fromkeys(p for b in BENCHMARKS.values() for p in b.arguments))


def plan(profile: str, names: Iterable[str] = (), root: Path = ROOT) -> list[tuple[Benchmark, str | None]]:
    """The benchmarks to run for ``profile``: those ``names`` (default all), each with None (run it) or the
    reason it is skipped. An unknown name is a ``KeyError`` naming the known ones."""
    names = list(names)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise KeyError(f"unknown benchmark {unknown[0]!r}; known: {', '.join(BENCHMARKS)}")
    chosen = [BENCHMARKS[n] for n in dict.fromkeys(names)] if names else list(BENCHMARKS.values())
    out = []
    for bench in chosen:
        missing = [p for p in bench.needs if not (root / p).exists()]
        if profile not in bench.arguments:
            reason = f"has no {profile} size"
        elif bench.only_when_named and bench.name not in names:
            reason = f"{bench.only_when_named}: name it to run it"
        elif missing:
            reason = f"needs {missing[0]}, which does not exist"
        else:
            reason = None
        out.append((bench, reason))
    return out


def command(bench: Benchmark, profile: str, results_dir: str | os.PathLike, python: str) -> list[str]:
    """The command line that runs ``bench`` at ``profile``'s size and records into ``results_dir``."""
    args = [python, str(bench.script), *bench.arguments[profile]]
    if bench.takes_profile:
        args += ["--profile", profile]
    return args + ["--results-dir", str(results_dir)]
