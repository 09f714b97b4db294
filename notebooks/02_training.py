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
# # Training the polarization classifiers
#
# **Overview.** The previous chapter simulated labelled diffraction patterns of polar KNN. This chapter
# teaches machines to read the polarization class from them and measures how well they do. It covers:
#
# 1. the preprocessing every model applies to a raw pattern — resampling to the model's angular sampling,
#    finding the pattern centre, cropping, normalising — shown step by step on patterns of the dataset;
# 2. how the patterns are divided into training, validation and test parts: the headline split holds
#    out whole specimens (or whole probe settings), the paper's random split is kept for comparison;
# 3. training the ten model variants of the paper — three encoders (the paper's small CNN, ResNet, VGG)
#    × three heads (classification, regression of the angle, prototype embedding) plus PCA + k-nearest
#    neighbours — and a physics baseline that learns nothing but reads the centre-of-mass shift and the
#    Friedel asymmetry, each with the profile's seeds;
# 4. learning curves of the networks;
# 5. the results for both splits, the paper's table drawn as heatmaps (models × splits);
# 6. confusion matrices: which classes are mistaken for which;
# 7. a 2-D view of what the models "see": the PCA embedding and a network's prototype embedding;
# 8. every number written to `results/<profile>/training.json`.
#
# **Prerequisites.** The `polar4d` package installed (see the README) and the first chapter,
# **simulation**, for what the patterns contain. The profile's dataset is built here if it is missing.
# Frames and class names follow `shared/CONVENTIONS.md`: class k points k·45° from +x towards +y (RM, RU,
# MU, LU, LM, LD, MD, RD), patterns are `(Qx, Qy)` drawn with +θx right and +θy up.
#
# The `profile` parameter sets every size (dataset, epochs, seeds). With `smoke` the whole chapter runs
# in minutes on a laptop, but the networks see a few hundred patterns for two epochs: their scores are
# near chance and show that the machinery works, not how good the models can be. The `default` profile
# gives meaningful numbers.

# %% tags=["parameters"]
profile = "smoke"  # smoke | default | robust | paper — sizes only, never code paths
dataset_path = None  # the profile's simulated dataset (zarr); None → f"data/{profile}.zarr"
num_workers = 1  # dask workers if the dataset must be built; 1: in this process
kinds = None  # model variants to train; None → all ten variants plus the physics baseline (models.ALL_KINDS)
seeds = None  # training seeds; None → the profile's (TrainSettings.for_profile(profile).seeds)
splits = ["blocked", "random"]  # 'blocked' (held-out specimens / probe settings, the headline), 'random' (paper)
random_split_kinds = None  # variants also trained on the random split; None → the profile's (all if unset)
train_overrides = None  # dict overriding the profile's training sizes, e.g. {"max_epochs": 5}; None → profile's
results_dir = None  # where training.json goes; None → f"results/{profile}"
progress_bar = False  # tqdm bars while networks train (noisy in a book)
preprocessing_examples = ["RM", "MU", "LD"]  # classes whose first pattern is followed through the preprocessing
other_detector_sampling_mrad = 1.1  # sampling (mrad/px) of a hypothetical detector in the resampling example
confusion_kinds = ["cnn-cls", "resnet-reg", "pca-knn", "physics"]  # models whose confusion matrices are shown
embedding_kind = "cnn-proto"  # the network whose prototype embedding is drawn in section 7

# %% [markdown]
# Parameters left at `None` take the profile's value. The training sizes (epochs, batch size, early-stopping
# patience, seeds, network depths, whether training is augmented or filtered) come from the `train` section
# of `polar4d_lib/profiles.yaml` through `recipes.TrainSettings`; `train_overrides` changes them here
# without touching the file.

# %% tags=["hide-input"]
# %matplotlib inline
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from sklearn.decomposition import PCA

from polar4d_lib import (
    config,
    conventions,
    datasets,
    evaluation,
    experiments,
    models,
    plotting,
    preprocessing,
    recipes,
    training,
)
from polar4d_lib.models import neural

chapter_start = time.perf_counter()
dataset_path = f"data/{profile}.zarr" if dataset_path is None else str(dataset_path)
results_dir = Path(f"results/{profile}" if results_dir is None else results_dir)
settings = recipes.TrainSettings.for_profile(profile, train_overrides)
kinds = list(models.ALL_KINDS if kinds is None else kinds)
seeds = [int(s) for s in (settings.seeds if seeds is None else seeds)]
if random_split_kinds is None:
    random_split_kinds = kinds if settings.random_split_kinds is None else [k for k in settings.random_split_kinds if k in kinds]
