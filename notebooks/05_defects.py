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
# # Defects: what irregular predictions reveal
#
# **Overview.** The paper reports that irregular predictions coincide with crystal defects, qualitatively.
# This chapter measures it on simulated specimens whose defects are known:
#
# 1. specimens with ground truth — oxygen vacancies counted column by column, isolated and in a cluster of
#    neighbouring columns, and domain walls (90° neutral, 180° charged) at places that are not a whole number
#    of cells from the scan's origin — scanned at several steps and doses with the detector's blur,
#    background and dark noise;
# 2. irregularity maps computed from each model's predictions alone (`polar4d_lib.irregularity`), and
#    PCA-kNN's distance to its training data;
# 3. ROC curves and their AUC for vacancy columns and for wall positions, per score and model;
# 4. AUC against the vacancies per column at each dose: the detection limit;
# 5. how far from the true wall each model puts it, at its own window and pooled over one and two cells;
# 6. whether the periodic errors of the error-periodicity chapter can be told from defect signals;
# 7. the score `polar4d predict` writes as `irregularity`.
#
# Every number is written to `results/<profile>/defects.json`.
#
# **Prerequisites.** Chapter **training** (its models in `results/<profile>/models/`) and the shipped default
# model (`data/MODEL_CARD.md`). The specimens are simulated here (PRISM, cached by their parameters in
# `.cache/polar4d/defects`) from the profile's `defects` section of `polar4d_lib/profiles.yaml`; with `smoke`
# everything is tiny and the numbers only show that the machinery works.

# %% tags=["parameters"]
profile = "smoke"  # smoke | default | paper — sizes of the specimens (profiles.yaml, section defects)
results_dir = None  # where chapter 02 saved its models; None → f"results/{profile}"
default_model = True  # also map with the shipped default model (the cnn-stack: one unit cell per decision)
kinds = ["cnn-cls", "resnet-cls", "vgg-cls", "pca-knn", "physics"]  # the training chapter's models mapped here
settings_overrides = None  # dict overriding the profile's defects section (DefectSettings fields)
wall_band_cells = 0.5  # positions within this distance of a wall plane (cells) count as "on the wall"
detection_auc = 0.75  # the detection limit: the fewest vacancies per column detected with at least this AUC
wall_windows_cells = [1, 2]  # pooling windows (cells per side) of the wall localisation, besides each model's own
progress_bar = False  # tqdm bars while the specimens simulate

# %% tags=["remove-input"]
# %matplotlib inline
import time
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from polar4d_lib import config, defects, evaluation, experiments, inputs, irregularity, plotting, suites

chapter_start = time.perf_counter()
config.set({"progress_bar": progress_bar})
results_dir = Path(f"results/{profile}" if results_dir is None else results_dir)
fitted = experiments.chapter_models(results_dir, profile, kinds, shipped=default_model)
SHIPPED = experiments.SHIPPED
settings = defects.DefectSettings.for_profile(profile, settings_overrides)
specimens = {s.name: s for s in settings.specimens()}
print(f"{len(fitted)} models: {', '.join(fitted)}")

# %% [markdown]
# ## 1. Specimens with ground truth
#
# **Vacancies.** One single domain with oxygen vacancies on the O site of the B–O columns, placed at random
# depths; each listed count in its own columns, the other columns perfect; the two Nb neighbours of every
# vacancy relax away from it. **A cluster.** The same, with the vacancies in a block of neighbouring columns. The truth of a probe position is the vacancy count of the cell column under it.
# **Walls.** Two domains meeting at flat walls (the supercell is periodic, so there are two); a position is
# on a wall when it lies within the band below of a wall plane. Every raster starts at a random point of the
# cell, so the walls do not fall a whole number of cells from the scan's origin.

# %% tags=["hide-input"]
start = time.perf_counter()
scans = defects.build(settings)
simulation_seconds = time.perf_counter() - start
o_sites = settings.o_sites_per_column()
vacancy_specimen = specimens["vacancies"]
display(pd.DataFrame([{"specimen": name, "cells": f"{s.cells} × {s.cells}", "thickness (nm)": s.thickness_nm,
                       "defects": {"vacancies": ", ".join(f"{c} per column ({100 * c / o_sites:.1f} % of O sites) × "
                                                          f"{settings.columns_per_count}" for c in settings.vacancy_counts),
                                   "cluster": f"{settings.cluster_count} per column ({100 * settings.cluster_count / o_sites:.1f} % "
                                              f"of O sites) in {settings.cluster_columns} × {settings.cluster_columns} neighbouring columns",
                                   "wall": "two walls (periodic)"}[s.kind],
                       "steps": ", ".join(f"a/{settings.a_A / st:.3g}" for st in s.steps_A)}
                      for name, s in specimens.items()]).set_index("specimen"))
