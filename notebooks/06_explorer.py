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
# # Exploring a scan: maps, patterns and predictions
#
# **Overview.** The models of the previous chapter classify single patterns. A microscopist sees them
# at work on a scan: a raster of probe positions across a specimen with domains. This chapter
#
# 1. simulates such a scan — two domains meeting at a neutral 90° wall, at several thicknesses;
# 2. runs the trained models over it and draws their class maps next to the truth;
# 3. scores them per scan and per domain (share of positions right, the majority class of each domain);
# 4. opens the **explorer** (`polar4d_lib.widgets.ScanExplorer`): class or confidence map, virtual
#    bright-field and annular dark-field images and the centre-of-mass field side by side, and for a chosen
#    probe position its diffraction pattern, class probabilities and true class; dropdowns switch model,
#    thickness and dose.
#
# **Prerequisites.** Chapter **training** (it saves the models this chapter loads from
# `results/<profile>/models/`). The explorer works in any notebook on a user's own file:
#
# ```python
# from polar4d_lib import io, models, widgets
# scan = io.read_scan("my_scan.h5")                      # or a .npy with q_sampling_mrad=…
# widgets.ScanExplorer({"my scan": scan}, {"cnn-cls": models.load_model("results/default/models/cnn-cls.pt")})
# ```
#
# In this static page the widget shows its saved state and does not react; a static figure of the same
# view stands beside it. Run the notebook in Jupyter to move the sliders.

# %% tags=["parameters"]
profile = "smoke"  # smoke | default | robust | paper — sizes only
results_dir = None  # where chapter 02 saved its models; None → f"results/{profile}"
model_kinds = ["cnn-cls", "resnet-cls", "pca-knn", "physics"]  # models offered in the explorer and the maps
default_model = True  # also show the shipped default model (data/MODEL_CARD.md), which reads one cell per position
wall_overrides = None  # dict overriding the profile's `explore` section (wall_scan.WallScanSpec fields)
doses = [None, 1e4, 1e3]  # electrons per pattern offered by the explorer (None: noise-free simulation)
dose_seed = 0  # seed of the Poisson re-counting
start_position = None  # (x, y) probe position shown first; None → the centre of the first domain

# %% tags=["hide-input"]
# %matplotlib inline
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from matplotlib.figure import Figure

from polar4d_lib import conventions, experiments, models, plotting, wall_scan, widgets
from polar4d_lib.cli import default_model_path

chapter_start = time.perf_counter()
results_dir = Path(f"results/{profile}" if results_dir is None else results_dir)
model_dir = results_dir / "models"
fitted = {}
for kind in model_kinds:
    files = sorted(model_dir.glob(f"{kind}.*"))
    if not files:
        raise FileNotFoundError(f"no saved {kind} model in {model_dir}; run chapter 02_training with profile={profile!r} first")
    fitted[kind] = models.load_model(files[0])
if default_model:
    shipped = default_model_path()
    if not shipped.exists():
        raise FileNotFoundError(f"no shipped default model at {shipped}; set default_model=False or build it "
                                "with `polar4d default-model` (data/MODEL_CARD.md)")
    fitted["default model"] = models.load_model(shipped)
spec = wall_scan.wall_scan_spec(profile, wall_overrides)
print(spec)

# %% [markdown]
# ## 1. The scan
#
# The specimen holds two domains, RU (P ∥ [110]) for x below the middle and RD (P ∥ [1−10]) above it: the
# x component of P is continuous across the wall and the y component flips, a neutral 90° wall. The
# probe (the profile's semi-angle and energy, no aberrations) rasters the whole supercell; one PRISM
# S-matrix per specimen gives every position and every thickness, cached by its parameters.

# %% tags=["hide-input"]
start = time.perf_counter()
scan_set, truth = wall_scan.simulate_wall_scan(spec)
names = list(scan_set)
first = scan_set[names[0]]
rx, ry = first.data.shape[:2]
print(f"{len(names)} scans of {rx} × {ry} positions (step {spec.step_A} Å), patterns {first.data.shape[2:]} "
      f"at {first.q_sampling_mrad} mrad/px, in {time.perf_counter() - start:.0f} s")
fig = Figure(figsize=(9, 3.2), layout="constrained")
ax, wheel = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
plotting.show_class_map(ax, truth[names[0]], spec.step_A)
ax.set_xlabel("x (Å)")
ax.set_ylabel("y (Å)")
ax.set_title("true class of the column under the probe")
plotting.draw_color_wheel(wheel, title="class")
fig

