"""Many small pictures in a grid, a page at a time: the geometry and the pixels of the Filters view's grid.

Sizes are in pixels of the half-block rendering (:mod:`fer_tui.render`): a terminal cell is one pixel wide
and two tall, so a region of W columns and H rows holds W × 2H pixels.

A tile shows a picture in one of two ways. Feature maps are pictures of the face: they are resized to the
tile. A filter's pattern from gradient ascent is not: the ascent maximises the filter's *mean* activation
over all positions, so the pattern repeats across the image, and shrinking 48 px to 8 would average it to
gray. Its tile is the centre of the pattern at full resolution instead (``crop``). numpy only: no textual,
no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fer_runtime.explain import AscentResult, deprocess_filter

from .render import fit, gray_to_rgb, heat_to_rgb

# Tile sides that + and - step through, in pixels. The smallest is also the least the grid shrinks tiles to
# (below 8 px a tile shows too little of anything): a layer that does not fit then is shown in pages.
TILE_SIZES = (8, 12, 16, 24, 32, 48)
MIN_TILE, MAX_TILE = TILE_SIZES[0], TILE_SIZES[-1]
GAP = 1  # pixels between tiles
BACKGROUND = np.array([24, 24, 24], np.uint8)


@dataclass(frozen=True)
class GridLayout:
    """``count`` tiles of ``tile`` px in pages of ``columns`` × ``rows``."""

    count: int
    tile: int
    columns: int
    rows: int

    @property
    def per_page(self) -> int:
        return self.columns * self.rows

    @property
    def pages(self) -> int:
        return max(1, -(-self.count // self.per_page))

    def page_range(self, page: int) -> range:
        """The tiles on ``page`` (0-based, clamped to the pages there are)."""
        page = min(max(page, 0), self.pages - 1)
        return range(page * self.per_page, min((page + 1) * self.per_page, self.count))


def _fits(count: int, tile: int, width: int, height: int, gap: int) -> tuple[int, int]:
    columns = max(1, (width + gap) // (tile + gap))
    rows = max(1, (height + gap) // (tile + gap))
    return columns, rows


def grid_layout(count: int, width: int, height: int, tile: int | None = None, gap: int = GAP) -> GridLayout:
    """How ``count`` tiles fill ``width`` × ``height`` pixels: at least one column and one row per page.

    ``tile`` None: the largest side from :data:`MAX_TILE` down to :data:`MIN_TILE` that puts every tile on one
    page, else :data:`MIN_TILE` (and several pages). Rows never exceed what the tiles need.
    """
    if tile is None:
        tile = next((t for t in range(MAX_TILE, MIN_TILE - 1, -1) if np.prod(_fits(count, t, width, height, gap)) >= count), MIN_TILE)
    columns, rows = _fits(count, tile, width, height, gap)
    columns = min(columns, max(count, 1))
    rows = min(rows, max(1, -(-count // columns)))
    return GridLayout(count, tile, columns, rows)


def centre(image: np.ndarray, side: int) -> np.ndarray:
    """The central ``side``×``side`` pixels of an image (H, W[, 3]); a smaller image is resized up to ``side``."""
    h, w = image.shape[:2]
    if h < side or w < side:
        return fit(image, side)
    y, x = (h - side) // 2, (w - side) // 2
    return image[y:y + side, x:x + side]


def mosaic(tiles: np.ndarray, layout: GridLayout, page: int = 0, crop: bool = False, gap: int = GAP) -> np.ndarray:
    """The tiles of ``page`` (RGB (n, h, w, 3)) on one canvas, row by row: each resized to ``layout.tile``, or
    with ``crop`` its centre at full resolution (see the module's docstring)."""
    chosen = layout.page_range(page)
    side = layout.tile
    rows = max(1, -(-len(chosen) // layout.columns))
    canvas = np.empty((rows * (side + gap) - gap, layout.columns * (side + gap) - gap, 3), np.uint8)
    canvas[:] = BACKGROUND
    for k, index in enumerate(chosen):
        y, x = divmod(k, layout.columns)
        canvas[y * (side + gap):y * (side + gap) + side, x * (side + gap):x * (side + gap) + side] = centre(tiles[index], side) if crop else fit(tiles[index], side)
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
