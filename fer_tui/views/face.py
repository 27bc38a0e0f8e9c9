"""Pictures in the terminal: a face (or any image) as half blocks, and bars of class probabilities."""

from __future__ import annotations

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from ..render import bar, fit_within, image_lines, photo_with_box


class Picture(Widget):
    """A 48×48 image (grayscale or RGB uint8) drawn as 48 columns × 24 rows, smaller when space is short.

    ``plain`` draws characters from a brightness ramp instead of coloured half blocks.
    """

    plain: reactive[bool] = reactive(False)

    def __init__(self, caption: str = "", *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.image: np.ndarray | None = None
        self.message = ""
        self.border_title = caption
        self._cache: tuple | None = None

    def show(self, image: np.ndarray | None, message: str = "") -> None:
        """Draw ``image``; with None, show ``message`` instead."""
        self.image = None if image is None else np.asarray(image)
        self.message = message
        self._cache = None
        self.refresh()

    def get_content_width(self, container, viewport) -> int:
        return self.image.shape[1] if self.image is not None else 48

    def get_content_height(self, container, viewport, width: int) -> int:
        side = min(self.image.shape[0] if self.image is not None else 48, width)
        return (side + 1) // 2

    @property
    def pixels(self) -> int:
        """The side, in pixels, that fits: one column and half a row per pixel, at most the image's own."""
        if self.image is None:
            return 0
        width, height = self.content_size.width, self.content_size.height
        return max(1, min(self.image.shape[1], width, height * 2))

    def render_line(self, y: int) -> Strip:
        width = self.content_size.width
        base = self.rich_style
        if self.image is None:
            if y == 0 and self.message:
                return Strip([Segment(self.message[:width], base + Style(dim=True))]).adjust_cell_length(width, base)
            return Strip.blank(width, base)
        key = (id(self.image), self.pixels, self.plain)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, [Strip(row).apply_style(base) for row in image_lines(self.image, self.pixels, self.plain)])
        rows = self._cache[1]
        return rows[y].adjust_cell_length(width, base) if y < len(rows) else Strip.blank(width, base)

    def watch_plain(self) -> None:
        self._cache = None
        self.refresh()


class PhotoPicture(Widget):
    """A photograph (RGB uint8, any shape) scaled to fit the widget, keeping its shape, with one box drawn on it."""

    plain: reactive[bool] = reactive(False)

    def __init__(self, caption: str = "", *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.photo: np.ndarray | None = None
        self.box: tuple[int, int, int, int] | None = None
        self.message = ""
        self.border_title = caption
        self._cache: tuple | None = None

    def show(self, photo: np.ndarray | None, box: tuple[int, int, int, int] | None = None, message: str = "") -> None:
        """Draw ``photo`` with ``box`` (in its pixels); with None, show ``message`` instead."""
        self.photo, self.box, self.message = photo, box, message
        self._cache = None
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width, height = self.content_size.width, self.content_size.height
        base = self.rich_style
        if self.photo is None or width < 1 or height < 1:
            if y == 0 and self.message:
                return Strip([Segment(self.message[:width], base + Style(dim=True))]).adjust_cell_length(width, base)
            return Strip.blank(width, base)
        key = (id(self.photo), self.box, width, height, self.plain)
        if self._cache is None or self._cache[0] != key:
            picture = photo_with_box(self.photo, self.box, width, height * 2) if self.box else fit_within(self.photo, width, height * 2)
            self._cache = (key, [Strip(row).apply_style(base) for row in image_lines(picture, None, self.plain)])
        rows = self._cache[1]
        return rows[y].adjust_cell_length(width, base) if y < len(rows) else Strip.blank(width, base)

    def watch_plain(self) -> None:
        self._cache = None
        self.refresh()


class ProbabilityBars(Widget):
    """One line per class: name, a bar of its probability and the percentage; marks the true and chosen class."""

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.probs: np.ndarray | None = None
        self.class_names: list[str] = []
        self.true: int | None = None
        self.message = ""

    def show(self, probs: np.ndarray | None, class_names: list[str], true: int | None = None, message: str = "") -> None:
        self.probs = None if probs is None else np.asarray(probs, np.float64)
        self.class_names, self.true, self.message = list(class_names), true, message
        self.refresh()

    def render(self) -> Text:
        text = Text(no_wrap=True, overflow="crop")
        names = self.class_names
        name_w = max((len(n) for n in names), default=8)
        bar_w = max(4, self.content_size.width - name_w - 9)
        if self.probs is None:
            for i, name in enumerate(names):
                marker = "●" if i == self.true else " "
                text.append(f"{marker}{name:<{name_w}} ", "bold" if i == self.true else "")
                text.append("·" * bar_w + "\n", "dim")
            text.append(self.message, "dim")
            return text
        top = int(self.probs.argmax())
        for i, (name, p) in enumerate(zip(names, self.probs)):
            marker = "●" if i == self.true else " "
            style = "bold green" if i == top and (self.true is None or i == self.true) else "bold red" if i == top else ""
            text.append(f"{marker}{name:<{name_w}} ", style or ("bold" if i == self.true else ""))
            text.append(bar(p, bar_w), style or "blue")
            text.append(f" {p:6.1%}\n", style)
        text.append("● true class", "dim")
        return text
