"""The shipped default model: train candidates, choose by robustness on realistic scans, write a model card.

``polar4d default-model --data D --profile robust --out data/default_model.pt`` trains every candidate
kind with the profile's ``default_model`` settings (position averages, D4, Poisson, detector fields; see
profiles.yaml) on the blocked split of ``D``, scores each on the synthetic holdout (whole-group position
averages) and on the profile's held-out realistic scans (:mod:`polar4d_lib.realistic`, scored exactly as
``polar4d predict`` maps them), keeps the candidate with the highest mean share of patterns right on the
realistic scans, and writes it with a model card (:mod:`polar4d_lib.model_card`: Markdown, and the same
numbers as JSON beside it).
With a ``window_choice`` section, each candidate's electrons per window (how far its window grows at low
dose) are chosen on the same scans from the profile's grid (:func:`choose_min_electrons`). Where the
profile has a ``realistic_test`` section, the chosen model is also scored on that second, independent
draw of scans, which nothing is chosen on: the card's unbiased figures. ``--retest``
(:func:`retest_default_model`) scores a built model on the test scans again when their draw changes.
"""

from __future__ import annotations

from dataclasses import asdict
import os
import platform
import time
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from polar4d_lib import config, conventions, experiments, inputs, model_card, models, profiles, realistic

DEFAULT_CANDIDATES: tuple[str, ...] = ("linear", "cnn-cls", "pca-knn", "physics")


def candidates_for(profile: str) -> tuple[str, ...]:
    """The candidates of ``profile``: ``DEFAULT_CANDIDATES``, and every other known kind whose recipe has a
    section of its own (:func:`training_stage`) that the profile sets (the stack CNN's ``stack_model``; it
    needs a ``cell_grid`` dataset)."""
    own = [k for k in models.KNOWN_KINDS if k not in DEFAULT_CANDIDATES and training_stage(k) != "default_model"]
    return DEFAULT_CANDIDATES + tuple(k for k in own if profiles.section(profile, training_stage(k)))


def training_stage(kind: str) -> str:
    """The profile section a candidate's recipe comes from: its input kind's (:mod:`polar4d_lib.inputs`;
    every candidate reads windows of one cell)."""
    return inputs.of_model_kind(kind, conventions.A_A).recipe_section


def _check_profile(profile: str) -> None:
    if not profiles.section(profile, "default_model"):
        raise ValueError(f"profile {profile!r} has no default_model section in profiles.yaml; use --profile robust "
                         "(the shipped model) or smoke (its recipe at test size)")


def build_default_model(
    data: str | os.PathLike, profile: str, out: str | os.PathLike, seed: int = 888,
    candidates: Sequence[str] | None = None, command: str = "", card: str | os.PathLike | None = None,
    add: bool = False,
) -> tuple[models.PolarizationModel, dict[str, Any]]:
    """Train ``candidates`` (None: :func:`candidates_for` the profile), score them, save the most robust at
    ``out`` and its card. Returns the chosen model and the card's numbers.

    With ``add``, the candidates join those of the card already beside ``out`` (built from the same
    profile, seed and dataset content, which is checked): their rows are kept, and where one of them still
    wins, its model file and test scores are kept too; the card records both commands."""
    _check_profile(profile)
    out = Path(out)
    card = model_card.card_path(card, out)
    candidates = candidates_for(profile) if candidates is None else tuple(candidates)
    earlier = model_card.earlier(card, profile, seed, data) if add else None
    unknown = [k for k in candidates if k not in models.KNOWN_KINDS]
    if unknown or not candidates:
        raise ValueError(f"unknown candidate kinds {unknown}; choose from {', '.join(models.KNOWN_KINDS)}")
    ranges = realistic.RealisticRanges.for_profile(profile)
    scans = realistic.realistic_scans(ranges)
    grid = tuple(float(e) for e in profiles.section(profile, "window_choice").get("min_electrons", ()))
    if not all(e > 0 and e != float("inf") for e in grid):
        raise ValueError(f"window_choice.min_electrons of profile {profile!r} must be electrons > 0, got {list(grid)}")
    results = []
    best = None
    bar = tqdm(candidates, desc="default-model candidates", unit="model", disable=not config.get("progress_bar"))
    for kind in bar:
        bar.set_postfix_str(kind)
        start = time.perf_counter()
        checkpoint = out.with_name(f"{out.name}.{kind}.checkpoint") if kind in models.NEURAL_KINDS else None
        model, holdout = experiments.train_and_evaluate(kind, data, profile, seed, "blocked", checkpoint_path=checkpoint,
                                                        stage=training_stage(kind))
        rows, window_choice = choose_min_electrons(model, scans, grid)
        if checkpoint is not None and checkpoint.exists():  # scored: the checkpoint only served resuming
            checkpoint.unlink()
        result = {"kind": kind, "holdout": holdout, "realistic": realistic.summary(rows), "scans": rows,
                  "min_electrons": getattr(model.preprocessor, "average_min_electrons", None),
                  "window_choice": window_choice, "seconds": round(time.perf_counter() - start, 1)}
        results.append(result)
        bar.write(f"{kind}: {model_card.pct(result['realistic']['mean_share_correct'])} of realistic patterns right, "
                  f"holdout {model_card.pct(holdout['accuracy'])}, {result['seconds']:.0f} s")
        if best is None or result["realistic"]["mean_share_correct"] > best[1]["realistic"]["mean_share_correct"]:
            best = (model, result)
    model, chosen = best
    if earlier is not None:
        kept = [c for c in earlier["candidates"] if c["kind"] not in candidates]
        old = max(kept, key=lambda c: c["realistic"]["mean_share_correct"], default=None)
        results = kept + results
        if old is not None and old["realistic"]["mean_share_correct"] >= chosen["realistic"]["mean_share_correct"]:
            numbers = {**earlier, "candidates": results, "added_by": command}  # the earlier choice stands
            model_card.write(numbers, card)
            return models.load_model(numbers["model"]), numbers
    numbers = {
        "command": command, "profile": profile, "seed": seed, "data": str(data),
        "dataset_sha256": model.metadata.get("dataset_sha256"), "dataset_parameters": dataset_parameters(data),
        "chosen": chosen["kind"],
        "train_settings": model.metadata.get("train_settings"), "preprocessor": model.preprocessor.to_dict(),
        "realistic_ranges": experiments.plain(asdict(ranges)), "candidates": results,
        "versions": {**model.metadata.get("versions", {}), "python": platform.python_version()},
    }
    model.metadata["realistic"] = chosen["realistic"]
    test = independent_test(model, profile, command)
    if test is not None:  # scored once, on the chosen model only: nothing is chosen on these scans
        numbers["test"] = test
        model.metadata["realistic_test"] = test["realistic"]
        bar.write(f"{chosen['kind']} on the independent test scans: "
                  f"{model_card.pct(test['realistic']['mean_share_correct'])} of patterns right")
    path = model.save(out.with_suffix(model.suffix))  # a network's .pt, pca-knn's or physics' .npz
    for stale in {out.with_suffix(".pt"), out.with_suffix(".npz")} - {path}:
        if stale.exists():  # an older default of the other kind would shadow or confuse the new one
            stale.unlink()
    numbers["model"] = str(path)
    if earlier is not None:
        numbers["command"], numbers["added_by"] = earlier["command"], command
    model_card.write(numbers, card)
    return model, numbers


