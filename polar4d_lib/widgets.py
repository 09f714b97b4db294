"""An interactive explorer of a 4D-STEM scan and a model's polarization predictions (ipywidgets).

:class:`ScanExplorer` shows, for the chosen scan, model and dose,

- a map of the predicted class (colour wheel) or of the model's confidence (highest class probability),
- a virtual bright-field and a virtual annular dark-field image, and the centre-of-mass field,
- at the chosen probe position: the diffraction pattern (log scale, axes in mrad), the 8 class
  probabilities and, for simulated data, the true class.

Scans come as :class:`polar4d_lib.io.Scan` (a user's file through :func:`polar4d_lib.io.read_scan`, or a
simulation), several of them keyed by a name (e.g. the thickness), so a dropdown switches between them.
Every panel is a PNG drawn by matplotlib inside an ``ipywidgets.Image``: the saved widget state of an
executed notebook therefore shows the last view in a static page, where nothing moves; :meth:`figure`
draws the same view as a plain figure to put beside it.
"""

from __future__ import annotations

import io as _io
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from polar4d_lib import acquisition, conventions, detector, plotting
from polar4d_lib.io import Scan
from polar4d_lib.predict import Prediction, predict_scan

MAP_KINDS: tuple[str, ...] = ("class", "confidence")