print(f"{len(scans)} scans at {', '.join(f'{d:.0e}' for d in settings.doses)} e/pattern ready in "
      f"{simulation_seconds:.0f} s")

# %% tags=["hide-input"]
finest = {name: min((i for i in scans if i.specimen == name), key=lambda i: i.step_A) for name in specimens}
fig = Figure(figsize=(2.9 * len(finest) + 0.4, 3.0), layout="constrained")
axes = np.atleast_1d(fig.subplots(1, len(finest)))
for ax, (name, item) in zip(axes, finest.items()):
    step_cells = item.step_A / settings.a_A
    if specimens[name].wall is None:
        im = ax.imshow(item.truth["vacancies"].T, origin="lower", cmap="Reds",
                       extent=(0, item.truth["vacancies"].shape[0] * step_cells, 0, item.truth["vacancies"].shape[1] * step_cells))
        fig.colorbar(im, ax=ax, label="vacancies in the column", shrink=0.8)
    else:
        plotting.show_class_map(ax, item.truth["class"], step=step_cells)
    ax.set_title(name, fontsize=8)
    ax.set_xlabel("x (cells from the raster's start)", fontsize=7)
fig.suptitle("ground truth under each probe position (finest raster)", fontsize=10)
fig

# %% tags=["remove-input"]
start = time.perf_counter()
maps, refused = {c: {} for c in fitted}, {}
for n, item in enumerate(scans):
    for column, model in fitted.items():
        reason = model.input_kind.refusal(model, item.scan)
        if reason:
            refused.setdefault(column, reason)
            continue
        out = model.input_kind.map_scan(model, item.scan)
        maps[column][n] = np.asarray(out.probabilities, dtype=np.float64).reshape(item.scan.data.shape[:2] + (-1,))
mapping_seconds = time.perf_counter() - start
for column, reason in refused.items():
    print(f"{column} refuses some scans (left out of its scores): {reason}")
print(f"{len(fitted)} models mapped {len(scans)} scans in {mapping_seconds:.0f} s")

# %% [markdown]
# ## 2. Irregularity maps
#
# Each score of `polar4d_lib.irregularity` turns a model's probability map into a map of how unlike its
# surroundings each decision is: disagreement with the 8 neighbours' classes, the change of the predicted
# polarization direction to the neighbours, the prediction's entropy — each also with its periodic part
# removed (the score's mean over every position at the same place in the unit cell subtracted, so that errors
# repeating with the lattice do not read as defects). Below, the default score of `polar4d predict` for the
# shipped model and the physics baseline on the finest scans at the highest dose, the truth drawn over it
# (white: vacancy columns, or the wall band).

# %% tags=["remove-input"]
def irregularity_maps(column, name):
    """{scan index: irregularity map (Rx, Ry)} of ``column`` for score ``name``."""
    return {n: irregularity.score(p, scans[n].positions_per_cell, name) for n, p in maps[column].items()}


#: what is detected → the specimens (DefectSpecimen.kind) whose scans it is scored on
TARGETS = {k: v for k, v in {"vacancies": "vacancies", "clustered vacancies": "cluster", "walls": "wall"}.items()
           if any(s.kind == v for s in specimens.values())}


def target(item, kind):
    """Truth mask (Rx, Ry) of ``kind`` on ``item`` (vacancy columns, or the wall band); None where the scan's
    specimen is not of that kind."""
    specimen = specimens[item.specimen]
    if specimen.kind != TARGETS[kind]:
        return None
    return item.truth["vacancies"] > 0 if specimen.wall is None else item.truth["wall_distance_cells"] <= wall_band_cells


def own_target(item):
    return next(target(item, k) for k, v in TARGETS.items() if v == specimens[item.specimen].kind)


