# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Results
#
# **Overview.** The numbers of this book in one place, read from what the chapters wrote to
# `results/<profile>/` (`training.json` from **training**, `explorer.json` from **explorer**) — nothing on
# this page is typed by hand. Rerun a chapter with other parameters and this page follows.
#
# **Prerequisites.** Chapters **training** and **explorer** executed for the same profile (`polar4d book`
# runs them in order). The last section reads the shipped default model's card, `data/MODEL_CARD.json`,
# written by `polar4d default-model` when the model was built.

# %% tags=["parameters"]
profile = "smoke"  # the profile whose results are summarised
results_dir = None  # None → f"results/{profile}"
model_card = None  # the default model's card (JSON); None → the shipped one beside data/default_model.*
show_default_model = True  # False leaves the default model's section out

# %% tags=["remove-input"]
# %matplotlib inline
import json
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from polar4d_lib import conventions, inputs, plotting, realistic
from polar4d_lib.cli import default_model_path

results_dir = Path(f"results/{profile}" if results_dir is None else results_dir)
missing = [name for name in ("training.json", "explorer.json") if not (results_dir / name).exists()]
if missing:
    raise FileNotFoundError(f"{', '.join(missing)} missing in {results_dir}; run chapters 02_training and "
                            f"06_explorer with profile={profile!r} first (polar4d book --profile {profile})")
training = json.loads((results_dir / "training.json").read_text())
explorer = json.loads((results_dir / "explorer.json").read_text())

# %% [markdown]
# ## Single patterns, held-out specimens and the paper's random split

# %% tags=["hide-input"]
chance = 100 / conventions.N_CLASSES
lines = []
for split, per_kind in training["aggregate"].items():
    accuracy = {kind: 100 * agg["accuracy"]["mean"] for kind, agg in per_kind.items()}
    best = max(accuracy, key=accuracy.get)
    n_seeds = per_kind[best]["accuracy"]["n_seeds"]
    spread = f" ± {100 * per_kind[best]['accuracy']['std']:.1f}" if n_seeds > 1 else ""
    lines.append(f"* **{training['splits'][split]}** — best: **{best}** {accuracy[best]:.1f}{spread} % "
                 f"(n = {n_seeds} seed{'s' if n_seeds > 1 else ''}; chance {chance:.1f} %); physics baseline {accuracy.get('physics', float('nan')):.1f} %; "
                 f"PCA-kNN {accuracy.get('pca-knn', float('nan')):.1f} %.")
lines.append(f"* Seeds: {training['seeds']}; profile `{training['profile']}`; {training['training_seconds']:.0f} s "
             "of training.")
display(Markdown("\n".join(lines)))

# %% [markdown]
# The scores of every model on each split, as heatmaps: the mean over the seeds in each cell, with its
# standard deviation below it where a model has more than one seed (a spread of one seed is undefined).
# Accuracy and macro-F1 in %, higher is better (chance 12.5 %); the mean angular error between the
# predicted and the true class direction in degrees, lower is better (guessing gives about 90°). A blank
# cell: the model was not trained on that split.

# %%
plotting.score_heatmaps(training["aggregate"])

# %% [markdown]
# ## A scan across a domain wall

# %% tags=["hide-input"]
scores = pd.DataFrame(explorer["scores"])
mean = scores.groupby("model")["positions right (%)"].mean().sort_values(ascending=False)
majority_cols = [c for c in scores if c.startswith("majority in ")]
right = {}
for model, group in scores.groupby("model"):
    right[model] = int(sum((group[c] == c.split()[2]).sum() for c in majority_cols))
total = len(majority_cols) * scores["scan"].nunique()
display(Markdown("\n".join(
    f"* **{m}**: {v:.1f} % of positions right; majority class right in {right[m]} of {total} domains"
    for m, v in mean.items())))

# %% [markdown]
# Per model and thickness (scan): the share of positions right, and the majority class each model reads
# in each domain.

# %%
positions = scores.pivot(index="model", columns="scan",
                         values="positions right (%)")
display(plotting.heatmap_table(positions, label="positions right (%)",
                               vmin=0, vmax=100))
display(scores.set_index(["model", "scan"])[majority_cols])

# %% [markdown]
# ## The shipped default model on realistic scans
#
# `polar4d predict` without `--model` uses the default model in `data/`. It was chosen among the
# candidates below by its share of patterns right on held-out realistic scans: specimens never trained
# on, with thermal vibrations, mistilt and probe aberrations, each recorded by a random detector (dose,
# sampling, size, centre offset, PSF, background). Every candidate reads the patterns of one unit cell of
# probe positions around each position — the pattern models their mean (PACBED), the stack model
# (`cnn-stack`) the cell folded into 4 × 4 parts — so its maps have the resolution of one cell — or of
# several at a low dose, where the window grows until it holds the electrons the model asks for (chosen
# on the same scans). A second, independent draw of scans, on which nothing was chosen, scores it once.

# %% tags=["hide-input"]
if not show_default_model:
    display(Markdown("*(left out: `show_default_model=False`)*"))
else:
    card_path = Path(model_card) if model_card is not None else default_model_path().with_name("MODEL_CARD.json")
    if not card_path.exists():
        raise FileNotFoundError(f"{card_path} missing; build the default model with `polar4d default-model` "
                                "or pass show_default_model=False")
    card = json.loads(card_path.read_text())
    candidates = pd.DataFrame([{
        "model": c["kind"], "holdout accuracy (%)": 100 * c["holdout"]["accuracy"],
        "realistic: patterns right (%)": 100 * c["realistic"]["mean_share_correct"],
        "worst scan (%)": 100 * c["realistic"]["min_share_correct"],
        "scans with the right majority (%)": 100 * c["realistic"]["majority_correct"],
    } for c in card["candidates"]]).set_index("model")
    display(Markdown(f"Chosen: **{card['chosen']}**, built with `{card['command']}` (seed {card['seed']})"
                     + (f"; candidates added by `{card['added_by']}`." if card.get("added_by") else ".")))
    display(plotting.heatmap_table(candidates, title="default-model candidates (%)", label="%", vmin=0, vmax=100))
    chosen = next(c for c in card["candidates"] if c["kind"] == card["chosen"])
    if chosen.get("window_choice"):
        display(Markdown(
            f"Electrons per window for {chosen['kind']}, chosen on the realistic scans (the most patterns right; "
            "single-domain scans cannot see the resolution a larger window costs, so the grid's top bounds it): "
            + ", ".join(f"{float(e):.2g} e → {100 * s['mean_share_correct']:.1f} %"
                        for e, s in chosen["window_choice"].items())
            + f"; the model asks for **{chosen['min_electrons']:.2g}**."))
    beam, limit = realistic.alias_free_step_A()
    test = card.get("test")
    sets = {"chosen on": chosen["scans"], **({"independent test": test["scans"]} if test else {})}
    by_step = pd.DataFrame([{
        "scans": name, "scan step (Å)": step, f"below λ/(2α) = {limit:.2f} Å": step < limit, "n": s["scans"],
        "patterns right (%)": 100 * s["mean_share_correct"],
        "worst scan (%)": 100 * s["min_share_correct"], "scans with the right majority (%)": 100 * s["majority_correct"],
    } for name, rows in sets.items() for step, s in realistic.summary_by_step(rows).items()]).set_index(["scans", "scan step (Å)"])
    display(Markdown(
        "The chosen model by the scan step of the realistic scans (the same specimens, every s-th position; "
        "`scan_step_A` below is empty where the step was withheld). Only steps below "
        f"λ/(2α) = {limit:.2f} Å ({beam.energy_kev:g} keV, {beam.semiangle_mrad:g} mrad) average a cell the same "
        "wherever the raster sits (chapter **simulation**, section 4)"
        + ("; the chosen model does not average a cell, it keeps the cell's parts apart (`pacbed.cell_stack`). "
           if inputs.of_model_kind(card["chosen"], card["preprocessor"].get("average_window_A")).folds_cell else ". ")
        + ("The *independent test* scans are a second draw (other specimens, aberrations, detectors and K/Na "
           "disorder) on which nothing was chosen (not the candidate, its electrons per window or the seed): the "
           "unbiased figures."
           if test else "This card has no independent test scans: the figures are those the model was chosen on.")))
    display(by_step.round(1))
    per_scan = pd.DataFrame(chosen["scans"])[["scan", "dose_e_per_pattern", "sampling_mrad", "detector_px",
                                              "scan_step_A", "window_px", "share_correct", "majority_class"]]
    display(Markdown("The scans the model was chosen on, one by one (share of positions right, 0–1):"))
    display(per_scan.set_index("scan").rename(columns={
        "dose_e_per_pattern": "dose (e⁻)", "sampling_mrad": "mrad/px", "detector_px": "px", "scan_step_A": "step (Å)",
        "window_px": "window (px)", "share_correct": "share right", "majority_class": "majority"}).round(2))

# %% [markdown]
# ## Reading these numbers
#
# * Chance is 12.5 % per pattern. Scores on held-out specimens are the honest ones; the random split
#   shares near-identical neighbours between training and test and is shown to compare with the paper.
# * The `smoke` profile trains for seconds on a few hundred patterns and tests the machinery only; the
#   `default` profile (the published book) trains one seed on a few thousand patterns for a few epochs to
#   fit the 30-minute budget on two cores. See **Limitations**.
#
# ## What next
#
# The study's numbers above are single-seed, short-training scores of the `default` profile. The default
# model's card (`data/MODEL_CARD.md`) says which data it was trained on; the `robust` dataset (training
# data spanning real acquisition conditions) is what it is meant to be rebuilt from. The next page,
# **Performance**, shows what the benchmarks measured (run times and scores, with the machine they ran on).
