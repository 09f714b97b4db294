"""The study's stages as one declarative list: each is a chapter of the book, one notebook
``notebooks/<notebook>.py`` that ``polar4d book`` executes (``polar4d_lib.book``), in this order.

A stage says what it reads — the profile's simulated dataset, files that earlier stages wrote to
``results/<profile>/``, the shipped default model (``data/``), the benchmark files
``results/benchmarks/*.json`` — and what it writes to ``results/<profile>/``. The book driver passes each
stage the parameters for what it reads and writes (paths relative to the project root, where the
notebooks run) and re-executes a stage only when its notebook, its parameters or what it reads changed.

A new chapter is one entry here plus one notebook (and its line in ``_toc.yml``, which a test checks).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One chapter of the study.

    ``name`` names the stage (its results file is ``results/<profile>/<name>.json`` when it writes one);
    ``notebook`` is the jupytext source ``notebooks/<notebook>.py`` and the executed page
    ``book/executed/<notebook>.ipynb``; ``title`` is the notebook's first heading (the book's navigation).
    ``dataset``: reads the profile's dataset (parameter ``dataset_path``). ``reads``: entries of
    ``results/<profile>/`` written by earlier stages (files or folders). ``default_model``: reads the shipped
    default model and its card. ``benchmarks``: reads ``results/benchmarks/*.json`` (parameter
    ``benchmarks_dir``). ``writes``: entries of ``results/<profile>/`` it writes. A stage that reads or writes
    ``results/<profile>/`` gets the parameter ``results_dir``. ``min_figures``: figures (image outputs) its
    executed notebook shows at least, on any profile.
    """

    name: str
    notebook: str
    title: str
    dataset: bool = False
    reads: tuple[str, ...] = ()
    default_model: bool = False
    benchmarks: bool = False
    writes: tuple[str, ...] = ()
    min_figures: int = 0

    @property
    def uses_results(self) -> bool:
        """Whether the stage reads or writes ``results/<profile>/`` (and so gets ``results_dir``)."""
        return bool(self.reads or self.writes)

    @property
    def executed(self) -> str:
        """The executed notebook, relative to the project root without suffix (as ``_toc.yml`` lists it)."""
        return f"book/executed/{self.notebook}"


STAGES: tuple[Stage, ...] = (
    Stage("simulation", "01_simulation", "Simulating 4D-STEM diffraction patterns of polar KNN",
          dataset=True, min_figures=15),
    Stage("training", "02_training", "Training the polarization classifiers",
          dataset=True, writes=("training.json", "models"), min_figures=6),
    Stage("domain_gap", "03_domain_gap", "The domain gap: from ideal simulations to realistic scans",
          dataset=True, reads=("training.json", "models"), default_model=True, writes=("domain_gap.json",),
          min_figures=5),
    Stage("periodicity", "04_error_periodicity", "Error periodicity: where in the unit cell decisions fail",
          reads=("models",), default_model=True, writes=("periodicity.json",), min_figures=5),
    Stage("defects", "05_defects", "Defects: what irregular predictions reveal",
          reads=("models",), default_model=True, writes=("defects.json",), min_figures=5),
    Stage("explorer", "06_explorer", "Exploring a scan: maps, patterns and predictions",
          reads=("training.json", "models"), default_model=True, writes=("explorer.json",), min_figures=3),
    Stage("results", "07_results", "Results",
          reads=("training.json", "explorer.json"), default_model=True, min_figures=3),
    Stage("performance", "08_performance", "Performance", benchmarks=True),
)


def by_name(name: str) -> Stage:
    """The stage called ``name`` (or whose notebook is ``name``)."""
    for stage in STAGES:
        if name in (stage.name, stage.notebook):
            return stage
    raise KeyError(f"no stage {name!r}; the stages are {', '.join(s.name for s in STAGES)}")


def check(stages: tuple[Stage, ...] = STAGES) -> None:
    """Raise ValueError unless names and notebooks are unique and every stage reads only what an earlier
    stage wrote."""
    for field in ("name", "notebook", "title"):
        values = [getattr(s, field) for s in stages]
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise ValueError(f"two stages share the {field} {duplicates[0]!r}")
    written: set[str] = set()
    for stage in stages:
        unwritten = [r for r in stage.reads if r not in written]
        if unwritten:
            raise ValueError(f"stage {stage.name} reads {unwritten[0]!r}, which no earlier stage writes")
        written.update(stage.writes)
