"""Saliency: where the model looks for a class, as a colour map over the dimmed face, and the face masked to it.

The maps, their normalisation, the rendering and the mask all come from :mod:`fer_runtime.explain`
(``Explainer.face_saliency``, ``heat_over_face``, ``masked_image``), the same code as the explain command's
figures; this module only asks and draws. It says which method made the map and how faithful the map is on this
face (deletion and insertion areas against random pixels, :func:`fer_runtime.explain.face_faithfulness`), which
comes a moment after the map: the map is shown as soon as it is ready.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, replace

import numpy as np
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Label, Select
from textual.worker import get_current_worker

from fer_runtime.contract import CLASS_NAMES
from fer_runtime.explain import DEFAULT_METHOD, FACE_METHODS, ExplainError, Explainer, FaceSaliency, face_faithfulness, masked_image

from ..messages import StepFace
from ..render import legend_text, saliency_picture
from ..state import Context
from .base import View
from .face import Picture
from .readout import Readout

PREDICTED = -1
KEEP_STEPS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75)
DEFAULT_KEEP = 0.25


@dataclass(frozen=True)
class SaliencyRequest:
    model_key: tuple
    split_name: str
    index: int
    class_index: int | None  # None: the predicted class
    method: str


@dataclass
class SaliencyReady(Message):
    request: SaliencyRequest
    result: FaceSaliency | None
    error: str | None = None


class SaliencyView(View, can_focus=True):
    view_id = "saliency"
    title = "Saliency"
    key = "s"
    summary = "where the model looks: heat map for the predicted (or any) class, and the face masked to it"
    keys_help = (("← →", "the class to explain: predicted, then each class"),
                 ("↑ ↓", "previous / next face of Browse's list"),
                 ("g", f"method: auto = {DEFAULT_METHOD}; " + ", ".join(m for m in FACE_METHODS[1:] if m != DEFAULT_METHOD)),
                 ("+ -", "show more / less of the face in the mask"))

    BINDINGS = [
        Binding("left", "cycle_class(-1)", "Class"),
        Binding("right", "cycle_class(1)", "Class", show=False),
        Binding("up", "step(-1)", "Face", show=False),
        Binding("down", "step(1)", "Face"),
        Binding("g", "cycle_method", "Method"),
        Binding("plus,equals_sign", "keep(1)", "More"),
        Binding("minus", "keep(-1)", "Less"),
    ]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.class_choice = PREDICTED
        self.method = "auto"
        self.keep = DEFAULT_KEEP
        self._explainers: dict[tuple, Explainer] = {}  # model key → its explanation graphs, opened once
        self._results: OrderedDict[SaliencyRequest, FaceSaliency] = OrderedDict()
        self._pending: SaliencyRequest | None = None
        self._shown: SaliencyRequest | None = None
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield Readout(id="saliency-title")
        with Horizontal(id="saliency-pictures"):
            yield Picture("face", id="saliency-face")
            yield Picture("saliency", id="saliency-heat")
            yield Picture("most salient", id="saliency-masked")
        yield Readout(id="saliency-legend")
        yield Readout(id="saliency-status")
        with Horizontal(id="saliency-controls"):
            yield Label("class")
            yield Select(self._class_options(CLASS_NAMES), value=PREDICTED, allow_blank=False, id="saliency-class")
            yield Label("method")
            yield Select([(m, m) for m in FACE_METHODS], value="auto", allow_blank=False, id="saliency-method")

    @staticmethod
    def _class_options(names) -> list[tuple[str, int]]:
        return [("predicted", PREDICTED)] + [(name, i) for i, name in enumerate(names)]

    # -- state -------------------------------------------------------------------------------------

    def update_context(self, new: Context, old: Context) -> None:
        super().update_context(new, old)
        if new.class_names != old.class_names:
            options = self._class_options(new.class_names)
            widget = self.query_one("#saliency-class", Select)
            with self.prevent(Select.Changed):
                widget.set_options(options)
                widget.value = PREDICTED
            self.class_choice = PREDICTED
        if new.plain != old.plain:
            for picture in self.query(Picture):
                picture.plain = new.plain
        if self.is_active:
            self.refresh_saliency()

    def shown(self) -> None:
        self.refresh_saliency()

    def _request(self) -> SaliencyRequest | None:
        ctx = self.context
        if ctx.model is None or not ctx.model.ok or ctx.image is None:
            return None
        class_index = None if self.class_choice == PREDICTED else self.class_choice
        return SaliencyRequest(ctx.model.key, ctx.split_name, int(ctx.selected), class_index, self.method)

    def refresh_saliency(self) -> None:
        """Show the map for the current face, class and method: from the cache, or start computing it."""
        ctx = self.context
        request = self._request()
        face = self.query_one("#saliency-face", Picture)
        if request is None:
            face.show(ctx.image, "no face selected" if ctx.split is not None else "loading faces…")
            why = "no model: saliency needs one (m: Models, t: Train)" if ctx.model is None else ""
            for picture_id in ("#saliency-heat", "#saliency-masked"):
                self.query_one(picture_id, Picture).show(None, why)
            self.query_one("#saliency-title", Readout).update("")
            self._update_legend(None)
            return
        face.show(ctx.image)
        if request in self._results:
            self._results.move_to_end(request)
            self._show(request, self._results[request])
            return
        if request != self._pending:
            self._pending = request
            self.query_one("#saliency-status", Readout).update(Text("computing saliency…", style="dim"))
            self.compute(request, ctx.model.classifier, ctx.image)

    @work(thread=True, exclusive=True, group="saliency")
    def compute(self, request: SaliencyRequest, classifier, image: np.ndarray) -> None:
        worker = get_current_worker()
        explainer = self._explainers.get(request.model_key)
        if explainer is None:
            explainer = self._explainers[request.model_key] = Explainer(classifier.path)
        try:
            result = explainer.face_saliency(image, request.class_index, request.method, logits_fn=classifier.predict_logits,
                                             clock=getattr(self.app, "clock", time.perf_counter), faithfulness=False)
            if worker.is_cancelled:
                return
            self.post_message(SaliencyReady(request, result))  # the map first; its scores a moment later
            score = face_faithfulness(classifier.predict_logits, image, result.values, result.class_index)
        except (ExplainError, ValueError, RuntimeError) as exc:  # onnxruntime raises RuntimeError subclasses
            self.post_message(SaliencyReady(request, None, str(exc)))
            return
        if not worker.is_cancelled:
            self.post_message(SaliencyReady(request, replace(result, faithfulness=score)))

    def on_saliency_ready(self, message: SaliencyReady) -> None:
        message.stop()
        final = message.result is None or message.result.faithfulness is not None  # a map comes once more, with its scores
        if final and message.request == self._pending:
            self._pending = None
        if message.result is None:
            self.query_one("#saliency-status", Readout).update(Text(message.error or "saliency failed", style="bold red"))
            if message.request == self._request():
                for picture_id in ("#saliency-heat", "#saliency-masked"):
                    self.query_one(picture_id, Picture).show(None, "no map")
            return
        if final:
            self._results[message.request] = message.result
            while len(self._results) > 64:
                self._results.popitem(last=False)
        if message.request == self._request():
            self._show(message.request, message.result)

    # -- drawing -----------------------------------------------------------------------------------

    def _show(self, request: SaliencyRequest, result: FaceSaliency) -> None:
        ctx = self.context
        image = ctx.image
        names = ctx.class_names
        heat = self.query_one("#saliency-heat", Picture)
        heat.border_title = f"saliency for {names[result.class_index]}"
        heat.show(saliency_picture(image, result.values, ctx.plain))
        masked = self.query_one("#saliency-masked", Picture)
        masked.border_title = f"most salient {self.keep:.0%}"
        masked.show(masked_image(image, result.values, hide=1 - self.keep))
        self._shown = request

        label = ctx.label
        predicted = int(result.probs.argmax())
        title = Text(no_wrap=True, overflow="ellipsis")
        title.append(f"face {ctx.selected:,} of {ctx.split_name}  ", "bold")
        title.append(f"true {names[label] if label is not None and 0 <= label < len(names) else '?'}  ")
        title.append(f"predicted {names[predicted]} {result.probs[predicted]:.1%}",
                     "green" if label == predicted else "red" if label is not None and label >= 0 else "")
        if result.class_index == predicted:
            title.append("  ·  explaining it", "bold")
        else:
            title.append(f"  ·  explaining {names[result.class_index]} ({result.probs[result.class_index]:.1%})", "bold")
        self.query_one("#saliency-title", Readout).update(title)
        self._update_legend(result)
        self.query_one("#saliency-status", Readout).update(self._faithfulness_line(result))

    @staticmethod
    def _faithfulness_line(result: FaceSaliency) -> Text:
        """How faithful the map is on this face: its deletion area (lower is better) and insertion area (higher is
        better), each beside a random order of the pixels', and the score that sums both gains over random."""
        line = Text(no_wrap=True, overflow="ellipsis")
        score = result.faithfulness
        if score is None:
            line.append("faithfulness: measuring…", "dim")
            return line
        style = "bold green" if score.score > 0.1 else "bold yellow" if score.score > 0 else "bold red"
        line.append(f"faithfulness {score.score:+.2f}", style)
        line.append(f": deletion {score.deletion:.2f} vs {score.random_deletion:.2f} random · "
                    f"insertion {score.insertion:.2f} vs {score.random_insertion:.2f}")
        return line

    def _update_legend(self, result: FaceSaliency | None) -> None:
        legend = Text(no_wrap=True, overflow="ellipsis")
        if result is not None:
            legend = legend_text(12, self.context.plain, "weak ", " strong  ")
            legend.append(result.method, "bold")
            legend.append(f"  {result.forward_passes} passes, {result.seconds * 1000:.0f} ms  ·  {result.detail.split(';')[0]}", "dim")
        self.query_one("#saliency-legend", Readout).update(legend)

    # -- controls ----------------------------------------------------------------------------------

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.select.id == "saliency-class":
            self.class_choice = int(event.value)
        elif event.select.id == "saliency-method":
            self.method = str(event.value)
        self.refresh_saliency()

    def action_cycle_class(self, delta: int) -> None:
        choices = [PREDICTED] + list(range(len(self.context.class_names)))
        self.class_choice = choices[(choices.index(self.class_choice) + delta) % len(choices)]
        with self.prevent(Select.Changed):
            self.query_one("#saliency-class", Select).value = self.class_choice
        self.refresh_saliency()

    def action_cycle_method(self) -> None:
        self.method = FACE_METHODS[(FACE_METHODS.index(self.method) + 1) % len(FACE_METHODS)]
        with self.prevent(Select.Changed):
            self.query_one("#saliency-method", Select).value = self.method
        self.refresh_saliency()

    def action_keep(self, direction: int) -> None:
        position = min(range(len(KEEP_STEPS)), key=lambda i: abs(KEEP_STEPS[i] - self.keep))
        self.keep = KEEP_STEPS[min(max(position + direction, 0), len(KEEP_STEPS) - 1)]
        self.refresh_saliency()

    def action_step(self, delta: int) -> None:
        self.post_message(StepFace(delta))

    def focus_main(self) -> None:
        self.focus()
