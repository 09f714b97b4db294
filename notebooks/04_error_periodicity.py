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
# # Error periodicity: where in the unit cell decisions fail
#
# **Overview.** The paper saw wrong predictions repeat periodically across a scan: not every probe position
# carries enough information. At a 24 mrad probe a pattern is dominated by where in the cell the probe sits,
# so a decision from one pattern depends on that place. This chapter measures it:
#
# 1. prediction maps over scans of perfect crystal whose rasters start at random points of the cell;
# 2. every decision folded into the unit cell by its fractional probe coordinates, the error rate per bin
#    of the cell, and the power spectrum of the error maps over the scans (how much of it sits at the
#    lattice's harmonics);
# 3. an information map from the physics alone: how distinguishable the eight classes' patterns are at each
#    probe position at the scans' dose, and the accuracy of the Bayes-optimal observer — a ceiling for any
#    model — against each model's folded accuracy;
# 4. what the error-prone positions share (column site, centre-of-mass shift, Friedel asymmetry, entropy);
# 5. abstention: reliability scores and selective accuracy against coverage for every model, the score
#    `polar4d predict --abstain-below` uses, and map-level decisions against single-pattern ones.
#
# Every number is written to `results/<profile>/periodicity.json`.
#
# **Prerequisites.** Chapter **training** (its models in `results/<profile>/models/`) and the shipped default
# model (`data/MODEL_CARD.md`). The scans are simulated here (PRISM, cached by their parameters in
# `.cache/polar4d/suites`) from the profile's `periodicity` section of `polar4d_lib/profiles.yaml`; with
# `smoke` everything is tiny and the numbers only show that the machinery works.

# %% tags=["parameters"]
profile = "smoke"  # smoke | default | paper — sizes of the scans (profiles.yaml, section periodicity)
results_dir = None  # where chapter 02 saved its models; None → f"results/{profile}"
default_model = True  # also map with the shipped default model (the cnn-stack: one unit cell per decision)
kinds = ["cnn-cls", "resnet-cls", "vgg-cls", "pca-knn", "physics"]  # the training chapter's models mapped here
settings_overrides = None  # dict overriding the profile's periodicity section (PeriodicitySettings fields)
right_share = 0.95  # a bin of the cell counts as "reliable" for a model right at least this often there
reliable_coverage = 0.5  # map-level decisions: the share of a scan's decisions kept as reliable
progress_bar = False  # tqdm bars while the scans simulate

# %% tags=["remove-input"]
# %matplotlib inline
import time
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from matplotlib.figure import Figure
from scipy import stats
from sklearn.metrics import roc_auc_score

from polar4d_lib import config, conventions, evaluation, experiments, periodicity, plotting, reliability, suites
from polar4d_lib.models.physics import com_vectors, default_preprocessor, friedel_vectors

chapter_start = time.perf_counter()
config.set({"progress_bar": progress_bar})
results_dir = Path(f"results/{profile}" if results_dir is None else results_dir)
fitted = experiments.chapter_models(results_dir, profile, kinds, shipped=default_model)
SHIPPED = experiments.SHIPPED
settings = periodicity.PeriodicitySettings.for_profile(profile, settings_overrides)
chance = 1 / conventions.N_CLASSES
print(f"{len(fitted)} models: {', '.join(fitted)}")

# %% [markdown]
# ## 1. Scans of perfect crystal from random points of the cell
#
# One single-domain specimen per class (a K/Na arrangement no training set or other chapter uses) at each
# thickness, scanned over whole cells from a random point of the cell — a microscope's raster does not know
# where the atoms are — with a probe defocus drawn from the listed values, and recorded at one dose with the
# detector's blur, a background and dark noise. Where each probe position lies in the cell is known
# exactly from the raster's origin and step.

