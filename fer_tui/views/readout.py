"""A widget for text that changes often in a space of fixed size (set its height in CSS).

``Static.update`` asks for a new layout of the whole screen every time; a readout only redraws itself,
which keeps cursor moves and progress ticks cheap.
"""

from __future__ import annotations

from rich.console import RenderableType
from textual.widget import Widget


class Readout(Widget):
    DEFAULT_CSS = """
    Readout {
        height: 1;
    }
    """

    def __init__(self, content: RenderableType = "", *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self._content = content

    def update(self, content: RenderableType = "") -> None:
        self._content = content
        self.refresh()

    @property
    def content(self) -> RenderableType:
        return self._content

    def render(self) -> RenderableType:
        return self._content