random_split_kinds = list(random_split_kinds)
unknown = sorted(set(kinds) - set(models.ALL_KINDS))
if unknown:
    raise ValueError(f"unknown model kinds {unknown}; use some of {', '.join(models.ALL_KINDS)}")
kinds_for = {s: (random_split_kinds if s == "random" else kinds) for s in splits}

if not Path(dataset_path).exists():
    start = time.perf_counter()
    datasets.build(datasets.spec_for_profile(profile), dataset_path, profile=profile, num_workers=num_workers)
    print(f"built {dataset_path} in {time.perf_counter() - start:.0f} s")
ds = datasets.open_dataset(dataset_path)
patterns, labels = ds["patterns"], ds["label"]
sampling = float(ds.attrs["q_sampling_mrad"])
print(datasets.describe(ds))
print(f"\ntraining settings ({profile}): {settings}")
print(f"seeds {seeds}; splits {splits}; models {kinds}")

# %% [markdown]
# ## 1. Preprocessing, step by step
#
# A model never sees a raw detector frame. Every model stores a `Preprocessor` and replays it on whatever
# it is given, so the same model can read patterns recorded at another camera length or detector size:
#
# 1. **Resample** to the model's angular sampling (mrad per pixel) by count-conserving rebinning, with
#    zero angle kept at the array's central pixel. A detector with finer or coarser pixels thus gives the
#    model the same picture in mrad.
# 2. **Find the centre** of the pattern. The paper's choice (`center="dataset"`) takes, for every
#    pattern, the centroid of its brightest pixels (at or above a percentile of its intensities) and
#    averages it over all patterns given together — one centre for a whole scan, which follows a
#    mis-centred detector but not the tiny shifts the polarization itself causes. A per-pattern centre of
#    the bright-field disk is an option, at the cost of removing part of the centre-of-mass signal.
# 3. **Crop** a square window around that centre (sub-pixel exact, zero-padded outside the detector).
# 4. **Normalise** each pattern, here per-pattern min–max to [0, 1] as in the paper, so that dose and
#    thickness change the pattern's contrast, not its scale.
# 5. **Standardise** each pixel (networks only; PCA-kNN has its own scaler): subtract the mean and divide
#    by the spread of that pixel over the training patterns (both averaged over the 8 D4 images, spreads
#    floored at 1 % of their median). The paper stops at step 4; here the weak intensities outside the
#    bright-field disk, where the polarization shows, would otherwise sit at ~10⁻³ of the input range.
#
# The profile's preprocessing parameters:

# %%
pre = preprocessing.Preprocessor(**settings.preprocessor)
display(pd.DataFrame([pre.to_dict()], index=["model preprocessing"]))
print(f"dataset sampling {sampling} mrad/px, detector {patterns.shape[1]}×{patterns.shape[2]} px; "
      f"model sampling {pre.sampling_mrad} mrad/px, crop {pre.size}×{pre.size} px")

# %% [markdown]
# The same four steps by hand, on the first pattern of a few classes, then checked against the
# `Preprocessor` a model uses. The cyan + on the raw pattern marks the centre found in step 2.

# %% tags=["hide-input"]
example_idx = [int(np.flatnonzero(labels == conventions.class_index(c))[0]) for c in preprocessing_examples]
raw = patterns[example_idx]
canvas_all = preprocessing.resample_to(patterns, sampling, pre.sampling_mrad)  # step 1 (all: the centre needs them)
centers_px = preprocessing.find_centers_px(canvas_all, pre.center, pre.bright_percentile)  # step 2
canvas = canvas_all[example_idx]
cropped = preprocessing.crop(canvas, centers_px[example_idx], pre.size)  # step 3
normalised = preprocessing.normalize(cropped, pre.normalize)  # step 4
replayed = pre.transform(patterns, sampling)[example_idx]
print("hand-made steps equal Preprocessor.transform:", bool(np.allclose(normalised, replayed, atol=1e-6)))
zero_px = np.array(canvas.shape[1:]) // 2
centers_mrad = [tuple((c - zero_px) * pre.sampling_mrad) for c in centers_px[example_idx]]
print("centre found (θx, θy) in mrad:", [tuple(round(float(v), 3) for v in c) for c in centers_mrad])
plotting.preprocessing_steps_figure(
    [raw, canvas, cropped, normalised], [sampling, pre.sampling_mrad, pre.sampling_mrad, pre.sampling_mrad],
    [f"raw, {raw.shape[1]}×{raw.shape[2]} px at {sampling} mrad/px",
     f"1. resampled to {pre.sampling_mrad} mrad/px ({canvas.shape[1]}×{canvas.shape[2]} px)",
     f"2–3. centred ({pre.center}) and cropped to {pre.size}×{pre.size} px",
     f"4. normalised ({pre.normalize}), what the model sees"],
    [f"{c} (pattern {i})" for c, i in zip(preprocessing_examples, example_idx)],
    log=[True, True, True, False],
    colorbar_labels=["fraction of beam per pixel"] * 3 + ["normalised intensity"],
    centers_mrad=centers_mrad,
)