# %% tags=["hide-input"]
start = time.perf_counter()
scans, ideal_means = periodicity.build(settings)
simulation_seconds = time.perf_counter() - start
display(pd.DataFrame({
    "scans": [len(scans)], "positions per scan": [" × ".join(str(n) for n in scans[0].scan.data.shape[:2])],
    "step (Å)": [f"{settings.step_A:.4g} (a/{settings.a_A / settings.step_A:.3g})"],
    "thickness (nm)": [", ".join(f"{t:g}" for t in settings.thicknesses_nm)],
    "defocus (nm)": [", ".join(f"{d:g}" for d in settings.defocus_nm)],
    "dose (e/pattern)": [f"{settings.dose_e_per_pattern:.0e}"],
    "detector": [f"{scans[0].scan.data.shape[-1]} px at {scans[0].scan.q_sampling_mrad:g} mrad/px, PSF σ "
                 f"{settings.psf_sigma_px:g} px, background {settings.background_counts:g} counts/px, dark noise "
                 f"{settings.dark_noise_sigma:g}, centre offset ≤ {settings.center_offset_max_px:g} px"],
}).T.rename(columns={0: ""}))
print(f"{len(scans)} scans and the information map's {ideal_means.shape[0]} × {ideal_means.shape[1]} × "
      f"{ideal_means.shape[2]} ideal patterns ready in {simulation_seconds:.0f} s")

# %% tags=["remove-input"]
start = time.perf_counter()
labels, fractions, scan_of, probabilities, correct = [], [], [], {c: [] for c in fitted}, {c: [] for c in fitted}
maps_of = {c: [] for c in fitted}
refused = {}
for i, item in enumerate(scans):
    rx, ry = item.scan.data.shape[:2]
    label = item.accepted[0]
    labels.append(np.full(rx * ry, label))
    fractions.append(item.description["fractions"].reshape(-1, 2))
    scan_of.append(np.full(rx * ry, i))
    for column, model in fitted.items():
        reason = model.input_kind.refusal(model, item.scan)
        if reason:
            refused[column] = reason
            continue
        maps = model.input_kind.map_scan(model, item.scan)
        probabilities[column].append(np.asarray(maps.probabilities, dtype=np.float64))
        classes = np.asarray(maps.classes).ravel()
        correct[column].append(classes == label)
        maps_of[column].append(classes.reshape(rx, ry))
labels, fractions, scan_of = np.concatenate(labels), np.concatenate(fractions), np.concatenate(scan_of)
for column, reason in refused.items():
    print(f"{column} refuses these scans: {reason}")
    fitted.pop(column)
probabilities = {c: np.concatenate(probabilities[c]) for c in fitted}
correct = {c: np.concatenate(correct[c]) for c in fitted}
mapping_seconds = time.perf_counter() - start
print(f"{len(fitted)} models mapped {len(labels)} positions each in {mapping_seconds:.0f} s")

# %% [markdown]
# ## 2. Prediction maps
#
# Each model's class map of the first scans (colour: the class's direction on the wheel of the explorer
# chapter; every position of a scan has the same true class, printed above it). A model that reads single
# patterns paints the lattice into its map wherever its errors depend on the place in the cell.

