"""The default model's card: what :func:`polar4d_lib.default_model.build_default_model` found, as numbers
(JSON) and as a Markdown page beside them.

:func:`card_path` says where a card goes (MODEL_CARD.md beside the model), :func:`write` writes both files
atomically and :func:`read` reads the numbers back; :func:`earlier` reads those of a card that ``--add``
extends, checked to be made like the new ones. :func:`markdown` renders the page: how the model was made,
the candidates' table, the realistic scans it was chosen on and the independent test scans, each by scan
step, and the verdict on the aim (:data:`TARGET_SHARE` of patterns right and every scan's majority).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from polar4d_lib import conventions, experiments, inputs, realistic, reliability
from polar4d_lib.atomic import atomic_write


def earlier(card: Path, profile: str, seed: int, data: str | os.PathLike) -> dict[str, Any]:
    """The numbers of the card that ``add`` extends, after checking that they were made like the new ones."""
    path = card.with_suffix(".json")
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: --add extends a model card built by polar4d default-model; "
                                "build it first (without --add)")
    numbers = read(card)
    from polar4d_lib.datasets import open_dataset

    sha = open_dataset(data).attrs.get("content_sha256")
    made = (numbers.get("profile"), numbers.get("seed"), numbers.get("dataset_sha256"))
    if made != (profile, seed, sha):
        raise ValueError(f"the card {path} was made with profile, seed, data {made}, not {(profile, seed, sha)}: "
                         "--add compares only candidates trained alike; rebuild without --add")
    if not Path(numbers["model"]).exists():
        raise FileNotFoundError(f"the card's model {numbers['model']} is missing; rebuild without --add")
    return numbers


def card_path(card: str | os.PathLike | None, out: Path) -> Path:
    """The Markdown card's path: ``card``, or MODEL_CARD.md beside ``out``. Its numbers go beside it as
    .json, so a ``card`` ending in .json (which would be overwritten by the Markdown) is refused."""
    if card is None:
        return out.with_name("MODEL_CARD.md")
    card = Path(card)
    if card.suffix.lower() == ".json":
        raise ValueError(f"--card {card} names the card's numbers: pass the Markdown card, "
                         f"{card.with_suffix('.md')} (its numbers are read from and written beside it as .json)")
    return card


def read(card: Path) -> dict[str, Any]:
    """The numbers written beside the Markdown ``card`` (its .json)."""
    return json.loads(card.with_suffix(".json").read_text())


def write(numbers: dict[str, Any], card: Path) -> None:
    """The card's numbers as JSON beside it and the card as Markdown, each written atomically."""
    experiments.write_json(numbers, card.with_suffix(".json"))
    atomic_write(card, lambda tmp: Path(tmp).write_text(markdown(numbers)))


#: The bar the issue sets for the default model on realistic scans.
TARGET_SHARE = 0.95


def aim(summary: dict[str, Any]) -> str:
    """'met' when a :func:`polar4d_lib.realistic.summary` reaches the issue's bar, else 'not met'."""
    return "met" if summary["mean_share_correct"] >= TARGET_SHARE and summary["majority_correct"] == 1.0 else "not met"


def verdict(rows: list[dict[str, Any]]) -> str:
    """The aim's verdict on scored scans, by scan step where it differs between steps."""
    by_step = {step: aim(s) for step, s in realistic.summary_by_step(rows).items()}
    if aim(realistic.summary(rows)) == "met":
        return "met."
    if "met" not in by_step.values():
        return "**not met** — do not trust this model's maps on real data without checking them."
    met = [f"{step:.3g} Å" for step, v in by_step.items() if v == "met"]
    missed = [f"{step:.3g} Å" for step, v in by_step.items() if v != "met"]
    return (f"met at a scan step of {', '.join(met)}; **not met** at {', '.join(missed)} — do not trust this "
            "model's maps at those steps on real data without checking them.")


def pct(x: float) -> str:
    """A share (0–1) as a percentage with one decimal: '12.3 %'."""
    return f"{100 * x:.1f} %"