# %% [markdown]
# The first three columns are on a logarithmic scale, which shows the faint diffracted intensity outside
# the bright-field disk; the last column is linear, as the model receives it: on a linear scale nearly all
# of the contrast sits in the bright-field disk, where the overlapping disks interfere. Where the model's
# sampling equals the dataset's, step 1 changes nothing (the first two columns are the same).

# %% [markdown]
# Step 1 matters when a pattern comes from another detector or camera length. The first example pattern as a
# detector with `other_detector_sampling_mrad` would record it (count-conserving rebinning of the simulated
# pattern), and that pattern brought back to the model's sampling by `resample_to`:

# %% tags=["hide-input"]
other = preprocessing.resample_to(raw[0], sampling, other_detector_sampling_mrad)
back = preprocessing.resample_to(other, other_detector_sampling_mrad, pre.sampling_mrad)
print(f"total intensity: original {raw[0].sum():.6f}, at {other_detector_sampling_mrad} mrad/px {other.sum():.6f}, "
      f"back at {pre.sampling_mrad} mrad/px {back.sum():.6f} (fraction of the beam)")
plotting.pattern_grid(
    [raw[0], other, back], [sampling, other_detector_sampling_mrad, pre.sampling_mrad],
    [f"simulated, {sampling} mrad/px ({raw.shape[1]} px)",
     f"recorded at {other_detector_sampling_mrad} mrad/px ({other.shape[0]} px)",
     f"resampled to {pre.sampling_mrad} mrad/px ({back.shape[0]} px)"],
    ncols=3, shared_scale=False, colorbar_label="fraction of beam per pixel",
)

# %% [markdown]
# Step 5 on the same patterns: the per-pixel mean and spread of the whole dataset after steps 1–4, and what
# the network receives. The spread is largest at the rim of the bright-field disk and in the dark field,
# where the probe position and the polarization move intensity around.

# %% tags=["hide-input"]
x_all = torch.from_numpy(np.ascontiguousarray(pre.transform(patterns, sampling), dtype=np.float32)).unsqueeze(1)
pixel_mean, pixel_std = neural.input_statistics(x_all)
standardised = ((x_all[example_idx, 0] - pixel_mean) / pixel_std).numpy()
display(plotting.standardisation_figure(pixel_mean.numpy(), pixel_std.numpy(), standardised, pre.sampling_mrad,
                                        [f"{c}, standardised" for c in preprocessing_examples]))

# %% [markdown]
# ## 2. Training, validation and test parts
#
# Neighbouring probe positions of one specimen give nearly identical patterns. The paper split its
# patterns at random (80 % training, 10 % validation, 10 % test), so almost every test pattern had a
# near-twin in the training set, and a model could score well by remembering rather than by reading the
# polarization. The headline split here (`blocked`) holds out **whole specimens**: for each class one
# simulated specimen (another random K/Na arrangement, with its own probe settings and positions) goes to
# the test part and one to validation where the class has enough of them; a class with fewer specimens
# gives up whole **probe settings** (defocus and astigmatism draws) instead. The random split is kept to
# compare with the paper. Counts per class and part for the first seed:

# %% tags=["hide-input"]
split_objects = {s: evaluation.make_split(ds, s, seeds[0]) for s in splits}
counts = {}
for s, sp in split_objects.items():
    for part in ("train", "val", "test"):
        counts[(s, part)] = np.bincount(labels[getattr(sp, part)], minlength=conventions.N_CLASSES)
count_table = pd.DataFrame(counts, index=pd.Index(conventions.CLASS_NAMES, name="class"))
count_table.loc["total"] = count_table.sum()
for s, sp in split_objects.items():
    print(sp.describe())