# %% tags=["hide-input"]
shown = list(range(min(3, len(scans))))
fig = Figure(figsize=(2.1 * len(shown) + 0.4, 2.0 * len(fitted) + 0.3), layout="constrained")
axes = fig.subplots(len(fitted), len(shown), squeeze=False)
for r, column in enumerate(fitted):
    for c, i in enumerate(shown):
        ax = axes[r, c]
        plotting.show_class_map(ax, maps_of[column][i], step=settings.step_A / settings.a_A)
        ax.set_title(f"{column}\ntrue {scans[i].name.split()[0]}" if r == 0 else column, fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        if r == len(fitted) - 1:
            ax.set_xlabel("x (cells)", fontsize=8)
fig

# %% [markdown]
# ## 3. Errors folded into the unit cell
#
# Every decision is put in the bin of the cell its probe position falls in (bin *i* centred on *i*/n of a,
# so a/n from a lattice point lands one position in each), and each model's share of right decisions per bin
# is drawn over the cell: the A columns sit at the corners, the B–O column at the centre, the pure O columns
# at the edge centres (red markers). Random raster origins fill the bins from every scan alike.

# %% tags=["hide-input"]
fold_accuracy, counts = {}, None
for column in fitted:
    fold_accuracy[column], counts = periodicity.fold(correct[column], fractions, settings.bins)
plotting.cell_maps_figure({c: 100 * m for c, m in fold_accuracy.items()}, label="decisions right (%)", vmin=0,
                          vmax=100, sites=periodicity.SITES, suptitle="share of right decisions per bin of the cell")

# %% tags=["hide-input"]
reliable_area = {c: float(np.mean(m[np.isfinite(m)] >= right_share)) for c, m in fold_accuracy.items()}
overall = {c: float(correct[c].mean()) for c in fitted}
spread = {c: float(np.nanmax(m) - np.nanmin(m)) for c, m in fold_accuracy.items()}
fold_table = pd.DataFrame({"decisions right (%)": {c: 100 * overall[c] for c in fitted},
                           "best bin − worst bin (points)": {c: 100 * spread[c] for c in fitted},
                           f"cell area right ≥ {100 * right_share:.0f} % (%)": {c: 100 * reliable_area[c] for c in fitted}})
fold_table.index.name = "model"
display(fold_table.round(1))
print(f"{int(counts.min())}–{int(counts.max())} decisions per bin ({settings.bins} × {settings.bins} bins)")

# %% [markdown]
# **The lattice in the errors.** The power spectrum of each scan's map of wrong decisions (its mean removed),
# averaged over the scans: a model whose errors follow the place in the cell puts its power at the lattice's
# harmonics (h, k)/a; errors that do not care about the place spread it evenly, and the harmonics then hold
# only their share of the frequencies (the "white" column).

# %% tags=["hide-input"]
spectra, lattice_share = {}, {}
for column in fitted:
    wrong_maps = np.stack([(m != scans[i].accepted[0]).astype(float) for i, m in enumerate(maps_of[column])])
    spectra[column], lattice_share[column], white_share = periodicity.lattice_spectrum(
        wrong_maps, settings.step_A, settings.a_A)
display(pd.DataFrame({"power at lattice harmonics (%)": {c: 100 * v for c, v in lattice_share.items()},
                      "white errors would put (%)": {c: 100 * white_share for c in fitted}}).round(1))
shape = next(iter(spectra.values())).shape
freq = [np.fft.fftshift(np.fft.fftfreq(n, d=settings.step_A)) * settings.a_A for n in shape]
fig = Figure(figsize=(2.4 * len(spectra) + 0.6, 2.7), layout="constrained")
axes = np.atleast_1d(fig.subplots(1, len(spectra)))
for ax, (column, power) in zip(axes, spectra.items()):
    p = power.copy()
    p[shape[0] // 2, shape[1] // 2] = np.nan  # the mean, removed
    floor = 1e-12 * np.nanmax(p) if np.nanmax(p) > 0 else 1e-12
    ax.imshow(np.log10(p.T + floor), origin="lower", cmap="magma",
              extent=(freq[0][0], freq[0][-1], freq[1][0], freq[1][-1]))
    ax.set_title(column, fontsize=8)
    ax.set_xlabel("cycles per cell (x)", fontsize=7)
    ax.tick_params(labelsize=6)
axes[0].set_ylabel("cycles per cell (y)", fontsize=7)
fig.suptitle("power spectrum of the error maps (log); the lattice's harmonics at whole numbers", fontsize=9)
fig

# %% [markdown]
# ## 4. How much one pattern can tell: the information map
#
# From the physics alone: the ideal patterns of the eight classes at each bin centre of the cell, for each
# nuisance draw (every listed K/Na arrangement, thickness and defocus; the arrangements are not the scans'
# own), counted by Poisson statistics.
# **The information map** is the smallest Bhattacharyya distance between two classes' patterns, averaged over
# the draws: the Bayes error of telling that pair apart is at most e^(−D)/2, and D grows in proportion to the
# dose, so the map's shape holds at every dose. **The ceiling** is the accuracy of the Bayes-optimal observer,
# which knows every class's pattern under every draw and picks the class whose likelihood averaged over the
# draws is highest (Monte Carlo), at the scans' dose and at lower ones. It is a ceiling: a model sees the same
# patterns through a detector with blur and background, which can only lose information, does not know the
# class patterns, and meets K/Na arrangements beyond the few the observer averages over.

# %% tags=["hide-input"]
start = time.perf_counter()
distances = periodicity.bhattacharyya_distances(ideal_means.transpose(0, 2, 1, 3),
                                               settings.dose_e_per_pattern)  # (bins², draws, C, C)
off_diagonal = ~np.eye(distances.shape[-1], dtype=bool)
information = distances[..., off_diagonal].min(axis=-1).mean(axis=1).reshape(settings.bins, settings.bins)
doses = sorted(set(settings.information_doses) | {settings.dose_e_per_pattern})
ceilings = {dose: periodicity.bayes_accuracy(ideal_means, dose, settings.samples, settings.seed).reshape(
    settings.bins, settings.bins) for dose in doses}
ceiling = ceilings[settings.dose_e_per_pattern]
ceiling_accuracy = float(ceiling.mean())
information_seconds = time.perf_counter() - start
plotting.cell_maps_figure({f"D at {settings.dose_e_per_pattern:.0e} e": np.log10(information)},
                          label="log10 smallest class-pair distance", cmap="cividis", sites=periodicity.SITES,
                          panel_size=3.0, suptitle="information map (Bhattacharyya distance)")

# %% tags=["hide-input"]
plotting.cell_maps_figure({f"{dose:.0e} e/pattern": 100 * c for dose, c in ceilings.items()},
                          label="Bayes observer right (%)", vmin=0, vmax=100, ncols=len(ceilings),
                          suptitle="accuracy ceiling per probe position")

# %% tags=["hide-input"]
correlation = {}
log_information = np.log10(information)
for column, m in fold_accuracy.items():
    ok = np.isfinite(m)
    varies = np.ptp(m[ok]) > 0 and np.ptp(log_information[ok]) > 0
    correlation[column] = float(stats.pearsonr(log_information[ok], m[ok])[0]) if varies and ok.sum() > 2 else None
ceiling_gap = {c: 100 * (ceiling_accuracy - overall[c]) for c in fitted}
display(pd.DataFrame({"decisions right (%)": {c: 100 * overall[c] for c in fitted},
                      "below the ceiling (points)": ceiling_gap,
                      "correlation with the information map": correlation}).round(2))
display(pd.DataFrame({"ceiling, mean over the cell (%)": {f"{d:.0e}": 100 * c.mean() for d, c in ceilings.items()},
                      "worst bin (%)": {f"{d:.0e}": 100 * c.min() for d, c in ceilings.items()},
                      "best bin (%)": {f"{d:.0e}": 100 * c.max() for d, c in ceilings.items()}}).rename_axis(
    "dose (e/pattern)").round(1))
print(f"information map and ceilings in {information_seconds:.0f} s")
plotting.cell_maps_figure({c: 100 * m for c, m in fold_accuracy.items()}, label="decisions right (%)", vmin=0,
                          vmax=100, contours=log_information,
                          suptitle="each model's folded accuracy, the information map's contours in white")

# %% [markdown]
# ## 5. What the error-prone positions share
#
# **Column site.** Each decision is assigned the projected column its probe position lies within a/8 of
# (else "between columns"), and each model's error rate is listed per site.
# **Pattern features.** For each decision: the magnitude of the pattern's centre-of-mass shift and of its
# Friedel asymmetry (the physics baseline's two measurements, on its own preprocessing), the model's
# prediction entropy, and the information deficit (minus the logarithm of the information map at its bin). The table gives the ROC AUC of
# each as a detector of wrong decisions (0.5: unrelated; above: larger values go with errors; below: smaller).

# %% tags=["hide-input"]
site = periodicity.column_site(fractions, radius=1 / 8)
site_error = pd.DataFrame({c: {s: 100 * float(1 - correct[c][site == s].mean()) for s in dict.fromkeys(site)}
                           for c in fitted}).T
site_error.index.name = "model"
site_error.columns.name = "probe on"
display(site_error.round(1))
physics_prep = default_preprocessor()
patterns_all = np.concatenate([item.patterns() for item in scans])
prepared = physics_prep.transform(patterns_all, scans[0].scan.q_sampling_mrad).astype(np.float64)
com_magnitude = np.hypot(*com_vectors(prepared, physics_prep.sampling_mrad).T)
friedel_magnitude = np.hypot(*friedel_vectors(prepared, physics_prep.sampling_mrad).T)
information_at = log_information[tuple(periodicity.bin_index(fractions, settings.bins).T)]
features = {"centre-of-mass shift": com_magnitude, "Friedel asymmetry": friedel_magnitude,
            "information deficit": -information_at}
feature_auc = {}
for column in fitted:
    wrong = ~correct[column]
    values = {**features, "prediction entropy": 1 - reliability.certainty(probabilities[column])}
    feature_auc[column] = {f: (float(roc_auc_score(wrong, v)) if 0 < wrong.sum() < len(wrong) else None)
                           for f, v in values.items()}
display(pd.DataFrame(feature_auc).T.astype(float).round(2))

# %% [markdown]
# ## 6. When to abstain
#
# A reliability score ranks a model's decisions; keeping the most reliable share of them (the coverage) and
# scoring only those gives the selective-accuracy curve. The scores: the three of `polar4d_lib.reliability`
# (the top class probability, the margin between the top two, and one minus the normalised entropy) that
# `polar4d predict --abstain-below` can threshold, the distance to the nearest training patterns in
# PCA-kNN's embedding (that model only), and the information map at the decision's place in the cell —
# an oracle a microscope does not have (it needs the raster's origin), shown as a reference. The area under
# each curve (the mean selective accuracy) ranks the scores: a score that knows nothing gives the model's
# accuracy, a perfect one the top of the curve.

# %% tags=["hide-input"]
coverage_curves, score_auc = {}, {}
knn_column = evaluation.column_name("pca-knn")
for column in fitted:
    candidates = {name: reliability.score(probabilities[column], name) for name in reliability.SCORES}
    if column == knn_column:
        embedded = fitted[column].embed(patterns_all, scans[0].scan.q_sampling_mrad)
        knn = fitted[column].pipeline[-1]
        candidates["kNN distance"] = -knn.kneighbors(embedded)[0].mean(axis=1)
    candidates["information (oracle)"] = information_at
    curves = {name: reliability.coverage_curve(r, correct[column]) for name, r in candidates.items()}
    coverage_curves[column] = curves
    score_auc[column] = {name: reliability.area_under_curve(c) for name, c in curves.items()}
ncols = min(4, len(fitted))
nrows = -(-len(fitted) // ncols)
fig = Figure(figsize=(2.6 * ncols + 0.4, 2.4 * nrows + 0.6), layout="constrained")
axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
for ax, column in zip(axes, fitted):
    for name, curve in coverage_curves[column].items():
        ax.plot(100 * np.asarray(curve["coverage"]), 100 * np.asarray(curve["accuracy"]), label=name,
                linestyle="--" if "oracle" in name else "-")
    ax.axhline(100 * chance, color="grey", linewidth=0.6)
    ax.set_title(column, fontsize=8)
    ax.set_xlabel("coverage (%)", fontsize=7)
    ax.set_ylim(0, 102)
    ax.tick_params(labelsize=6)
for ax in axes[len(fitted):]:
    ax.set_visible(False)
axes[0].set_ylabel("selective accuracy (%)", fontsize=7)
axes[0].legend(fontsize=6)
fig.suptitle("selective accuracy against coverage (grey: chance)", fontsize=10)
fig

# %% tags=["hide-input"]
auc_table = pd.DataFrame(score_auc).T * 100
auc_table.index.name = "model"
display(auc_table.round(1))
usable = list(reliability.SCORES)
# a tie goes to predict's score
best_score = {c: max(usable, key=lambda s: (round(score_auc[c][s], 9), s == reliability.DEFAULT)) for c in fitted}
shipped_best = best_score.get(SHIPPED)
display(Markdown(
    "Best of the scores `predict` can threshold, per model (area under the curve): "
    + "; ".join(f"{c}: **{s}**" for c, s in best_score.items()) + ". "
    + (f"For the shipped model it is **{shipped_best}**; `polar4d predict --abstain-below` thresholds "
       f"**{reliability.DEFAULT}** (`reliability.DEFAULT`)"
       + (", the same." if shipped_best == reliability.DEFAULT else
          f", which this run ranks below {shipped_best} ({100 * score_auc[SHIPPED][reliability.DEFAULT]:.2f} against "
          f"{100 * score_auc[SHIPPED][shipped_best]:.2f} % in area)."
          ) if shipped_best else "")))

# %% [markdown]
# **Map-level decisions.** A microscopist reads a map, not one pattern. For each scan: the share of its
# decisions right (single patterns), whether its majority class is right (over all decisions, and over the
# most reliable share of them by `predict`'s score), and the share right when each position's probabilities
# are averaged over the unit cell of positions around it (pooling, as the domain-gap chapter does).

# %% tags=["hide-input"]
map_decisions = {}
for column in fitted:
    rows = []
    for i, item in enumerate(scans):
        here = scan_of == i
        p, ok, label = probabilities[column][here], correct[column][here], item.accepted[0]
        r = reliability.score(p, reliability.DEFAULT)
        kept = np.argsort(-r, kind="stable")[:max(1, int(round(reliable_coverage * len(r))))]
        classes = p.argmax(axis=1)
        rx, ry = item.scan.data.shape[:2]
        pooled = suites.pooled_probabilities(p.reshape(rx, ry, -1), suites.cell_window(item, settings.a_A))
        rows.append({"single patterns right": ok.mean(),
                     "majority right": evaluation.label_set_scores(classes, item.accepted)[1],
                     "majority of the reliable right": evaluation.label_set_scores(classes[kept], item.accepted)[1],
                     "pooled over a cell, right": float(np.mean(pooled.reshape(rx * ry, -1).argmax(axis=1) == label))})
    map_decisions[column] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
decision_table = pd.DataFrame(map_decisions).T * 100
decision_table.index.name = "model"
display(decision_table.round(1))

# %% [markdown]
# ## 7. What the numbers say

# %% tags=["remove-input"]
single = [c for c in fitted if c != SHIPPED]
best_single = max(single, key=lambda c: overall[c]) if single else None
bin_fractions = np.stack(np.meshgrid(*(np.arange(settings.bins) / settings.bins,) * 2, indexing="ij"), axis=-1)
bin_site = periodicity.column_site(bin_fractions, radius=1 / 8)
site_information = {name: float(np.mean(information[bin_site == name])) for name in dict.fromkeys(bin_site.ravel())}
poorest, richest = min(site_information, key=site_information.get), max(site_information, key=site_information.get)
enough = [d for d, c in ceilings.items() if c.mean() >= right_share]
where = lambda name: name if name == "between columns" else f"on the {name}"  # noqa: E731
lines = [f"* **The ceiling.** At {settings.dose_e_per_pattern:.0e} e/pattern the Bayes-optimal observer is right "
         f"on {100 * ceiling_accuracy:.1f} % of single patterns on average over the cell (worst bin "
         f"{100 * ceiling.min():.1f} %); "
         + (f"its mean reaches {100 * right_share:.0f} % from {min(enough):.0e} e/pattern on. " if enough else "")
         + f"The information is poorest with the probe {where(poorest)} and richest {where(richest)} (the smallest "
         f"class-pair distance, averaged over each, differs {site_information[richest] / site_information[poorest]:.1f}-fold). "
         "A model far below the "
         "ceiling is limited by what it learnt, not by the physics."]
if best_single:
    lines.append(f"* **The models.** The best single-pattern model here ({best_single}) is right on "
                 f"{100 * overall[best_single]:.1f} % of decisions ({ceiling_gap[best_single]:.1f} points below "
                 f"the ceiling; chance {100 * chance:.1f} %); its best and worst bins of the cell differ by "
                 f"{100 * spread[best_single]:.1f} points"
                 + (f", and {100 * lattice_share[best_single]:.0f} % of its error maps' power sits at the lattice's "
                    f"harmonics (white errors: {100 * white_share:.0f} %)." if np.isfinite(lattice_share[best_single])
                    else " (its error maps do not vary, so they have no spectrum)."))
    periodic = [c for c in single if np.isfinite(lattice_share[c]) and lattice_share[c] > 1.5 * white_share]
    for c in periodic:
        best_bin = np.unravel_index(np.nanargmax(fold_accuracy[c]), fold_accuracy[c].shape)
        worst_bin = np.unravel_index(np.nanargmin(fold_accuracy[c]), fold_accuracy[c].shape)
        lines.append(f"* **{c}'s errors follow the lattice:** {100 * lattice_share[c]:.0f} % of its error maps' power "
                     f"at the lattice's harmonics; right on {100 * np.nanmax(fold_accuracy[c]):.0f} % at its best bin "
                     f"({where(bin_site[best_bin])}) and {100 * np.nanmin(fold_accuracy[c]):.0f} % at its worst "
                     f"({where(bin_site[worst_bin])}); correlation of its folded accuracy with the information map "
                     + (f"{correlation[c]:.2f}." if correlation[c] is not None else "undefined (no variation)."))
    near_chance = [c for c in single if overall[c] < 2 * chance and c not in periodic]
    if near_chance:
        lines.append(f"* {', '.join(near_chance)} are right on less than twice chance ({200 * chance:.0f} %) and their "
                     "errors do not follow the lattice, at this profile's training scale (the training chapter's "
                     "networks are far from converged): their folded maps show noise rather than a periodic failure, "
                     "and their correlation with the information map says little.")
if SHIPPED in fitted:
    lines.append(f"* **The shipped model** decides from one unit cell of positions, so the place of one pattern in "
                 f"the cell does not decide for it: {100 * overall[SHIPPED]:.1f} % right, its bins between "
                 f"{100 * np.nanmin(fold_accuracy[SHIPPED]):.1f} and {100 * np.nanmax(fold_accuracy[SHIPPED]):.1f} %.")
if shipped_best:
    lines.append(f"* **Abstention.** `predict --abstain-below` thresholds the {reliability.DEFAULT}; on the shipped "
                 f"model's decisions here the best score is the {shipped_best}.")
display(Markdown("\n".join(lines)))

# %% tags=["hide-input"]
output = {
    "profile": profile,
    "settings": experiments.plain(settings.__dict__) | {"right_share": right_share, "reliable_coverage": reliable_coverage},
    "models": list(fitted),
    "fold_maps": {c: [[None if not np.isfinite(v) else float(v) for v in row] for row in m]
                  for c, m in fold_accuracy.items()},
    "fold_counts": counts.tolist(),
    "information_map": information.tolist(),
    "ceiling_map": ceiling.tolist(),
    "ceiling_accuracy": ceiling_accuracy,
    "ceiling_by_dose": {f"{d:g}": {"mean": float(c.mean()), "map": c.tolist()} for d, c in ceilings.items()},
    "accuracy": overall,
    "reliable_area": reliable_area,
    "lattice_power_share": lattice_share,
    "white_power_share": white_share,
    "correlation": correlation,
    "site_error": site_error.div(100).to_dict(orient="index"),
    "feature_auc": feature_auc,
    "coverage_curves": {c: coverage_curves[c][best_score[c]] | {"score": best_score[c]} for c in fitted},
    "all_coverage_curves": coverage_curves,
    "score_auc": score_auc,
    "best_score": best_score,
    "predict_score": reliability.DEFAULT,
    "map_decisions": map_decisions,
    "refused": refused,
    "seconds": {"simulation": simulation_seconds, "mapping": mapping_seconds, "information": information_seconds,
                "chapter": time.perf_counter() - chapter_start},
}
path = experiments.write_json(output, results_dir / "periodicity.json")
print(f"wrote {path} ({len(fitted)} models, {settings.bins} × {settings.bins} bins) in "
      f"{output['seconds']['chapter']:.0f} s")
