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
# runs them in order).

# %% tags=["parameters"]
profile = "smoke"  # the profile whose results are summarised
dataset_path = None  # not read here; the book driver passes it to every chapter
results_dir = None  # None → f"results/{profile}"

# %%
import json
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from polar4d_lib import conventions

results_dir = Path(f"results/{profile}" if results_dir is None else results_dir)
missing = [name for name in ("training.json", "explorer.json") if not (results_dir / name).exists()]
if missing:
    raise FileNotFoundError(f"{', '.join(missing)} missing in {results_dir}; run chapters 02_training and "
                            f"03_explorer with profile={profile!r} first (polar4d book --profile {profile})")
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
    std = 100 * per_kind[best]["accuracy"]["std"]
    lines.append(f"* **{training['splits'][split]}** — best: **{best}** {accuracy[best]:.1f} ± {std:.1f} % "
                 f"(chance {chance:.1f} %); physics baseline {accuracy.get('physics', float('nan')):.1f} %; "
                 f"PCA-kNN {accuracy.get('pca-knn', float('nan')):.1f} %.")
lines.append(f"* Seeds: {training['seeds']}; profile `{training['profile']}`; {training['training_seconds']:.0f} s "
             "of training.")
display(Markdown("\n".join(lines)))
for name, table in training["tables"].items():
    display(Markdown(f"**{name}**"))
    display(pd.DataFrame.from_dict(table, orient="index"))

# %% [markdown]
# ## A scan across a domain wall

# %% tags=["hide-input"]
scores = pd.DataFrame(explorer["scores"])
display(scores.round(1))
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
# The numbers above are single-seed, short-training scores of the `default` profile. The `robust` profile
# (training data spanning real acquisition conditions, five seeds, full-length training) is what the
# shipped default model of `polar4d predict` will be chosen from.
