"""The shipped default model: train candidates, choose by robustness on realistic scans, write a model card.

``polar4d default-model --data D --profile robust --out data/default_model.pt`` trains every candidate
kind with the profile's ``default_model`` settings (position averages, D4, Poisson, detector fields; see
profiles.yaml) on the blocked split of ``D``, scores each on the synthetic holdout (whole-group position
averages) and on the profile's held-out realistic scans (:mod:`polar4d_lib.realistic`, scored exactly as
``polar4d predict`` maps them), keeps the candidate with the highest mean share of patterns right on the
realistic scans, and writes it with a model card (Markdown) and the same numbers as JSON beside it.
With a ``window_choice`` section, each candidate's electrons per window (how far its window grows at low
dose) are chosen on the same scans from the profile's grid (:func:`choose_min_electrons`). Where the
profile has a ``realistic_test`` section, the chosen model is also scored on that second, independent
draw of scans, which nothing is chosen on: the card's unbiased figures. ``--retest``
(:func:`retest_default_model`) scores a built model on the test scans again when their draw changes.
"""

from __future__ import annotations

import json
from dataclasses import asdict
import os
import platform
import time
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from polar4d_lib import config, conventions, experiments, inputs, models, profiles, realistic
from polar4d_lib.atomic import atomic_write

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
    card = _card_path(card, out)
    candidates = candidates_for(profile) if candidates is None else tuple(candidates)
    earlier = _earlier_card(card, profile, seed, data) if add else None
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
        bar.write(f"{kind}: {_pct(result['realistic']['mean_share_correct'])} of realistic patterns right, "
                  f"holdout {_pct(holdout['accuracy'])}, {result['seconds']:.0f} s")
        if best is None or result["realistic"]["mean_share_correct"] > best[1]["realistic"]["mean_share_correct"]:
            best = (model, result)
    model, chosen = best
    if earlier is not None:
        kept = [c for c in earlier["candidates"] if c["kind"] not in candidates]
        old = max(kept, key=lambda c: c["realistic"]["mean_share_correct"], default=None)
        results = kept + results
        if old is not None and old["realistic"]["mean_share_correct"] >= chosen["realistic"]["mean_share_correct"]:
            numbers = {**earlier, "candidates": results, "added_by": command}  # the earlier choice stands
            _write_card(numbers, card)
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
                  f"{_pct(test['realistic']['mean_share_correct'])} of patterns right")
    path = model.save(out.with_suffix(model.suffix))  # a network's .pt, pca-knn's or physics' .npz
    for stale in {out.with_suffix(".pt"), out.with_suffix(".npz")} - {path}:
        if stale.exists():  # an older default of the other kind would shadow or confuse the new one
            stale.unlink()
    numbers["model"] = str(path)
    if earlier is not None:
        numbers["command"], numbers["added_by"] = earlier["command"], command
    _write_card(numbers, card)
    return model, numbers


def _earlier_card(card: Path, profile: str, seed: int, data: str | os.PathLike) -> dict[str, Any]:
    """The numbers of the card that ``add`` extends, after checking that they were made like the new ones."""
    path = card.with_suffix(".json")
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: --add extends a model card built by polar4d default-model; "
                                "build it first (without --add)")
    numbers = json.loads(path.read_text())
    from polar4d_lib.datasets import open_dataset

    sha = open_dataset(data).attrs.get("content_sha256")
    made = (numbers.get("profile"), numbers.get("seed"), numbers.get("dataset_sha256"))
    if made != (profile, seed, sha):
        raise ValueError(f"the card {path} was made with profile, seed, data {made}, not {(profile, seed, sha)}: "
                         "--add compares only candidates trained alike; rebuild without --add")
    if not Path(numbers["model"]).exists():
        raise FileNotFoundError(f"the card's model {numbers['model']} is missing; rebuild without --add")
    return numbers


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
    card = _card_path(card, out)
    if not out.exists() or not card.with_suffix(".json").exists():
        raise FileNotFoundError(f"{out} or {card.with_suffix('.json')} missing: --retest scores a model built by "
                                "polar4d default-model again; build it first (without --retest)")
    numbers = json.loads(card.with_suffix(".json").read_text())
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
    _write_card(numbers, card)
    return model, numbers


def _card_path(card: str | os.PathLike | None, out: Path) -> Path:
    """The Markdown card's path: ``card``, or MODEL_CARD.md beside ``out``. Its numbers go beside it as
    .json, so a ``card`` ending in .json (which would be overwritten by the Markdown) is refused."""
    if card is None:
        return out.with_name("MODEL_CARD.md")
    card = Path(card)
    if card.suffix.lower() == ".json":
        raise ValueError(f"--card {card} names the card's numbers: pass the Markdown card, "
                         f"{card.with_suffix('.md')} (its numbers are read from and written beside it as .json)")
    return card