def scan_lines(rows: list[dict[str, Any]], stacks: bool = False) -> list[str]:
    """A card's table of scored realistic scans and its summary by scan step."""
    lines = ["| scan | thickness | dose (e/pattern) | detector | step | window | share right | majority |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        step = f"unknown ({row['true_step_A']:.3g} Å)" if row["scan_step_A"] is None else f"{row['scan_step_A']:.3g} Å"
        lines.append(f"| {row['scan']} | {row['thickness_nm']:g} nm | {row['dose_e_per_pattern']:.0f} | "
                     f"{row['detector_px']} px × {row['sampling_mrad']:.2f} mrad | {step} | {row['window_px']} | "
                     f"{pct(row['share_correct'])} | {row['majority_class']} ({'right' if row['majority_correct'] else 'wrong'}) |")
    probe, limit = realistic.alias_free_step_A()
    lines += ["", "By scan step: " + "; ".join(
        f"{step:.3g} Å ({s['scans']} scans): {pct(s['mean_share_correct'])} of patterns right, worst scan "
        f"{pct(s['min_share_correct'])}, majority right on {pct(s['majority_correct'])} (aim {aim(s)})"
        for step, s in realistic.summary_by_step(rows).items()) + ". "
        f"Steps below λ/(2α) = {limit:.2f} Å ({probe.energy_kev:g} keV, {probe.semiangle_mrad:g} mrad) average a cell "
        "the same wherever the raster sits; coarser ones alias the probe-position dependence into the average "
        "(`pacbed.alias_free_step_A`)"
        + ("; this model does not average them: it keeps the parts of the cell apart." if stacks
           else ", and `polar4d predict` warns about them.")]
    return lines


def markdown(numbers: dict[str, Any]) -> str:
    """The model card (Markdown) of :func:`polar4d_lib.default_model.build_default_model`'s numbers."""
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
        lines.append(f"| {c['kind']} | {pct(ch['accuracy'])} | {ch['macro_f1']:.3f} | {ch['mean_angular_error_deg']:.1f}° | "
                     f"{pct(cr['mean_share_correct'])} | {pct(cr['min_share_correct'])} | {pct(cr['majority_correct'])} | "
                     f"{electrons} | {c['seconds']:.0f} s |")
    if chosen.get("window_choice"):
        lines += ["", "Electrons per window, chosen on the realistic scans below (a window grows by whole cells until "
                  "it holds them; the most patterns right wins, the fewest electrons on a tie): "
                  + "; ".join(f"{float(e):.2g} e: {pct(s['mean_share_correct'])}" for e, s in chosen["window_choice"].items())
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
        *scan_lines(chosen["scans"], stacks),
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
            *scan_lines(test["scans"], stacks),
            "",
            f"Test summary: {pct(t['mean_share_correct'])} of patterns right on average (worst scan "
            f"{pct(t['min_share_correct'])}), the majority class right on {pct(t['majority_correct'])} of "
            f"{t['scans']} scans (aim {aim(t)}).",
        ]
    lines += [
        "",
        f"Summary (the scans it was chosen on): {pct(r['mean_share_correct'])} of patterns right on average (worst scan {pct(r['min_share_correct'])}), "
        f"the majority class right on {pct(r['majority_correct'])} of {r['scans']} scans. The aim is "
        f"{pct(TARGET_SHARE)} of patterns and every scan's majority"
        + (", judged on the independent test scans: " if test is not None else ": ")
        + verdict(test["scans"] if test is not None else chosen["scans"]),
        "",
        "## Abstention",
        "",
        f"`polar4d predict --abstain-below T` gives class −1 where the {reliability.DEFAULT} score of a position's class",
        f"probabilities (`polar4d_lib.reliability.{reliability.SCORES[reliability.DEFAULT].__name__}`, 0–1) is below T;",
        "`--abstain-score` picks another. The book's error-periodicity chapter chose it: of the scores `predict` can",
        "threshold, it ranks this model's right decisions above its wrong ones best (or ties for best) by the",
        "area under the selective-accuracy curve (`results/<profile>/periodicity.json`, `score_auc`).",
        "",
    ]
    off_grid = numbers.get("off_grid")
    if off_grid:
        lines += [
            "## Scan steps that do not divide the cell",
            "",
            "Realistic scans drawn like the independent test scans, but at steps and thicknesses "
            f"({', '.join(f'{t:g}' for t in off_grid['thicknesses_nm'])} nm)",
            "that neither training nor judging used: one specimen per class, each raster starting at a random origin.",
            f"Measured by {off_grid['measured_by']} at commit {off_grid['commit']}:",
            "",
            "| step | positions per cell | scans | share right | worst scan | majority right |",
            "|---|---|---|---|---|---|",
            *(f"| {s['step_A']:.3g} Å | {realistic.RealisticScanSpec.a_A / s['step_A']:.1f} | {s['scans']} | "
              f"{pct(s['mean_share_correct'])} | {pct(s['min_share_correct'])} | {pct(s['majority_correct'])} |"
              for s in off_grid["steps"]),
            "",
            f"The aim is {pct(TARGET_SHARE)} of patterns and every scan's majority at every step: "
            + (f"not met at {', '.join(missed)}." if (missed := [f"{s['step_A']:.3g} Å" for s in off_grid["steps"]
                                                                  if aim(s) != "met"]) else "met.")
            + (f" Scans with fewer than {bins} positions per cell (steps coarser than a/{bins},"
               f" {realistic.RealisticScanSpec.a_A / bins:.2f} Å) are refused: this model folds a cell into {bins} × {bins}"
               " parts, and no shipped model reads fewer." if stacks else ""),
            "",
        ]
    irregular = numbers.get("irregularity")
    if irregular:
        auc = irregular["roc_auc"]
        lines += [
            "## Irregularity",
            "",
            f"`polar4d predict` also writes `irregularity`: the score “{irregular['score']}” of its probability map",
            "(`polar4d_lib.irregularity.DEFAULT`; higher = more likely a defect or a domain wall). "
            f"{irregular['measured_by']} measured it on this model: ROC AUC {auc['vacancies']:.2f} for the",
            "positions over isolated oxygen-vacancy columns, "
            + (f"{auc['clustered vacancies']:.2f} over a cluster of them, " if "clustered vacancies" in auc else "")
            + f"and {auc['walls']:.2f} for the positions within half a cell of a wall"
            " (all steps and doses pooled; 0.5 knows nothing, below 0.5 the score is lower there than elsewhere).",
            "",
        ]
    lines += [
        "## Versions",
        "",
        ", ".join(f"{k} {v}" for k, v in numbers["versions"].items()),
        "",
    ]
    return "\n".join(lines)
