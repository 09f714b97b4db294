"""The book driver: simulate the profile's dataset if needed, execute each chapter notebook with
papermill (a template per stage, like abTEM's benchmark notebooks), then build the Jupyter Book.

Chapters are jupytext py:percent sources ``notebooks/NN_name.py``; executed copies go to
``book/executed/NN_name.ipynb`` (what ``_toc.yml`` lists) and are re-executed only when their source,
the dataset or the profile changed (a stamp records that).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from polar4d_lib import config

ROOT = Path(__file__).resolve().parent.parent
#: Chapters in order. Each gets ``profile`` and ``dataset_path``; those that read or write
#: ``results/<profile>/`` get ``results_dir`` as well; a chapter re-executes when its source, its parameters
#: or what it reads (the dataset, the files an earlier chapter wrote) changed.
CHAPTERS = ("01_simulation", "02_training", "03_explorer", "04_results")
USES_RESULTS = {"02_training": [], "03_explorer": ["training.json"], "04_results": ["training.json", "explorer.json"]}
#: Chapters that show the shipped default model (data/default_model.*, data/MODEL_CARD.json).
USES_DEFAULT_MODEL = ("03_explorer", "04_results")
DEFAULT_MODEL_FILES = ("default_model.pt", "default_model.npz", "MODEL_CARD.json")

#: JavaScript the pages need, served from the book itself so that it works offline from file://
#: (Jupyter Book 1 would load these from CDNs): npm package → folder under book/_offline/.
OFFLINE_PACKAGES = {
    "requirejs@2.3.7": "requirejs",
    "@jupyter-widgets/html-manager@1.0.15": "html-manager",
    "mathjax@3.2.2": "mathjax",
}
def ensure_offline_assets(root: Path = ROOT) -> Path:
    """Fetch the pinned npm packages of ``OFFLINE_PACKAGES`` once (``npm pack``, at build time) and unpack
    them into ``book/_offline/`` (listed in ``html_static_path``; not ``_static/``, whose .js files Jupyter
    Book would include on every page a second time)."""
    import shutil
    import tarfile

    offline = root / "book" / "_offline"
    for package, folder in OFFLINE_PACKAGES.items():
        target = offline / folder
        if target.is_dir():
            continue
        npm = shutil.which("npm")
        if npm is None:
            raise FileNotFoundError("npm is needed once to fetch the book's offline JavaScript; install Node.js/npm")
        with tempfile.TemporaryDirectory() as tmp:
            result = subprocess.run([npm, "pack", package, "--silent"], cwd=tmp, check=True, capture_output=True,
                                    text=True)
            archive = Path(tmp) / result.stdout.strip().splitlines()[-1]
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            offline.mkdir(parents=True, exist_ok=True)
            os.replace(Path(tmp) / "package", target)
    return offline


def dataset_path(profile: str) -> Path:
    """Where a profile's simulated dataset lives."""
    return Path(config.get("data_root")) / f"{profile}.zarr"


def ensure_dataset(profile: str) -> Path:
    """The profile's dataset, simulated (or resumed) first if it is missing."""
    from polar4d_lib import datasets

    path = dataset_path(profile)
    if not path.exists():
        datasets.build(datasets.spec_for_profile(profile), path, profile=profile)
    return path


def _stamp(source: Path, parameters: dict, inputs: list[Path]) -> str:
    h = hashlib.sha256(source.read_bytes())
    h.update(json.dumps(parameters, sort_keys=True).encode())
    for path in inputs:
        attrs = path / "zarr.json"
        if attrs.exists():
            h.update(attrs.read_bytes())
        elif path.is_file():
            h.update(path.read_bytes())
        else:
            h.update(str(path).encode())
    return h.hexdigest()


def execute_chapter(
    name: str, parameters: dict, inputs: list[Path], out_dir: Path, force: bool = False, root: Path = ROOT
) -> Path:
    """Execute ``notebooks/<name>.py`` with papermill into ``out_dir/<name>.ipynb`` unless up to date."""
    import jupytext
    import papermill

    source = root / "notebooks" / f"{name}.py"
    if not source.exists():
        raise FileNotFoundError(f"chapter source {source} is missing; restore it from git")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.ipynb"
    stamp_file = out_dir / f".{name}.stamp"
    stamp = _stamp(source, parameters, inputs)
    if not force and target.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        print(f"{name}: up to date")
        return target
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / f"{name}.ipynb"
        jupytext.write(jupytext.read(source), template)
        executed = Path(tmp) / f"{name}.out.ipynb"
        papermill.execute_notebook(
            str(template), str(executed), parameters=parameters, cwd=str(Path.cwd()),
            kernel_name="python3", progress_bar=config.get("progress_bar"),
        )
        os.replace(executed, target)
    stamp_file.write_text(stamp)
    return target


def build_book(root: Path = ROOT) -> Path:
    """Build the Jupyter Book in ``root`` (it renders the executed notebooks; it does not execute them)."""
    ensure_offline_assets(root)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    subprocess.run([str(jupyter_book), "build", str(root)], check=True, cwd=root)
    return root / "_build" / "html" / "index.html"


def run(profile: str, build_html: bool = True, force: bool = False, root: Path = ROOT) -> Path:
    """Simulate → execute every chapter → build the book, for ``profile``. Returns the index page.
    ``root`` holds notebooks/, book/, _config.yml and _toc.yml (the repository by default)."""
    data = ensure_dataset(profile)
    out_dir = root / "book" / "executed"
    results = root / "results" / profile
    for name in CHAPTERS:
        parameters = {"profile": profile, "dataset_path": str(data.resolve())}
        inputs = [data]
        if name in USES_RESULTS:
            parameters["results_dir"] = str(results.resolve())
            inputs += [results / f for f in USES_RESULTS[name]]
        if name in USES_DEFAULT_MODEL:
            inputs += [root / "data" / f for f in DEFAULT_MODEL_FILES]
        execute_chapter(name, parameters, inputs, out_dir, force, root)
    return build_book(root) if build_html else out_dir