scores = {column: {name: irregularity_maps(column, name) for name in irregularity.SCORES} for column in fitted}
KNN = evaluation.column_name("pca-knn")
if KNN in fitted:  # the distance to the training data in PCA-kNN's embedding: that model only
    knn = fitted[KNN].pipeline[-1]
    scores[KNN]["kNN distance"] = {}
    for n in maps[KNN]:
        item = scans[n]
        embedded = fitted[KNN].embed(inputs.in_scan_frame(item.scan.data.reshape((-1,) + item.scan.data.shape[2:]), item.scan),
                                     item.scan.q_sampling_mrad)
        scores[KNN]["kNN distance"][n] = knn.kneighbors(embedded)[0].mean(axis=1).reshape(item.scan.data.shape[:2])
SCORE_NAMES = list(irregularity.SCORES) + (["kNN distance"] if KNN in fitted else [])

# %% tags=["hide-input"]
top_dose = max(settings.doses)
shown = [n for n, i in enumerate(scans) if i.dose == top_dose and i.step_A == min(specimens[i.specimen].steps_A)]
shown_columns = [c for c in (SHIPPED, evaluation.column_name("physics")) if c in fitted]
fig = Figure(figsize=(2.8 * len(shown) + 0.6, 2.6 * len(shown_columns) + 0.4), layout="constrained")
axes = fig.subplots(len(shown_columns), len(shown), squeeze=False)
for r, column in enumerate(shown_columns):
    for c, n in enumerate(shown):
        ax, item = axes[r, c], scans[n]
        ax.set_xticks([]), ax.set_yticks([])
        if n not in scores[column][irregularity.DEFAULT]:
            ax.set_title(f"{column}: refused", fontsize=8)
            continue
        m = scores[column][irregularity.DEFAULT][n]
        ax.imshow(m.T, origin="lower", cmap="magma")
        truth = own_target(item)
        if truth.any() and not truth.all():
            ax.contour(truth.T.astype(float), levels=[0.5], colors="white", linewidths=0.8)
        ax.set_title(f"{column}\n{item.specimen}", fontsize=7)
fig.suptitle(f"{irregularity.DEFAULT} at {top_dose:.0e} e/pattern (white: truth)", fontsize=10)
fig

# %% [markdown]
# ## 3. ROC curves and AUC
#
# Every position of every scan (all steps and doses pooled) is a case: for **vacancies**, the positions over
# columns with at least one vacancy against those over perfect columns (the isolated columns' specimen); for
# **clustered vacancies** the same on the cluster specimen; for **walls**, the positions in the wall band
# against the rest (the wall specimens' scans). The AUC is the probability that a defect position scores
# higher than a perfect one (0.5: the score knows nothing). PCA-kNN also has the distance of each pattern to
# its nearest training patterns in its embedding (the mean over its neighbours), a score of that model only.

# %% tags=["hide-input"]
def pooled_cases(column, name, kind, dose=None, count=None):
    """(truth, score) over the scans of ``kind`` (at ``dose``; for vacancies, positives with ``count`` only)."""
    y, s = [], []
    for n, m in scores[column].get(name, {}).items():
        item = scans[n]
        mask = target(item, kind)
        if mask is None or (dose is not None and item.dose != dose):
            continue
        keep = np.ones_like(mask)
        if count is not None:
            keep = (item.truth["vacancies"] == 0) | (item.truth["vacancies"] == count)
        y.append(mask[keep]), s.append(m[keep])
    return (np.concatenate(y), np.concatenate(s)) if y else (np.zeros(0, bool), np.zeros(0))


def auc(y, s):
    """ROC AUC of score ``s`` for truth ``y``; None where it is undefined: one class only, or a score that is the
    same for every case (it ranks nothing, and its 0.5 must not win a choice of the best score)."""
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) and np.ptp(s) > 0 else None


roc_auc = {name: {column: {kind: auc(*pooled_cases(column, name, kind)) for kind in TARGETS}
                  for column in fitted} for name in SCORE_NAMES}
fig = Figure(figsize=(9, 3.6 * len(TARGETS)), layout="constrained")
axes = np.atleast_1d(fig.subplots(len(TARGETS), 1))
for ax, kind in zip(axes, TARGETS):
    table = pd.DataFrame({name: {c: roc_auc[name][c][kind] for c in fitted} for name in SCORE_NAMES}).astype(float)
    table.index.name, table.columns.name = "model", "score"
    plotting.heatmap_table(table, label="ROC AUC", vmin=0.3, vmax=1.0, fmt=".2f", cmap="vlag", ax=ax,
                           title=f"{kind}: ROC AUC")
