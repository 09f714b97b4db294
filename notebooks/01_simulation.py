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
# # Simulating 4D-STEM diffraction patterns of polar KNN
#
# **Overview.** A machine-learning model can only map polarization from diffraction patterns if the
# patterns *carry* the polarization. This chapter shows where that information sits, using the same
# simulation code that builds the training data. It covers:
#
# 1. the physics — why dynamical scattering breaks Friedel's law in a polar crystal, and why the probe
#    disks overlap at the study's large convergence semi-angle;
# 2. the structure model of (K,Na)NbO₃ and the 8 projected polarization classes;
# 3. a gallery of simulated patterns per class, position-averaged and at single probe positions, and
#    their Friedel asymmetry I(θ) − I(−θ);
# 4. how a pattern changes with the probe position inside the unit cell and with specimen thickness;
# 5. centre-of-mass (CoM) maps over one unit cell;
# 6. what a real detector does to an ideal pattern (dose, point-spread, background, calibration);
# 7. the simulated dataset that the next chapters train on.
#
# **Prerequisites.** The `polar4d` package installed (see the README) and nothing else: this
# chapter simulates everything it shows with abTEM {cite}`madsen2021abtem` and builds the
# profile's dataset if it is missing. Some familiarity with convergent-beam electron diffraction (CBED)
# and STEM helps. Frame and class conventions are those of `shared/CONVENTIONS.md`: the beam runs along
# [001]pc, x ∥ [100]pc, y ∥ [010]pc; every pattern is drawn with +θx to the right and +θy up (the array is
# `(Qx, Qy)` and is displayed transposed, `imshow(pattern.T, origin="lower")`).
#
# The `profile` parameter sets every size (supercell, thicknesses, probe grids): `smoke` takes a minute
# or two on a laptop, `default` a few minutes more. Profiles change sizes, never code paths.

# %% tags=["parameters"]
profile = "smoke"  # smoke | default | robust | paper — sizes only, never code paths
dataset_path = None  # the profile's simulated dataset (zarr); None → f"data/{profile}.zarr"
num_workers = 1  # dask workers if the dataset must be built; 1: in this process (fastest when small), None: polar4d config

# Sizes of this chapter's own simulations per profile; the three parameters below override them.
chapter_sizes = {
    "smoke": {"lateral_cells": 3, "thicknesses_nm": [1.0, 2.0, 3.0, 4.0], "grid_n": 8},
    "default": {"lateral_cells": 3, "thicknesses_nm": [5.0, 10.0, 15.0, 20.0, 25.0, 30.0], "grid_n": 8},
    "robust": {"lateral_cells": 4, "thicknesses_nm": [10.0, 20.0, 30.0, 40.0, 50.0], "grid_n": 8},
    "paper": {"lateral_cells": 6, "thicknesses_nm": [10.0, 20.0, 30.0, 40.0, 50.0], "grid_n": 16},
}
lateral_cells = None  # supercell width in unit cells (sets the pattern's native sampling λ/(n·a))
thicknesses_nm = None  # thickness series (nm); the gallery uses the thickest
grid_n = None  # n × n probe positions over one unit cell (position averages, CoM maps); exact if n > 2α/(λ/a)

position_grid_n = 4  # n × n fractional probe positions (0, 1/n, …) in the position figure
step_grid_n = [3, 4, 5, 6, 7, 8, 10]  # rasters of a/n in the scan-step figure

disorder_seed = 0  # seed of the random K/Na occupation of the A sites
structure_thickness_nm = 1.2  # specimen thickness drawn in the structure pictures (nm)
exaggeration = 4.0  # factor on the polar displacements in the structure pictures only
single_position_frac = [0.25, 0.25]  # probe position (fraction of the cell) of the single-position gallery
showcase_class = "RU"  # class of the position, thickness and acquisition figures
com_classes = ["RM", "RU"]  # classes whose centre-of-mass maps are shown

doses_e_per_pattern = [1e3, 1e4, 1e5]  # electrons per pattern in the dose series
detector_model = {  # a realistic detector: see polar4d_lib.acquisition.Acquisition
    "dose_e_per_pattern": 1e4,
    "psf_sigma_px": 1.0,
    "background_counts": 0.5,
    "dark_noise_sigma": 0.5,
    "center_offset_px": [4.5, -3.0],
    "sampling_out_mrad": 1.1,
    "shape_out": [80, 80],
    "scan_rotation_deg": 10.0,
}
seed = 888  # seed of the acquisition noise

# %% [markdown]
# Sizes left at `None` take the profile's value from `chapter_sizes`. The physics (lattice parameter,
# K fraction, polar displacements, beam energy, convergence semi-angle, detector sampling) is the
# dataset's: it comes from the profile's dataset specification (`datasets.spec_for_profile`), so the
# pictures here show exactly what the models train on.

# %% tags=["hide-input"]
# %matplotlib inline
import time
from pathlib import Path

import numpy as np
from IPython.display import Markdown, display

