"""Figures of the book: diffraction patterns, structures, centre-of-mass maps, dataset summaries.

Every function takes arrays plus their calibration and returns a :class:`matplotlib.figure.Figure`
(made without pyplot, so nothing is shown or kept open unless the caller displays it). The frame is
the project's (``shared/CONVENTIONS.md``): patterns are ``(Qx, Qy)`` with zero angle at ``n // 2`` and
are drawn as ``imshow(pattern.T, origin="lower")`` so that +θx points right and +θy up; real-space maps
``(nx, ny)`` likewise. Axes carry units (mrad, Å, nm). Classes are coloured on a colour wheel — hue =
the class angle k·45° from +x towards +y — and named from ``conventions.CLASS_NAMES``.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib
import numpy as np
from ase.data import chemical_symbols, covalent_radii
from ase.data.colors import jmol_colors
from matplotlib.colors import LogNorm, Normalize, hsv_to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle
from matplotlib.ticker import MaxNLocator

from polar4d_lib import conventions

PATTERN_CMAP = "magma"
DIFFERENCE_CMAP = "RdBu_r"
#: Panel position (row, column) of each class in a 3 × 3 "compass" layout: class k sits in the
#: direction k·45° from the centre (RM right, MU top, LM left, MD bottom); the centre holds the wheel.
COMPASS: dict[int, tuple[int, int]] = {0: (1, 2), 1: (0, 2), 2: (0, 1), 3: (0, 0), 4: (1, 0), 5: (2, 0),
                                       6: (2, 1), 7: (2, 2)}
THETA_X, THETA_Y = "θx (mrad)", "θy (mrad)"
#: Element colours that differ from Jmol's (K and Na are both purple there).
ELEMENT_COLORS: dict[int, tuple[float, float, float]] = {11: (0.95, 0.6, 0.15)}


# --- colours -----------------------------------------------------------------------------------

def direction_hue(angle_deg: np.ndarray | float) -> np.ndarray:
    """Hue in [0, 1) of an in-plane direction (degrees from +x towards +y): the colour wheel."""
    return np.mod(np.asarray(angle_deg, dtype=float), 360.0) / 360.0


def class_color(k: int) -> np.ndarray:
    """RGB colour of class ``k`` on the colour wheel (hue = k·45°)."""
    return hsv_to_rgb([float(direction_hue(conventions.CLASS_ANGLES_DEG[int(k) % conventions.N_CLASSES])), 0.85, 0.85])


def class_colors() -> list[np.ndarray]:
    """RGB colours of the 8 classes, in class order."""
    return [class_color(k) for k in range(conventions.N_CLASSES)]


def vector_colors(vectors: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """RGB (..., 3) of 2-vectors (..., 2): hue = direction (colour wheel), brightness = length / ``vmax``
    (default: the largest length), the usual DPC / centre-of-mass colouring."""
    v = np.asarray(vectors, dtype=float)
    length = np.hypot(v[..., 0], v[..., 1])
    vmax = float(length.max()) if vmax is None else float(vmax)
    value = np.clip(length / vmax, 0.0, 1.0) if vmax > 0 else np.zeros_like(length)
    hue = direction_hue(np.degrees(np.arctan2(v[..., 1], v[..., 0])))
    return hsv_to_rgb(np.stack([hue, np.ones_like(hue), value], -1))


def draw_color_wheel(ax, class_labels: bool = True, title: str | None = None) -> None:
    """A colour wheel (hue = direction from +x towards +y, brightness = magnitude) with the class names
    at their angles; drawn in ``ax`` with x right and y up."""
    n = 201
    u = np.linspace(-1.0, 1.0, n)
    ux, uy = np.meshgrid(u, u, indexing="ij")
    rgb = vector_colors(np.stack([ux, uy], -1), vmax=1.0)
    outside = np.hypot(ux, uy) > 1.0
    rgba = np.concatenate([rgb, (~outside)[..., None].astype(float)], -1)
    ax.imshow(np.transpose(rgba, (1, 0, 2)), origin="lower", extent=(-1, 1, -1, 1))
    if class_labels:
        for k, name in enumerate(conventions.CLASS_NAMES):
            angle = np.radians(conventions.CLASS_ANGLES_DEG[k])
            ax.text(1.3 * np.cos(angle), 1.3 * np.sin(angle), name, ha="center", va="center", fontsize=8,
                    color=class_color(k), fontweight="bold")
    ax.set_xlim(-1.6, 1.6)
    ax.set_ylim(-1.6, 1.6)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)


def element_color(z: int) -> np.ndarray:
    """RGB colour of element ``z``: Jmol's, except Na, drawn orange so that it stands apart from K."""
    return np.asarray(ELEMENT_COLORS.get(int(z), jmol_colors[int(z)]), dtype=float)


# --- patterns ----------------------------------------------------------------------------------