# %% [markdown]
# ## 2. Class maps of every model
#
# Each model gets the raw scan and replays its own preprocessing. Rows are models, columns thicknesses.
# The shipped default model (last row) classifies every position from the patterns of the unit cell of
# probe positions around it, folded into 4 × 4 parts of the cell (each part one input channel; see
# **Methods**), so the map is smoother and the wall is blurred over about one cell — its resolution. This
# scan is stepped at a/4, so a cell holds 4 × 4 positions, and 0.99 Å is coarser than λ/(2α) = 0.52 Å: the
# mean over a cell would depend on where the raster sits (chapter **simulation**, section 4), which is why
# the default model keeps the parts of the cell apart instead of averaging them (its scores by scan step
# are on the results page). A model that cannot map a scan (a stack model on a scan coarser than a/4) is
# left out here with the reason printed.

# %% tags=["hide-input"]
# The explorer of section 4 computes each model's maps once per scan and dose; this section reads them.
for kind, model in list(fitted.items()):
    reason = model.input_kind.refusal(model, first)  # e.g. a stack model on a scan coarser than its parts
    if reason is not None:
        print(f"{kind} left out: {reason}")
        del fitted[kind]
explorer = widgets.ScanExplorer(scan_set, fitted, true_class=truth, doses=doses, seed=dose_seed)
predictions = {(kind, name): explorer.prediction(name, kind, None) for kind in fitted for name in names}
fig = Figure(figsize=(3.2 * len(names) + 1.5, 1.9 * len(fitted) + 0.6), layout="constrained")
axes = np.atleast_2d(fig.subplots(len(fitted), len(names) + 1, squeeze=False))
for i, kind in enumerate(fitted):
    for j, name in enumerate(names):
        plotting.show_class_map(axes[i, j], predictions[(kind, name)].class_map, spec.step_A)
        axes[i, j].set_title(f"{kind}, {name}", fontsize=9)
        axes[i, j].set_xlabel("x (Å)")
        axes[i, j].set_ylabel("y (Å)")
    axes[i, -1].set_axis_off()
plotting.draw_color_wheel(axes[0, -1], title="class")
fig

# %% [markdown]
# ## 3. Scores per scan and per domain
#
# The share of positions whose predicted class is the true one, and for each domain its majority class —
# what a microscopist reads off a map when single patterns are noisy.

# %% tags=["hide-input"]
rows = []
for (kind, name), prediction in predictions.items():
    true = truth[name]
    row = {"model": kind, "scan": name, "positions right (%)": 100 * float(np.mean(prediction.class_map == true))}
    for k in np.unique(true):
        votes = np.bincount(prediction.class_map[true == k].ravel(), minlength=conventions.N_CLASSES)
        row[f"majority in {conventions.class_name(int(k))} domain"] = conventions.class_name(int(np.argmax(votes)))
    rows.append(row)
table = pd.DataFrame(rows)
display(table.set_index(["model", "scan"]).round(1))
json_path = experiments.write_json({"profile": profile, "wall_scan": asdict(spec), "scores": rows},
                             results_dir / "explorer.json")
print(f"wrote {json_path}")

# %% [markdown]
# ## 4. The explorer
#
# Choose the model, the thickness (scan) and the dose; the sliders move the probe position (marked + on
# every map). The lower row shows the pattern there on a logarithmic scale, the model's class
# probabilities, and the true class (black outline).

# %%
domain_a = np.argwhere(truth[names[0]] == truth[names[0]][0, 0])
position = tuple(np.round(domain_a.mean(axis=0)).astype(int)) if start_position is None else tuple(start_position)
explorer.select(position=position)
explorer

# %% [markdown]
# The same view as a static figure (what the widget above shows when the page has no kernel):

# %%
explorer.figure()

# %% [markdown]
# ## Summary

# %% tags=["hide-input"]
best = table.groupby("model")["positions right (%)"].mean().sort_values(ascending=False)
lines = [f"* Across the {len(names)} thicknesses, **{best.index[0]}** gets {best.iloc[0]:.1f} % of the positions "
         f"right (chance {100 / conventions.N_CLASSES:.1f} %); " +
         ", ".join(f"{k} {v:.1f} %" for k, v in best.iloc[1:].items()) + ".",
         f"* Chapter run time {time.perf_counter() - chapter_start:.0f} s (profile `{profile}`)."]
display(Markdown("\n".join(lines)))

# %% [markdown]
# * Single-pattern predictions vary with the probe position inside the unit cell: not every position
#   carries enough information, and the majority over a domain is far more reliable than one pattern.
# * The explorer takes any `Scan` — a simulation as here, or a file read by `polar4d_lib.io.read_scan` —
#   and any fitted model, and shows its predictions next to the images a microscopist already trusts.
#
# ## What next
#
# The scan above is noise-free and recorded on the training detector. The same explorer, with the dose
# dropdown, shows how the maps degrade with counting noise; measured robustness to the whole acquisition
# model decides which model `polar4d predict` ships.