from polar4d_lib import acquisition, conventions, datasets, detector, plotting, simulation, structure
from polar4d_lib.pacbed import alias_free_step_A

if profile not in chapter_sizes:
    raise ValueError(f"profile {profile!r} has no chapter sizes; use one of {', '.join(chapter_sizes)}")
sizes = chapter_sizes[profile]
lateral_cells = sizes["lateral_cells"] if lateral_cells is None else lateral_cells
thicknesses_nm = sizes["thicknesses_nm"] if thicknesses_nm is None else thicknesses_nm
grid_n = sizes["grid_n"] if grid_n is None else grid_n
dataset_path = f"data/{profile}.zarr" if dataset_path is None else dataset_path

spec = datasets.spec_for_profile(profile)
settings = spec.simulation
q_mrad = settings.q_sampling_mrad
probe = simulation.ProbeSettings(energy_kev=spec.energy_kev, semiangle_mrad=spec.semiangle_mrad)
print(f"profile {profile}: {lateral_cells}×{lateral_cells} cells, thicknesses {thicknesses_nm} nm, "
      f"{grid_n}×{grid_n} positions per cell, dataset {dataset_path}")
print(f"a = {spec.a_A} Å, K fraction {spec.k_fraction}, {spec.displacements}")
print(f"probe {probe.energy_kev} keV, {probe.semiangle_mrad} mrad; detector {settings.detector_shape} px "
      f"at {q_mrad} mrad/px")

# %% [markdown]
# ## 1. The physics: Friedel's law, dynamical scattering and overlapping disks
#
# **Friedel's law.** In the kinematic (single-scattering, first Born) approximation the amplitude
# scattered into reflection **g** is the Fourier coefficient V(**g**) of the crystal potential. The
# potential is real, so V(−**g**) = V(**g**)*, and the intensities obey I(**g**) = I(−**g**) *whatever the
# crystal's symmetry*. A kinematic pattern is therefore centrosymmetric even when the crystal is not:
# it cannot tell +P from −P.
#
# **Dynamical scattering breaks it.** Electrons interact strongly with matter: within a few nanometres
# of an oxide a beam is scattered again and again. The amplitude in **g** then becomes a sum over paths —
# directly, or via **h** and then **g** − **h**, and so on — and the paths interfere with relative phases
# φ(**h**) + φ(**g** − **h**) − φ(**g**) built from the *phases* of the structure factors, not only their
# moduli. Because V(−**g**) = V(**g**)*, these phase sums change sign between **g** and −**g**. In a
# centrosymmetric crystal they are 0 or π, so nothing changes; in a non-centrosymmetric one they are not,
# the interference differs and I(**g**) ≠ I(−**g**). This is how CBED determines polarity (Goodman & Lehmpfuhl, *Acta Cryst.* A24, 339, 1968, for ZnS). In
# KNN the polar displacement of Nb against its O cage makes the projected cell non-centrosymmetric,
# and the asymmetry of the diffraction pattern under θ → −θ is the signal every model in this book
# learns from.
#
# **Overlapping disks.** A convergent probe of semi-angle α turns each Bragg spot into a disk of radius
# α. Neighbouring first-order disks of the pseudocubic cell sit λ/a apart. When 2α exceeds λ/a the
# disks overlap; where they do, two or more beams interfere with a phase set by the probe position
# relative to the lattice. That makes each pattern depend on *where in the unit cell* the probe sits
# (the basis of ptychography), while the position-averaged pattern (PACBED) keeps only the specimen's
# own diffraction. The numbers for the set-up of this study:

# %% tags=["hide-input"]
wavelength_A = simulation.wavelength_A(spec.energy_kev)
bragg_mrad = 1e3 * wavelength_A / spec.a_A  # first-order spacing λ/a (rad → mrad)
overlap = 2 * spec.semiangle_mrad / bragg_mrad
probe_radius_A = 0.61 * wavelength_A / (1e-3 * spec.semiangle_mrad)  # Rayleigh radius of the probe
display(Markdown(
    f"At {spec.energy_kev:g} kV the electron wavelength is λ = {wavelength_A * 1e3:.3f} pm. With the pseudocubic "
    f"lattice parameter a = {spec.a_A} Å the first-order reflections are λ/a = **{bragg_mrad:.2f} mrad** apart, "
    f"while the bright-field disk has a radius of α = {spec.semiangle_mrad:g} mrad: a disk spans "
    f"2α/(λ/a) = **{overlap:.1f}** reflection spacings, so every point of the bright-field disk is covered by "
    f"the disks of up to about {int(np.floor(spec.semiangle_mrad / bragg_mrad))} orders in each direction. "
    f"The probe itself is small: its Rayleigh radius 0.61 λ/α = {probe_radius_A:.2f} Å is well below "
    f"the {spec.a_A / 2:.2f} Å between neighbouring atomic columns, so it resolves the columns of the cell."
))
plotting.disk_overlap_figure(spec.semiangle_mrad, bragg_mrad, order=1)