def pattern_extent_mrad(shape: tuple[int, int], sampling_mrad: float,
                        center_px: tuple[float, float] | None = None) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) in mrad of a (Qx, Qy) pattern drawn as ``pattern.T``
    with ``origin="lower"``: pixel edges, zero angle at ``center_px`` (default n//2)."""
    cx, cy = (shape[0] // 2, shape[1] // 2) if center_px is None else center_px
    return ((-cx - 0.5) * sampling_mrad, (shape[0] - cx - 0.5) * sampling_mrad,
            (-cy - 0.5) * sampling_mrad, (shape[1] - cy - 0.5) * sampling_mrad)


def _cmap(name: str):
    cmap = matplotlib.colormaps[name]
    return cmap.with_extremes(bad=cmap(0.0), under=cmap(0.0))


def show_pattern(ax, pattern: np.ndarray, sampling_mrad: float, *, log: bool = True, vmin: float | None = None,
                 vmax: float | None = None, log_floor: float = 1e-4, cmap: str = PATTERN_CMAP,
                 center_px: tuple[float, float] | None = None, crosshair: bool = True, label_x: bool = True,
                 label_y: bool = True):
    """Draw one pattern (Qx, Qy) as ``imshow(pattern.T, origin="lower")`` on calibrated axes (mrad).

    ``log``: logarithmic colour scale from ``vmin`` (default ``log_floor`` × ``vmax``) to ``vmax``
    (default the pattern's maximum; for integer counts ``vmin`` defaults to half a count); zero and
    negative pixels get the lowest colour. ``crosshair``
    marks θx = 0 and θy = 0. Returns the AxesImage (for a colour bar)."""
    p = np.asarray(pattern, dtype=float)
    if p.ndim != 2:
        raise ValueError(f"show_pattern needs one pattern (Qx, Qy), got shape {p.shape}")
    vmax = float(np.nanmax(p)) if vmax is None else float(vmax)
    if log:
        vmax = vmax if vmax > 0 else 1.0
        if vmin is None:
            # counted electrons (integer values): start the scale at half a count; else at log_floor × vmax
            counts = vmax >= 1 and np.array_equal(p, np.round(p))
            vmin = 0.5 if counts else vmax * log_floor
        norm = LogNorm(vmin=vmin, vmax=vmax, clip=False)
    else:
        norm = Normalize(vmin=float(np.nanmin(p)) if vmin is None else vmin, vmax=vmax)
    image = ax.imshow(p.T, origin="lower", extent=pattern_extent_mrad(p.shape, sampling_mrad, center_px),
                      cmap=_cmap(cmap), norm=norm, interpolation="nearest")
    _angle_axes(ax, crosshair and "w", label_x, label_y, alpha=0.6)
    return image


def show_difference(ax, difference: np.ndarray, sampling_mrad: float, *, vmax: float | None = None,
                    cmap: str = DIFFERENCE_CMAP, crosshair: bool = True, label_x: bool = True, label_y: bool = True):
    """Draw a signed map (Qx, Qy) (e.g. a Friedel difference) on a symmetric diverging scale ±``vmax``."""
    d = np.asarray(difference, dtype=float)
    vmax = float(np.abs(d).max()) if vmax is None else float(vmax)
    vmax = vmax if vmax > 0 else 1.0
    image = ax.imshow(d.T, origin="lower", extent=pattern_extent_mrad(d.shape, sampling_mrad), cmap=cmap,
                      vmin=-vmax, vmax=vmax, interpolation="nearest")
    _angle_axes(ax, crosshair and "k", label_x, label_y, alpha=0.5)
    return image


def _angle_axes(ax, crosshair_color: str | bool, label_x: bool, label_y: bool, alpha: float) -> None:
    """Dotted lines at θx = 0 and θy = 0 (if a colour is given) and the angle axis labels."""
    if crosshair_color:
        ax.axhline(0.0, color=crosshair_color, lw=0.4, ls=":", alpha=alpha)
        ax.axvline(0.0, color=crosshair_color, lw=0.4, ls=":", alpha=alpha)
    if label_x:
        ax.set_xlabel(THETA_X)
    if label_y:
        ax.set_ylabel(THETA_Y)


def _samplings(sampling_mrad: float | Sequence[float], n: int) -> list[float]:
    if np.ndim(sampling_mrad) == 0:
        return [float(sampling_mrad)] * n
    values = [float(s) for s in sampling_mrad]
    if len(values) != n:
        raise ValueError(f"got {len(values)} samplings for {n} patterns; give one, or one per pattern")
    return values


def pattern_grid(patterns: Sequence[np.ndarray] | np.ndarray, sampling_mrad: float | Sequence[float],
                 titles: Sequence[str] | None = None, ncols: int = 4, *, log: bool = True, shared_scale: bool = True,
                 log_floor: float = 1e-4, colorbar_label: str = "fraction of incident beam per pixel",
                 title_colors: Sequence | None = None, suptitle: str | None = None, panel_size: float = 2.6,
                 crosshair: bool = True, difference: bool = False) -> Figure:
    """A grid of patterns (each (Qx, Qy), possibly of different shapes and samplings, one sampling per
    pattern or one for all) on calibrated axes, log scale by default; one colour scale for all
    (``shared_scale``) or one per panel, each with its colour bar. ``difference``: signed maps on a
    symmetric diverging scale instead."""
    patterns = [np.asarray(p, dtype=float) for p in patterns]
    n = len(patterns)
    samplings = _samplings(sampling_mrad, n)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(panel_size * ncols + (0.8 if shared_scale else 0.6 * ncols), panel_size * nrows + 0.4),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    if difference:
        vmax = max(float(np.abs(p).max()) for p in patterns) if shared_scale else None
    else:
        vmax = max(float(np.nanmax(p)) for p in patterns) if shared_scale else None
    image = None
    for i, ax in enumerate(axes):
        if i >= n:
            ax.axis("off")
            continue
        labels = dict(label_x=i // ncols == nrows - 1 or i + ncols >= n, label_y=i % ncols == 0)
        if difference:
            image = show_difference(ax, patterns[i], samplings[i], vmax=vmax, crosshair=crosshair, **labels)
        else:
            image = show_pattern(ax, patterns[i], samplings[i], log=log, vmax=vmax, log_floor=log_floor,
                                 crosshair=crosshair, **labels)
        if titles is not None:
            ax.set_title(titles[i], fontsize=9, **({} if title_colors is None else {"color": title_colors[i]}))
        if not shared_scale:
            fig.colorbar(image, ax=ax, shrink=0.8, label=colorbar_label if i % ncols == ncols - 1 else None)
    if shared_scale and image is not None:
        fig.colorbar(image, ax=axes[:n].tolist(), shrink=0.8, label=colorbar_label)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def _compass_figure(panel_size: float) -> tuple[Figure, dict[int, object], object]:
    fig = Figure(figsize=(3 * panel_size + 1.0, 3 * panel_size + 0.3), layout="constrained")
    grid = fig.subplots(3, 3, squeeze=False)
    axes = {k: grid[r][c] for k, (r, c) in COMPASS.items()}
    return fig, axes, grid[1][1]


def class_compass(patterns_by_class: np.ndarray, sampling_mrad: float, *, difference: bool = False,
                  log: bool = True, log_floor: float = 1e-4, colorbar_label: str = "fraction of incident beam per pixel",
                  suptitle: str | None = None, panel_size: float = 2.5) -> Figure:
    """The 8 class patterns (8, Qx, Qy) arranged as a compass: class k sits in the direction k·45° from
    the centre, which holds the class colour wheel. ``difference``: signed maps on a shared symmetric
    diverging scale (e.g. Friedel differences) instead of a shared (log) intensity scale."""
    p = np.asarray(patterns_by_class, dtype=float)
    if p.shape[0] != conventions.N_CLASSES or p.ndim != 3:
        raise ValueError(f"class_compass needs (8, Qx, Qy) patterns, got shape {p.shape}")
    fig, axes, centre = _compass_figure(panel_size)
    vmax = float(np.abs(p).max()) if difference else float(p.max())
    for k, ax in axes.items():
        row, col = COMPASS[k]
        kwargs = dict(label_x=row == 2, label_y=col == 0)
        if difference:
            image = show_difference(ax, p[k], sampling_mrad, vmax=vmax, **kwargs)
        else:
            image = show_pattern(ax, p[k], sampling_mrad, log=log, vmax=vmax, log_floor=log_floor, **kwargs)
        ax.set_title(f"{conventions.CLASS_NAMES[k]} ({conventions.CLASS_ANGLES_DEG[k]:.0f}°)", fontsize=9,
                     color=class_color(k), fontweight="bold")
    draw_color_wheel(centre, title="projected P")
    fig.colorbar(image, ax=list(axes.values()), shrink=0.6, label=colorbar_label)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def position_grid_figure(patterns: np.ndarray, fractions: np.ndarray, sampling_mrad: float, *,
                         log_floor: float = 1e-4, suptitle: str | None = None, panel_size: float = 2.0) -> Figure:
    """Patterns (n, n, Qx, Qy) of probe positions on an n × n grid of fractional cell coordinates
    ``fractions`` (n,), x-major (as ``simulation.cell_grid_positions`` reshaped to (n, n, 2)). Panel
    (i, j) sits in column i and row j counted from the bottom, so the layout is the cell (x right, y up)."""
    p = np.asarray(patterns, dtype=float)
    n = p.shape[0]
    if p.ndim != 4 or p.shape[1] != n:
        raise ValueError(f"position_grid_figure needs (n, n, Qx, Qy) patterns, got shape {p.shape}")
    fig = Figure(figsize=(panel_size * n + 1.2, panel_size * n + 0.4), layout="constrained")
    grid = fig.subplots(n, n, squeeze=False)
    vmax = float(p.max())
    for i in range(n):
        for j in range(n):
            ax = grid[n - 1 - j][i]
            image = show_pattern(ax, p[i, j], sampling_mrad, vmax=vmax, log_floor=log_floor,
                                 label_x=j == 0, label_y=i == 0)
            ax.set_title(f"x = {fractions[i]:.2f}a, y = {fractions[j]:.2f}a", fontsize=8)
    fig.colorbar(image, ax=grid.ravel().tolist(), shrink=0.6, label="fraction of incident beam per pixel")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def thickness_series_figure(patterns: np.ndarray, thicknesses_nm: Sequence[float], sampling_mrad: float, *,
                            log_floor: float = 1e-4, ncols: int = 6, suptitle: str | None = None,
                            difference: bool = True, differences: np.ndarray | None = None,
                            difference_title: str = "I(θ) − I(−θ)") -> Figure:
    """Patterns (T, Qx, Qy) at each thickness (nm), shared log scale; with ``difference`` a second row
    of signed maps on one diverging scale: ``differences`` (T, Qx, Qy) if given, else the patterns'
    Friedel differences I(θ) − I(−θ)."""
    p = np.asarray(patterns, dtype=float)
    t = len(thicknesses_nm)
    ncols = min(ncols, t)
    blocks = int(np.ceil(t / ncols))
    rows = blocks * (2 if difference else 1)
    fig = Figure(figsize=(2.5 * ncols + 1.2, 2.5 * rows + 0.4), layout="constrained")
    grid = fig.subplots(rows, ncols, squeeze=False)
    d = conventions.friedel_difference(p) if differences is None else np.asarray(differences, dtype=float)
    dmax = float(np.abs(d).max())
    image = diff_image = None
    for i in range(rows * ncols):
        block, col = divmod(i, ncols)
        if block >= blocks:
            break
        row = block * (2 if difference else 1)
        if i >= t:
            for r in range(row, rows if difference else row + 1):
                grid[r][col].axis("off")
            continue
        ax = grid[row][col]
        image = show_pattern(ax, p[i], sampling_mrad, vmax=float(p.max()), log_floor=log_floor,
                             label_x=not difference, label_y=col == 0)
        ax.set_title(f"t = {thicknesses_nm[i]:.1f} nm", fontsize=9)
        if difference:
            diff_image = show_difference(grid[row + 1][col], d[i], sampling_mrad, vmax=dmax, label_y=col == 0)
            grid[row + 1][col].set_title(difference_title, fontsize=8)
    fig.colorbar(image, ax=[grid[r][c] for r in range(0, rows, 2 if difference else 1) for c in range(ncols)],
                 shrink=0.8, label="fraction of incident beam per pixel")
    if difference:
        fig.colorbar(diff_image, ax=[grid[r][c] for r in range(1, rows, 2) for c in range(ncols)], shrink=0.8,
                     label="difference per pixel")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def disk_overlap_figure(semiangle_mrad: float, spacing_mrad: float, order: int = 1) -> Figure:
    """The bright-field disk (radius = convergence semi-angle) and the diffracted disks of the
    reflections (h, k) with |h|, |k| ≤ ``order``, centred at (h, k) × ``spacing_mrad`` (λ/a), on
    calibrated axes (mrad): shows how much the disks overlap."""
    fig = Figure(figsize=(4.8, 4.4), layout="constrained")
    ax = fig.subplots()
    hk = [(h, k) for h in range(-order, order + 1) for k in range(-order, order + 1)]
    for h, k in hk:
        centre = (h * spacing_mrad, k * spacing_mrad)
        zero = h == 0 and k == 0
        ax.add_patch(Circle(centre, semiangle_mrad, fill=zero, alpha=0.15 if zero else 0.9, lw=1.5 if zero else 0.8,
                            ec="k" if zero else matplotlib.colormaps["viridis"](0.2 + 0.6 * (abs(h) + abs(k)) / (2 * order)),
                            fc="0.6"))
        ax.plot(*centre, "k.", ms=3)
        ax.annotate(f"{h}{k}" if zero else f"{h:+d}{k:+d}", centre, fontsize=6, xytext=(2, 2), textcoords="offset points")
    lim = semiangle_mrad + order * spacing_mrad + spacing_mrad
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel(THETA_X)
    ax.set_ylabel(THETA_Y)
    ax.set_title(f"disks of radius {semiangle_mrad:g} mrad, {spacing_mrad:.2f} mrad apart", fontsize=9)
    return fig


# --- structures --------------------------------------------------------------------------------

def draw_projected_cell(ax, positions_A: np.ndarray, numbers: np.ndarray, a_A: float,
                        polarization: np.ndarray | None = None, *, origin_A: tuple[float, float] = (0.0, 0.0),
                        margin: float = 0.15, atom_scale: float = 0.35, arrow_color=None, label_axes: bool = True,
                        legend: bool = False) -> None:
    """One unit cell seen down the beam (x right, y up, Å): the atoms of ``positions_A`` (N × 3) with
    atomic ``numbers`` wrapped into the cell at ``origin_A`` and repeated on its edges (periodic
    images within ``margin`` × a), coloured by element (Jmol colours, sized by covalent radius, drawn
    top-down so columns read as columns), and an arrow along the projected ``polarization`` (3-vector,
    any length; its in-plane part is drawn with length ∝ its projection)."""
    xy = np.mod(np.asarray(positions_A, dtype=float)[:, :2] - np.asarray(origin_A)[None, :], a_A)
    numbers = np.asarray(numbers)
    order = np.argsort(-covalent_radii[numbers])  # big atoms first, small on top
    drawn = set()
    for i in order:
        for sx in (-1, 0, 1):
            for sy in (-1, 0, 1):
                x, y = xy[i, 0] + sx * a_A, xy[i, 1] + sy * a_A
                if -margin * a_A <= x <= (1 + margin) * a_A and -margin * a_A <= y <= (1 + margin) * a_A:
                    z = int(numbers[i])
                    ax.add_patch(Circle((x, y), atom_scale * covalent_radii[z], fc=element_color(z), ec="k", lw=0.5,
                                        label=None if z in drawn else chemical_symbols[z]))
                    drawn.add(z)
    ax.add_patch(Rectangle((0, 0), a_A, a_A, fill=False, ec="0.3", lw=0.8, ls="--"))
    if polarization is not None:
        p = np.asarray(polarization, dtype=float)
        p = p / np.linalg.norm(p)
        ax.annotate("", xy=(a_A / 2 + 0.4 * a_A * p[0], a_A / 2 + 0.4 * a_A * p[1]),
                    xytext=(a_A / 2 - 0.2 * a_A * p[0], a_A / 2 - 0.2 * a_A * p[1]),
                    arrowprops=dict(arrowstyle="-|>", lw=2.5, color="k" if arrow_color is None else arrow_color,
                                    mutation_scale=18, alpha=0.8))
    ax.set_xlim(-margin * a_A, (1 + margin) * a_A)
    ax.set_ylim(-margin * a_A, (1 + margin) * a_A)
    ax.set_aspect("equal")
    if label_axes:
        ax.set_xlabel("x (Å)")
        ax.set_ylabel("y (Å)")
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)


def structure_compass(cells: Sequence[tuple[np.ndarray, np.ndarray]], a_A: float, polarizations: np.ndarray,
                      titles: Sequence[str] | None = None, suptitle: str | None = None, panel_size: float = 2.5) -> Figure:
    """Eight projected unit cells, one per class (``cells[k]`` = (positions N × 3 Å, atomic numbers N)),
    with their polarization arrows (``polarizations`` 8 × 3), arranged as a compass (class k in the
    direction k·45° from the centre, which holds the element legend and the class wheel)."""
    fig, axes, centre = _compass_figure(panel_size)
    elements = set()
    for k, ax in axes.items():
        positions, numbers = cells[k]
        elements.update(int(z) for z in np.unique(numbers))
        row, col = COMPASS[k]
        draw_projected_cell(ax, positions, numbers, a_A, polarizations[k], arrow_color=class_color(k) * 0.8,
                            label_axes=False)
        if row == 2:
            ax.set_xlabel("x (Å)")
        if col == 0:
            ax.set_ylabel("y (Å)")
        ax.set_title(titles[k] if titles is not None else conventions.CLASS_NAMES[k], fontsize=9,
                     color=class_color(k), fontweight="bold")
    draw_color_wheel(centre)
    for i, z in enumerate(sorted(elements, key=lambda z: -covalent_radii[z])):
        centre.add_patch(Circle((-1.45 + 0.95 * i, -1.5), 0.18, fc=element_color(z), ec="k", lw=0.5, clip_on=False))
        centre.text(-1.2 + 0.95 * i, -1.5, chemical_symbols[z], va="center", fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


# --- centre of mass ----------------------------------------------------------------------------

def com_map_figure(coms: Sequence[np.ndarray], fractions: np.ndarray, a_A: float, titles: Sequence[str],
                   atoms: Sequence[tuple[np.ndarray, np.ndarray] | None] | None = None,
                   origin_A: tuple[float, float] = (0.0, 0.0), ncols: int = 2, shared_scale: bool = False,
                   suptitle: str | None = None, panel_size: float = 3.4) -> Figure:
    """Centre-of-mass maps over one unit cell: each ``coms[i]`` is (n, n, 2) in mrad at fractional
    probe positions ``fractions`` (n,) along x and y (x-major). Colour = direction on the colour wheel,
    brightness = magnitude; arrows = the vectors; optional atoms (positions N × 3 Å, numbers N) of the
    cell at ``origin_A`` overlaid as rings. x right, y up, Å."""
    coms = [np.asarray(c, dtype=float) for c in coms]
    n = coms[0].shape[0]
    fr = np.asarray(fractions, dtype=float)
    step = (fr[1] - fr[0]) if n > 1 else 1.0
    extent = ((fr[0] - step / 2) * a_A, (fr[-1] + step / 2) * a_A, (fr[0] - step / 2) * a_A, (fr[-1] + step / 2) * a_A)
    lengths = [float(np.hypot(c[..., 0], c[..., 1]).max()) for c in coms]
    ncols = min(ncols, len(coms))
    nrows = int(np.ceil(len(coms) / ncols))
    fig = Figure(figsize=(panel_size * ncols + 1.6, panel_size * nrows + 0.4), layout="constrained")
    grid = fig.subplots(nrows, ncols + 1, squeeze=False, width_ratios=[1] * ncols + [0.45])
    fx, fy = np.meshgrid(fr * a_A, fr * a_A, indexing="ij")
    for i, ax in enumerate(grid[:, :ncols].ravel()):
        if i >= len(coms):
            ax.axis("off")
            continue
        vmax = max(lengths) if shared_scale else lengths[i]
        ax.imshow(np.transpose(vector_colors(coms[i], vmax), (1, 0, 2)), origin="lower", extent=extent,
                  interpolation="nearest")
        ax.quiver(fx, fy, coms[i][..., 0], coms[i][..., 1], color="w", angles="xy", scale_units="xy",
                  scale=vmax / (0.45 * step * a_A) if vmax > 0 else 1.0, width=0.012)
        if atoms is not None and atoms[i] is not None:
            positions, numbers = atoms[i]
            xy = np.mod(np.asarray(positions)[:, :2] - np.asarray(origin_A)[None, :], a_A)
            for (x, y), z in zip(xy, numbers):
                for sx in (-1, 0, 1):
                    for sy in (-1, 0, 1):
                        xs, ys = x + sx * a_A, y + sy * a_A
                        if extent[0] <= xs <= extent[1] and extent[2] <= ys <= extent[3]:
                            ax.add_patch(Circle((xs, ys), 0.25 * covalent_radii[z], fill=False,
                                                ec=element_color(z), lw=1.2))
        ax.set_xlim(extent[:2])
        ax.set_ylim(extent[2:])
        ax.set_aspect("equal")
        ax.set_xlabel("probe x (Å)")
        ax.set_ylabel("probe y (Å)")
        ax.set_title(f"{titles[i]}\n|CoM| ≤ {lengths[i]:.2f} mrad", fontsize=9)
    for r in range(nrows):
        draw_color_wheel(grid[r][ncols], class_labels=r == 0, title="CoM direction" if r == 0 else None)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def com_thickness_figure(mean_com_mrad: np.ndarray, thicknesses_nm: Sequence[float],
                         quantity: str = "mean CoM") -> Figure:
    """A position-averaged centre of mass (8, T, 2) mrad of each class versus thickness (nm): left,
    its component along the class's own direction (k·45°); right, the vectors themselves, coloured by
    class (x right, y up). ``quantity`` names it in the labels."""
    c = np.asarray(mean_com_mrad, dtype=float)
    angles = np.radians(conventions.CLASS_ANGLES_DEG)
    unit = np.stack([np.cos(angles), np.sin(angles)], -1)  # (8, 2)
    along = np.einsum("ktj,kj->kt", c, unit)
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, width_ratios=[1.4, 1])
    for k in range(conventions.N_CLASSES):
        ax.plot(thicknesses_nm, along[k], "o-", color=class_color(k), label=conventions.CLASS_NAMES[k])
        ax2.plot(c[k, :, 0], c[k, :, 1], "-", color=class_color(k), lw=0.8)
        ax2.scatter(c[k, :, 0], c[k, :, 1], s=12 + 60 * np.arange(len(thicknesses_nm)) / max(1, len(thicknesses_nm) - 1),
                    color=class_color(k))
    ax.axhline(0.0, color="0.5", lw=0.6)
    ax.set_xlabel("thickness (nm)")
    ax.set_ylabel(f"{quantity} along the class direction (mrad)")
    ax.legend(ncols=2, fontsize=8)
    ax2.axhline(0.0, color="0.5", lw=0.6)
    ax2.axvline(0.0, color="0.5", lw=0.6)
    lim = 1.1 * float(np.abs(c).max()) if np.abs(c).max() > 0 else 1.0
    ax2.set_xlim(-lim, lim)
    ax2.set_ylim(-lim, lim)
    ax2.set_aspect("equal")
    ax2.set_xlabel(f"{quantity} θx (mrad)")
    ax2.set_ylabel(f"{quantity} θy (mrad)")
    ax2.set_title(f"{quantity} per class (marker size grows with thickness)", fontsize=9)
    return fig


def origin_dependence_figure(steps_A: Sequence[float], dependence: Sequence[float], alias_free_step_A: float,
                             class_spread: float | None = None, title: str = "") -> Figure:
    """How much a raster's mean over whole cells depends on the raster's origin (relative L1, log scale) versus the scan
    step (Å), with the step λ/(2α) below which it vanishes and, if given, the spread between the classes'
    means (the signal a classifier reads) for scale."""
    steps, values = np.asarray(steps_A, dtype=float), np.asarray(dependence, dtype=float)
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.semilogy(steps, np.maximum(values, 1e-9), "o-", color="k", label="change of the raster's mean")
    ax.axvline(alias_free_step_A, color="tab:red", ls="--", label=f"λ/(2α) = {alias_free_step_A:.2f} Å")
    if class_spread is not None:
        ax.axhline(class_spread, color="tab:blue", ls=":", label="spread between the classes' means")
    ax.set_xlabel("scan step (Å)")
    ax.set_ylabel("Σ|M(shifted raster) − M| / ΣM")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig


# --- datasets ----------------------------------------------------------------------------------

def class_means(patterns, labels: np.ndarray, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Mean pattern of each class and the number of patterns in it: ``patterns`` (N, Qx, Qy) may be any
    array-like that slices (a zarr array is read ``block`` patterns at a time); ``labels`` (N,).
    Returns (8, Qx, Qy) means (NaN for an empty class) and (8,) counts."""
    labels = np.asarray(labels)
    shape = tuple(patterns.shape[1:])
    sums = np.zeros((conventions.N_CLASSES,) + shape)
    counts = np.bincount(labels.astype(int), minlength=conventions.N_CLASSES)[: conventions.N_CLASSES]
    for start in range(0, len(labels), block):
        chunk = np.asarray(patterns[start:start + block], dtype=float)
        np.add.at(sums, labels[start:start + block].astype(int), chunk)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None, None]
    return means, counts


def class_thickness_counts_figure(labels: np.ndarray, thicknesses_nm: np.ndarray) -> Figure:
    """Number of patterns per class (x) and thickness (y, nm), as an annotated table."""
    labels = np.asarray(labels).astype(int)
    values, index = np.unique(np.round(np.asarray(thicknesses_nm, dtype=float), 3), return_inverse=True)
    table = np.zeros((conventions.N_CLASSES, len(values)), dtype=int)
    np.add.at(table, (labels, index.ravel()), 1)
    fig = Figure(figsize=(7.5, 1.2 + 0.45 * len(values)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(table.T, origin="lower", cmap="Blues", aspect="auto",
                      extent=(-0.5, conventions.N_CLASSES - 0.5, -0.5, len(values) - 0.5))
    for k in range(conventions.N_CLASSES):
        for t in range(len(values)):
            ax.text(k, t, str(table[k, t]), ha="center", va="center", fontsize=8,
                    color="w" if table[k, t] > table.max() / 2 else "k")
    ax.set_xticks(range(conventions.N_CLASSES), conventions.CLASS_NAMES)
    for tick, k in zip(ax.get_xticklabels(), range(conventions.N_CLASSES)):
        tick.set_color(class_color(k))
    ax.set_yticks(range(len(values)), [f"{v:.1f}" for v in values])
    ax.set_xlabel("class")
    ax.set_ylabel("thickness (nm)")
    fig.colorbar(image, ax=ax, label="patterns")
    return fig


def probe_draws_figure(defocus_nm: np.ndarray, astigmatism_nm: np.ndarray, astigmatism_angle_deg: np.ndarray,
                       keys: np.ndarray | None = None, bins: int = 20) -> Figure:
    """The random probe settings of a dataset: histograms of defocus (nm) and twofold-astigmatism
    magnitude (nm), and the astigmatism as a vector (|C12| cos 2φ, |C12| sin 2φ) (nm). With ``keys``
    (N × k, e.g. unit and probe setting per pattern) each distinct draw counts once, not once per
    pattern."""
    d, a, phi = (np.asarray(x, dtype=float) for x in (defocus_nm, astigmatism_nm, astigmatism_angle_deg))
    if keys is not None:
        _, first = np.unique(np.asarray(keys).reshape(len(d), -1), axis=0, return_index=True)
        d, a, phi = d[first], a[first], phi[first]
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    ax1.hist(d, bins=bins, color="0.4")
    ax1.set_xlabel("defocus (nm)")
    ax1.set_ylabel("probe settings")
    ax1.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.hist(a, bins=bins, color="0.4")
    ax2.set_xlabel("twofold astigmatism |C12| (nm)")
    ax2.set_ylabel("probe settings")
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    two_phi = np.radians(2 * phi)
    ax3.scatter(a * np.cos(two_phi), a * np.sin(two_phi), c=d, cmap="coolwarm", s=14)
    lim = 1.1 * float(a.max()) if a.size and a.max() > 0 else 1.0
    ax3.set_xlim(-lim, lim)
    ax3.set_ylim(-lim, lim)
    ax3.set_aspect("equal")
    ax3.set_xlabel("|C12| cos 2φ (nm)")
    ax3.set_ylabel("|C12| sin 2φ (nm)")
    fig.colorbar(ax3.collections[0], ax=ax3, label="defocus (nm)")
    fig.suptitle(f"{len(d)} distinct probe settings")
    return fig


def class_rgb(class_map: np.ndarray) -> np.ndarray:
    """RGB image (..., 3) of a class map: each class its colour-wheel colour, −1 (abstained) grey."""
    class_map = np.asarray(class_map)
    rgb = np.full(class_map.shape + (3,), 0.6)
    for k in range(conventions.N_CLASSES):
        rgb[class_map == k] = class_color(k)[:3]
    return rgb


def show_class_map(ax, class_map: np.ndarray, step: float = 1.0, **kwargs) -> None:
    """Draw a class map (Rx, Ry) with Rx right and Ry up, ``step`` per position (Å or px)."""
    class_map = np.asarray(class_map)
    ax.imshow(np.transpose(class_rgb(class_map), (1, 0, 2)), origin="lower", interpolation="nearest",
              extent=(0, class_map.shape[0] * step, 0, class_map.shape[1] * step), **kwargs)


def class_map_figure(class_map: np.ndarray, title: str = "", scan_step_A: float | None = None,
                     irregularity: np.ndarray | None = None, irregularity_label: str = "irregularity") -> Figure:
    """The predicted class of every probe position (Rx right, Ry up), coloured on the class colour
    wheel, abstained positions (−1) grey, with the wheel as legend; and, where given, the ``irregularity``
    map (Rx, Ry) beside it (higher = more likely a defect or a domain wall)."""
    class_map = np.asarray(class_map)
    panels = 3 if irregularity is not None else 2
    fig = Figure(figsize=(7.5 + 3.6 * (panels - 2), 4.2), layout="constrained")
    axes = fig.subplots(1, panels, gridspec_kw={"width_ratios": [3, 1] + [3] * (panels - 2)})
    ax, wheel = axes[0], axes[1]
    unit = "Å" if scan_step_A else "px"
    step = scan_step_A or 1.0
    show_class_map(ax, class_map, step)
    ax.set_xlabel(f"x ({unit})")
    ax.set_ylabel(f"y ({unit})")
    ax.set_title(title or "predicted polarization class")
    draw_color_wheel(wheel, title="class (grey: abstained)")
    if irregularity is not None:
        m = np.asarray(irregularity, dtype=float)
        image = axes[2].imshow(m.T, origin="lower", cmap="magma", interpolation="nearest",
                               extent=(0, m.shape[0] * step, 0, m.shape[1] * step))
        axes[2].set_xlabel(f"x ({unit})")
        axes[2].set_title(f"irregularity: {irregularity_label}", fontsize=9)
        fig.colorbar(image, ax=axes[2], shrink=0.8)
    return fig


def save_class_map(class_map: np.ndarray, path, title: str = "", scan_step_A: float | None = None,
                   irregularity: np.ndarray | None = None, irregularity_label: str = "irregularity") -> None:
    """Write :func:`class_map_figure` as a PNG."""
    class_map_figure(class_map, title, scan_step_A, irregularity, irregularity_label).savefig(path, dpi=120)


# --- the training chapter ------------------------------------------------------------------------

def preprocessing_steps_figure(steps: Sequence[Sequence[np.ndarray]], samplings_mrad: Sequence[float],
                               step_titles: Sequence[str], row_titles: Sequence[str] | None = None, *,
                               log: Sequence[bool] | None = None, colorbar_labels: Sequence[str] | None = None,
                               centers_mrad: Sequence[tuple[float, float]] | None = None,
                               panel_size: float = 2.6) -> Figure:
    """Patterns through the preprocessing chain: ``steps[j][i]`` is pattern ``i`` (Qx, Qy) after step ``j``
    at ``samplings_mrad[j]`` mrad/px (columns = steps, rows = patterns), each panel on calibrated axes with
    its own colour bar (log scale where ``log[j]``). ``centers_mrad[i]`` (θx, θy) marks the centre found
    for pattern ``i`` with a cyan + on the first column."""
    n_steps, n_rows = len(steps), len(steps[0])
    if len(samplings_mrad) != n_steps or len(step_titles) != n_steps or any(len(s) != n_rows for s in steps):
        raise ValueError("give one sampling and one title per step and the same number of patterns in every step")
    log = [True] * n_steps if log is None else list(log)
    fig = Figure(figsize=(panel_size * n_steps + 0.8 * n_steps, panel_size * n_rows + 0.5), layout="constrained")
    axes = fig.subplots(n_rows, n_steps, squeeze=False)
    for i in range(n_rows):
        for j in range(n_steps):
            ax = axes[i, j]
            image = show_pattern(ax, steps[j][i], samplings_mrad[j], log=log[j], label_x=i == n_rows - 1,
                                 label_y=j == 0)
            fig.colorbar(image, ax=ax, shrink=0.8,
                         label=None if colorbar_labels is None or i != n_rows - 1 else colorbar_labels[j])
            if i == 0:
                ax.set_title(step_titles[j], fontsize=9)
            if j == 0 and row_titles is not None:
                ax.set_ylabel(f"{row_titles[i]}\n{THETA_Y}")
            if j == 0 and centers_mrad is not None:
                ax.plot(*centers_mrad[i], "+", color="c", ms=12, mew=1.5)
    return fig


def standardisation_figure(mean: np.ndarray, std: np.ndarray, standardised: Sequence[np.ndarray],
                           sampling_mrad: float, titles: Sequence[str], panel_size: float = 2.8) -> Figure:
    """The per-pixel standardisation of the networks' inputs: the mean and spread maps (Qx, Qy) of the
    preprocessed training patterns, then standardised patterns on a diverging scale of ±3 spreads."""
    n = 2 + len(standardised)
    fig = Figure(figsize=((panel_size + 0.7) * n, panel_size + 0.4), layout="constrained")
    axes = fig.subplots(1, n)
    for ax, image, title in ((axes[0], mean, "per-pixel mean"), (axes[1], std, "per-pixel spread")):
        shown = show_pattern(ax, image, sampling_mrad, log=True, label_y=ax is axes[0])
        fig.colorbar(shown, ax=ax, shrink=0.8, label="normalised intensity")
        ax.set_title(title, fontsize=9)
    for ax, image, title in zip(axes[2:], standardised, titles):
        shown = show_difference(ax, image, sampling_mrad, vmax=3.0, label_y=False)
        fig.colorbar(shown, ax=ax, shrink=0.8, label="spreads from the mean")
        ax.set_title(title, fontsize=9)
    return fig


def learning_curves_figure(histories: dict[str, dict], title: str = "") -> Figure:
    """Per-epoch loss and validation accuracy of each network: ``histories`` maps a kind such as
    ``'cnn-cls'`` to a training history dict (``train_loss``, ``val_loss``, ``val_acc``, ``best_epoch``, as in
    ``NeuralModel.metadata['history']``). One loss panel per head (the losses differ in kind and scale:
    cross-entropy, squared error, KL divergence; training solid, validation dashed), then one panel of
    validation accuracy (%) for all; the kept epoch is marked •. Colour = encoder, line style = head."""
    heads = list(dict.fromkeys(name.split("-")[-1] for name in histories))
    encoders = list(dict.fromkeys(name.split("-")[0] for name in histories))
    fig = Figure(figsize=(3.6 * (len(heads) + 1) + 1.2, 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(heads) + 1))
    ax_acc = axes[-1]
    colors = matplotlib.colormaps["tab10"]
    styles = ["-", "-.", ":"]
    for name, h in histories.items():
        encoder, head = name.split("-")[0], name.split("-")[-1]
        c = colors(encoders.index(encoder) % 10)
        ax = axes[heads.index(head)]
        epochs = np.arange(1, len(h["train_loss"]) + 1)
        ax.plot(epochs, h["train_loss"], "-", color=c, label=f"{encoder} training")
        ax.plot(epochs, h["val_loss"], "--", color=c, label=f"{encoder} validation")
        ax_acc.plot(epochs, np.asarray(h["val_acc"]) * 100, styles[heads.index(head) % 3], color=c, label=name)
        best = int(h.get("best_epoch", 0))
        if 1 <= best <= len(epochs):
            ax.plot(best, h["val_loss"][best - 1], "o", color=c, ms=5)
            ax_acc.plot(best, 100 * h["val_acc"][best - 1], "o", color=c, ms=5)
    for ax, head in zip(axes[:-1], heads):
        ax.set_title(f"{head} head", fontsize=9)
        ax.set_ylabel("loss")
        ax.legend(fontsize=6)
    ax_acc.axhline(100 / conventions.N_CLASSES, color="0.5", ls=":", lw=1, label="chance (1/8)")
    ax_acc.set_ylabel("validation accuracy (%)")
    ax_acc.set_title("all networks", fontsize=9)
    ax_acc.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def confusion_figure(matrices: dict[str, np.ndarray], ncols: int = 3, panel_size: float = 3.3) -> Figure:
    """Confusion matrices (8 × 8 counts, rows = true class, columns = predicted), one panel per entry of
    ``matrices`` (title → matrix); colour = share of the true class's patterns, numbers = counts."""
    n = len(matrices)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(panel_size * ncols + 0.8, panel_size * nrows + 0.3), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    image = None
    names = conventions.CLASS_NAMES
    for ax, (title, matrix) in zip(axes, matrices.items()):
        m = np.asarray(matrix, dtype=float)
        share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for t in range(m.shape[0]):
            for p in range(m.shape[1]):
                if m[t, p] > 0:
                    ax.text(p, t, f"{int(m[t, p])}", ha="center", va="center", fontsize=6,
                            color="w" if share[t, p] > 0.5 else "k")
        ax.set_xticks(range(len(names)), names, fontsize=7, rotation=90)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
            for tick, k in zip(ticks, range(len(names))):
                tick.set_color(class_color(k))
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title, fontsize=9)
    for ax in axes[n:]:
        ax.axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes[:n].tolist(), shrink=0.7, label="share of the true class")
    return fig


def embedding_figure(points: dict[str, np.ndarray], labels: np.ndarray, held_out: np.ndarray | None = None,
                     axis_labels: dict[str, tuple[str, str]] | None = None, panel_size: float = 4.2) -> Figure:
    """2-D embeddings (N, 2) of the same N patterns, one panel per entry of ``points`` (title → array),
    coloured by class on the colour wheel; with ``held_out`` (N,) bool, held-out patterns are drawn as
    hollow circles and the others filled."""
    labels = np.asarray(labels).astype(int)
    held = np.zeros(len(labels), dtype=bool) if held_out is None else np.asarray(held_out, dtype=bool)
    fig = Figure(figsize=(panel_size * len(points) + 1.2, panel_size), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(points), squeeze=False)).ravel()
    for ax, (title, xy) in zip(axes, points.items()):
        xy = np.asarray(xy, dtype=float)
        if xy.shape != (len(labels), 2):
            raise ValueError(f"embedding {title!r} must have shape ({len(labels)}, 2), got {xy.shape}")
        for k in range(conventions.N_CLASSES):
            color = class_color(k)
            sel = labels == k
            ax.scatter(*xy[sel & ~held].T, s=14, color=color, label=conventions.CLASS_NAMES[k])
            ax.scatter(*xy[sel & held].T, s=18, facecolors="none", edgecolors=color, lw=1)
        x_label, y_label = (axis_labels or {}).get(title, ("component 1", "component 2"))
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.set_title(title, fontsize=9)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), title="class (hollow: test)",
                    title_fontsize=7)
    return fig


