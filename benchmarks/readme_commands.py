"""The README's two set-up commands, timed from a fresh clone.

Clones the repository (``--repo``, default this one, at its checked-out commit) into a new temporary
folder and runs there, one after the other, as the README gives them:

    bash tools/install.sh && .venv/bin/polar4d book --profile default
    bash tools/install.sh --test && .venv/bin/python -m pytest -q

recording each one's wall time, exit status and (for the second) the number of tests passed, failed and
skipped from pytest's last line. The output of each command goes to ``<workdir>/<n>.log`` (removed with the
clone unless ``--keep`` or ``--workdir`` is given).

Usage: python benchmarks/readme_commands.py [--repo .] [--workdir DIR] [--keep] [--results-dir results/benchmarks]
Slow: about an hour on 2 cores (the main job simulates the default dataset and executes every chapter).
Needs what the set-up needs (network for pip and npm). Prints measured figures and records them in
results/benchmarks/readme_commands.json (:func:`polar4d_lib.benchmarking.record`); nothing is asserted.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from polar4d_lib.benchmarking import RESULTS_DIR, ROOT, figure, record

#: The README's commands, verbatim.
COMMANDS = (
    ("main job", "bash tools/install.sh && .venv/bin/polar4d book --profile default"),
    ("tests", "bash tools/install.sh --test && .venv/bin/python -m pytest -q"),
)


def pytest_counts(output: str) -> dict[str, int]:
    """Counts of pytest's last summary line (``512 passed, 3 skipped in 539.2s``): passed, failed, ... ."""
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    if not lines:
        return {}
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", lines[-1])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(ROOT), help="the repository to clone (a path or URL)")
    parser.add_argument("--workdir", default=None, help="where to clone (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the clone afterwards (default: remove it)")
    parser.add_argument("--results-dir", default=str(RESULTS_DIR), help="where readme_commands.json is written")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="polar4d-readme-"))
    clone = workdir / "polar4d"
    subprocess.run(["git", "clone", "--quiet", args.repo, str(clone)], check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True,
                            check=True).stdout.strip()
    figures = []
    try:
        for i, (name, cmd) in enumerate(COMMANDS, 1):
            log = workdir / f"{i}.log"
            start = time.perf_counter()
            with open(log, "w") as out:
                result = subprocess.run(["bash", "-c", cmd], cwd=clone, stdout=out, stderr=subprocess.STDOUT)
            seconds = time.perf_counter() - start
            print(f"{name:9s} {seconds / 60:6.1f} min, exit status {result.returncode}: {cmd}  (log {log})", flush=True)
            figures += [figure(f"{name}: wall time", seconds, "s", cmd),
                        figure(f"{name}: exit status", result.returncode, "exit status")]
            if name == "tests":
                counts = pytest_counts(log.read_text(errors="replace"))
                print(f"          pytest: {counts or 'no summary line'}")
                figures += [figure(f"tests {word}", n, "tests") for word, n in counts.items()]
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    path = record("readme_commands", figures, "default", {"repo": str(args.repo), "cloned_commit": commit,
                                                          "commands": [c for _, c in COMMANDS]},
                  title="The README's set-up commands from a fresh clone", results_dir=args.results_dir,
                  commit_hash=commit)
    print(f"recorded {path}")


if __name__ == "__main__":
    main()