fig

# %% tags=["hide-input"]
best_score = {kind: {c: max(SCORE_NAMES, key=lambda n: (roc_auc[n][c][kind] or 0.0, n == irregularity.DEFAULT))
                     for c in fitted} for kind in TARGETS}
fig = Figure(figsize=(3.2 * len(TARGETS) + 0.4, 3.4), layout="constrained")
axes = np.atleast_1d(fig.subplots(1, len(TARGETS)))
for ax, kind in zip(axes, TARGETS):
    for column in fitted:
        value = roc_auc[best_score[kind][column]][column][kind]
        if value is not None:  # None: no score of this model ranks these cases (one class, or all constant)
            fpr, tpr, _ = roc_curve(*pooled_cases(column, best_score[kind][column], kind))
            ax.plot(fpr, tpr, label=f"{column} ({value:.2f})")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.6)
    ax.set_xlabel("false-positive rate", fontsize=8)
    ax.set_ylabel("true-positive rate", fontsize=8)
    ax.set_title(f"{kind}: each model's best score", fontsize=9)
    ax.legend(fontsize=6)
fig

# %% [markdown]
# ## 4. The detection limit
#
# AUC of each model's best vacancy score for columns holding a given number of vacancies against perfect
# columns, at each dose. The detection limit is the fewest vacancies per column detected with at least the
# AUC set in the parameters.

# %% tags=["hide-input"]
auc_vs_vacancies, detection_limit = {}, {}
for dose in settings.doses:
    key = f"{dose:g}"
    auc_vs_vacancies[key], detection_limit[key] = {}, {}
    for column in fitted:
        name = best_score["vacancies"][column]
        curve = {str(c): auc(*pooled_cases(column, name, "vacancies", dose, c)) for c in settings.vacancy_counts}
        auc_vs_vacancies[key][column] = curve
        found = [c for c in settings.vacancy_counts if (curve[str(c)] or 0) >= detection_auc]
        detection_limit[key][column] = ({"vacancies_per_column": min(found), "percent_of_o_sites": 100 * min(found) / o_sites}
                                        if found else None)
fig = Figure(figsize=(3.6 * len(settings.doses) + 0.4, 3.2), layout="constrained")
axes = np.atleast_1d(fig.subplots(1, len(settings.doses)))
for ax, dose in zip(axes, settings.doses):
    for column, curve in auc_vs_vacancies[f"{dose:g}"].items():
        ax.plot(settings.vacancy_counts, [np.nan if curve[str(c)] is None else curve[str(c)] for c in settings.vacancy_counts],
                marker="o", label=column)
    ax.axhline(detection_auc, color="grey", linestyle="--", linewidth=0.7)
    ax.axhline(0.5, color="grey", linewidth=0.5)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("vacancies per column", fontsize=8)
    ax.set_title(f"{dose:.0e} e/pattern", fontsize=9)
    ax.set_ylim(0.2, 1.02)
axes[0].set_ylabel("ROC AUC", fontsize=8)
axes[0].legend(fontsize=6)
fig

# %% tags=["hide-input"]
display(pd.DataFrame({f"{d} e/pattern": {c: ("—" if v is None else f"{v['vacancies_per_column']} "
                                               f"({v['percent_of_o_sites']:.1f} % of O sites)") for c, v in limits.items()}
                      for d, limits in detection_limit.items()}).rename_axis("detection limit"))

# %% [markdown]
# ## 5. Where each model puts the wall
#
# For each wall scan, each true wall plane crossed at least half a cell from the scan's ends, and each model:
# the split along the wall normal that the most of the model's decisions within half a domain of the plane
# agree with (one domain's class before it, the other's after). The error is its distance from the true plane
# in cells; "agreement" is the share of decisions consistent with the split (1: a clean step). Each model's
# own map, and its probabilities pooled over windows of whole cells (for the shipped model, its window set to
# that many cells: the resolution its window costs).

