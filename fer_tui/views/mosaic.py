"""A grid of small pictures that fills its region, a page at a time, never scrolling."""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from ..render import image_text
from ..tiles import GridLayout, grid_layout, mosaic


class Mosaic(Widget):
    """Tiles (n, h, w, 3) drawn as half blocks in as many columns and rows as the region holds; the rest on
    further pages (:meth:`turn`). The border's subtitle says which tiles are shown and on which page.

    ``tile`` None picks the tile size that shows every tile on one page when one exists
    (:func:`fer_tui.tiles.grid_layout`); ``crop`` shows each tile's centre instead of the whole, resized.
    """

    plain: reactive[bool] = reactive(False)

    def __init__(self, caption: str = "", tile: int | None = None, *, id: str | None = None):
        super().__init__(id=id)
        self.border_title = caption
        self.tiles: np.ndarray | None = None
        self.tile = tile
        self.crop = False
        self.page = 0
        self.message = ""
        self.arrangement: GridLayout | None = None
        self._cache: tuple | None = None

    def show(self, tiles: np.ndarray | None, message: str = "", caption: str | None = None, crop: bool = False) -> None:
        """Draw ``tiles`` (None: ``message`` instead); a new number of tiles starts again at the first page."""
        if tiles is None or self.tiles is None or len(tiles) != len(self.tiles):
            self.page = 0
        self.tiles, self.message, self.crop, self._cache = tiles, message, crop, None
        if caption is not None:
            self.border_title = caption
        self._relayout()
        self.refresh()

    def set_tile(self, tile: int | None) -> None:
        self.tile, self._cache = tile, None
        self._relayout()
        self.refresh()

    def turn(self, delta: int) -> None:
        """Show the next (+1) or previous (-1) page, wrapping around."""
        if self.arrangement is not None and self.arrangement.pages > 1:
            self.page = (self.page + delta) % self.arrangement.pages
            self._cache = None
            self._relayout()
            self.refresh()

    @property
    def shown(self) -> range:
        """The indices of the tiles on screen now."""
        return self.arrangement.page_range(self.page) if self.arrangement is not None else range(0)

    def on_resize(self) -> None:
        self._relayout()

    def _relayout(self) -> None:
        width, height = self.content_size.width, self.content_size.height * 2  # pixels: a cell is one wide, two tall
        if self.tiles is None or len(self.tiles) == 0 or width <= 0 or height <= 0:
            self.arrangement = None
            subtitle = ""
        else:
            self.arrangement = grid_layout(len(self.tiles), width, height, self.tile)
            self.page = min(self.page, self.arrangement.pages - 1)
            shown = self.shown
            side = self.arrangement.tile
            size = f"centres {side}×{side} px" if self.crop else f"{side} px"
            if self.arrangement.pages == 1:
                subtitle = f"all {self.arrangement.count} · {size}"
            else:
                subtitle = (f"#{shown.start}–{shown.stop - 1} of {self.arrangement.count} · {size} · "
                            f"page {self.page + 1}/{self.arrangement.pages} (← →)")
        if subtitle != (self.border_subtitle or ""):
            self.border_subtitle = subtitle

    def render(self) -> Text:
        if self.arrangement is None or self.tiles is None:
            return Text(self.message, style="dim")
        key = (id(self.tiles), self.arrangement, self.page, self.crop, self.plain)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, image_text(mosaic(self.tiles, self.arrangement, self.page, self.crop), plain=self.plain))
        return self._cache[1]

    def watch_plain(self) -> None:
        self._cache = None
        self.refresh()