# %% [markdown]
# The figure draws only the central disk and its 8 nearest neighbours (reflections (h, k) with
# |h|, |k| ≤ 1): even these already overlap almost entirely. A 4D-STEM pattern of KNN at this convergence
# is therefore not a set of separate disks but one bright disk whose inner structure is the interference
# of many beams.
#
# ## 2. The structure and the 8 projected classes
#
# KNN at room temperature is orthorhombic (Amm2) with the polarization along a pseudocubic ⟨110⟩
# direction: 12 variants. Seen down [001]pc, the 4 in-plane variants ±[110], ±[1-10] project onto the
# diagonals and the 8 inclined ones [±1 0 ±1], [0 ±1 ±1] onto ±x and ±y (shorter by 1/√2, and the up and
# down variants of each pair look the same in projection). That gives the **8 classes** k = 0…7, the
# projected direction k·45° from +x towards +y, named by their x (R/M/L) and y (U/M/D) components.
#
# The model cell is the ideal perovskite: A sites (K or Na, at random with the K fraction) at the cell
# corners, Nb at the centre, O at the face centres. The polar displacement moves Nb (and a little the A
# cation) along +P and the O cage along −P. Seen down the beam, the Nb column coincides with one O column
# (the O bonded along z); the displacement pulls the two apart. Below, one representative variant per
# class is drawn with its displacements **multiplied by `exaggeration`** so that they are visible; the
# simulations use the true values.

# %% tags=["hide-input"]
representative_variant = conventions.first_variants()
print("representative variant per class:",
      ", ".join(f"{conventions.CLASS_NAMES[k]} {conventions.VARIANTS[v].tolist()}" for k, v in enumerate(representative_variant)))
shown = spec.displacements.scaled(exaggeration)
print(f"true displacements: {spec.displacements}; drawn ×{exaggeration:g}: {shown}")
cells = []
for variant in representative_variant:
    cell = structure.knn_supercell(variant, lateral_cells=1, thickness_nm=structure_thickness_nm, a_A=spec.a_A,
                                   k_fraction=spec.k_fraction, displacements=shown, seed=disorder_seed)
    cells.append((cell.atoms.positions, cell.atoms.numbers))
plotting.structure_compass(
    cells, spec.a_A, conventions.VARIANTS[representative_variant],
    titles=[f"{conventions.CLASS_NAMES[k]}  P ∥ {conventions.VARIANTS[v].tolist()}" for k, v in enumerate(representative_variant)],
    suptitle=f"one unit cell seen down [001]pc, displacements ×{exaggeration:g}; arrow = projected P",
)

# %% [markdown]
# Each panel sits in the direction of its class from the centre. For the in-plane variants (RU, LU,
# LD, RD) the whole displacement is in the picture; for the inclined ones (RM, MU, LM, MD) the
# out-of-plane part is invisible, so the shift — and the arrow — is shorter. Stacked columns of A sites
# show K and Na circles on top of each other: the K/Na disorder along the beam.
#
# ## 3. A gallery of patterns per class
#
# For every class we build a periodic supercell of `lateral_cells` × `lateral_cells` cells and the
# thickest thickness of the series, and compute its scattering matrix once with PRISM
# (`simulation.PrismSpecimen`); patterns for any probe position then cost about a millisecond. The
# supercell width sets the native angular sampling of the patterns, λ/(n·a); they are then rebinned
# onto the detector grid (where the native sampling is the coarser, fine detail looks blocky). We record:
#
# * a `grid_n` × `grid_n` grid of probe positions covering one unit cell (in the middle of the
#   supercell) — its average is the position-averaged pattern (PACBED), and the grid gives the CoM maps of
#   section 5;
# * one probe position, at `single_position_frac` of the cell.
#
# The probe is the dataset's nominal one, in focus and without aberrations. How many positions does an
# exact position average need? At any detector pixel the intensity, as a function of probe position,
# is the interference of pairs of beams that both fall inside the aperture, so it contains only lattice
# harmonics (h, k)/a with |h|, |k| ≤ 2α/(λ/a). An n-point grid per cell averages all of them away except
# multiples of n: the average over the grid is exact when n > 2α/(λ/a). A coarser grid aliases
# position-dependent structure into the "average" and shows asymmetries that are not there.

