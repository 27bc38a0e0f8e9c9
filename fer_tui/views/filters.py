"""The Filters view: what a CNN's conv filters respond to, and what one layer makes of the selected face.

One grid fills the view: the chosen layer's filters visualised by gradient ascent (``a`` runs it in a
worker, one noise image per filter, with a progress bar; Escape stops it), or with ``o`` the layer's
outputs for the selected face. The grid never scrolls: tiles shrink (down to 8 px) until the whole layer
fits, and a layer that does not fit even then is shown a page at a time (← →). At 120×40 the grid holds
116×62 pixels: the shipped models' 32-filter layers show whole in 13-px tiles, their 64-filter layers in
9-px tiles, and their 128- and 256-filter layers in 2 and 3 pages of up to 91 8-px tiles. A filter's tile
is the centre of its pattern at full resolution (:mod:`fer_tui.tiles` says why). Saliency is the
Saliency view's.

Everything comes from the model's companion graphs (``<model>.layers.onnx``, ``<model>.filters.<layer>.onnx``;
contract in :mod:`fer_runtime.explain`), run with onnxruntime. :class:`FiltersView` is a self-contained
widget (``set_model(path)``, ``set_face(image)``); :class:`FiltersTab` is its tab in the app. No torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import ProgressBar, Static
from textual.worker import get_current_worker

from fer_runtime.explain import AscentConfig, AscentResult, ExplainError, Explainer

from ..tiles import TILE_SIZES, feature_tiles, filter_tiles
from .base import View
from .mosaic import Mosaic

STEP_CHOICES = (40, 80, 20)  # the study's 40 and 80 first


# -- messages from the workers ----------------------------------------------------------------------

@dataclass
class FaceExplained(Message):
    token: tuple
    layers: list[dict]  # the model's conv layers (name, channels, height, width), from its companions' metadata
    outputs: dict | None  # layer name → (C, H, W); None without a face or a layers graph
    error: str | None = None


@dataclass
class AscentProgress(Message):
    token: tuple
    step: int
    steps: int

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, AscentProgress) and message.token == self.token


@dataclass
class AscentDone(Message):
    token: tuple  # (model, layer, steps)
    result: AscentResult | None
    error: str | None = None


# -- the view -------------------------------------------------------------------------------------------

class FiltersView(Widget, can_focus=True):
    """One conv layer's filters by gradient ascent, or its outputs for the face, in a grid that fits the view.

    ``set_model(path)`` with the model's ``.onnx`` (None: no model), ``set_face(image)`` with a uint8
    (48, 48) face (None: no face). Keys: ``,`` ``.`` layer, ``←`` ``→`` page, ``a`` run the ascent
    (Escape stops it), ``o`` filters or outputs, ``e`` steps 40/80/20, ``+`` ``-`` tile size.
    """

    BINDINGS = [
        Binding("comma", "layer(-1)", "Layer", show=False),
        Binding("full_stop", "layer(1)", "Layer"),
        Binding("left,pageup", "page(-1)", "Page", show=False),
        Binding("right,pagedown", "page(1)", "Page"),
        Binding("a", "ascend", "Ascent"),
        Binding("escape", "stop", "Stop", show=False),
        Binding("o", "toggle_outputs", "Outputs"),
        Binding("e", "cycle_steps", "Steps"),
        Binding("plus,equals_sign", "tile(1)", "Bigger", show=False),
        Binding("minus", "tile(-1)", "Smaller", show=False),
    ]

    plain: reactive[bool] = reactive(False)

    def __init__(self, *, threads: int | None = None, layer: str = "conv2", ascent: AscentConfig | None = None, id: str | None = None):
        super().__init__(id=id)
        self.threads = threads or max(1, (os.cpu_count() or 2) - 1)  # leave a core for the interface
        self.ascent = ascent or AscentConfig()
        self.steps = self.ascent.steps
        self.layer_name = layer
        self.show_outputs = False  # the grid shows the filters (False) or the layer's outputs for the face (True)
        self.explainer: Explainer | None = None
        self.model_path: Path | None = None
        self.face: np.ndarray | None = None
        self.outputs: dict | None = None
        self.filters: dict[tuple, AscentResult] = {}  # (model, layer, steps) → result
        self.running: tuple | None = None
        self.error: str | None = None
        self._layers: list[dict] | None = None  # None until a worker has read them
        self._face_token: tuple | None = None
        self._face_serial = 0

    def compose(self) -> ComposeResult:
        yield Static(id="filters-title")
        yield Mosaic("filters", id="filters-grid")
        yield ProgressBar(total=1, show_eta=False, id="filters-progress")
        yield Static(id="filters-status")

    def on_mount(self) -> None:
        self.query_one(ProgressBar).display = False
        self._redraw()

    def watch_plain(self, plain: bool) -> None:
        for grid in self.query(Mosaic):
            grid.plain = plain

    @property
    def grid(self) -> Mosaic:
        return self.query_one("#filters-grid", Mosaic)

    # -- inputs ------------------------------------------------------------------------------------

    def set_model(self, onnx_path: str | Path | None) -> None:
        path = Path(onnx_path) if onnx_path is not None else None
        if path == self.model_path:
            return
        self.workers.cancel_group(self, "filters-ascent")
        self.running = None
        self.model_path = path
        self.explainer = Explainer(path, threads=self.threads) if path is not None else None
        self.outputs = None
        self._layers = None
        self._explain_face()

    def set_face(self, image: np.ndarray | None) -> None:
        face = None if image is None else np.asarray(image, np.uint8).reshape(48, 48)
        if face is None and self.face is None or face is not None and self.face is not None and np.array_equal(face, self.face):
            return
        self.face = face
        self.outputs = None
        self._explain_face()

    # -- workers -----------------------------------------------------------------------------------

    def _explain_face(self) -> None:
        self._face_serial += 1
        self._face_token = (self.model_path, self._face_serial)
        self._redraw()
        if self.explainer is not None and self.is_mounted:
            self.explain_face(self._face_token, self.explainer, self.face)

    @work(thread=True, exclusive=True, group="filters-face")
    def explain_face(self, token: tuple, explainer: Explainer, face: np.ndarray | None) -> None:
        worker = get_current_worker()
        try:
            layers = explainer.layers  # opens a session: not on the UI thread
            outputs = explainer.layer_outputs(face) if face is not None and explainer.has_layers else None
        except (ExplainError, ValueError, RuntimeError) as exc:  # onnxruntime raises RuntimeError subclasses
            self.post_message(FaceExplained(token, [], None, str(exc)))
            return
        if not worker.is_cancelled:
            self.post_message(FaceExplained(token, layers, outputs))

    def on_face_explained(self, message: FaceExplained) -> None:
        message.stop()
        if message.token != self._face_token:
            return
        self.outputs, self.error, self._layers = message.outputs, message.error, message.layers
        self._redraw()

    def action_ascend(self) -> None:
        if self.explainer is None or self.running is not None:
            return
        if not self.explainer.has_filters(self.layer_name):
            self._status(f"no filter graph for {self.layer_name} beside {self.model_path.name}", error=True)
            return
        token = (self.model_path, self.layer_name, self.steps)
        self.running = token
        self.show_outputs = False
        self._redraw()
        bar = self.query_one(ProgressBar)
        bar.update(total=self.steps, progress=0)
        bar.display = True
        self._status(f"gradient ascent on every filter of {self.layer_name}, {self.steps} steps… (Escape stops)")
        self.run_ascent(token, self.explainer, self.layer_name, AscentConfig(**{**self.ascent.__dict__, "steps": self.steps}))

    @work(thread=True, exclusive=True, group="filters-ascent")
    def run_ascent(self, token: tuple, explainer: Explainer, layer: str, config: AscentConfig) -> None:
        worker = get_current_worker()
        try:
            results = explainer.visualise_filters(layer, config, progress=lambda s, n: self.post_message(AscentProgress(token, s, n)),
                                                  should_stop=lambda: worker.is_cancelled)
        except (ExplainError, ValueError, RuntimeError) as exc:
            self.post_message(AscentDone(token, None, str(exc)))
            return
        self.post_message(AscentDone(token, results[-1]))

    def on_ascent_progress(self, message: AscentProgress) -> None:
        message.stop()
        if message.token == self.running:
            self.query_one(ProgressBar).update(total=message.steps, progress=message.step)

    def on_ascent_done(self, message: AscentDone) -> None:
        message.stop()
        if message.token != self.running:
            return
        self.running = None
        self.query_one(ProgressBar).display = False
        if message.result is None:
            self._status(message.error or "the ascent failed", error=True)
            return
        if message.result.complete:
            self.filters[message.token] = message.result
        else:
            self._status(f"stopped after {message.result.steps} steps")
        self._redraw(keep_status=not message.result.complete)

    def action_stop(self) -> None:
        if self.running is not None:
            self.workers.cancel_group(self, "filters-ascent")

    # -- controls ----------------------------------------------------------------------------------

    @property
    def layer_names(self) -> list[str]:
        """The model's conv layers, once a worker has read them."""
        return [layer["name"] for layer in self._layers or []]

    def select_layer(self, name: str) -> None:
        if name != self.layer_name and self.is_mounted:
            self.grid.page = 0  # another layer starts at its first page
        self.layer_name = name
        self._redraw()

    def action_layer(self, delta: int) -> None:
        names = self.layer_names
        if names:
            position = names.index(self.layer_name) if self.layer_name in names else 0
            self.select_layer(names[(position + delta) % len(names)])

    def action_page(self, delta: int) -> None:
        self.grid.turn(delta)

    def action_toggle_outputs(self) -> None:
        self.show_outputs = not self.show_outputs
        self._redraw()

    def action_cycle_steps(self) -> None:
        choices = list(STEP_CHOICES) if self.steps in STEP_CHOICES else [self.steps, *STEP_CHOICES]
        self.steps = choices[(choices.index(self.steps) + 1) % len(choices)]
        self._redraw()

    def action_tile(self, delta: int) -> None:
        grid = self.grid
        current = grid.arrangement.tile if grid.arrangement is not None else grid.tile or TILE_SIZES[0]
        position = min(range(len(TILE_SIZES)), key=lambda i: abs(TILE_SIZES[i] - current))
        grid.set_tile(TILE_SIZES[min(max(position + delta, 0), len(TILE_SIZES) - 1)])

    # -- drawing -----------------------------------------------------------------------------------

    def _status(self, text: str, error: bool = False) -> None:
        if self.is_mounted:
            self.query_one("#filters-status", Static).update(Text(text, style="bold red" if error else "dim"))

    def _redraw(self, keep_status: bool = False) -> None:
        if not self.is_mounted:
            return
        grid = self.grid
        title = Text(no_wrap=True, overflow="ellipsis")
        if self.explainer is None:
            title.append("no model", "bold")
            grid.show(None, "choose a model (m: Models)", caption="filters")
            self.query_one("#filters-title", Static).update(title)
            self._status("")
            return
        names = self.layer_names
        if names and self.layer_name not in names:
            self.layer_name = names[1] if len(names) > 1 else names[0]
        info = next((layer for layer in self._layers or [] if layer["name"] == self.layer_name), None)
        title.append(self.model_path.name, "bold")
        if names:
            title.append(f"  layer {self.layer_name} ({names.index(self.layer_name) + 1}/{len(names)})", "bold")
            if info is not None:
                title.append(f": {info['channels']} filters, outputs {info['height']}×{info['width']}")
        title.append(f"  ·  ascent {self.steps} steps  ·  showing ")
        title.append("outputs for the face" if self.show_outputs else "filters", "bold")
        self.query_one("#filters-title", Static).update(title)

        status = ""
        if self.error:
            status = self.error
        elif self._layers == [] and not self.explainer.has_layers and not self.explainer.has_gradient:
            status = f"no explanation graphs beside {self.model_path.name}: export it with fer-train export RUN --name NAME"
        elif self._layers == []:
            status = f"{self.model_path.name} has no conv layers: no filters to show (its saliency is in the Saliency view)"

        if self.show_outputs:
            caption = f"outputs of {self.layer_name} for the selected face (each map on its own colour scale)"
            if self.outputs is not None and self.layer_name in self.outputs:
                grid.show(feature_tiles(self.outputs[self.layer_name]), caption=caption)
            else:
                why = ("no layer outputs" if self._layers == [] or not self.explainer.has_layers else
                       "no face selected" if self.face is None else "computing…")
                grid.show(None, why, caption=caption)
        else:
            result = self.filters.get((self.model_path, self.layer_name, self.steps))
            if result is not None:
                grid.show(filter_tiles(result), crop=True,
                          caption=f"filters of {self.layer_name}: the centre of each pattern after {result.steps} steps of gradient ascent")
                best = int(np.argmax(result.activation))
                status = status or (f"{len(result.activation)} filters in {result.seconds:.1f} s; mean activation reached: median "
                                    f"{np.median(result.activation):.3g}, best #{best} {result.activation[best]:.3g}")
            elif names:
                channels = f"the {info['channels']} filters" if info is not None else "the filters"
                grid.show(None, f"press a to visualise {channels} of {self.layer_name} ({self.steps} steps of gradient ascent); "
                                f"o shows the layer's outputs for the face", caption=f"filters of {self.layer_name}")
            else:
                grid.show(None, "no filters" if self._layers == [] else "reading the model's layers…", caption="filters")
        if not keep_status and self.running is None:
            self._status(status, error=status.startswith("no explanation") or status == self.error)


class FiltersTab(View):
    """The Filters tab of the app (``fer_tui.app.VIEWS``): a :class:`FiltersView` fed from the app's state.

    It works only while visible: the model and face reach the widget when the tab is shown or changes.
    """

    view_id = "filters"
    title = "Filters"
    key = "f"
    summary = "what the conv filters respond to (gradient ascent), and the layer's outputs for the face"
    keys_help = ((", .", "previous / next conv layer"), ("← →", "previous / next page of a layer too big for one"),
                 ("a", "visualise the layer's filters by gradient ascent (Escape stops)"),
                 ("o", "show the filters or the layer's outputs for the selected face"),
                 ("e", "ascent steps: 40, 80, 20"), ("+ -", "bigger / smaller tiles (more pages / fewer)"))

    def compose(self) -> ComposeResult:
        yield FiltersView(id="filters-widget")

    def update_context(self, new, old) -> None:
        super().update_context(new, old)
        if self.is_active:
            self._forward()

    def shown(self) -> None:
        self._forward()

    def _forward(self) -> None:
        widget = self.query_one(FiltersView)
        ctx = self.context
        widget.plain = ctx.plain
        widget.set_model(ctx.model.path if ctx.model is not None and ctx.model.ok else None)
        widget.set_face(ctx.image)

    def focus_main(self) -> None:
        self.query_one(FiltersView).focus()
