"""A list of faces that draws only the rows on screen, so 28,709 faces cost no more than 20.

Each row is an index into the split; a formatter turns it into text. Cursor keys, page keys and the
mouse move the cursor; moving it posts :class:`FaceList.Highlighted`, Enter posts :class:`FaceList.Chosen`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

RowFormatter = Callable[[int], Text]


class FaceList(ScrollView, can_focus=True):
    COMPONENT_CLASSES = {"facelist--cursor"}
    BINDINGS = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
        Binding("enter", "choose", "Saliency", show=True),
    ]

    cursor: reactive[int] = reactive(0, always_update=True)

    @dataclass
    class Highlighted(Message):
        """The cursor is on this face (an index into the split), or on none (an empty list)."""

        index: int | None

    @dataclass
    class Chosen(Message):
        index: int

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.rows = np.zeros(0, np.int64)
        self.formatter: RowFormatter = lambda index: Text(str(index))
        self.row_width = 32

    # -- content -----------------------------------------------------------------------------------

    def set_rows(self, rows: np.ndarray, formatter: RowFormatter | None = None, keep: int | None = None) -> None:
        """Show ``rows`` (indices into the split); the cursor stays on face ``keep`` if it is still listed."""
        self.rows = np.asarray(rows, np.int64)
        if formatter is not None:
            self.formatter = formatter
        self.virtual_size = Size(self.row_width, len(self.rows))
        self.refresh()
        position = 0
        if keep is not None and len(self.rows):
            hits = np.flatnonzero(self.rows == keep)
            position = int(hits[0]) if len(hits) else 0
        self.cursor = position
        self.refresh()

    def refresh_rows(self) -> None:
        """Redraw (the formatter's output changed, e.g. predictions arrived)."""
        self.refresh()

    @property
    def selected(self) -> int | None:
        return int(self.rows[self.cursor]) if len(self.rows) and 0 <= self.cursor < len(self.rows) else None

    # -- drawing -----------------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        position = scroll_y + y
        width = self.size.width
        base = self.rich_style
        if position >= len(self.rows):
            return Strip.blank(width, base)
        text = self.formatter(int(self.rows[position]))
        if position == self.cursor:
            text.stylize(self.get_component_rich_style("facelist--cursor"))
        strip = Strip(list(text.render(self.app.console)), text.cell_len)
        return strip.crop_extend(scroll_x, scroll_x + width, base).apply_style(base)

    def validate_cursor(self, value: int) -> int:
        return min(max(value, 0), max(len(self.rows) - 1, 0))

    def watch_cursor(self, old: int, new: int) -> None:
        scrolled_from = self.scroll_offset.y
        if len(self.rows):
            self.scroll_to_region(Region(0, new, 1, 1), animate=False, force=True)
        if self.scroll_offset.y == scrolled_from:  # only two rows change: redraw just them
            width = self.size.width
            self.refresh(Region(0, old - scrolled_from, width, 1), Region(0, new - scrolled_from, width, 1))
        else:
            self.refresh()
        self.post_message(self.Highlighted(self.selected))

    # -- moving ------------------------------------------------------------------------------------

    def action_move(self, delta: int) -> None:
        if len(self.rows):
            self.cursor = self.cursor + delta

    def action_page(self, direction: int) -> None:
        self.action_move(direction * max(1, self.size.height - 1))

    def action_jump(self, position: int) -> None:
        if len(self.rows):
            self.cursor = position % len(self.rows)

    def action_choose(self) -> None:
        if self.selected is not None:
            self.post_message(self.Chosen(self.selected))

    def on_click(self, event: events.Click) -> None:
        position = self.scroll_offset.y + event.y
        if 0 <= position < len(self.rows):
            if position == self.cursor and event.chain >= 2:
                self.action_choose()
            self.cursor = position
        self.focus()
