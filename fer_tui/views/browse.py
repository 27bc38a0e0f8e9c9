"""Browse: the faces of the split with true label, prediction and confidence; filters; the selected face."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Select, Static

from fer_runtime.contract import CLASS_NAMES

from ..messages import FaceSelected
from ..predictions import OUTCOMES, SORTS, select
from ..state import Context
from .base import View
from .face import PhotoPicture, Picture, ProbabilityBars
from .facelist import FaceList
from .readout import Readout

ANY = -1
SORT_LABELS = {"file": "file order", "confidence-down": "confidence ↓", "confidence-up": "confidence ↑"}


@dataclass
class Filters:
    true: int | None = None
    predicted: int | None = None
    outcome: str = "all"
    sort: str = "file"

    def describe(self, names: list[str]) -> str:
        parts = []
        if self.true is not None:
            parts.append(f"true {names[self.true]}")
        if self.predicted is not None:
            parts.append(f"predicted {names[self.predicted]}")
        if self.outcome != "all":
            parts.append(f"{self.outcome} only")
        if self.sort != "file":
            parts.append(f"by {SORT_LABELS[self.sort]}")
        return ", ".join(parts)


class BrowseView(View):
    view_id = "browse"
    title = "Browse"
    key = "b"
    summary = "the faces of the split with true label, prediction and confidence; filter, sort, look closer"
    keys_help = (("↑ ↓ PgUp PgDn Home End", "move through the list (or click a row)"),
                 ("enter", "open the face in Saliency"),
                 ("r", "cycle right / wrong / all"),
                 ("o", "cycle the order: file, confidence ↓, confidence ↑"),
                 ("x", "clear the filters"))

    BINDINGS = [
        Binding("r", "cycle_outcome", "Right/wrong"),
        Binding("o", "cycle_sort", "Sort"),
        Binding("x", "clear_filters", "Clear filters"),
        Binding("n", "toggle_skipped", "No-face photos"),  # shown only for photos (check_action)
    ]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.filters = Filters()

    def compose(self) -> ComposeResult:
        with Horizontal(id="browse-filters"):
            yield Label("true")
            yield Select(self._class_options(CLASS_NAMES), value=ANY, allow_blank=False, id="filter-true")
            yield Label("predicted")
            yield Select(self._class_options(CLASS_NAMES), value=ANY, allow_blank=False, id="filter-predicted")
            yield Label("show")
            yield Select([(o, o) for o in OUTCOMES], value="all", allow_blank=False, id="filter-outcome")
            yield Label("order")
            yield Select([(SORT_LABELS[s], s) for s in SORTS], value="file", allow_blank=False, id="filter-sort")
        yield Readout(id="browse-count")
        with Horizontal(id="browse-body"):
            with Vertical(id="browse-list-pane"):
                yield Static(Text("     #  true     predicted conf", style="bold"), id="browse-header")
                yield FaceList(id="browse-list")
            yield Picture("face", id="browse-face")
            with Vertical(id="browse-side"):
                yield ProbabilityBars(id="browse-bars")
                yield Readout(id="browse-info")
                yield PhotoPicture("photo", id="browse-photo")  # only for faces found in photos (class -photos)
                yield Static(id="browse-skipped")  # photos without faces and unreadable files, toggled with n

    # -- state from the app ------------------------------------------------------------------------

    def update_context(self, new: Context, old: Context) -> None:
        super().update_context(new, old)
        if new.class_names != old.class_names:
            self._set_class_options(new.class_names)
        if new.dataset is not old.dataset:
            self._show_photo_problems(new)
        if new.dataset is not old.dataset or new.split_name != old.split_name or new.predictions is not old.predictions:
            self.refilter(keep=new.selected if new.dataset is old.dataset and new.split_name == old.split_name else None)
        if new.selected != old.selected or new.predictions is not old.predictions or new.plain != old.plain or new.model is not old.model:
            self._show_selected()

    @staticmethod
    def _class_options(names) -> list[tuple[str, int]]:
        return [("any", ANY)] + [(name, i) for i, name in enumerate(names)]

    def _set_class_options(self, names: list[str]) -> None:
        options = self._class_options(names)
        for select_id in ("#filter-true", "#filter-predicted"):
            widget = self.query_one(select_id, Select)
            with self.prevent(Select.Changed):
                widget.set_options(options)
                widget.value = ANY
        self.filters.true = self.filters.predicted = None

    # -- the list ----------------------------------------------------------------------------------

    @property
    def facelist(self) -> FaceList:
        return self.query_one(FaceList)

    def refilter(self, keep: int | None = None) -> None:
        ctx = self.context
        split, predictions = ctx.split, ctx.predictions
        count = self.query_one("#browse-count", Readout)
        if split is None:
            self.facelist.set_rows(np.zeros(0, np.int64))
            count.update(Text("loading faces…", style="dim"))
            return
        f = self.filters
        rows = select(split.labels, predictions, true=f.true, predicted=f.predicted, outcome=f.outcome, sort=f.sort)
        self.facelist.set_rows(rows, self._format_row, keep=keep if keep is not None else self.facelist.selected)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{len(rows):,}", "bold")
        text.append(f" of {len(split):,} faces")
        described = f.describe(ctx.class_names)
        if described:
            text.append(f" ({described})", "italic")
        if predictions is not None and predictions.labelled and len(rows):
            right = int((predictions.predicted[rows] == split.labels[rows]).sum())
            text.append(f" · {right:,} right, {len(rows) - right:,} wrong")
        elif predictions is None and ctx.model is not None:
            text.append(" · predicting…", "dim")
        count.update(text)

    def _format_row(self, index: int) -> Text:
        ctx = self.context
        names = ctx.class_names
        split, predictions = ctx.split, ctx.predictions
        true = int(split.labels[index])
        text = Text(no_wrap=True, overflow="crop")
        text.append(f"{index:>6} ", "dim")
        text.append(f"{names[true] if 0 <= true < len(names) else '?':<9.9}")
        if predictions is None:
            text.append(f"{'…' if ctx.model is not None else '–':<9}", "dim")
            return text
        predicted = int(predictions.predicted[index])
        right = predicted == true
        mark_style = "green" if right else "red" if true >= 0 else ""
        text.append(f"{names[predicted]:<9.9}", mark_style)
        text.append(f"{predictions.confidence[index]:>4.0%} ")
        text.append("✓" if right else "✗" if true >= 0 else " ", mark_style)
        return text

    def on_face_list_highlighted(self, message: FaceList.Highlighted) -> None:
        message.stop()
        if message.index != self.context.selected:
            self.post_message(FaceSelected(message.index))

    def on_face_list_chosen(self, message: FaceList.Chosen) -> None:
        message.stop()
        self.app.action_show_view("saliency")

    def step(self, delta: int) -> None:
        """Move the cursor (used by other views to walk the same list)."""
        self.facelist.action_move(delta)

    # -- faces found in photos ----------------------------------------------------------------------

    def _show_photo_problems(self, ctx: Context) -> None:
        photos = ctx.dataset.photos if ctx.dataset is not None else None
        self.set_class(photos is not None, "-photos")
        self.remove_class("-skipped")
        self.refresh_bindings()
        if photos is None:
            return
        problems = photos.problems()
        text = Text()
        text.append("\n".join(problems) if problems else "every photo has a face", "" if problems else "dim")
        skipped = self.query_one("#browse-skipped", Static)
        skipped.border_title = f"{len(photos.without_faces)} no face · {len(photos.unreadable)} unreadable"
        skipped.border_subtitle = "n: the photo"
        skipped.update(text)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "toggle_skipped":
            dataset = self.context.dataset
            return dataset is not None and dataset.photos is not None
        return True

    def action_toggle_skipped(self) -> None:
        self.toggle_class("-skipped")

    def _show_photo(self, ctx: Context) -> None:
        photos = ctx.dataset.photos if ctx.dataset is not None else None
        if photos is None:
            return
        picture = self.query_one("#browse-photo", PhotoPicture)
        picture.plain = ctx.plain
        if ctx.image is None:
            picture.border_title = "photo"
            picture.show(None, message="no face selected")
            return
        photo, box = photos.source(ctx.selected)
        picture.border_title = photo.name
        picture.show(photo.thumbnail, photo.thumbnail_box(box))

    # -- the selected face -------------------------------------------------------------------------

    def _show_selected(self) -> None:
        ctx = self.context
        self._show_photo(ctx)
        face = self.query_one(Picture)
        face.plain = ctx.plain
        bars = self.query_one(ProbabilityBars)
        info = self.query_one("#browse-info", Readout)
        image, label = ctx.image, ctx.label
        if image is None:
            face.show(None, "no face selected" if ctx.split is not None else "loading faces…")
            bars.show(None, ctx.class_names)
            info.update("")
            return
        face.show(image)
        names = ctx.class_names
        probs = ctx.predictions.probs[ctx.selected] if ctx.predictions is not None else None
        hint = "" if ctx.model is not None else "no model yet: m Models, t Train"
        bars.show(probs, names, true=label if label is not None and label >= 0 else None, message=hint)
        info.update(self._describe_face(ctx))

    @staticmethod
    def _describe_face(ctx: Context) -> Text:
        names = ctx.class_names
        split = ctx.split
        index, label = ctx.selected, ctx.label
        origin = np.asarray(split.origin)[index] if len(split.origin) else None
        text = Text()
        text.append(f"face {index:,} of {ctx.split_name} ({len(split):,})\n", "bold")
        photos = ctx.dataset.photos
        if photos is not None:
            photo, (x, y, w, h) = photos.source(index)
            text.append(f"{photo.name}", "bold")
            text.append(f" #{str(origin).rsplit('#', 1)[-1]} of {photo.faces}\n", "dim")
            text.append(f"box x {x} y {y} {w}×{h} of {photo.size[0]}×{photo.size[1]}\n", "dim")
        elif origin is not None:
            where = f"line {int(origin):,}" if np.issubdtype(np.asarray(origin).dtype, np.integer) else str(origin)
            text.append(f"{where} of {ctx.dataset.name}\n", "dim")
        text.append("true       ")
        text.append(f"{names[label] if label is not None and 0 <= label < len(names) else 'unlabelled'}\n", "bold")
        if ctx.predictions is not None:
            predicted = int(ctx.predictions.predicted[index])
            right = label is not None and predicted == label
            text.append("predicted  ")
            text.append(f"{names[predicted]} {ctx.predictions.confidence[index]:.1%}",
                        "bold green" if right else "bold red" if label is not None and label >= 0 else "bold")
            if ctx.model is not None:
                text.append(f"\nby {ctx.model.name}", "dim")
        return text

    # -- filters -----------------------------------------------------------------------------------

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        value = event.value
        if event.select.id == "filter-true":
            self.filters.true = None if value == ANY else int(value)
        elif event.select.id == "filter-predicted":
            self.filters.predicted = None if value == ANY else int(value)
        elif event.select.id == "filter-outcome":
            self.filters.outcome = str(value)
        elif event.select.id == "filter-sort":
            self.filters.sort = str(value)
        self.refilter()

    def set_filters(self, filters: Filters) -> None:
        """Show exactly the faces that pass ``filters`` (used by Confusion's cells)."""
        self.filters = filters
        values = {"#filter-true": ANY if filters.true is None else filters.true,
                  "#filter-predicted": ANY if filters.predicted is None else filters.predicted,
                  "#filter-outcome": filters.outcome, "#filter-sort": filters.sort}
        with self.prevent(Select.Changed):
            for select_id, value in values.items():
                self.query_one(select_id, Select).value = value
        self.refilter()

    def action_cycle_outcome(self) -> None:
        self.filters.outcome = OUTCOMES[(OUTCOMES.index(self.filters.outcome) + 1) % len(OUTCOMES)]
        self.set_filters(self.filters)

    def action_cycle_sort(self) -> None:
        self.filters.sort = SORTS[(SORTS.index(self.filters.sort) + 1) % len(SORTS)]
        self.set_filters(self.filters)

    def action_clear_filters(self) -> None:
        self.set_filters(Filters())

    def focus_main(self) -> None:
        self.facelist.focus()
