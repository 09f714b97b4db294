"""The book driver: simulate the profile's dataset if needed, execute each chapter notebook with
papermill (a template per stage, like abTEM's benchmark notebooks), then build the Jupyter Book.

The chapters are the stages of ``polar4d_lib.stages.STAGES``, jupytext py:percent sources
``notebooks/NN_name.py``; executed copies go to ``book/executed/NN_name.ipynb`` (what ``_toc.yml`` lists)
and are re-executed only when their source, their parameters or what they read changed (a stamp records
that). The notebooks run in the project root and get their paths relative to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from polar4d_lib import benchmarking, config, profiles, stages

ROOT = Path(__file__).resolve().parent.parent
#: The shipped default model's files (beside ``cli.default_model_path()``): what a stage with
#: ``default_model=True`` reads.
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
    """The profile's dataset, simulated (or resumed) first if it is missing or was simulated with other
    parameters than the profile's ``simulate`` section now gives (the new one replaces it once complete)."""
    from polar4d_lib import datasets

    path = dataset_path(profile)
    spec = datasets.spec_for_profile(profile)
    if path.exists():
        held = datasets.open_dataset(path).attrs.get("parameters")
        if json.loads(json.dumps(held)) == json.loads(json.dumps(spec.as_dict())):
            return path
        print(f"{path} was simulated with other parameters than profile {profile!r} now sets; simulating it again")
    datasets.build(spec, path, profile=profile)
    return path


def project_path(path: Path, root: Path = ROOT) -> str:
    """``path`` as a notebook sees it: the notebooks run with the project root ``root`` as working
    directory, so a path inside it is given relative to it (no machine's absolute paths in the book)."""
    path = Path(path).absolute()
    try:
        return path.relative_to(Path(root).absolute()).as_posix()
    except ValueError:
        return str(path)


def benchmarks_dir(root: Path = ROOT) -> Path:
    """Where ``polar4d benchmark`` writes one JSON per benchmark (:data:`benchmarking.RESULTS_DIR`) in ``root``."""
    return root / benchmarking.RESULTS_DIR.relative_to(benchmarking.ROOT)


def stage_parameters(stage: stages.Stage, profile: str, root: Path = ROOT) -> dict:
    """The papermill parameters of ``stage``: ``profile`` always, and a path for each thing it reads or writes."""
    parameters: dict = {"profile": profile}
    if stage.dataset:
        parameters["dataset_path"] = project_path(dataset_path(profile), root)
    if stage.uses_results:
        parameters["results_dir"] = project_path(root / "results" / profile, root)
    if stage.benchmarks:
        parameters["benchmarks_dir"] = project_path(benchmarks_dir(root), root)
    return parameters


def stage_inputs(stage: stages.Stage, profile: str, root: Path = ROOT) -> list[Path]:
    """Everything ``stage`` reads, for its stamp: the dataset, earlier stages' results, the shipped default
    model's files, the benchmark folder."""
    inputs: list[Path] = []
    if stage.dataset:
        inputs.append(dataset_path(profile))
    inputs += [root / "results" / profile / entry for entry in stage.reads]
    if stage.default_model:
        from polar4d_lib.cli import default_model_path

        inputs += [default_model_path().parent / name for name in DEFAULT_MODEL_FILES]
    if stage.benchmarks:
        inputs.append(benchmarks_dir(root))
    return inputs


def _stamp(source: Path, parameters: dict, inputs: list[Path]) -> str:
    """A digest of a stage's notebook, parameters and inputs: a zarr dataset by its attributes (they hold
    its content checksum), a file by its bytes, a folder by the names and bytes of its files, a missing
    path by its name."""
    h = hashlib.sha256(source.read_bytes())
    h.update(json.dumps(parameters, sort_keys=True).encode())
    if "profile" in parameters:  # a change to the profile's sizes re-executes its chapters
        h.update(json.dumps(profiles.settings_of(parameters["profile"]), sort_keys=True, default=str).encode())
    for path in inputs:
        h.update(path.name.encode())
        attrs = path / "zarr.json"
        if attrs.exists():
            h.update(attrs.read_bytes())
        elif path.is_file():
            h.update(path.read_bytes())
        elif path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                h.update(file.relative_to(path).as_posix().encode())
                h.update(file.read_bytes())
        else:
            h.update(b"missing")
    return h.hexdigest()


def _present(notebook, parameters: dict) -> None:
    """What a reader sees of the parameters: papermill's injected cell is removed from the page
    (``remove-cell``) and a sentence after it says which profile and paths the page was executed with."""
    import nbformat

    for i, cell in enumerate(notebook.cells):
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
            values = ", ".join(f"`{k} = {json.dumps(v)}`" for k, v in parameters.items())
            prose = nbformat.v4.new_markdown_cell(
                f"*This page was executed by `polar4d book --profile {parameters['profile']}` with {values} "
                "(paths relative to the project folder).*")
            prose.metadata["tags"] = ["executed-with"]
            notebook.cells.insert(i + 1, prose)
            return


def execute_chapter(
    name: str, parameters: dict, inputs: list[Path], out_dir: Path, force: bool = False, root: Path = ROOT
) -> Path:
    """Execute ``notebooks/<name>.py`` with papermill (working directory ``root``) into
    ``out_dir/<name>.ipynb`` unless its stamp says it is up to date."""
    import jupytext
    import nbformat
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
            str(template), str(executed), parameters=parameters, cwd=str(root),
            kernel_name="python3", progress_bar=config.get("progress_bar"),
        )
        notebook = nbformat.read(executed, as_version=4)
        _present(notebook, parameters)
        nbformat.write(notebook, executed)
        os.replace(executed, target)
    stamp_file.write_text(stamp)
    return target


def execute_stage(stage: stages.Stage, profile: str, force: bool = False, root: Path = ROOT) -> Path:
    """Execute one stage's notebook for ``profile`` into ``book/executed/`` unless it is up to date: a stage
    re-executes when its notebook, its parameters or what it reads changed."""
    return execute_chapter(stage.notebook, stage_parameters(stage, profile, root), stage_inputs(stage, profile, root),
                           root / "book" / "executed", force, root)


def build_book(root: Path = ROOT) -> Path:
    """Build the Jupyter Book in ``root`` (it renders the executed notebooks; it does not execute them)."""
    ensure_offline_assets(root)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    subprocess.run([str(jupyter_book), "build", str(root)], check=True, cwd=root)
    return root / "_build" / "html" / "index.html"


def run(profile: str, build_html: bool = True, force: bool = False, root: Path = ROOT) -> Path:
    """Simulate → execute every stage of ``stages.STAGES`` in order → build the book, for ``profile``.
    Returns the index page. ``root`` holds notebooks/, book/, _config.yml and _toc.yml (the repository by
    default) and is the notebooks' working directory."""
    if any(stage.dataset for stage in stages.STAGES):
        ensure_dataset(profile)
    for stage in stages.STAGES:
        execute_stage(stage, profile, force, root)
    return build_book(root) if build_html else root / "book" / "executed"