# %% tags=["hide-input"]
origin_cell = (lateral_cells // 2, lateral_cells // 2)  # the cell in the middle of the supercell
origin_A = np.asarray(origin_cell) * spec.a_A
grid_positions = simulation.cell_grid_positions(spec.a_A, grid_n, origin_cell)  # (grid_n², 2) Å, x-major
grid_fractions = np.arange(grid_n) / grid_n
single_position = origin_A + np.asarray(single_position_frac) * spec.a_A
_, _, exact_thicknesses = simulation.exit_planes_for(thicknesses_nm, spec.a_A, settings.slices_per_cell)
print(f"thicknesses {thicknesses_nm} nm are simulated as {', '.join(f'{t:.2f}' for t in exact_thicknesses)} nm "
      "(rounded to whole multiples of the thinnest, in whole cells, to come from one multislice run)")

print(f"grid of {grid_n}×{grid_n} positions per cell (step {spec.a_A / grid_n:.2f} Å); an exact position average "
      f"needs n > 2α/(λ/a) = {overlap:.2f}: " + ("satisfied" if grid_n > overlap else "NOT satisfied — the averages below are aliased"))

showcase = conventions.class_index(showcase_class)
grid_patterns, single_patterns, specimens = [], [], []
start = time.perf_counter()
for k, variant in enumerate(representative_variant):
    specimen = structure.knn_supercell(variant, lateral_cells=lateral_cells, thickness_nm=max(thicknesses_nm),
                                       a_A=spec.a_A, k_fraction=spec.k_fraction, displacements=spec.displacements,
                                       seed=disorder_seed)
    prism = simulation.PrismSpecimen(specimen.atoms, settings, spec.a_A, thicknesses_nm, spec.energy_kev,
                                     spec.semiangle_mrad)
    grid_patterns.append(prism.patterns(probe, grid_positions))  # (T, grid_n², Qx, Qy)
    single_patterns.append(prism.patterns(probe, single_position)[:, 0])  # (T, Qx, Qy)
    specimens.append(specimen)
    if k == showcase:
        showcase_prism = prism
grid_patterns, single_patterns = np.stack(grid_patterns), np.stack(single_patterns)  # (8, T, …)
thicknesses = np.asarray(showcase_prism.thicknesses_nm)
pacbed = grid_patterns.mean(axis=2)  # (8, T, Qx, Qy): position average over the one-cell grid
print(f"{len(specimens)} specimens of {len(specimen.atoms)} atoms simulated in {time.perf_counter() - start:.0f} s; "
      f"patterns {grid_patterns.shape[-2:]} px at {q_mrad} mrad/px (native sampling of the supercell "
      f"λ/(n·a) = {bragg_mrad / lateral_cells:.2f} mrad), thicknesses {', '.join(f'{t:.2f}' for t in thicknesses)} nm")

# %% tags=["hide-input"]
t_show = len(thicknesses) - 1  # the thickest
plotting.class_compass(pacbed[:, t_show], q_mrad,
                       suptitle=f"position-averaged patterns (PACBED), {thicknesses[t_show]:.1f} nm, log scale")

# %%
plotting.class_compass(single_patterns[:, t_show], q_mrad,
                       suptitle=f"single probe position ({single_position_frac[0]:g}a, {single_position_frac[1]:g}a) "
                                f"in the cell, {thicknesses[t_show]:.1f} nm, log scale")

# %% [markdown]
# On a logarithmic scale the patterns look alike: a bright disk of radius α with faint structure
# inside and the dark-field rings outside. The differences between classes are small next to the
# pattern itself. They show up in the **Friedel difference** I(θ) − I(−θ), the pattern minus its 180°
# rotation about the zero angle, which vanishes wherever Friedel's law holds:

# %% tags=["hide-input"]
plotting.class_compass(conventions.friedel_difference(pacbed[:, t_show]), q_mrad, difference=True,
                       colorbar_label="I(θ) − I(−θ) per pixel",
                       suptitle=f"Friedel difference of the PACBED, {thicknesses[t_show]:.1f} nm")

# %% [markdown]
# Part of this asymmetry does not come from the polarization at all. The A sites hold K or Na at random,
# and a column with its own random sequence of K and Na breaks the centrosymmetry of the crystal too — a
# real effect in KNN, and here a large one, because a position average over one cell of a small supercell
# sees only a few such columns. All eight supercells share the same K/Na configuration (same
# `disorder_seed`), so this part is common to every class. A **control** separates the two: the same
# supercell, with the same K/Na configuration, but without polar displacements (the paraelectric cell).
# Its Friedel difference is the disorder's alone; subtracting it from each class leaves the polar part.

# %% tags=["hide-input"]
centro = structure.knn_supercell(representative_variant[showcase], lateral_cells=lateral_cells,
                                 thickness_nm=max(thicknesses_nm), a_A=spec.a_A, k_fraction=spec.k_fraction,
                                 displacements=spec.displacements.scaled(0.0), seed=disorder_seed)
centro_prism = simulation.PrismSpecimen(centro.atoms, settings, spec.a_A, thicknesses_nm, spec.energy_kev,
                                        spec.semiangle_mrad)
centro_grid = centro_prism.patterns(probe, grid_positions)  # (T, grid_n², Qx, Qy)
centro_pacbed = centro_grid.mean(axis=1)  # (T, Qx, Qy)
friedel_total = conventions.friedel_difference(pacbed)  # (8, T, Qx, Qy)
friedel_disorder = conventions.friedel_difference(centro_pacbed)  # (T, Qx, Qy)
friedel_polar = friedel_total - friedel_disorder[None]
norm = pacbed.sum(axis=(-2, -1))  # (8, T)
print("Σ|I(θ) − I(−θ)| / ΣI, mean over the 8 classes:")
for t, thickness in enumerate(thicknesses):
    print(f"{thickness:6.2f} nm: total {np.mean(np.abs(friedel_total[:, t]).sum(axis=(-2, -1)) / norm[:, t]):.4f}, "
          f"K/Na disorder (paraelectric) {np.abs(friedel_disorder[t]).sum() / centro_pacbed[t].sum():.4f}, "
          f"polar part {np.mean(np.abs(friedel_polar[:, t]).sum(axis=(-2, -1)) / norm[:, t]):.4f}")
plotting.pattern_grid(
    [friedel_total[showcase, t_show], friedel_disorder[t_show], friedel_polar[showcase, t_show]], q_mrad,
    titles=[f"{showcase_class}", "paraelectric (same K/Na)", f"{showcase_class} − paraelectric"], ncols=3,
    difference=True, colorbar_label="I(θ) − I(−θ) per pixel",
    suptitle=f"Friedel difference of the PACBED at {thicknesses[t_show]:.1f} nm, one colour scale",
)

# %%
plotting.class_compass(friedel_polar[:, t_show], q_mrad, difference=True, colorbar_label="I(θ) − I(−θ) per pixel",
                       suptitle=f"polar part of the Friedel difference (minus the paraelectric cell's), "
                                f"{thicknesses[t_show]:.1f} nm")

# %% [markdown]
# The polar part follows the class: it turns with the projected polarization, and the Friedel differences
# of opposite classes (RM and LM, RU and LD, …) are mirror images of each other with opposite sign. This
# systematic, class-locked asymmetry is the signal a model must find under the random one of the
# disorder (and, in experiment, under noise).

# %% [markdown]
# ## 4. Probe position and thickness
#
# **Position.** Because the disks overlap, moving the probe inside the cell changes the interference
# in the overlap regions. Below, the probe visits a `position_grid_n` × `position_grid_n` grid of
# fractional positions of one cell; each panel sits where its probe position sits in the cell (x right,
# y up). Position (0, 0) is on the A (K/Na) column, (½, ½) on the Nb–O column, (½, 0) and (0, ½) on the
# pure O columns.

# %% tags=["hide-input"]
position_fractions = np.arange(position_grid_n) / position_grid_n
position_patterns = showcase_prism.patterns(probe, simulation.cell_grid_positions(spec.a_A, position_grid_n, origin_cell))
position_patterns = position_patterns[t_show].reshape(position_grid_n, position_grid_n, *position_patterns.shape[-2:])
position_spread = np.abs(position_patterns - pacbed[showcase, t_show]).sum(axis=(-2, -1)).mean() / pacbed[showcase, t_show].sum()
class_spread = np.abs(pacbed[:, t_show] - pacbed[:, t_show].mean(axis=0)).sum(axis=(-2, -1)).mean() / pacbed[:, t_show].sum(axis=(-2, -1)).mean()
print(f"mean Σ|I − PACBED| / ΣI over these probe positions: {position_spread:.3f}; "
      f"mean Σ|PACBED_k − mean over classes| / ΣI over the 8 classes: {class_spread:.4f}")
plotting.position_grid_figure(position_patterns, position_fractions, q_mrad,
                              suptitle=f"{showcase_class}, {thicknesses[t_show]:.1f} nm: pattern versus probe position in the cell")

# %% [markdown]
# The numbers above compare the two sources of variation: how far single-position patterns stray from
# their position average, and how far the classes' position averages stray from each other. The position
# in the cell is by far the dominant variable of a pattern, and a classifier working on single patterns
# has to see through it. Some positions may carry little polarity information at all — a plausible origin
# of the periodic misclassifications reported in the study; this book does not test that yet.
#
# **Scan step.** A model that reads the mean over one cell of positions (the PACBED) needs that mean to
# be the same wherever the scan's raster happens to sit on the lattice. It is, exactly, when the step is
# below λ/(2α): the probe holds plane waves up to α/λ, so the patterns vary with its position at spatial
# frequencies up to 2α/λ only, and a finer raster samples that variation without aliasing. Below, a
# raster of step a/n over the whole supercell (so that the K/Na disorder, which repeats only with the
# supercell, averages out as well) is moved by a fraction of a step and the two means are compared:

# %% tags=["hide-input"]
alias_free_A = alias_free_step_A(probe.energy_kev, probe.semiangle_mrad)
step_dependence = [simulation.raster_origin_dependence(lambda r: showcase_prism.patterns(probe, r), spec.a_A, n,
                                                       cells=lateral_cells)[t_show] for n in step_grid_n]
coarse = [f"a/{n} = {spec.a_A / n:.2f} Å: {d:.3f}" for n, d in zip(step_grid_n, step_dependence) if spec.a_A / n >= alias_free_A]
fine = max((d for n, d in zip(step_grid_n, step_dependence) if spec.a_A / n < alias_free_A), default=float("nan"))
display(Markdown(
    f"At {probe.energy_kev:g} keV and {probe.semiangle_mrad:g} mrad, λ/(2α) = **{alias_free_A:.2f} Å**. Rasters "
    f"finer than that give the same mean wherever they sit (at most {fine:.1e}, round-off); coarser ones do "
    f"not ({'; '.join(coarse)}): up to {max(step_dependence) / class_spread:.0f} times the {class_spread:.4f} "
    "between the classes' means. A scan at a/4 shows the model a mean that changes with where its raster sits by "
    "far more than the polarization changes it: the default model is trained on such means too, and its card "
    "scores scans at a/8 and a/4 separately."
))
plotting.origin_dependence_figure(
    [spec.a_A / n for n in step_grid_n], step_dependence, alias_free_A, class_spread,
    title=f"{showcase_class}, {thicknesses[t_show]:.1f} nm: mean of a raster moved by a fraction of a step")

# %% [markdown]
# **Thickness.** The scattering matrix was computed with exit planes at every thickness of the series, so
# one simulation gives the whole series. The second row shows the polar part of the Friedel difference
# (minus the paraelectric cell's), which changes its strength and pattern with thickness as dynamical
# scattering builds up:

# %%
plotting.thickness_series_figure(pacbed[showcase], thicknesses, q_mrad, differences=friedel_polar[showcase],
                                 difference_title="polar part of I(θ) − I(−θ)",
                                 suptitle=f"{showcase_class}: PACBED and the polar part of its Friedel difference versus thickness")

# %% [markdown]
# ## 5. Centre-of-mass maps
#
# The centre of mass (CoM) of a diffraction pattern is the mean momentum transfer to the beam. For a
# thin specimen it is proportional to the projected electric field under the probe (averaged over the
# probe intensity): the negatively charged electrons are pulled towards the positive nuclei, so near a
# column the CoM points at it. Shifting the columns — the polar displacement — distorts this field.
# `detector.center_of_mass_mrad` gives the CoM (θx, θy) in mrad of each pattern of the one-cell grid.
# Colour = direction on the colour wheel, brightness = magnitude; rings = the atomic columns of the cell.

# %% tags=["hide-input"]
com_ks = [conventions.class_index(c) for c in com_classes]
com = detector.center_of_mass_mrad(grid_patterns[:, t_show], q_mrad).reshape(conventions.N_CLASSES, grid_n, grid_n, 2)
centro_com = detector.center_of_mass_mrad(centro_grid[t_show], q_mrad).reshape(grid_n, grid_n, 2)
cell_atoms = [(specimens[k].atoms.positions, specimens[k].atoms.numbers) for k in com_ks]
plotting.com_map_figure(
    [com[k] for k in com_ks] + [com[k] - centro_com for k in com_ks], grid_fractions, spec.a_A,
    titles=[f"CoM, {conventions.CLASS_NAMES[k]}" for k in com_ks]
    + [f"CoM({conventions.CLASS_NAMES[k]}) − CoM(paraelectric)" for k in com_ks],
    atoms=cell_atoms * 2, origin_A=tuple(origin_A),
    suptitle=f"centre of mass over one unit cell, {thicknesses[t_show]:.1f} nm",
)

# %% tags=["hide-input"]
for k in com_ks:
    rms_total = np.sqrt((com[k] ** 2).sum(-1).mean())
    rms_polar = np.sqrt(((com[k] - centro_com) ** 2).sum(-1).mean())
    print(f"{conventions.CLASS_NAMES[k]}: rms CoM over the cell {rms_total:.3f} mrad, of which the polar part "
          f"(minus paraelectric) {rms_polar:.3f} mrad")

# %% [markdown]
# The top row is dominated by the columns themselves, common to every class. The bottom row subtracts
# the paraelectric cell's CoM map and leaves the part due to the polar displacement. It is concentrated
# where the probe sits on or beside a displaced column, where the field is steepest and a shift of a
# fraction of an ångström changes the CoM most; between the columns it nearly vanishes. A single pattern
# therefore carries a CoM polarity signal only at some probe positions, and there it has to be told apart
# from the probe's exact position relative to the column.
#
# Averaged over the cell the projected field vanishes, but the CoM of the *position-averaged* pattern
# need not: dynamical scattering in a non-centrosymmetric cell shifts it. Here both the polarization and
# the K/Na disorder do; as for the Friedel difference, subtracting the paraelectric cell's mean CoM leaves
# the polar part.

# %% tags=["hide-input"]
mean_com = detector.center_of_mass_mrad(pacbed, q_mrad)  # (8, T, 2)
centro_mean_com = detector.center_of_mass_mrad(centro_pacbed, q_mrad)  # (T, 2): the K/Na disorder's
mean_com_polar = mean_com - centro_mean_com[None]
class_directions = np.stack([np.cos(np.radians(conventions.CLASS_ANGLES_DEG)),
                             np.sin(np.radians(conventions.CLASS_ANGLES_DEG))], -1)
along = np.einsum("ktj,kj->kt", mean_com_polar, class_directions)  # polar part along each class's direction
across = np.einsum("ktj,kj->kt", mean_com_polar, class_directions[:, ::-1] * [-1, 1])  # perpendicular to it
flips = int((np.sign(along).min(axis=1) != np.sign(along).max(axis=1)).sum())
display(Markdown(
    f"Over {thicknesses[0]:.1f}–{thicknesses[-1]:.1f} nm the polar part of the mean CoM, along its own class "
    f"direction, ranges from {along.min():.4f} to {along.max():.4f} mrad (perpendicular to it at most "
    f"{np.abs(across).max():.4f} mrad); it changes sign with thickness for **{flips} of the "
    f"{conventions.N_CLASSES} classes**. The paraelectric cell's own mean CoM, from the K/Na disorder alone, "
    f"reaches {np.hypot(*centro_mean_com.T).max():.4f} mrad."
))
plotting.com_thickness_figure(mean_com_polar, thicknesses, quantity="polar part of the mean CoM")

# %% [markdown]
# For each class the polar part of the mean CoM lies along (or against) the class direction — the
# mirror symmetry of the projected polar cell allows nothing else — so it does encode the projected
# polarization. But it is small, comparable to the shift the random K/Na occupation gives, and its size
# (and, where the count above is nonzero, its sign) depends on thickness: a rule "CoM points along P"
# needs to know the thickness and the disorder's contribution, which a real measurement cannot subtract.
# The physics baseline of chapter **training** uses the CoM and the Friedel asymmetry with these caveats.
#
# ## 6. From ideal patterns to what a detector records
#
# Simulated intensities are fractions of the incident beam. A real acquisition adds, in the order the
# electrons meet them (`acquisition.Acquisition.apply`): a **scan rotation** between scan and detector
# frames; the **detector geometry** — its own angular sampling (camera length), size and a zero angle that
# is not at the centre pixel (descan); **shot noise** — a finite dose of electrons per pattern, counted
# with Poisson statistics; the detector's **point-spread function**; and a readout **background** with
# **dark noise**. First the dose alone, on the ideal detector:

# %% tags=["hide-input"]
ideal = single_patterns[showcase, t_show]
dose_series = [acquisition.Acquisition(dose_e_per_pattern=dose, seed=seed).apply(ideal, q_mrad)[0]
               for dose in doses_e_per_pattern]
print("recorded electrons per pattern:", ", ".join(f"{p.sum():.0f}" for p in dose_series),
      f"(the ideal pattern keeps {ideal.sum():.3f} of the beam on the detector)")
plotting.pattern_grid(
    [ideal] + dose_series, q_mrad, ncols=len(dose_series) + 1, shared_scale=False,
    titles=["ideal (fraction of beam)"] + [f"{dose:.0e} e⁻ per pattern" for dose in doses_e_per_pattern],
    colorbar_label="intensity (fraction or counts per pixel)",
    suptitle=f"{showcase_class}, {thicknesses[t_show]:.1f} nm, one probe position: shot noise",
)

# %% [markdown]
# At the lowest dose most dark-field pixels record nothing and the bright disk holds only a few counts
# per pixel; the small differences between classes seen above are then buried in shot noise for a
# single pattern. Now the whole detector model, first its geometry alone (rotation, resampling to another
# calibration and an off-centre zero angle), then with dose, PSF, background and dark noise:

# %% tags=["hide-input"]
full_model = acquisition.Acquisition(**detector_model, seed=seed)
geometry_model = acquisition.Acquisition(
    **{**detector_model, "dose_e_per_pattern": None, "psf_sigma_px": 0.0, "background_counts": 0.0,
       "dark_noise_sigma": 0.0}, seed=seed)
geometry_only, s_out = geometry_model.apply(ideal, q_mrad)
recorded, s_out = full_model.apply(ideal, q_mrad)
print(full_model)
com_ideal = detector.center_of_mass_mrad(ideal, q_mrad)
com_geometry = detector.center_of_mass_mrad(geometry_only, s_out)
offset_mrad = np.asarray(detector_model["center_offset_px"]) * s_out
print(f"CoM of the ideal pattern {np.round(com_ideal, 3)} mrad; on the detector, measured from its centre pixel, "
      f"{np.round(com_geometry, 3)} mrad: the zero-angle offset of {np.round(offset_mrad, 2)} mrad "
      f"({detector_model['center_offset_px']} px × {s_out} mrad/px) is {np.hypot(*offset_mrad) / np.abs(along).max():.0f}× "
      "the largest position-averaged polar CoM of section 5")
plotting.pattern_grid(
    [ideal, geometry_only, recorded], [q_mrad, s_out, s_out], ncols=3, shared_scale=False,
    titles=[f"ideal, {ideal.shape[0]} px at {q_mrad} mrad/px",
            f"geometry: {detector_model['scan_rotation_deg']:g}° rotation, {geometry_only.shape[0]} px at {s_out} mrad/px",
            "+ dose, PSF, background, dark noise"],
    colorbar_label="intensity (fraction or counts per pixel)",
    suptitle="the detector model (axes: the detector's nominal calibration, zero at its centre pixel)",
)

# %% [markdown]
# The axes of the recorded patterns are what the detector's nominal calibration claims: zero at the
# centre pixel. The bright disk is visibly off that centre, and its radius in pixels has changed with the
# sampling. This is why every dataset and model in `polar4d` carries its angular sampling in mrad per
# pixel, and why preprocessing re-centres the patterns before any model sees them. Drawn at random over
# the ranges of `shared/CONVENTIONS.md`, the same acquisition model is the tool for narrowing the gap
# between simulation and experiment in training.
#
# ## 7. The simulated dataset
#
# The training data of the profile is a zarr group built by `datasets.build` (or `polar4d simulate`):
# for each polarization variant one supercell, its scattering matrix with a thickness series, then random
# probe settings (defocus, twofold astigmatism) × random probe positions over the whole supercell. Every
# pattern carries its labels and every simulation parameter travels in the attributes. It is built here
# if missing (cached per specimen, so an interrupted build resumes).

# %% tags=["hide-input"]
if not Path(dataset_path).exists():
    start = time.perf_counter()
    datasets.build(spec, dataset_path, profile=profile, num_workers=num_workers)
    print(f"built {dataset_path} in {time.perf_counter() - start:.0f} s")
ds = datasets.open_dataset(dataset_path)
print(datasets.describe(ds))
print("same physics as this chapter's simulations:", ds.attrs["parameters"] == spec.as_dict())

# %% tags=["hide-input"]
labels = ds["label"]
plotting.class_thickness_counts_figure(labels, ds["thickness_nm"])

# %% [markdown]
# The table counts the patterns of each class at each thickness. When a dataset holds all 12 variants,
# the axial classes (RM, MU, LM, MD) have twice as many patterns as the diagonal ones: an up and a down
# inclined variant project onto each of them. The random probe aberrations, one draw per probe setting
# and specimen:

# %%
plotting.probe_draws_figure(ds["defocus_nm"], ds["astigmatism_nm"], ds["astigmatism_angle_deg"],
                            keys=np.stack([ds["unit"], ds["probe_setting"]], -1))

# %% [markdown]
# And the mean pattern of each class over the whole dataset (all thicknesses, positions and probe
# settings), with its Friedel difference. The probe positions are random over the supercell, so with few
# patterns per class (as in the `smoke` profile) the Friedel difference of a class mean still reflects
# which positions happened to be drawn more than the polarization; with many patterns it approaches the
# PACBED asymmetry of section 3 (averaged over the thicknesses and aberrations).

# %% tags=["hide-input"]
means, counts = plotting.class_means(ds.group["patterns"], labels)
ds_sampling = ds.attrs["q_sampling_mrad"]
print("patterns per class:", dict(zip(conventions.CLASS_NAMES, counts.tolist())))
display(plotting.class_compass(means, ds_sampling, suptitle="mean pattern per class of the dataset, log scale"))
plotting.class_compass(conventions.friedel_difference(means), ds_sampling, difference=True,
                       colorbar_label="I(θ) − I(−θ) per pixel", suptitle="Friedel difference of the class means")

# %% [markdown]
# ## Summary
#
# * Under dynamical scattering a polar crystal breaks Friedel's law: I(θ) ≠ I(−θ). In KNN this
#   asymmetry is small next to the pattern (section 3 prints its size), turns with the projected
#   polarization and changes with thickness. The random K/Na occupation breaks the centrosymmetry too and
#   adds an asymmetry of comparable size; a paraelectric control with the same occupation separates the
#   two in simulation.
# * A position average over one cell is exact only on a grid finer than the disk overlap demands
#   (n > 2α/(λ/a) positions per cell); coarser grids invent asymmetries.
# * At the study's convergence semi-angle the diffraction disks overlap many times over, so a single
#   pattern depends strongly on the probe position in the cell — more strongly than on the class.
# * The centre of mass carries the polarization too: at single positions mainly where the probe sits on
#   or beside a displaced column; in the position average only as a small shift along the class
#   direction, of the order of the disorder's, whose size depends on thickness.
# * Dose, detector blur, background and an unknown calibration or centre change the recorded patterns
#   far more than the polarization does; the acquisition model reproduces these effects so that models can
#   be trained to ignore them.
# * The profile's dataset holds labelled patterns of all 8 classes at several thicknesses, with random
#   probe aberrations and positions, and every parameter that made them.
#
# ## What next
#
# The next chapter, **training**, preprocesses this dataset (centring, cropping, normalisation),
# holds out whole unit-cell tiles for testing, and trains the study's classifiers — the CNNs with
# classification, regression and prototype heads and the PCA + k-nearest-neighbour model — next to the
# physics baseline built from the centre of mass and the Friedel asymmetry shown here.