# %% tags=["hide-input"]
def wall_classes(column, n, window_cells):
    item = scans[n]
    if window_cells is None:
        return maps[column][n].argmax(axis=-1)
    window = max(1, int(round(window_cells * item.positions_per_cell)))
    model = fitted[column]
    if model.input_kind.folds_cell:
        out = model.input_kind.map_scan(model, item.scan, window)
        return np.asarray(out.probabilities).reshape(item.scan.data.shape[:2] + (-1,)).argmax(axis=-1)
    return suites.pooled_probabilities(maps[column][n], window).argmax(axis=-1)


wall_rows = []
for n, item in enumerate(scans):
    specimen = specimens[item.specimen]
    if specimen.wall is None:
        continue
    x = defects.x_cells(item, 0 if specimen.wall.normal == "x" else 1)
    for column in fitted:
        if n not in maps[column]:
            continue
        for window in [None, *wall_windows_cells]:
            classes = wall_classes(column, n, window)
            if specimen.wall.normal == "y":
                classes = classes.T
            for plane, before, after in defects.wall_planes(specimen, x):
                found, agree = defects.locate_wall(classes, x, plane, before, after, specimen.cells / 4)
                wall_rows.append({"model": column, "window": "own" if window is None else f"{window} cell(s)",
                                  "wall": item.specimen, "step": f"a/{item.positions_per_cell:.3g}", "dose": item.dose,
                                  "error_cells": abs(found - plane), "agreement": agree})
walls_table = pd.DataFrame(wall_rows)
wall_localisation = (walls_table.groupby(["model", "window"])[["error_cells", "agreement"]].mean()
                     if len(walls_table) else pd.DataFrame(columns=["error_cells", "agreement"]))
display(wall_localisation.round(2))
if len(walls_table):
    display(walls_table[walls_table["window"] == "own"].pivot_table(index="model", columns="dose",
                                                                  values="error_cells").round(2)
            .rename(columns=lambda d: f"{d:.0e} e/pattern").rename_axis(columns="own window: error (cells)"))

# %% [markdown]
# ## 6. Periodic errors or defects?
#
# The error-periodicity chapter found that single-pattern decisions fail more at some places of the unit
# cell than at others. A score that reacts to those periodic errors flags perfect crystal. Removing the
# score's periodic part (its mean at each place in the cell) keeps what differs from the rest of the scan at
# the same place in the cell: the table compares the AUC of each score with and without.

# %% tags=["hide-input"]
pairs = [(name, f"{name}, periodic part removed") for name in irregularity.SCORES if f"{name}, periodic part removed" in irregularity.SCORES]
periodic_rows = []
for column in fitted:
    for raw, removed in pairs:
        for kind in TARGETS:
            a, b = roc_auc[raw][column][kind], roc_auc[removed][column][kind]
            periodic_rows.append({"model": column, "score": raw, "target": kind, "raw AUC": a, "periodic part removed": b,
                                  "change": None if a is None or b is None else b - a})
periodic_table = pd.DataFrame(periodic_rows)
display(periodic_table.pivot_table(index=["model"], columns=["target"], values="change", aggfunc="mean").round(3)
        .rename_axis(columns="mean AUC change when the periodic part is removed"))

# %% [markdown]
# ## 7. The score `polar4d predict` writes

# %% tags=["remove-input"]
# A score that is the same for every case of a target (AUC None) knows nothing there: it counts 0.5 in the mean,
# not nothing (left out, a score constant on the vacancies would be judged on the walls alone).
mean_auc = {name: np.mean([0.5 if v is None else v for v in roc_auc[name].get(SHIPPED, {}).values()] or [np.nan])
            for name in irregularity.SCORES}
chosen = (max(irregularity.SCORES, key=lambda n: (np.nan_to_num(mean_auc[n], nan=-1), n == irregularity.DEFAULT))
          if SHIPPED in fitted else None)
display(Markdown(
    f"`polar4d predict` writes the **{irregularity.DEFAULT}** of its map as `irregularity` "
    f"(`irregularity.DEFAULT`). "
    + (f"For the shipped model the best score here (the mean of its AUC for {', '.join(TARGETS)}; "
       f"0.5 where a score is the same for every case) is **{chosen}** "
       f"({mean_auc[chosen]:.3f}; {irregularity.DEFAULT}: {mean_auc[irregularity.DEFAULT]:.3f})"
       + (", the same." if chosen == irregularity.DEFAULT else ".") if chosen else "")))

# %% [markdown]
# ## 8. What the numbers say