display(count_table)

# %% [markdown]
# How much of each test part has a near-twin in training? Patterns of one specimen, probe setting and
# thickness differ only by the probe position; the share of test patterns whose (specimen, probe setting,
# thickness) group also appears in the training part:

# %% tags=["hide-input"]
group = np.stack([ds["unit"], ds["probe_setting"], np.unique(ds["thickness_nm"], return_inverse=True)[1]], 1)
keys = group[:, 0] * 10_000 + group[:, 1] * 100 + group[:, 2]
twin_share = {s: float(np.mean(np.isin(keys[sp.test], keys[sp.train]))) for s, sp in split_objects.items()}
display(pd.DataFrame({"test patterns with a training twin group (%)": {s: 100 * v for s, v in twin_share.items()}}))
if any(len(sp.val) == 0 for sp in split_objects.values()):
    print("a split has no validation patterns for this dataset: the networks then validate (early stopping) on a "
          "seeded 10 % of their training part")

# %% [markdown]
# ## 3. Training every variant
#
# Each model variant is trained with each seed on each split by `experiments.train_and_evaluate`, the same
# function `polar4d train` uses: it trains on the training part (networks: Adam, early stopping on the
# validation loss, the best epoch restored) and scores the model on the un-augmented test part through the
# evaluation path, which calls nothing but `model.predict`. The fitted models of the first seed are kept
# for the figures below and saved to `results/<profile>/models/`: the **domain gap** chapter scores exactly
# these models (with the shipped default model) on its test suites, the **error periodicity** and **defects**
# chapters map their scans with the classifiers, PCA-kNN and the physics baseline, and the **explorer** maps a
# scan with some of them. The physics baseline fits only the sign and scale of its centre-of-mass and
# Friedel-asymmetry directions on the training part.

# %% tags=["hide-input"]
scores: dict[str, dict[str, list[dict]]] = {s: {k: [] for k in kinds_for[s]} for s in splits}
fitted: dict[tuple[str, str], models.PolarizationModel] = {}
log_rows = []
with config.set(progress_bar=progress_bar):
    for split_kind in splits:
        for kind in kinds_for[split_kind]:
            for seed in seeds:
                start = time.perf_counter()
                model, score = experiments.train_and_evaluate(kind, dataset_path, profile, seed, split_kind,
                                                        overrides=train_overrides)
                score["train_seconds"] = time.perf_counter() - start
                scores[split_kind][kind].append(score)
                if seed == seeds[0]:
                    fitted[(split_kind, kind)] = model
                log_rows.append({"split": split_kind, "model": kind, "seed": seed,
                                 "training patterns": score["n_train"],
                                 "test patterns": score["n"], "accuracy (%)": 100 * score["accuracy"],
                                 "epochs": model.metadata.get("epochs", "–"), "time (s)": score["train_seconds"]})
training_seconds = sum(r["time (s)"] for r in log_rows)
display(pd.DataFrame(log_rows).set_index(["split", "model", "seed"]).round(2))
print(f"{len(log_rows)} training runs in {training_seconds:.0f} s")
# The first seed's models of the headline split, for the next chapters (and `polar4d predict --model`).
model_dir = results_dir / "models"
for (split_kind, kind), model in fitted.items():
    if split_kind == splits[0]:
        model.save(model_dir / f"{kind}{model.suffix}")
print(f"saved {sum(s == splits[0] for s, _ in fitted)} models to {model_dir}")

# %% [markdown]
# ## 4. Learning curves
#
# For each network of the first seed: the loss on the training batches (solid) and on the validation part
# (dashed) after every epoch — one panel per head, since cross-entropy (classification), squared error
# (regression of cos θ, sin θ) and the KL divergence of the prototype head are not on one scale — and the
# validation accuracy of all of them. The dot marks the epoch whose weights were
# kept. A validation loss that rises while the training loss keeps falling is over-fitting; early stopping
# ends training a few epochs after the validation loss stops improving.

# %% tags=["hide-input"]
for split_kind in splits:
    histories = {k: fitted[(split_kind, k)].metadata["history"] for k in kinds_for[split_kind]
                 if k in models.NETWORK_KINDS}
    if histories:
        display(plotting.learning_curves_figure(histories, f"networks, {split_objects[split_kind].describe()}, "
                                                           f"seed {seeds[0]}"))