def heatmap_table(values, spreads=None, *, title: str = "", label: str = "", fmt: str = ".1f",
                  cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None,
                  cell_size: tuple[float, float] = (0.8, 0.42), ax=None) -> Figure:
    """A table that compares models, drawn as a seaborn heatmap with its numbers in the cells.

    ``values``: a pandas DataFrame (rows × columns, e.g. test sets × models; NaN = not run, drawn blank).
    ``spreads``: a DataFrame of the same shape (e.g. the standard deviation over seeds), printed as
    ``value ± spread`` where it is finite; leave it None when there is nothing to spread over (one seed: the
    value alone). ``label`` names the colour bar (quantity and unit); ``vmin``/``vmax`` fix its range.
    ``ax``: draw into these axes (a panel of a larger figure) instead of a figure of its own.
    """
    import pandas as pd
    import seaborn as sns

    values = pd.DataFrame(values).astype(float)
    text = values.map(lambda v: "" if not np.isfinite(v) else format(v, fmt))
    if spreads is not None:
        spreads = pd.DataFrame(spreads).reindex_like(values).astype(float)
        text = text.where(~np.isfinite(spreads.to_numpy()) | ~np.isfinite(values.to_numpy()),
                          text + "\n± " + spreads.map(lambda s: format(s, fmt)))
    if ax is None:
        rows, cols = values.shape
        label_width = 0.075 * max((len(str(r)) for r in values.index), default=4)
        fig = Figure(figsize=(1.8 + label_width + cell_size[0] * cols,
                              1.2 + cell_size[1] * rows * (1.6 if spreads is not None else 1.0)),
                     layout="constrained")
        ax = fig.subplots()
    fig = ax.figure
    sns.heatmap(values, annot=text.to_numpy(), fmt="", cmap=cmap, vmin=vmin, vmax=vmax, ax=ax,
                linewidths=0.5, linecolor="white", annot_kws={"fontsize": 8},
                cbar_kws={"label": label, "shrink": 0.9})
    ax.set_xlabel(values.columns.name or "")
    ax.set_ylabel(values.index.name or "")
    ax.tick_params(axis="x", labelrotation=40, labelsize=8)
    ax.tick_params(axis="y", labelrotation=0, labelsize=8)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def benchmark_bars(figures: Sequence[dict], title: str = "", panel_width: float = 5.0) -> Figure | None:
    """Bar plots of a benchmark's figures (dicts with ``quantity``, ``value``, ``unit``): one panel per unit
    that two or more figures share (only those compare), the value written at each bar. None when no unit
    has two figures."""
    by_unit: dict[str, list[dict]] = {}
    for figure in figures:
        by_unit.setdefault(str(figure["unit"]), []).append(figure)
    groups = {unit: group for unit, group in by_unit.items() if len(group) >= 2}
    if not groups:
        return None
    height = max(len(group) for group in groups.values()) * 0.38 + 1.2
    label_width = 0.065 * max(len(str(f["quantity"])) for group in groups.values() for f in group)
    fig = Figure(figsize=((panel_width + label_width) * len(groups), height), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False)).ravel()
    for ax, (unit, group) in zip(axes, groups.items()):
        names = [str(f["quantity"]) for f in group][::-1]
        values = [float(f["value"]) for f in group][::-1]
        bars = ax.barh(names, values, color="tab:blue")
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=3, fontsize=8)
        ax.set_xlabel(unit)
        ax.tick_params(axis="y", labelsize=8)
        ax.margins(x=0.15)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