# %% tags=["remove-input"]
def best_of(kind):
    cands = [(roc_auc[best_score[kind][c]][c][kind], c) for c in fitted if roc_auc[best_score[kind][c]][c][kind] is not None]
    return max(cands) if cands else (None, None)


lines = []
for kind in TARGETS:
    value, column = best_of(kind)
    if column:
        lines.append(f"* **{kind.capitalize()}:** the best detector is {column} with its {best_score[kind][column]} "
                     f"(AUC {value:.2f}, all steps and doses pooled); 0.5 is a score that knows nothing.")
limits = {d: {c: v for c, v in per.items() if v} for d, per in detection_limit.items()}
for d, per in limits.items():
    if per:
        c, v = min(per.items(), key=lambda kv: kv[1]["vacancies_per_column"])
        lines.append(f"* At {float(d):.0e} e/pattern {c} detects columns with {v['vacancies_per_column']} vacancies "
                     f"({v['percent_of_o_sites']:.1f} % of their O sites) with AUC ≥ {detection_auc} — an estimate "
                     f"from {settings.columns_per_count} column(s) per count, so a noisy one.")
    else:
        lines.append(f"* At {float(d):.0e} e/pattern no model detects even {max(settings.vacancy_counts)} vacancies per "
                     f"column ({100 * max(settings.vacancy_counts) / o_sites:.1f} % of its O sites) with AUC ≥ {detection_auc}.")
if len(wall_localisation):
    own = wall_localisation.xs("own", level="window")
    good = own[own["agreement"] >= 0.9]
    if len(good):
        c = good["error_cells"].idxmin()
        lines.append(f"* **Walls:** {c} places them {good.loc[c, 'error_cells']:.2f} cells from the truth on average at "
                     f"its own window, its decisions {100 * good.loc[c, 'agreement']:.0f} % consistent with a clean step.")
    else:
        lines.append("* **Walls:** no model's own map shows a clean step at the walls (agreement below 90 %): their "
                     "localisation errors above measure noise.")
if len(wall_localisation) and SHIPPED in wall_localisation.index.get_level_values(0):
    shipped = wall_localisation.loc[SHIPPED]
    finest = shipped["error_cells"].idxmin()
    lines.append(f"* **The shipped model's window:** it places walls {shipped.loc['own', 'error_cells']:.2f} cells from the "
                 f"truth at its own window (grown until it holds the electrons it asks for) and "
                 f"{shipped.loc[finest, 'error_cells']:.2f} cells with its window set to {finest} — the resolution "
                 "its window costs.")
changes = periodic_table["change"].dropna()
if len(changes):
    lines.append(f"* Removing the periodic part changes the AUC by {changes.mean():+.3f} on average "
                 f"(from {changes.min():+.3f} to {changes.max():+.3f}).")
display(Markdown("\n".join(lines)))

# %% tags=["hide-input"]
output = {
    "profile": profile,
    "settings": experiments.plain(settings.__dict__) | {"wall_band_cells": wall_band_cells, "detection_auc": detection_auc,
                                                       "wall_windows_cells": wall_windows_cells},
    "models": list(fitted),
    "scores": SCORE_NAMES,
    "targets": list(TARGETS),
    "roc_auc": roc_auc,
    "best_score": best_score,
    "auc_vs_vacancies": auc_vs_vacancies,
    "detection_limit": detection_limit,
    "o_sites_per_column": o_sites,
    "wall_localisation_cells": {c: {w: float(v) for w, v in wall_localisation.loc[c, "error_cells"].items()}
                                for c in wall_localisation.index.get_level_values(0).unique()} if len(wall_localisation) else {},
    "wall_agreement": {c: {w: float(v) for w, v in wall_localisation.loc[c, "agreement"].items()}
                       for c in wall_localisation.index.get_level_values(0).unique()} if len(wall_localisation) else {},
    "periodic_part_removed": periodic_rows,
    "predict_score": irregularity.DEFAULT,
    "best_for_shipped": chosen,
    "refused": refused,
    "seconds": {"simulation": simulation_seconds, "mapping": mapping_seconds,
                "chapter": time.perf_counter() - chapter_start},
}
path = experiments.write_json(output, results_dir / "defects.json")
print(f"wrote {path} ({len(fitted)} models, {len(scans)} scans) in {output['seconds']['chapter']:.0f} s")
