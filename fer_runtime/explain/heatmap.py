"""Saliency maps as pictures people can read: a colour map over the dimmed face, with its legend.

The face is dimmed to :data:`DIM` of its brightness and kept grey; the map's colour covers it where the map is
strong and fades out where it is weak (opacity rising from :data:`FADE_FROM` to :data:`FADE_TO` of the map's
range), so weak values leave the face readable instead of tinting all of it, and strong ones are drawn in full
colour, not mixed with the face's own greys. The colours are a perceptually ordered map (after matplotlib's
"inferno", without its darkest part, which a dimmed face would swallow): :data:`HEAT_LUT`.

One rendering for every place a map is seen: the TUI (:mod:`fer_tui.render` draws these arrays as cells),
``fer-train explain``'s sheets and this package's users. numpy only.
"""

from __future__ import annotations

import numpy as np

DIM = 0.45  # the face under the map, as a share of its brightness
FADE_FROM, FADE_TO = 0.15, 0.5  # map values below FADE_FROM are transparent, above FADE_TO fully opaque

# Anchors of matplotlib's "inferno": black, purple, red, orange, yellow.
INFERNO = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39],
                    [252, 255, 164]], np.float32)


def colour_lut(anchors: np.ndarray) -> np.ndarray:
    """256 RGB colours (uint8 (256, 3)) interpolated evenly between the anchors."""
    positions = np.linspace(0, 255, len(anchors))
    levels = np.arange(256)
    return np.stack([np.interp(levels, positions, anchors[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


INFERNO_LUT = colour_lut(INFERNO)  # maps shown alone (layer outputs): black is "nothing"
HEAT_LUT = colour_lut(INFERNO[1:])  # maps over a dimmed face: from purple, so the weak end stays visible


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Values in 0..1 (H, W) → their colours, uint8 (H, W, 3)."""
    index = np.clip(np.nan_to_num(np.asarray(values, np.float32)) * 255, 0, 255).astype(np.uint8)
    return HEAT_LUT[index]


def opacity(values: np.ndarray) -> np.ndarray:
    """How much of the colour covers the face at each value (0..1): 0 up to FADE_FROM, 1 from FADE_TO."""
    return np.clip((np.asarray(values, np.float32) - FADE_FROM) / (FADE_TO - FADE_FROM), 0, 1)


def heat_over_face(face: np.ndarray, values: np.ndarray, dim: float = DIM) -> np.ndarray:
    """The map ``values`` (0..1, e.g. :func:`normalise_map`'s) in colour over the dimmed grey ``face``: uint8 (H, W, 3)."""
    grey = np.asarray(face, np.float32)[..., None].repeat(3, axis=2) * dim
    a = opacity(values)[..., None]
    return np.clip((1 - a) * grey + a * heat_colours(values).astype(np.float32), 0, 255).astype(np.uint8)


def legend_colours(count: int) -> np.ndarray:
    """``count`` colours from weak to strong (uint8 (count, 3)), as the legend shows them: the weak end is the
    dimmed grey a transparent value leaves, mid grey standing in for the face."""
    values = np.linspace(0, 1, count, dtype=np.float32)
    return heat_over_face(np.full(count, 128, np.float32)[None], values[None])[0]