#: The scores the book compares models by: metric → (label with unit, scale to it, colour range, colour map;
#: ``_r``: lower is better).
SCORE_METRICS: dict[str, tuple[str, float, tuple[float, float], str]] = {
    "accuracy": ("accuracy (%)", 100.0, (0.0, 100.0), "viridis"),
    "macro_f1": ("macro-F1 (%)", 100.0, (0.0, 100.0), "viridis"),
    "mean_angular_error_deg": ("mean angular error (°)", 1.0, (0.0, 180.0), "viridis_r"),
}


def score_heatmaps(aggregate: dict, metrics: Sequence[str] = tuple(SCORE_METRICS)) -> Figure:
    """The scores of models side by side, one heatmap panel per metric of ``SCORE_METRICS``, models × splits.

    ``aggregate``: per-seed aggregates (``evaluation.aggregate`` output, as in ``training.json``'s
    ``aggregate``) arranged ``{split: {model: aggregate}}``. Each cell shows the mean over seeds, ± the
    standard deviation only where a model has more than one seed (the spread of one value is undefined);
    a blank cell: the model was not run on that split."""
    import pandas as pd

    splits = list(aggregate)
    models = list(dict.fromkeys(model for per_model in aggregate.values() for model in per_model))
    has_spread = any(agg[m]["n_seeds"] > 1 for per_model in aggregate.values() for agg in per_model.values()
                     for m in metrics)
    fig = Figure(figsize=(2.3 * len(metrics) + 1.2, 1.0 + 0.3 * len(models) * (1.6 if has_spread else 1.0)),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for i, (ax, metric) in enumerate(zip(axes, metrics)):
        label, scale, (vmin, vmax), cmap = SCORE_METRICS[metric]
        mean = pd.DataFrame(np.nan, index=pd.Index(models, name="model"), columns=pd.Index(splits, name="split"))
        spread = mean.copy()
        for split, per_model in aggregate.items():
            for model, agg in per_model.items():
                mean.loc[model, split] = scale * agg[metric]["mean"]
                if agg[metric]["n_seeds"] > 1:
                    spread.loc[model, split] = scale * agg[metric]["std"]
        heatmap_table(mean, spread if has_spread else None, title=label, label="", vmin=vmin, vmax=vmax,
                      cmap=cmap, ax=ax)
        ax.tick_params(axis="x", labelrotation=0)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("center")
        if i:
            ax.set_ylabel("")
            ax.set_yticklabels([])
    return fig


def cell_maps_figure(maps: dict[str, np.ndarray], *, label: str, vmin: float | None = None, vmax: float | None = None,
                     cmap: str = "viridis", contours: np.ndarray | None = None, sites: dict | None = None,
                     ncols: int = 4, panel_size: float = 2.4, suptitle: str = "") -> Figure:
    """One panel per map (bins, bins) of values over the unit cell (bin i centred on i/bins of a; x right, y up),
    with the projected column sites marked (``sites``: name → fractional points, e.g.
    ``periodicity.SITES``) and, optionally, ``contours`` (bins, bins) drawn over every panel in white."""
    names = list(maps)
    ncols = max(1, min(ncols, len(names)))
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(panel_size * ncols + 0.8, panel_size * nrows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    markers = {0: "o", 1: "s", 2: "^"}
    image = None
    for ax, name in zip(axes, names):
        m = np.asarray(maps[name], dtype=float)
        n = m.shape[0]
        extent = (-0.5 / n, 1 - 0.5 / n, -0.5 / n, 1 - 0.5 / n)
        image = ax.imshow(m.T, origin="lower", extent=extent, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        if contours is not None:
            c = np.asarray(contours, dtype=float)
            grid = np.arange(c.shape[0]) / c.shape[0]
            ax.contour(grid, grid, c.T, levels=4, colors="white", linewidths=0.7)
        for i, (site, points) in enumerate((sites or {}).items()):
            pts = np.array([(x + dx, y + dy) for x, y in points for dx in (0, 1) for dy in (0, 1)])
            keep = (pts < 1 - 0.5 / n).all(axis=1)
            ax.scatter(pts[keep, 0], pts[keep, 1], marker=markers.get(i, "x"), s=22, facecolors="none",
                       edgecolors="red", linewidths=0.9, label=site)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("x / a", fontsize=8)
        ax.set_ylabel("y / a", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if sites:
        axes[0].legend(fontsize=6, loc="upper right", framealpha=0.7)
    if image is not None:
        fig.colorbar(image, ax=axes[:len(names)].tolist(), label=label, shrink=0.85)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig
