"""The Filters view: saliency, layer outputs and filter visualisation of the selected face and model.

Everything comes from the model's companion graphs (``<model>.grad.onnx``, ``<model>.layers.onnx``,
``<model>.filters.<layer>.onnx``; contract in :mod:`fer_train.explain_runtime`), run with onnxruntime in
thread workers. The gradient ascent runs here too, one batch of noise images per layer (one per filter),
with a progress bar; Escape stops it.

:class:`FiltersView` is a self-contained widget (``set_model(path)``, ``set_face(image)``);
:class:`FiltersTab` wraps it as a tab of the app (add it to ``fer_tui.app.VIEWS``). No torch.
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
from textual.containers import VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import ProgressBar, Static
from textual.worker import get_current_worker

from fer_train.explain_runtime import AscentConfig, AscentResult, ExplainError, Explainer, deprocess_filter, masked_image, normalise_map

from .render import fit, gray_to_rgb, heat_to_rgb, image_text, overlay
from .views.base import View

STEP_CHOICES = (40, 80, 20)  # the study's 40 and 80 first
TILE_SIZES = (8, 12, 16, 24, 32, 48)
BACKGROUND = np.array([24, 24, 24], np.uint8)


# -- pure helpers (no widget state) -----------------------------------------------------------------

def mosaic(tiles: np.ndarray, tile: int, width: int, gap: int = 1) -> np.ndarray:
    """RGB tiles (n, h, w, 3) resized to ``tile`` px and laid out in as many columns as fit ``width`` px."""
    n = len(tiles)
    cols = max(1, min(n, (width + gap) // (tile + gap)))
    rows = -(-n // cols)
    canvas = np.empty((rows * (tile + gap) - gap, cols * (tile + gap) - gap, 3), np.uint8)
    canvas[:] = BACKGROUND
    for k in range(n):
        y, x = divmod(k, cols)
        canvas[y * (tile + gap):y * (tile + gap) + tile, x * (tile + gap):x * (tile + gap) + tile] = fit(tiles[k], tile)
    return canvas


def feature_tiles(maps: np.ndarray) -> np.ndarray:
    """Feature maps (C, H, W) as heat-coloured tiles (C, H, W, 3), each on its own scale."""
    m = np.asarray(maps, np.float32)
    lo = m.min(axis=(1, 2), keepdims=True)
    span = np.maximum(m.max(axis=(1, 2), keepdims=True) - lo, 1e-12)
    return heat_to_rgb((m - lo) / span)


def filter_tiles(result: AscentResult, contrast: float = 0.25) -> np.ndarray:
    """Ascent images as gray tiles (n, 48, 48, 3), with more contrast than on paper: terminal cells are coarse."""
    return np.stack([gray_to_rgb(deprocess_filter(img, contrast)) for img in result.images])


# -- messages from the workers ----------------------------------------------------------------------

@dataclass
class FaceExplained(Message):
    token: tuple
    layers: list[str]  # the model's conv layers, from its companions' metadata
    class_names: list[str]
    saliency: object | None  # SaliencyResult, None without a face or a gradient graph
    outputs: dict | None  # layer name → (C, H, W)
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


# -- a picture of tiles that fits its width -----------------------------------------------------------

class Mosaic(Widget):
    """Tiles (n, h, w, 3) drawn as half blocks, as many per row as the width allows; height follows."""

    plain: reactive[bool] = reactive(False)

    def __init__(self, caption: str = "", tile: int = 16, *, id: str | None = None):
        super().__init__(id=id)
        self.border_title = caption
        self.tiles: np.ndarray | None = None
        self.tile = tile
        self.message = ""
        self._cache: tuple | None = None
        self._canvas_cache: tuple | None = None

    def show(self, tiles: np.ndarray | None, message: str = "", caption: str | None = None) -> None:
        self.tiles, self.message, self._cache, self._canvas_cache = tiles, message, None, None
        if caption is not None:
            self.border_title = caption
        self.refresh(layout=True)

    def set_tile(self, tile: int) -> None:
        self.tile, self._cache = tile, None
        self.refresh(layout=True)

    def _canvas(self, width: int) -> np.ndarray:
        key = (id(self.tiles), self.tile, width)
        if self._canvas_cache is None or self._canvas_cache[0] != key:  # layout asks for the height often
            self._canvas_cache = (key, mosaic(self.tiles, self.tile, max(width, self.tile)))
        return self._canvas_cache[1]

    def get_content_height(self, container, viewport, width: int) -> int:
        if self.tiles is None or len(self.tiles) == 0:
            return 1
        return (self._canvas(width).shape[0] + 1) // 2

    def render(self) -> Text:
        if self.tiles is None or len(self.tiles) == 0:
            return Text(self.message, style="dim")
        key = (id(self.tiles), self.tile, self.content_size.width, self.plain)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, image_text(self._canvas(self.content_size.width), plain=self.plain))
        return self._cache[1]

    def watch_plain(self) -> None:
        self._cache = None
        self.refresh()


# -- the view -------------------------------------------------------------------------------------------

class FiltersView(Widget, can_focus=True):
    """Saliency (gradient graph), one conv layer's outputs and its filters by gradient ascent.

    ``set_model(path)`` with the model's ``.onnx`` (None: no model), ``set_face(image)`` with a uint8
    (48, 48) face (None: no face). Keys: ``,`` ``.`` layer, ``a`` run the ascent (Escape stops it),
    ``e`` steps 40/80/20, ``+`` ``-`` tile size.
    """

    DEFAULT_CSS = """
    FiltersView { height: 1fr; }
    FiltersView #filters-title { height: 1; }
    FiltersView #filters-status { height: 1; color: $text-muted; }
    FiltersView ProgressBar { height: 1; }
    FiltersView Mosaic { border: round $primary 60%; border-title-color: $text-muted; height: auto; }
    FiltersView #filters-saliency { width: 152; max-width: 100%; }
    """

    BINDINGS = [
        Binding("comma", "layer(-1)", "Layer", show=False),
        Binding("full_stop", "layer(1)", "Layer"),
        Binding("a", "ascend", "Ascent"),
        Binding("escape", "stop", "Stop", show=False),
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
        self.explainer: Explainer | None = None
        self.model_path: Path | None = None
        self.face: np.ndarray | None = None
        self.saliency = None
        self.outputs: dict | None = None
        self.filters: dict[tuple, AscentResult] = {}  # (model, layer, steps) → result
        self.running: tuple | None = None
        self.error: str | None = None
        self._layer_names: list[str] | None = None  # None until a worker has read them
        self._class_names: list[str] = []
        self._face_token: tuple | None = None
        self._face_serial = 0

    def compose(self) -> ComposeResult:
        yield Static(id="filters-title")
        with VerticalScroll():
            yield Mosaic("face · saliency of the predicted class · 50% most salient", tile=48, id="filters-saliency")
            yield Mosaic("layer outputs", tile=16, id="filters-outputs")
            yield Mosaic("filters", tile=24, id="filters-grid")
        yield ProgressBar(total=1, show_eta=False, id="filters-progress")
        yield Static(id="filters-status")

    def on_mount(self) -> None:
        self.query_one(ProgressBar).display = False
        self._redraw()

    def watch_plain(self, plain: bool) -> None:
        for m in self.query(Mosaic):
            m.plain = plain

    # -- inputs ------------------------------------------------------------------------------------

    def set_model(self, onnx_path: str | Path | None) -> None:
        path = Path(onnx_path) if onnx_path is not None else None
        if path == self.model_path:
            return
        self.workers.cancel_group(self, "filters-ascent")
        self.running = None
        self.model_path = path
        self.explainer = Explainer(path, threads=self.threads) if path is not None else None
        self.saliency = self.outputs = None
        self._layer_names = None
        self._explain_face()

    def set_face(self, image: np.ndarray | None) -> None:
        face = None if image is None else np.asarray(image, np.uint8).reshape(48, 48)
        if face is None and self.face is None or face is not None and self.face is not None and np.array_equal(face, self.face):
            return
        self.face = face
        self.saliency = self.outputs = None
        self._explain_face()

    # -- workers -----------------------------------------------------------------------------------

    def _explain_face(self) -> None:
        self._face_serial += 1
        self._face_token = (self.model_path, self._face_serial)
        self._redraw()
        if self.explainer is not None and self.is_mounted:
            if self.face is not None:
                self._status("computing saliency and layer outputs…")
            self.explain_face(self._face_token, self.explainer, self.face)

    @work(thread=True, exclusive=True, group="filters-face")
    def explain_face(self, token: tuple, explainer: Explainer, face: np.ndarray | None) -> None:
        worker = get_current_worker()
        try:
            layers = [layer["name"] for layer in explainer.layers]  # opens a session: not on the UI thread
            class_names = explainer.class_names
            saliency = explainer.saliency(face) if face is not None and explainer.has_gradient else None
            outputs = explainer.layer_outputs(face) if face is not None and explainer.has_layers else None
        except (ExplainError, ValueError, RuntimeError) as exc:  # onnxruntime raises RuntimeError subclasses
            self.post_message(FaceExplained(token, [], [], None, None, str(exc)))
            return
        if not worker.is_cancelled:
            self.post_message(FaceExplained(token, layers, class_names, saliency, outputs))

    def on_face_explained(self, message: FaceExplained) -> None:
        message.stop()
        if message.token != self._face_token:
            return
        self.saliency, self.outputs, self.error = message.saliency, message.outputs, message.error
        self._layer_names, self._class_names = message.layers, message.class_names
        self._redraw()

    def action_ascend(self) -> None:
        if self.explainer is None or self.running is not None:
            return
        if not self.explainer.has_filters(self.layer_name):
            self._status(f"no filter graph for {self.layer_name} beside {self.model_path.name}", error=True)
            return
        token = (self.model_path, self.layer_name, self.steps)
        self.running = token
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
        return self._layer_names or []

    def select_layer(self, name: str) -> None:
        self.layer_name = name
        self._redraw()

    def action_layer(self, delta: int) -> None:
        names = self.layer_names
        if names:
            position = names.index(self.layer_name) if self.layer_name in names else 0
            self.select_layer(names[(position + delta) % len(names)])

    def action_cycle_steps(self) -> None:
        choices = list(STEP_CHOICES) if self.steps in STEP_CHOICES else [self.steps, *STEP_CHOICES]
        self.steps = choices[(choices.index(self.steps) + 1) % len(choices)]
        self._redraw()

    def action_tile(self, delta: int) -> None:
        for mosaic_id in ("#filters-outputs", "#filters-grid"):
            m = self.query_one(mosaic_id, Mosaic)
            position = min(range(len(TILE_SIZES)), key=lambda i: abs(TILE_SIZES[i] - m.tile))
            m.set_tile(TILE_SIZES[min(max(position + delta, 0), len(TILE_SIZES) - 1)])

    # -- drawing -----------------------------------------------------------------------------------

    def _status(self, text: str, error: bool = False) -> None:
        if self.is_mounted:
            self.query_one("#filters-status", Static).update(Text(text, style="bold red" if error else "dim"))

    def _redraw(self, keep_status: bool = False) -> None:
        if not self.is_mounted:
            return
        sal, outs, grid = (self.query_one(f"#filters-{n}", Mosaic) for n in ("saliency", "outputs", "grid"))
        title = Text(no_wrap=True, overflow="ellipsis")
        if self.explainer is None:
            title.append("no model", "bold")
            for m in (sal, outs, grid):
                m.show(None, "choose a model (m: Models)")
            self.query_one("#filters-title", Static).update(title)
            return
        names = self.layer_names
        if names and self.layer_name not in names:
            self.layer_name = names[1] if len(names) > 1 else names[0]
        title.append(f"{self.model_path.name}", "bold")
        title.append(f"  layer {self.layer_name} of {', '.join(names) or 'none'}  ·  ascent {self.steps} steps")
        self.query_one("#filters-title", Static).update(title)

        status = ""
        if not self.explainer.has_gradient:
            status = f"no explanation graphs beside {self.model_path.name}: export it with fer-train export RUN --name NAME"
        elif self._layer_names == []:
            status = f"{self.model_path.name} has no conv layers: saliency only"
        if self.face is None:
            sal.show(None, "no face selected")
        elif self.saliency is not None:
            face = self.face
            values = normalise_map(self.saliency.map[0], 99.5)
            tiles = np.stack([gray_to_rgb(face), overlay(face, values), gray_to_rgb(masked_image(face, self.saliency.map[0], hide=0.5))])
            cls = int(self.saliency.class_index[0])
            logits = self.saliency.logits[0]
            prob = float(np.exp(logits[cls] - logits.max()) / np.exp(logits - logits.max()).sum())
            name = self._class_names[cls] if cls < len(self._class_names) else f"class {cls}"
            sal.show(tiles, caption=f"face · saliency of the predicted class, {name} ({prob:.0%}) · 50% most salient")
        else:
            sal.show(None, self.error or ("computing…" if self.explainer.has_gradient else "no gradient graph"))

        if self.outputs is not None and self.layer_name in self.outputs:
            maps = self.outputs[self.layer_name]
            outs.show(feature_tiles(maps), caption=f"outputs of {self.layer_name}: {maps.shape[0]} maps {maps.shape[1]}×{maps.shape[2]}")
        else:
            outs.show(None, "no layer outputs" if not names else "no face selected" if self.face is None else "computing…",
                      caption="layer outputs")

        result = self.filters.get((self.model_path, self.layer_name, self.steps))
        if result is not None:
            grid.show(filter_tiles(result), caption=f"filters of {self.layer_name} after {result.steps} steps (gradient ascent from noise)")
            best = int(np.argmax(result.activation))
            status = status or (f"{len(result.activation)} filters in {result.seconds:.1f} s; mean activation reached: median "
                                f"{np.median(result.activation):.3g}, best #{best} {result.activation[best]:.3g}")
        else:
            grid.show(None, f"press a to visualise the filters of {self.layer_name} ({self.steps} steps)" if names else "no filters",
                      caption="filters")
        if not keep_status and self.running is None:
            self._status(status, error=status.startswith("no explanation"))


class FiltersTab(View):
    """The Filters tab of the app (``fer_tui.app.VIEWS``): a :class:`FiltersView` fed from the app's state.

    It works only while visible: the model and face reach the widget when the tab is shown or changes.
    """

    view_id = "filters"
    title = "Filters"
    key = "f"
    summary = "what the conv filters respond to (gradient ascent), the layer outputs and the saliency of the face"
    keys_help = ((", .", "previous / next conv layer"), ("a", "visualise the layer's filters by gradient ascent (Escape stops)"),
                 ("e", "ascent steps: 40, 80, 20"), ("+ -", "bigger / smaller tiles"))

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