# %% [markdown]
# ## 5. The results table
#
# One row per variant (encoder–head; PCA + kNN) plus the physics baseline, one column per split; each cell
# the mean over the seeds, with the standard deviation below it where there is more than one seed (a spread
# of one seed is undefined). Chance is 1/8 of the patterns, 12.5 %. A blank cell marks a variant not
# trained on that split. The same tables in the paper's text layout go to `training.json` (section 8).

# %% tags=["hide-input"]
split_titles = {s: f"{s}: {split_objects[s].describe().split(':')[0]}" for s in splits}
results = {(split_titles[s], kind): per_seed for s in splits for kind, per_seed in scores[s].items()}
tables = {
    "accuracy (%)": evaluation.paper_table(results, metric="accuracy"),
    "macro-F1 (%)": evaluation.paper_table(results, metric="macro_f1"),
    "mean angular error (°)": evaluation.paper_table(results, metric="mean_angular_error_deg", percent=False),
}
aggregates = {s: {k: evaluation.aggregate(v) for k, v in scores[s].items()} for s in splits}

# %%
plotting.score_heatmaps(aggregates)

# %% [markdown]
# The accuracy is the share of test patterns whose class is right; macro-F1 averages the per-class F1
# score, so a model that never predicts one class is penalised even if that class is rare; the mean
# angular error is the average angle (0°–180°) between the predicted and the true class direction — a
# neighbouring class costs 45°, the opposite one 180°, and guessing at random about 90°.

# %% [markdown]
# ## 6. Confusion matrices
#
# Rows are the true class, columns the predicted one, summed over the seeds; the colour is the share of
# each true class. A good model has a dark diagonal. Errors into the neighbouring classes (one off the
# diagonal, wrapping around) are errors of 45°; errors into the opposite class (four off) mean the model
# has seen the axis of the polarization but not its sign — the sign is what only the Friedel asymmetry
# carries.

# %%
matrices = {f"{kind} — {s}": evaluation.aggregate(scores[s][kind])["confusion"]
            for s in splits for kind in confusion_kinds if kind in scores[s]}
if matrices:
    display(plotting.confusion_figure(matrices, ncols=min(4, len(matrices))))

# %% [markdown]
# ## 7. What the models see: 2-D embeddings
#
# PCA + kNN compares patterns in the space of their first principal components; a prototype network
# compares them in its 128-dimensional learned embedding by the cosine to each class's mean. Drawing all
# patterns of the dataset in the first two components of each space (filled: training and validation
# patterns; hollow: the test part of the first split) shows whether the classes form separate clusters.
# The PCA embedding is ordered by explained variance, so its first two components are shown directly; the
# network's embeddings are normalised to unit length (the cosine is what the model uses) and reduced to two
# dimensions by a PCA.

# %% tags=["hide-input"]
embed_split = splits[0]
held_out = np.isin(np.arange(len(labels)), split_objects[embed_split].test)
points, axis_labels = {}, {}
if (embed_split, "pca-knn") in fitted:
    pca_model = fitted[(embed_split, "pca-knn")]
    pca_embedding = pca_model.embed(patterns, sampling)
    ratio = pca_model.pipeline.named_steps["pca"].explained_variance_ratio_
    title = f"PCA + kNN ({embed_split} split)"
    points[title] = pca_embedding[:, :2]
    axis_labels[title] = (f"PC 1 ({100 * ratio[0]:.1f} % of variance)", f"PC 2 ({100 * ratio[1]:.1f} % of variance)")
if (embed_split, embedding_kind) in fitted and embedding_kind.endswith("-proto"):
    net_model = fitted[(embed_split, embedding_kind)]
    x = torch.from_numpy(net_model.preprocessor.transform(patterns, sampling)).unsqueeze(1)
    embedding = training.forward_batches(net_model.network, x, settings.batch_size, "cpu").numpy()
    embedding /= np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
    reducer = PCA(n_components=2, random_state=seeds[0]).fit(embedding)
    title = f"{embedding_kind} embedding ({embed_split} split)"
    points[title] = reducer.transform(embedding)
    axis_labels[title] = tuple(f"PC {i + 1} of the embedding ({100 * r:.1f} %)"
                               for i, r in enumerate(reducer.explained_variance_ratio_))
if points:
    display(plotting.embedding_figure(points, labels, held_out, axis_labels))
else:
    print("neither pca-knn nor a prototype network was trained on the first split; nothing to draw")

# %% [markdown]
# With the overlapping disks of this study, a pattern depends more on where in the unit cell the probe
# sits than on the polarization (chapter 1). Principal components rank directions by variance, not by
# class, so the largest ones tend to follow the probe position, thickness and aberrations; where the
# classes overlap in them, a kNN finds neighbours of the same position rather than of the same
# polarization. A prototype network is trained to pull the patterns of one class together, so its
# embedding can separate the classes — given enough data and epochs, which the `smoke` profile does not
# give.

# %% [markdown]
# ## 8. All numbers, written to disk
#
# Every per-seed score (with its confusion matrix), the mean ± std over seeds and the tables above are
# written to `results/<profile>/training.json`, with the dataset's checksum and the training settings, so
# that the book's numbers can be traced and compared between runs. Read back from the file:

# %% tags=["hide-input"]
record = {
    "profile": profile,
    "dataset": dataset_path,
    "dataset_sha256": ds.attrs.get("content_sha256"),
    "train_settings": asdict(settings),
    "seeds": seeds,
    "splits": {s: split_objects[s].describe() for s in splits},
    "scores": scores,
    "aggregate": aggregates,
    "tables": {name: table.to_dict(orient="index") for name, table in tables.items()},
    "training_seconds": training_seconds,
}
json_path = experiments.write_json(record, results_dir / "training.json")
saved = json.loads(json_path.read_text())
print(f"wrote {json_path} ({json_path.stat().st_size / 1024:.1f} kB): {', '.join(saved)}")
rows = [{"split": s, "model": k, "seed": r["seed"], "accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
         "mean_angular_error_deg": r["mean_angular_error_deg"],
         "majority class": conventions.class_name(r["majority_class"]),
         "n_train": r["n_train"], "n_test": r["n"]}
        for s, per_kind in saved["scores"].items() for k, per_seed in per_kind.items() for r in per_seed]
display(pd.DataFrame(rows).set_index(["split", "model", "seed"]).round(3))

# %% [markdown]
# ## Summary

# %% tags=["hide-input"]
accuracy = {s: {k: float(np.mean([r["accuracy"] for r in v])) for k, v in scores[s].items()} for s in splits}
lines = []
for s in splits:
    best = max(accuracy[s], key=accuracy[s].get)
    lines.append(f"* **{s} split** ({split_objects[s].describe()}): the best variant is **{best}** with "
                 f"{100 * accuracy[s][best]:.1f} % of the test patterns right "
                 f"(chance {100 / conventions.N_CLASSES:.1f} %); the physics baseline "
                 f"reaches {100 * accuracy[s].get('physics', float('nan')):.1f} %.")
common = [k for k in kinds if all(k in accuracy[s] for s in splits)]
if {"blocked", "random"} <= set(splits) and common:
    gap = np.mean([accuracy["random"][k] - accuracy["blocked"][k] for k in common])
    lines.append(f"* Averaged over the {len(common)} variants trained on both, the random split scores "
                 f"{100 * gap:+.1f} percentage points relative to held-out specimens.")
lines.append(f"* {len(log_rows)} training runs took {training_seconds:.0f} s; the whole chapter "
             f"{time.perf_counter() - chapter_start:.0f} s (profile `{profile}`).")
display(Markdown("\n".join(lines)))

# %% [markdown]
# * Every model replays the same stored preprocessing — resampling to its angular sampling, one centre per
#   scan, crop, per-pattern min–max, and for networks a per-pixel standardisation learnt from the training
#   patterns — so it can be given raw patterns at any detector calibration.
# * The headline scores come from specimens (or probe settings) the models never saw; a random split over
#   patterns puts near-twins of the test patterns into training and is kept only to compare with the paper.
# * All ten variants and the physics baseline run through one training and one evaluation path, scored on
#   un-augmented data; all numbers are in `results/<profile>/training.json`.
# * On the `smoke` profile the networks train for a couple of epochs on a few hundred patterns: the
#   numbers above test the machinery, not the models. Run the chapter with `profile="default"` for the
#   book's comparison.
#
# ## What next
#
# The models above were tested on patterns simulated like their training data. Real scans differ in
# thickness, defocus, dose, detector sampling and centre offset. The next chapter, **explorer**, runs these
# models over a simulated scan across a domain wall, next to the default model that `polar4d predict` ships:
# `polar4d default-model` chose that one by how well candidates hold up on realistic held-out scans, not by
# the synthetic test set alone (its card is on the **results** page).