def _write_card(numbers: dict[str, Any], card: Path) -> None:
    """The card's numbers as JSON beside it and the card as Markdown, each written atomically."""
    experiments.write_json(numbers, card.with_suffix(".json"))
    atomic_write(card, lambda tmp: Path(tmp).write_text(model_card(numbers)))


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


#: The bar the issue sets for the default model on realistic scans.
TARGET_SHARE = 0.95


def _aim(summary: dict[str, Any]) -> str:
    """'met' when a :func:`realistic.summary` reaches the issue's bar, else 'not met'."""
    return "met" if summary["mean_share_correct"] >= TARGET_SHARE and summary["majority_correct"] == 1.0 else "not met"


def _verdict(rows: list[dict[str, Any]]) -> str:
    """The aim's verdict on scored scans, by scan step where it differs between steps."""
    by_step = {step: _aim(s) for step, s in realistic.summary_by_step(rows).items()}
    if _aim(realistic.summary(rows)) == "met":
        return "met."
    if "met" not in by_step.values():
        return "**not met** — do not trust this model's maps on real data without checking them."
    met = [f"{step:.3g} Å" for step, v in by_step.items() if v == "met"]
    missed = [f"{step:.3g} Å" for step, v in by_step.items() if v != "met"]
    return (f"met at a scan step of {', '.join(met)}; **not met** at {', '.join(missed)} — do not trust this "
            "model's maps at those steps on real data without checking them.")


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _scan_lines(rows: list[dict[str, Any]], stacks: bool = False) -> list[str]:
    """A card's table of scored realistic scans and its summary by scan step."""
    lines = ["| scan | thickness | dose (e/pattern) | detector | step | window | share right | majority |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        step = f"unknown ({row['true_step_A']:.3g} Å)" if row["scan_step_A"] is None else f"{row['scan_step_A']:.3g} Å"
        lines.append(f"| {row['scan']} | {row['thickness_nm']:g} nm | {row['dose_e_per_pattern']:.0f} | "
                     f"{row['detector_px']} px × {row['sampling_mrad']:.2f} mrad | {step} | {row['window_px']} | "
                     f"{_pct(row['share_correct'])} | {row['majority_class']} ({'right' if row['majority_correct'] else 'wrong'}) |")
    probe, limit = realistic.alias_free_step_A()
    lines += ["", "By scan step: " + "; ".join(
        f"{step:.3g} Å ({s['scans']} scans): {_pct(s['mean_share_correct'])} of patterns right, worst scan "
        f"{_pct(s['min_share_correct'])}, majority right on {_pct(s['majority_correct'])} (aim {_aim(s)})"
        for step, s in realistic.summary_by_step(rows).items()) + ". "
        f"Steps below λ/(2α) = {limit:.2f} Å ({probe.energy_kev:g} keV, {probe.semiangle_mrad:g} mrad) average a cell "
        "the same wherever the raster sits; coarser ones alias the probe-position dependence into the average "
        "(`pacbed.alias_free_step_A`)"
        + ("; this model does not average them: it keeps the parts of the cell apart." if stacks
           else ", and `polar4d predict` warns about them.")]
    return lines


def model_card(numbers: dict[str, Any]) -> str:
    """The model card (Markdown) of :func:`build_default_model`'s numbers."""
    chosen = next(c for c in numbers["candidates"] if c["kind"] == numbers["chosen"])
    h, r = chosen["holdout"], chosen["realistic"]
    stacks = inputs.of_model_kind(numbers["chosen"], numbers["preprocessor"].get("average_window_A")).folds_cell
    cell_stacks = (numbers.get("train_settings") or {}).get("cell_stacks") or {}
    bins = cell_stacks.get("bins", 4) if stacks else None
    lines = [
        f"# polar4d default model: {numbers['chosen']}",
        "",
        "Classifies the projected polarization of KNN (8 classes, 45° apart; `shared/CONVENTIONS.md`) from",
        (f"the 4D-STEM patterns of one unit cell of probe positions around each scan position, folded into {bins} × {bins}"
         " parts of the cell (each part's mean pattern one input channel, the part with the most dark-field intensity"
         " first: `pacbed.cell_stack`"
         + ("; trained on and averaged over the stack as read from either column site, half a cell apart"
            if cell_stacks.get("half_cell") else "") + ")" if stacks else
         "4D-STEM patterns averaged over one unit cell of probe positions around each scan position"),
        f"(window {numbers['preprocessor'].get('average_window_A')} Å; `polar4d predict` takes the window in",
        "positions from the scan step, or from the lattice it sees in the scan"
        + (", and folds it at the same period)" if stacks else ")")
        + (f", grown by whole cells until a window holds {numbers['preprocessor']['average_min_electrons']:.2g} electrons"
           " (at low dose the map's resolution becomes coarser than one cell)."
           if numbers["preprocessor"].get("average_min_electrons") else "."),
        "",
        "## How it was made",
        f"- Command: `{numbers['command']}`"
        + (f"; candidates added by `{numbers['added_by']}`" if numbers.get("added_by") else ""),
        f"- Profile `{numbers['profile']}`, seed {numbers['seed']}, data `{numbers['data']}`",
        f"  (content SHA-256 `{numbers['dataset_sha256']}`)",
        f"- Data: `{json.dumps(numbers.get('dataset_parameters', {}))}`",
        f"- Preprocessing: `{json.dumps(numbers['preprocessor'])}`",
        f"- Training settings: `{json.dumps(numbers['train_settings'])}`",
        "",
        "## Candidates (chosen by the mean share of patterns right on the realistic scans)",
        "",
        "| model | holdout accuracy | holdout macro-F1 | holdout mean angular error | realistic: mean share right | worst scan | scans with the right majority | electrons per window | train + score time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in numbers["candidates"]:
        ch, cr = c["holdout"], c["realistic"]
        electrons = f"{c['min_electrons']:.2g}" if c.get("min_electrons") else "–"
        lines.append(f"| {c['kind']} | {_pct(ch['accuracy'])} | {ch['macro_f1']:.3f} | {ch['mean_angular_error_deg']:.1f}° | "
                     f"{_pct(cr['mean_share_correct'])} | {_pct(cr['min_share_correct'])} | {_pct(cr['majority_correct'])} | "
                     f"{electrons} | {c['seconds']:.0f} s |")
    if chosen.get("window_choice"):
        lines += ["", "Electrons per window, chosen on the realistic scans below (a window grows by whole cells until "
                  "it holds them; the most patterns right wins, the fewest electrons on a tie): "
                  + "; ".join(f"{float(e):.2g} e: {_pct(s['mean_share_correct'])}" for e, s in chosen["window_choice"].items())
                  + f" for {chosen['kind']}."]
    lines += [
        "",
        f"Synthetic holdout: {h['split']}; {h['n']} test inputs ({h['test_inputs']}), {h['n_train']} training inputs.",
        "",
        "Confusion matrix of the holdout (rows true, columns predicted; "
        + " ".join(conventions.CLASS_NAMES) + "):",
        "",
        "```",
        *[" ".join(f"{v:4d}" for v in row) for row in h["confusion"]],
        "```",
        "",
        "## Realistic held-out scans (the candidates are chosen on these)",
        "Single-domain specimens never trained on (other K/Na disorder seed, frozen-phonon thermal vibrations,",
        "mistilt, probe aberrations), each thickness recorded by a random detector; every other scan has no",
        "scan step (window from the lattice). Each specimen is scanned at the ranges' step and, with `strides`, at",
        f"multiples of it (every s-th position). Ranges: `{json.dumps(numbers['realistic_ranges'])}`.",
        "",
        *_scan_lines(chosen["scans"], stacks),
    ]
    test = numbers.get("test")
    if test is not None:
        t = test["realistic"]
        lines += [
            "",
            "## Independent test scans (nothing is chosen on these)",
            "A second draw made the same way with another seed (each class's variant, the aberrations, mistilt and",
            "detectors drawn anew) from K/Na disorder seeds that neither training nor the scans above use, "
            f"{test['realistic_ranges'].get('specimens_per_class', 1)} specimen(s) per class. The",
            "candidate, its electrons per window and the seed (where one was picked among runs) are chosen on the",
            f"scans above, so those scores are optimistic; these are not. Ranges: `{json.dumps(test['realistic_ranges'])}`."
            + (f" Scored by `{test['command']}`." if test.get("command") else ""),
            "",
            *_scan_lines(test["scans"], stacks),
            "",
            f"Test summary: {_pct(t['mean_share_correct'])} of patterns right on average (worst scan "
            f"{_pct(t['min_share_correct'])}), the majority class right on {_pct(t['majority_correct'])} of "
            f"{t['scans']} scans (aim {_aim(t)}).",
        ]
    lines += [
        "",
        f"Summary (the scans it was chosen on): {_pct(r['mean_share_correct'])} of patterns right on average (worst scan {_pct(r['min_share_correct'])}), "
        f"the majority class right on {_pct(r['majority_correct'])} of {r['scans']} scans. The aim is "
        f"{_pct(TARGET_SHARE)} of patterns and every scan's majority"
        + (", judged on the independent test scans: " if test is not None else ": ")
        + _verdict(test["scans"] if test is not None else chosen["scans"]),
        "",
        "## Versions",
        "",
        ", ".join(f"{k} {v}" for k, v in numbers["versions"].items()),
        "",
    ]
    return "\n".join(lines)