def independent_test(model: models.PolarizationModel, profile: str, command: str = "") -> dict[str, Any] | None:
    """The card's test section: ``model`` scored on ``profile``'s independent test scans
    (``realistic_test``), with the ranges and the command that scored it; None where the profile has none."""
    ranges = realistic.test_ranges(profile)
    if ranges is None:
        return None
    rows = realistic.score_scans(model, realistic.realistic_scans(ranges))
    return {"realistic_ranges": experiments.plain(asdict(ranges)), "realistic": realistic.summary(rows), "scans": rows,
            "command": command}


def retest_default_model(
    out: str | os.PathLike, profile: str, command: str = "", card: str | os.PathLike | None = None,
) -> tuple[models.PolarizationModel, dict[str, Any]]:
    """Score the default model at ``out`` (built by :func:`build_default_model`, its card beside it or at
    ``card``) on ``profile``'s independent test scans as they are now, and rewrite the card's test section and
    the model's ``realistic_test`` metadata; nothing is trained or chosen. For when the test draw changes."""
    _check_profile(profile)
    out = Path(out)
    card = model_card.card_path(card, out)
    if not out.exists() or not card.with_suffix(".json").exists():
        raise FileNotFoundError(f"{out} or {card.with_suffix('.json')} missing: --retest scores a model built by "
                                "polar4d default-model again; build it first (without --retest)")
    numbers = model_card.read(card)
    model = models.load_model(out)
    if numbers.get("profile") != profile or numbers.get("chosen") != model.kind:
        raise ValueError(f"the card {card.with_suffix('.json')} is for a {numbers.get('chosen')} model of profile "
                         f"{numbers.get('profile')!r}, not this {model.kind} and {profile!r}; pass the card's --profile and --out")
    test = independent_test(model, profile, command)
    if test is None:
        raise ValueError(f"profile {profile!r} has no realistic_test section: there are no test scans to score on")
    numbers["test"] = test
    model.metadata["realistic_test"] = test["realistic"]
    model.save(out)
    model_card.write(numbers, card)
    return model, numbers


def choose_min_electrons(
    model: models.PolarizationModel, scans: list[realistic.RealisticScan], grid: Sequence[float],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]] | None]:
    """Score ``model`` on ``scans`` with each of ``grid``'s electrons per window (a window grows by whole
    cells until it holds them: fewer give finer maps, more steadier ones) and keep on its preprocessor the
    one with the most patterns right, the fewest electrons on a tie. Returns that one's scored scans and
    each grid value's summary (None where there is no grid or the model does not average positions)."""
    if not grid or getattr(model.preprocessor, "average_window_A", None) is None:
        return realistic.score_scans(model, scans), None
    scored = {}
    for electrons in sorted(grid):
        model.preprocessor.average_min_electrons = float(electrons)
        scored[float(electrons)] = realistic.score_scans(model, scans)
    best = max(scored, key=lambda e: (realistic.summary(scored[e])["mean_share_correct"], -e))
    model.preprocessor.average_min_electrons = best
    return scored[best], {f"{e:g}": realistic.summary(rows) for e, rows in scored.items()}


def dataset_parameters(data: str | os.PathLike) -> dict[str, Any]:
    """What the training data spans (from the dataset's own attributes)."""
    from polar4d_lib.datasets import open_dataset

    ds = open_dataset(data)
    p = ds.attrs["parameters"]
    keys = ("variants", "lateral_cells", "disorder_seeds", "tilts_mrad", "tilt_max_mrad", "thicknesses_nm", "probe_settings",
            "positions_per_setting", "cell_grid", "defocus_nm", "astigmatism_max_nm", "cs_um")
    return {"patterns": len(ds), **{k: p[k] for k in keys if k in p}, "phonon_configs": p["simulation"]["phonon_configs"]}