def virtual_images(scan: Scan, semiangle_mrad: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Virtual bright-field (detector angles ≤ the probe semi-angle) and annular dark-field (beyond it)
    images (Rx, Ry) of ``scan``, the disk centred at pixel n//2. ``semiangle_mrad`` defaults to the scan's."""
    sampling = scan.require_sampling()
    semiangle = semiangle_mrad if semiangle_mrad is not None else scan.semiangle_mrad
    if semiangle is None or not semiangle > 0:
        raise ValueError("the probe semi-angle of the scan is unknown; pass semiangle_mrad (mrad) or set "
                         "Scan.semiangle_mrad")
    qx, qy = scan.data.shape[-2:]
    kx = (np.arange(qx) - qx // 2) * sampling
    ky = (np.arange(qy) - qy // 2) * sampling
    inside = np.hypot(kx[:, None], ky[None, :]) <= semiangle
    return scan.data[..., inside].sum(axis=-1), scan.data[..., ~inside].sum(axis=-1)


def _png(draw: Any, view: _View, size: tuple[float, float]) -> bytes:
    """``draw(fig, view)`` on a new figure of ``size`` (inches), as PNG bytes."""
    fig = Figure(figsize=size, layout="constrained")
    draw(fig, view)
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _dose_label(dose: float | None) -> str:
    return "as recorded" if dose is None else f"{dose:.0e} e/pattern"


@dataclass
class _View:
    """What the explorer currently shows."""

    scan: str
    model: str
    dose: float | None
    map_kind: str
    position: tuple[int, int]


class ScanExplorer:
    """Explore ``scans`` (name → Scan) with ``models`` (name → fitted PolarizationModel).

    ``true_class``: for simulated scans, name → (Rx, Ry) class map (or one class for the whole scan).
    ``doses``: electrons per pattern to re-count the patterns at (None = as recorded); re-counting is
    seeded by ``seed``, so a view is reproducible. Display with ``explorer.widget`` (or just
    ``explorer`` as a cell's last line); :meth:`figure` is the same view as a static figure.
    """

    def __init__(
        self,
        scans: Mapping[str, Scan] | Scan,
        models: Mapping[str, Any] | Any,
        true_class: Mapping[str, np.ndarray | int] | None = None,
        doses: Sequence[float | None] = (None,),
        seed: int = 0,
    ) -> None:
        self.scans = dict(scans) if isinstance(scans, Mapping) else {"scan": scans}
        self.models = dict(models) if isinstance(models, Mapping) else {getattr(models, "kind", "model"): models}
        if not self.scans:
            raise ValueError("ScanExplorer needs at least one scan")
        if not self.models:
            raise ValueError("ScanExplorer needs at least one fitted model")
        shapes = {name: s.data.shape[:2] for name, s in self.scans.items()}
        self.true_class = {}
        for name, value in (true_class or {}).items():
            if name not in self.scans:
                raise ValueError(f"true_class names scan {name!r}, which is not among {list(self.scans)}")
            value = np.asarray(value)
            self.true_class[name] = np.broadcast_to(value, shapes[name]) if value.ndim == 0 else value
            if self.true_class[name].shape != shapes[name]:
                raise ValueError(f"true_class[{name!r}] has shape {value.shape}, the scan {shapes[name]}")
        self.doses = list(doses)
        for dose in self.doses:
            if dose is not None and not dose > 0:
                raise ValueError(f"doses must be positive electrons per pattern or None, got {dose}")
        self.seed = int(seed)
        self._scan_cache: dict[tuple[str, float | None], Scan] = {}
        self._prediction_cache: dict[tuple[str, str, float | None], Prediction] = {}
        self._image_cache: dict[tuple[str, float | None], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._widget: widgets.Widget | None = None
        first = next(iter(self.scans))
        rx, ry = shapes[first]
        self.view = _View(first, next(iter(self.models)), self.doses[0], "class", (rx // 2, ry // 2))

    # --- data -----------------------------------------------------------------------------------
    def scan(self, name: str, dose: float | None) -> Scan:
        """Scan ``name`` re-counted at ``dose`` electrons per pattern (None: as recorded)."""
        key = (name, dose)
        if key not in self._scan_cache:
            scan = self.scans[name]
            if dose is not None:
                data = acquisition.apply_dose(scan.data, dose, seed=self.seed).astype(np.float32)
                scan = Scan(data, scan.q_sampling_mrad, scan.energy_kev, scan.semiangle_mrad, scan.scan_step_A,
                            scan.scan_rotation_deg, f"{scan.source} at {dose:.0e} e/pattern", list(scan.notes))
            self._scan_cache[key] = scan
        return self._scan_cache[key]

    def prediction(self, name: str, model: str, dose: float | None) -> Prediction:
        """The model's maps for a scan (computed once per scan, model and dose)."""
        key = (name, model, dose)
        if key not in self._prediction_cache:
            self._prediction_cache[key] = predict_scan(self.models[model], self.scan(name, dose))
        return self._prediction_cache[key]

    def images(self, name: str, dose: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Virtual bright field, annular dark field (Rx, Ry) and centre of mass (Rx, Ry, 2, mrad) of a
        scan (computed once per scan and dose, not on every move of the probe position)."""
        key = (name, dose)
        if key not in self._image_cache:
            scan = self.scan(name, dose)
            bf, adf = virtual_images(scan)
            com = detector.center_of_mass_mrad(scan.data.reshape((-1,) + scan.data.shape[-2:]), scan.require_sampling())
            self._image_cache[key] = (bf, adf, com.reshape(scan.data.shape[:2] + (2,)))
        return self._image_cache[key]

    # --- drawing --------------------------------------------------------------------------------
    def _draw_maps(self, fig: Any, view: _View) -> None:
        scan = self.scan(view.scan, view.dose)
        prediction = self.prediction(view.scan, view.model, view.dose)
        bf, adf, com = self.images(view.scan, view.dose)
        step = scan.scan_step_A or 1.0
        unit = "Å" if scan.scan_step_A else "px"
        extent = (0, scan.data.shape[0] * step, 0, scan.data.shape[1] * step)
        axes = fig.subplots(1, 4)
        if view.map_kind == "class":
            plotting.show_class_map(axes[0], prediction.class_map, step)
            axes[0].set_title(f"predicted class ({view.model})")
        else:
            image = axes[0].imshow(prediction.probabilities.max(axis=-1).T, origin="lower", extent=extent,
                                   vmin=1 / conventions.N_CLASSES, vmax=1, cmap="viridis", interpolation="nearest")
            fig.colorbar(image, ax=axes[0], label="highest class probability")
            axes[0].set_title(f"confidence ({view.model})")
        for ax, image, title in ((axes[1], bf, "virtual bright field"), (axes[2], adf, "virtual annular dark field")):
            ax.imshow(image.T, origin="lower", extent=extent, cmap="gray", interpolation="nearest")
            ax.set_title(title)
        x = (np.arange(scan.data.shape[0]) + 0.5) * step
        y = (np.arange(scan.data.shape[1]) + 0.5) * step
        axes[3].quiver(x[:, None] * np.ones_like(y), np.ones_like(x)[:, None] * y, com[..., 0], com[..., 1],
                       color=plotting.vector_colors(com.reshape(-1, 2)).reshape(-1, 3), angles="xy", pivot="middle")
        axes[3].set_xlim(extent[:2])
        axes[3].set_ylim(extent[2:])
        axes[3].set_aspect("equal")
        axes[3].set_title("centre of mass (mrad)")
        px, py = view.position
        for ax in axes:
            ax.plot((px + 0.5) * step, (py + 0.5) * step, marker="+", color="w", mec="k", ms=12, mew=2)
            ax.set_xlabel(f"x ({unit})")
            ax.set_ylabel(f"y ({unit})")

    def _draw_position(self, fig: Any, view: _View) -> None:
        scan = self.scan(view.scan, view.dose)
        prediction = self.prediction(view.scan, view.model, view.dose)
        px, py = view.position
        ax_pattern, ax_proba, ax_wheel = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.1, 1.5, 0.8]})
        image = plotting.show_pattern(ax_pattern, scan.data[px, py], scan.require_sampling())
        fig.colorbar(image, ax=ax_pattern, label="intensity")
        ax_pattern.set_title(f"pattern at ({px}, {py})")
        proba = prediction.probabilities[px, py]
        ax_proba.bar(range(conventions.N_CLASSES), proba, color=plotting.class_colors())
        ax_proba.set_xticks(range(conventions.N_CLASSES), conventions.CLASS_NAMES)
        ax_proba.set_ylim(0, 1)
        ax_proba.set_ylabel("probability")
        truth = self.true_class.get(view.scan)
        title = f"predicted {conventions.class_name(int(np.argmax(proba)))}"
        if truth is not None:
            k = int(truth[px, py])
            title += f", true {conventions.class_name(k)}"
            ax_proba.bar([k], [proba[k]], fill=False, edgecolor="k", lw=2)
        ax_proba.set_title(title)
        plotting.draw_color_wheel(ax_wheel, title="class")

    def figure(self) -> Figure:
        """The current view as one static figure (maps on top, the chosen position below)."""
        fig = Figure(figsize=(12.5, 7.0), layout="constrained")
        top, bottom = fig.subfigures(2, 1)
        self._draw_maps(top, self.view)
        self._draw_position(bottom, self.view)
        return fig

    # --- widgets --------------------------------------------------------------------------------
    @property
    def widget(self) -> widgets.Widget:
        """The explorer's widget (built once)."""
        if self._widget is None:
            self._widget = self._build()
        return self._widget

    def _build(self) -> widgets.Widget:
        view = self.view
        rx, ry = self.scans[view.scan].data.shape[:2]
        self.controls = {
            "scan": widgets.Dropdown(options=list(self.scans), value=view.scan, description="scan"),
            "model": widgets.Dropdown(options=list(self.models), value=view.model, description="model"),
            # labels as values: a Dropdown whose value is None shows no selection at all
            "dose": widgets.Dropdown(options=[_dose_label(d) for d in self.doses], value=_dose_label(view.dose),
                                     description="dose"),
            "map_kind": widgets.ToggleButtons(options=list(MAP_KINDS), value=view.map_kind, description="map"),
            "x": widgets.IntSlider(value=view.position[0], min=0, max=rx - 1, description="x (px)"),
            "y": widgets.IntSlider(value=view.position[1], min=0, max=ry - 1, description="y (px)"),
        }
        self.maps_image = widgets.Image(format="png", layout=widgets.Layout(width="100%"))
        self.position_image = widgets.Image(format="png", layout=widgets.Layout(width="72%"))
        self.status = widgets.HTML()
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self._redraw()
        row1 = widgets.HBox([self.controls[k] for k in ("scan", "model", "dose")])
        row2 = widgets.HBox([self.controls["map_kind"], self.controls["x"], self.controls["y"]])
        return widgets.VBox([row1, row2, self.maps_image, self.position_image, self.status])

    def _on_change(self, change: dict) -> None:
        c = self.controls
        old = self.view
        if c["scan"].value != old.scan:  # a scan of another size: keep the position inside it
            rx, ry = self.scans[c["scan"].value].data.shape[:2]
            c["x"].max, c["y"].max = rx - 1, ry - 1
        dose = {_dose_label(d): d for d in self.doses}[c["dose"].value]
        self.view = _View(c["scan"].value, c["model"].value, dose, c["map_kind"].value,
                          (int(c["x"].value), int(c["y"].value)))
        self._redraw()

    def select(self, **changes: Any) -> "ScanExplorer":
        """Change the view in code (scan=, model=, dose=, map_kind=, position=(x, y)), widgets included."""
        unknown = set(changes) - set(_View.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown view setting(s) {sorted(unknown)}; use {list(_View.__dataclass_fields__)}")
        values = {**self.view.__dict__, **changes}
        if values["scan"] not in self.scans:
            raise ValueError(f"scan {values['scan']!r} unknown; use one of {list(self.scans)}")
        if values["model"] not in self.models:
            raise ValueError(f"model {values['model']!r} unknown; use one of {list(self.models)}")
        if values["dose"] not in self.doses:
            raise ValueError(f"dose {values['dose']!r} not offered; use one of {self.doses}")
        if values["map_kind"] not in MAP_KINDS:
            raise ValueError(f"map {values['map_kind']!r} unknown; use one of {MAP_KINDS}")
        rx, ry = self.scans[values["scan"]].data.shape[:2]
        x, y = (int(v) for v in values["position"])
        if not (0 <= x < rx and 0 <= y < ry):
            raise ValueError(f"position ({x}, {y}) lies outside the {rx} × {ry} scan")
        values["position"] = (x, y)
        self.view = _View(**values)
        if self._widget is not None:
            c = self.controls
            for control in c.values():
                control.unobserve(self._on_change, names="value")
            c["x"].max, c["y"].max = rx - 1, ry - 1
            for name in ("scan", "model", "map_kind"):
                c[name].value = getattr(self.view, name)
            c["dose"].value = _dose_label(self.view.dose)
            c["x"].value, c["y"].value = self.view.position
            for control in c.values():
                control.observe(self._on_change, names="value")
            self._redraw()
        return self

    def _redraw(self) -> None:
        self.maps_image.value = _png(self._draw_maps, self.view, (12.5, 3.4))
        self.position_image.value = _png(self._draw_position, self.view, (9.0, 3.4))
        prediction = self.prediction(self.view.scan, self.view.model, self.view.dose)
        counts = np.bincount(prediction.class_map[prediction.class_map >= 0].ravel(), minlength=conventions.N_CLASSES)
        majority = conventions.class_name(int(np.argmax(counts)))
        self.status.value = (f"<b>{self.view.scan}</b>, {self.view.model}: majority class {majority} "
                             f"({counts.max() / max(counts.sum(), 1):.0%} of positions)")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

