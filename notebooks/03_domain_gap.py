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
# # The domain gap: from ideal simulations to realistic scans
#
# **Overview.** The paper's central finding is that models trained on ideal simulations fail on experimental
# scans. This chapter measures that gap for every model of the study and for the shipped default model:
#
# 1. the test suites — synthetic rows (the paper's 1S–7S: supercells and thicknesses the models never saw),
#    realistic rows (1E–5E: frozen phonons, mistilt, aberrations, random detectors, with and without the
#    detector's blur and background) and one-factor sweeps, each nuisance alone;
# 2. the paper's table: every model on every row, per pattern and with its decisions pooled over one unit
#    cell of probe positions;
# 3. the paper's ablation (augmentation, the centre-of-mass filter) plus D4 symmetry and detector
#    randomisation, retrained here;
# 4. which nuisance breaks which model, and from what value;
# 5. pooling as the bridge: accuracy against the electrons behind each decision;
# 6. the gap itself: a distance between training and test features, against the accuracy lost;
# 7. test-time adaptation without labels;
# 8. what holds of the paper's claims here, and what a microscopist should do.
#
# Every number is written to `results/<profile>/domain_gap.json`.
#
# **Prerequisites.** Chapter **training** (its models in `results/<profile>/models/` and its scores in
# `training.json`) and the shipped default model (`data/MODEL_CARD.md`). The test scans are simulated here
# (PRISM, cached by their parameters in `.cache/polar4d/suites` and `.cache/polar4d/scans`) from the
# profile's `domain_gap` section of `polar4d_lib/profiles.yaml`; with `smoke` everything is tiny and the
# numbers only show that the machinery works.

# %% tags=["parameters"]
profile = "smoke"  # smoke | default | paper — sizes of the suites (profiles.yaml, section domain_gap)
dataset_path = None  # the training dataset (zarr), for the training side of the gap measure; None → f"data/{profile}.zarr"
results_dir = None  # where chapter 02 saved training.json and its models; None → f"results/{profile}"
default_model = True  # also evaluate the shipped default model (the cnn-stack: one unit cell per decision)
suite_overrides = None  # dict overriding the profile's domain_gap section (polar4d_lib.suites.GapSettings fields)
pooling_cells = [0.5, 1]  # pooling windows (unit cells per side) of the pooling curves; 1 is the table's
gap_kinds = ["pca-knn", "cnn-cls"]  # models whose features measure the gap (PCA scores, a network's embedding)
gap_patterns = 400  # patterns per set (training sample, each row) the gap measure draws
adaptation_rows = None  # rows adapted to without labels; None → the last realistic row (the detector effects on)
seed = 0  # the draws of the gap measure's samples
progress_bar = False  # tqdm bars while suites simulate and the ablation trains (noisy in a book)

# %% tags=["remove-input"]
# %matplotlib inline
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from matplotlib.figure import Figure
from scipy import stats

from polar4d_lib import adaptation, config, conventions, datasets, evaluation, experiments, plotting, shift, suites

chapter_start = time.perf_counter()
config.set({"progress_bar": progress_bar})
results_dir = Path(f"results/{profile}" if results_dir is None else results_dir)
dataset_path = Path(f"data/{profile}.zarr" if dataset_path is None else dataset_path)
fitted = experiments.chapter_models(results_dir, profile, None, shipped=default_model)
SHIPPED = experiments.SHIPPED
if not (results_dir / "training.json").exists():
    raise FileNotFoundError(f"{results_dir / 'training.json'} missing; run chapter 02_training with "
                            f"profile={profile!r} first (polar4d book --profile {profile})")
training = json.loads((results_dir / "training.json").read_text())
order = [c for c in evaluation.PAPER_COLUMNS if c in fitted] + [c for c in fitted if c not in evaluation.PAPER_COLUMNS]
fitted = {c: fitted[c] for c in order}
settings = suites.GapSettings.for_profile(profile, suite_overrides)
chance = 100 / conventions.N_CLASSES
print(f"{len(fitted)} models: {', '.join(fitted)}")

# %% [markdown]
# ## 1. The test suites
#
# No scan below was trained on: every specimen has a K/Na arrangement (disorder seed) that no training set
# uses. **Synthetic rows** keep the training conditions — the simulation's ideal detector, no noise, no
# phonons — and change only the supercell and the thickness. **Realistic rows** are the held-out scans of
# `polar4d_lib.realistic` (frozen phonons, a mistilt, random defocus, astigmatism and Cs, each scan recorded
# by its own random detector), once as the default model is judged (no detector blur or background) and
# once with the acquisition model fully on (a point-spread function, a background and dark noise), at each
# of the profile's scan steps; their ranges are listed below the tables.
# **Sweeps** start from the training conditions and move one nuisance at a time.

# %% tags=["hide-input"]
start = time.perf_counter()
rows, sweeps = suites.build(profile, settings)
suite_seconds = time.perf_counter() - start
row_names = suites.row_names(rows)


def describe(items):
    first = items[0].description
    samplings = [i.scan.q_sampling_mrad for i in items]
    return {"scans": len(items), "patterns": sum(int(np.prod(i.scan.data.shape[:2])) for i in items),
            "detector": f"{', '.join(str(n) for n in sorted({i.scan.data.shape[-1] for i in items}))} px, "
                        f"{min(samplings):.2g}–{max(samplings):.2g} mrad/px",
            "thickness (nm)": ", ".join(f"{t:g}" for t in sorted({float(i.description['thickness_nm']) for i in items})),
            "step (Å)": ", ".join(f"{t:.3g}" for t in sorted({float(i.description['true_step_A']) for i in items})),
            "phonons": first.get("phonon_configs", 0)}


suite_table = pd.DataFrame({name: describe([i for i in rows if i.row == name]) for name in row_names}).T
suite_table.index.name = "row"
display(suite_table)
sweep_table = pd.DataFrame([{"factor": f, "values": ", ".join(f"{v:g}" for v in settings.sweeps[f]),
                             "unit": suites.FACTORS[f].unit, "what changes": suites.FACTORS[f].description}
                            for f in settings.sweeps]).set_index("factor")
with pd.option_context("display.max_colwidth", None):
    display(sweep_table)
r = suites.realistic_ranges(profile, settings, full=True)
display(Markdown(
    f"Realistic rows: {r.cells} × {r.cells} cells, {len(r.classes)} classes × {r.specimens_per_class} specimen(s), "
    f"{r.phonon_configs} frozen-phonon configurations, mistilt ≤ {r.tilt_max_mrad} mrad, defocus "
    f"{r.defocus_nm[0]:g} to {r.defocus_nm[1]:g} nm, astigmatism ≤ {r.astigmatism_max_nm:g} nm, Cs {r.cs_um[0]:g} to "
    f"{r.cs_um[1]:g} µm; detectors: {r.dose_e_per_pattern[0]:.0e}–{r.dose_e_per_pattern[1]:.0e} e/pattern, "
    f"{r.sampling_mrad[0]:g}–{r.sampling_mrad[1]:g} mrad/px, centre offset ≤ {r.center_offset_max_px:g} px; with the "
    f"detector effects on, a PSF of σ ≤ {r.psf_max_px:g} px, a background of {r.background_counts:g} counts/px and "
    f"dark noise of σ = {r.dark_noise_sigma:g} counts."))
print(f"{len(rows)} row scans and {len(sweeps)} sweep scans ready in {suite_seconds:.0f} s")

# %% [markdown]
# One class (RM) as each kind of row records it: the ideal pattern of the training conditions, the same
# class in a realistic scan, and with the detector's blur and background on (the mean over each scan, log
# scale, each at its own detector sampling).

# %% tags=["hide-input"]
examples = {}
for name in row_names:
    for item in rows:
        if item.row == name and item.accepted == (0,) and name not in examples:
            examples[name] = item
picked = [examples[n] for n in list(examples)[:1] + [n for n in examples if n.startswith("R")][:1]
          + [n for n in examples if "PSF" in n][:1]]
means = [i.scan.data.mean(axis=(0, 1)) for i in picked]
plotting.pattern_grid([m / m.sum() for m in means], [i.scan.q_sampling_mrad for i in picked], titles=[i.row for i in picked],
                      shared_scale=False, colorbar_label="fraction of the pattern per pixel")

# %% [markdown]
# ## 2. The paper's table
#
# Each model maps every scan as `polar4d predict` would (its own preprocessing and input kind) and is scored
# by the share of probe positions predicted as the scan's class (the paper's score), averaged over the
# row's scans. **Per pattern** is the model's own map: one decision per probe position from one pattern
# (the study's networks, PCA-kNN, the physics baseline) or from the unit cell around it (the shipped
# cnn-stack). **Pooled** averages each model's class probabilities over the unit cell of positions around
# each position, so that every model decides from one cell of patterns. The two holdout rows are the
# training chapter's scores on its test patterns (single patterns; the random split only for the models
# it trained there). Below each table: the share of scans whose majority class is right.

# %% tags=["hide-input"]
start = time.perf_counter()
row_scores = {column: suites.score(model, rows, cells=(0, 1)) for column, model in fitted.items()}
sweep_columns = [c for c, m in fitted.items() if c == SHIPPED or settings.sweep_kinds is None or m.kind in settings.sweep_kinds]
sweep_scores = {column: suites.score(fitted[column], sweeps, cells=(0, *pooling_cells)) for column in sweep_columns}
scoring_seconds = time.perf_counter() - start

holdout_rows = {split: f"holdout: {training['splits'][split].split(':')[0]}" for split in training["aggregate"]}


def row_mean(scores, row, key):
    values = [s[key] for s in scores if s["row"] == row and s[key] is not None]
    return float(np.mean(values)) if values else float("nan")


cells = []
for column, model in fitted.items():
    for split, row in holdout_rows.items():
        agg = training["aggregate"][split].get(model.kind)
        if agg is not None and column != SHIPPED:
            cells.append({"row": row, "column": column, "accuracy_mean": agg["accuracy"]["mean"],
                          "accuracy_std": agg["accuracy"]["std"] if agg["accuracy"]["n_seeds"] > 1 else None,
                          "n_seeds": agg["accuracy"]["n_seeds"], "majority_correct": None,
                          "pooled_accuracy_mean": None, "pooled_majority_correct": None})
    for row in row_names:
        cells.append({"row": row, "column": column, "accuracy_mean": row_mean(row_scores[column], row, "share_0"),
                      "accuracy_std": None, "n_seeds": 1, "majority_correct": row_mean(row_scores[column], row, "majority_0"),
                      "pooled_accuracy_mean": row_mean(row_scores[column], row, "share_1"),
                      "pooled_majority_correct": row_mean(row_scores[column], row, "majority_1")})
table = pd.DataFrame(cells)
all_rows = list(holdout_rows.values()) + row_names


def grid(value):
    out = table.pivot(index="row", columns="column", values=value).astype(float).reindex(index=all_rows, columns=list(fitted))
    out.index.name, out.columns.name = "test set", "model"
    return 100 * out

# %% tags=["hide-input"]
fig = Figure(figsize=(9, 2 * (0.45 * len(all_rows) + 2.2)), layout="constrained")
axes = fig.subplots(2, 1)
spread = grid("accuracy_std") if table["n_seeds"].max() > 1 else None
plotting.heatmap_table(grid("accuracy_mean"), spread, label="patterns right (%)", vmin=0, vmax=100, ax=axes[0],
                       title="per pattern (the model's own map)")
plotting.heatmap_table(grid("pooled_accuracy_mean"), label="patterns right (%)", vmin=0, vmax=100, ax=axes[1],
                       title="pooled over one unit cell")
fig

# %% tags=["hide-input"]
fig = Figure(figsize=(9, 2 * (0.45 * len(row_names) + 2.2)), layout="constrained")
axes = fig.subplots(2, 1)
plotting.heatmap_table(grid("majority_correct").loc[row_names], label="scans with the right majority (%)", vmin=0,
                       vmax=100, ax=axes[0], fmt=".0f", cmap="mako", title="majority right, per pattern")
plotting.heatmap_table(grid("pooled_majority_correct").loc[row_names], label="scans with the right majority (%)",
                       vmin=0, vmax=100, ax=axes[1], fmt=".0f", cmap="mako", title="majority right, pooled")
fig

# %% tags=["remove-input"]
synthetic_rows = [r for r in row_names if r.startswith("S ")]
realistic_rows = [r for r in row_names if r.startswith("R ")]
acc = grid("accuracy_mean")
pooled = grid("pooled_accuracy_mean")
single_columns = [c for c in fitted if c != SHIPPED]


def mean_over(columns, rows_, frame=acc):
    """The mean of ``frame`` (%) over the rows and columns given, NaN where none of them was scored."""
    values = frame.loc[rows_, [c for c in columns if c in frame]].to_numpy(dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def worst(values):
    """The lowest finite value (%), NaN where none was scored."""
    values = np.asarray(values, dtype=float)
    return float(np.nanmin(values)) if np.isfinite(values).any() else float("nan")


def pct(value):
    return "—" if not np.isfinite(value) else f"{value:.1f} %"


holdout = holdout_rows.get("blocked", all_rows[0])
best_single = max(single_columns, key=lambda c: np.nan_to_num(mean_over([c], realistic_rows), nan=-1.0))
lines = [f"* **Held-out specimens, single patterns:** the best study model scores "
         f"{pct(np.nanmax(acc.loc[holdout, single_columns]))} (chance {chance:.1f} %).",
         f"* **Realistic rows, per pattern:** the best study model ({best_single}) scores "
         f"{pct(mean_over([best_single], realistic_rows))} on average; pooled over one cell "
         f"{pct(mean_over([best_single], realistic_rows, pooled))}."]
if np.nanmax(acc.loc[holdout, single_columns]) < 2 * chance:
    lines.append("* At this profile's training scale the study's models barely beat chance even on held-out "
                 "specimens of their own simulations, so their columns cannot show a gap opening; they show the "
                 "machinery. Models trained to convergence are what the paper's table compares.")
if SHIPPED in fitted:
    refused = [s for s in row_scores[SHIPPED] if s["refused"] and s["row"] in realistic_rows]
    realistic_scans = [s for s in row_scores[SHIPPED] if s["row"] in realistic_rows]
    lines.append(f"* **The shipped cnn-stack** scores {pct(mean_over([SHIPPED], realistic_rows))} on the realistic rows "
                 f"(worst row {pct(worst(acc.loc[realistic_rows, SHIPPED]))}) and "
                 f"{pct(mean_over([SHIPPED], synthetic_rows))} on the synthetic rows (worst "
                 f"{pct(worst(acc.loc[synthetic_rows, SHIPPED]))}).")
    if refused:
        lines.append(f"* It refuses {len(refused)} of the {len(realistic_scans)} realistic scans (left out of its "
                     f"means), as `polar4d predict` would: {refused[0]['refused']}")
display(Markdown("\n".join(lines)))

# %% [markdown]
# ## 3. The paper's ablation
#
# The paper trained its models without augmentation, with its three augmentations (blur, brightness and
# contrast jitter, noise) and with its centre-of-mass filter before them. Here the same regimes, plus the
# label-aware D4 symmetry and a detector randomisation (Poisson re-counting over a range of doses, a small
# blur, a narrower field of view, D4), are retrained on the training chapter's headline split with the
# profile's `domain_gap.ablation` recipe, then scored on its held-out specimens and on the synthetic and
# realistic rows (per pattern). PCA-kNN fits un-augmented patterns whatever the regime: only the filter
# changes it.

# %% tags=["hide-input"]
start = time.perf_counter()
ablation = []
headline = next(iter(training["aggregate"]))
for regime, overrides in settings.ablation.get("regimes", {}).items():
    for kind in settings.ablation["kinds"]:
        model, score = experiments.train_and_evaluate(kind, dataset_path, profile, int(training["seeds"][0]), headline,
                                                      overrides={**settings.ablation.get("train", {}), **overrides})
        scored = suites.score(model, [i for i in rows if i.row in synthetic_rows + realistic_rows], cells=(0,))
        record = {"regime": regime, "column": evaluation.column_name(kind), "n_train": score["n_train"],
                  "holdout": score["accuracy"]}
        for name, selected in (("synthetic", synthetic_rows), ("realistic", realistic_rows)):
            values = [s["share_0"] for s in scored if s["row"] in selected and s["share_0"] is not None]
            record[name] = float(np.mean(values)) if values else None
        ablation.append(record)
ablation = pd.DataFrame(ablation)
ablation_seconds = time.perf_counter() - start
if len(ablation):
    view = (100 * ablation.set_index(["regime", "column"])[["holdout", "synthetic", "realistic"]].astype(float)).unstack("column")
    view.columns = [f"{column}: {where}" for where, column in view.columns]
    view = view.reindex(index=list(settings.ablation["regimes"]))
    view.index.name, view.columns.name = "training regime", "model: test set"
    display(plotting.heatmap_table(view, label="patterns right (%)", vmin=0, vmax=100,
                                   title="ablation, per pattern"))
    print(f"{len(ablation)} trainings in {ablation_seconds:.0f} s; training patterns: "
          f"{sorted(set(ablation['n_train']))}")

# %% [markdown]
# ## 4. Which nuisance breaks which model
#
# Each panel moves one factor from the training conditions (the dashed line marks them); one curve per
# model family: for the study's encoders (CNN, ResNet, VGG) the best at each value of the heads the profile
# sweeps (`sweep_kinds` of its `domain_gap` section; every head where it names none), PCA-kNN, the physics
# baseline and the shipped cnn-stack. Per pattern, every class, the share of positions right.

# %% tags=["hide-input"]
def family(column):
    return column.split("-")[0] if column != SHIPPED else SHIPPED


def family_curve(result, fam):
    """The best of a family's columns at each value of a sweep (NaN where none of them scored)."""
    curves = np.array([result[c] for c in sweep_columns if family(c) == fam], dtype=float)
    return np.array([np.nanmax(v) if np.isfinite(v).any() else np.nan for v in curves.T])


sweep_results = {}
for factor in settings.sweeps:
    values = [float(v) for v in settings.sweeps[factor]]
    sweep_results[factor] = {"values": values, "unit": suites.FACTORS[factor].unit}
    for column in sweep_columns:
        sweep_results[factor][column] = [
            float(np.mean([s["share_0"] for s in sweep_scores[column] if s["row"] == factor and s["value"] == v
                           and s["share_0"] is not None] or [np.nan])) for v in values]
families = list(dict.fromkeys(family(c) for c in sweep_columns))
ncols = 4
nrows = -(-len(sweep_results) // ncols)
fig = Figure(figsize=(3.4 * ncols, 2.7 * nrows), layout="constrained")
axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
for ax, (factor, result) in zip(axes, sweep_results.items()):
    for fam in families:
        curve = family_curve(result, fam)
        ax.plot(result["values"], 100 * curve, "o-", ms=3, label=fam)
    if suites.FACTORS[factor].base(settings) is not None:
        ax.axvline(suites.FACTORS[factor].base(settings), color="0.6", ls="--", lw=0.8)
    if factor == "dose":
        ax.set_xscale("log")
    ax.axhline(chance, color="0.8", lw=0.8)
    ax.set_ylim(0, 102)
    ax.set_title(factor, fontsize=9)
    ax.set_xlabel(result["unit"], fontsize=8)
axes[0].set_ylabel("patterns right (%)")
for ax in axes[len(sweep_results):]:
    ax.axis("off")
axes[0].legend(fontsize=7)
fig

# %% tags=["remove-input"]
lines = []
for factor, result in sweep_results.items():
    for fam in families:
        curve = family_curve(result, fam)
        if not np.any(np.isfinite(curve)):
            continue
        best = np.nanmax(curve)
        falls = [v for v, a in zip(result["values"], curve) if np.isfinite(a) and a < best - 0.2]
        if falls:
            lines.append({"factor": factor, "family": fam, "best (%)": round(100 * best, 1),
                          "worst (%)": round(100 * np.nanmin(curve), 1),
                          "first value 20 points below its best": falls[0], "unit": result["unit"]})
breaks = pd.DataFrame(lines)
display(Markdown("Where a family loses more than 20 points of its best along a sweep:" if len(breaks) else
                 "No family loses more than 20 points of its best along any sweep."))
if len(breaks):
    display(breaks.set_index(["factor", "family"]))

# %% [markdown]
# ## 5. Pooling as the bridge
#
# A decision that rests on more patterns rests on more electrons. Along the dose sweep, each model's class
# probabilities are averaged over windows of ½, 1 and 2 unit cells of probe positions (the cnn-stack already
# decides from one cell; its windows add to its own). The horizontal axis is the electrons behind each
# decision: the dose per pattern times the positions in the window. Pooling trades resolution for
# robustness: a window of one cell at a step of a/4 costs a factor 4 in map resolution.

# %% tags=["hide-input"]
pooling = []
for column in sweep_columns:
    for s in sweep_scores[column]:
        if s["row"] != "dose" or s["share_0"] is None:
            continue
        own = s["window_px"] or 1
        step = settings.step_A
        for c in (0, *pooling_cells):
            w = 1 if c == 0 else max(1, int(round(c * settings.a_A / step)))
            side = min(own + w - 1, s["scan_px"])
            pooling.append({"column": column, "family": family(column), "dose": s["value"], "cells": c,
                            "electrons": s["value"] * side ** 2, "accuracy": s[f"share_{c:g}"]})
pooling = pd.DataFrame(pooling)
curves = pooling.groupby(["family", "column", "cells", "dose"], as_index=False)[["electrons", "accuracy"]].mean()
fig = Figure(figsize=(7.5, 4), layout="constrained")
ax = fig.subplots()
for fam in families:
    part = curves[curves.family == fam]
    best_column = part.groupby("column")["accuracy"].mean().idxmax()
    part = part[part.column == best_column].sort_values("electrons")
    ax.plot(part["electrons"], 100 * part["accuracy"], "o", ms=4, label=fam if best_column == fam else f"{fam} ({best_column})")
ax.set_xscale("log")
ax.axhline(chance, color="0.8", lw=0.8)
ax.set_xlabel("electrons per decision")
ax.set_ylabel("patterns right (%)")
ax.set_ylim(0, 102)
ax.legend(fontsize=7)
fig

# %% [markdown]
# ## 6. Measuring the gap
#
# How far is a test row from the training data, as a model sees it? For the PCA scores of PCA-kNN and a
# network's embedding, the squared maximum mean discrepancy (Gaussian kernel, median bandwidth) and the
# Fréchet distance between the features of training patterns and of each row's patterns, against the
# accuracy the model loses from its held-out specimens to that row. A distance that predicts the failure
# ranks the rows as the accuracy drop does (Spearman's ρ).

# %% tags=["hide-input"]
ds = datasets.open_dataset(dataset_path)
rng = np.random.default_rng(seed)
train_rows = np.sort(rng.choice(len(ds), size=min(gap_patterns, len(ds)), replace=False))
train_patterns = ds["patterns"][train_rows]
train_sampling = float(ds.attrs["q_sampling_mrad"])
gap = []
for kind in gap_kinds:
    column = evaluation.column_name(kind)
    if column not in fitted:
        continue
    model = fitted[column]
    reference = shift.embed(model, train_patterns, train_sampling)
    holdout = table[(table.row == holdout_rows.get("blocked", "")) & (table.column == column)]["accuracy_mean"]
    holdout = float(holdout.iloc[0]) if len(holdout) else float("nan")
    for row in row_names:
        items = [i for i in rows if i.row == row]
        per_scan = max(1, gap_patterns // len(items))
        features = []
        for item in items:
            patterns = item.patterns()
            pick = rng.choice(len(patterns), size=min(per_scan, len(patterns)), replace=False)
            features.append(shift.embed(model, patterns[pick], item.scan.q_sampling_mrad))
        features = np.concatenate(features)
        accuracy = float(table[(table.row == row) & (table.column == column)]["accuracy_mean"].iloc[0])
        gap.append({"column": column, "row": row, "mmd2": shift.mmd2(reference, features, seed=seed),
                    "frechet": shift.frechet_distance(reference, features), "accuracy": accuracy,
                    "accuracy_drop": holdout - accuracy})
gap = pd.DataFrame(gap)
if len(gap):
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    correlations = []
    for ax, measure, label in zip(axes, ("mmd2", "frechet"), ("MMD² (features)", "Fréchet distance (features)")):
        for column, part in gap.groupby("column"):
            ax.plot(part[measure], 100 * part["accuracy_drop"], "o", label=column)
            rho = stats.spearmanr(part[measure], part["accuracy_drop"]).statistic if len(part) > 2 else float("nan")
            correlations.append({"model": column, "measure": measure, "spearman_rho": float(rho)})
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy lost from held-out specimens (points)")
        ax.set_xscale("symlog", linthresh=1e-3)
    axes[0].legend(fontsize=8)
    display(pd.DataFrame(correlations).pivot(index="model", columns="measure", values="spearman_rho").round(2))
    display(fig)

# %% [markdown]
# ## 7. Test-time adaptation without labels
#
# Two ways to meet a new scan without its labels: re-estimate the batch-normalisation statistics of a
# network on the scan's own patterns (`batchnorm`), and move a prototype model's class means to the scan's
# embeddings by soft assignment (`prototypes`, :mod:`polar4d_lib.adaptation`), against no adaptation
# (`none`). Per pattern, on the realistic rows named in the parameters (by default the last, with the
# detector effects on); each scan is adapted to on its own.

# %% tags=["hide-input"]
start = time.perf_counter()
target_rows = realistic_rows[-1:] if adaptation_rows is None else list(adaptation_rows)
adapted = []
for column, model in fitted.items():
    methods = [m for m in adaptation.METHODS if adaptation.applies(m, model)]
    if len(methods) < 2:  # only "none": nothing to compare
        continue
    for method in methods:
        for item, unadapted in zip(rows, row_scores[column]):
            if item.row not in target_rows or unadapted["refused"]:
                continue
            if method == methods[0]:  # "none": the table's own score of the scan
                accuracy = unadapted["share_0"]
            else:
                adapted_model = adaptation.METHODS[method](model, item.patterns(), item.scan.q_sampling_mrad)
                accuracy = suites.score(adapted_model, [item], cells=(0,))[0]["share_0"]
            adapted.append({"row": item.row, "column": column, "method": method, "accuracy": accuracy})
adapted = pd.DataFrame(adapted)
adaptation_seconds = time.perf_counter() - start
if len(adapted):
    summary = 100 * adapted.groupby(["column", "method"])["accuracy"].mean().unstack("method")
    summary = summary[[m for m in adaptation.METHODS if m in summary]]
    display(plotting.heatmap_table(summary, label="patterns right (%)", vmin=0, vmax=100,
                                   title="realistic rows, per pattern, by adaptation"))
print(f"adaptation in {adaptation_seconds:.0f} s")

# %% [markdown]
# ## 8. What holds, and what to do
#
# The statements below are computed from the tables above.

# %% tags=["remove-input"]
heads = {h: [c for c in single_columns if c.endswith(f"-{h}")] for h in ("Cls", "Reg", "Proto")}
networks = [c for c in single_columns if c.split("-")[0] in ("Conv", "VGG", "ResNet")]


def verdict(a, b, better, worse):
    """``better`` or ``worse`` for a against b (%), unless both are near chance, where no difference counts."""
    if max(a, b) < 2 * chance:
        return f"both lie near chance ({chance:.1f} %), so the difference says nothing at this training scale."
    return better if a > b else worse


proto, cls = mean_over(heads["Proto"], realistic_rows), mean_over(heads["Cls"], realistic_rows)
claims = [f"* **Does the prototype regime bridge the gap better?** On the realistic rows, per pattern, the prototype "
          f"heads score {pct(proto)} and the classification heads {pct(cls)} (regression "
          f"{pct(mean_over(heads['Reg'], realistic_rows))}), mean over encoders: "
          + verdict(proto, cls, "the prototype heads do better here.", "not here.")]
if "PCA" in fitted:
    pca, nets = mean_over(["PCA"], realistic_rows), mean_over(networks, realistic_rows)
    claims.append(f"* **Does PCA-kNN?** It scores {pct(pca)} on the realistic rows against {pct(nets)} for the "
                  f"networks on average: " + verdict(pca, nets, "better.", "no better."))
before, after = mean_over(single_columns, realistic_rows), mean_over(single_columns, realistic_rows, pooled)
claims.append(f"* **Pooling decisions** over one cell moves the study models from {pct(before)} to {pct(after)} "
              f"on the realistic rows (mean over models).")
if SHIPPED in fitted:
    stack = mean_over([SHIPPED], realistic_rows)
    claims.append(f"* **Pooling inputs**: the cnn-stack, trained on cell stacks (a cell's patterns kept apart by "
                  f"their place in the cell) recorded by random detectors, scores {pct(stack)} on the realistic rows "
                  f"it maps, against {pct(max(before, after))} for the study models' best way of reading them.")
if len(ablation):
    for column, part in ablation.groupby("column", sort=False):
        part = part.dropna(subset=["realistic"])
        if len(part):
            best, worst = part.loc[part["realistic"].idxmax()], part.loc[part["realistic"].idxmin()]
            claims.append(f"* **Ablation, {column}:** on the realistic rows *{best['regime']}* scores "
                          f"{pct(100 * best['realistic'])} and *{worst['regime']}* {pct(100 * worst['realistic'])} (the "
                          f"highest and the lowest; on held-out specimens {pct(100 * best['holdout'])} and "
                          f"{pct(100 * worst['holdout'])}): " + verdict(100 * best["realistic"], 100 * worst["realistic"],
                                                                    "the regime matters.", "the regime matters."))
if len(adapted):
    gain = adapted.pivot_table(index="column", columns="method", values="accuracy", aggfunc="mean")
    for method in [m for m in adaptation.METHODS if m != "none" and m in gain]:
        delta = 100 * (gain[method] - gain["none"]).dropna()
        claims.append(f"* **Adaptation `{method}`** changes realistic accuracy by {delta.mean():+.1f} points on "
                      f"average ({delta.min():+.1f} to {delta.max():+.1f}) over {len(delta)} models.")
display(Markdown("\n".join(claims)))

# %% [markdown]
# What a microscopist can take from this, as far as the numbers above carry it: compare a model on the
# realistic rows (not on its own test split) before trusting its maps; a model that reads single patterns
# inherits every difference between its training simulations and the microscope, which pooling its decisions
# over a cell narrows only as far as the pooling bullet above says. The shipped model reads whole cells: it
# asks for steps of a/4 or finer (in the scan-step sweep it refuses coarser ones) and for enough electrons per
# window (its window grows otherwise, up to the whole scan).

# %% tags=["hide-input"]
output = {
    "profile": profile,
    "settings": {"suites": experiments.plain(settings.__dict__), "pooling_cells": pooling_cells, "gap_kinds": gap_kinds,
                 "gap_patterns": gap_patterns, "seed": seed},
    "columns": list(fitted),
    "sweep_columns": sweep_columns,
    "rows": all_rows,
    "cells": [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in c.items()} for c in cells],
    "sweeps": sweep_results,
    "pooling": curves.to_dict(orient="records"),
    "gap": gap.to_dict(orient="records"),
    "adaptation": adapted.to_dict(orient="records"),
    "ablation": ablation.to_dict(orient="records"),
    "seconds": {"suites": suite_seconds, "scoring": scoring_seconds, "ablation": ablation_seconds,
                "adaptation": adaptation_seconds,
                "chapter": time.perf_counter() - chapter_start},
}
path = experiments.write_json(output, results_dir / "domain_gap.json")
print(f"wrote {path} ({len(output['cells'])} cells, {len(output['rows'])} rows, {len(output['columns'])} columns, "
      f"{len(output['sweeps'])} sweeps) in {output['seconds']['chapter']:.0f} s")
