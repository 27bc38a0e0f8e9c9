"""Arrays to terminal cells: faces and heat maps as half-block characters, with a plain fallback.

A terminal cell is about twice as tall as it is wide, so one cell shows two pixels stacked: the upper
half block ``▀`` in the top pixel's colour on the bottom pixel's colour. A 48×48 face is then 48 columns
by 24 rows. Terminals without colour get one character per cell from a brightness ramp instead.

numpy, pillow and rich only: no textual, no torch.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

from fer_runtime.explain.heatmap import INFERNO_LUT, heat_over_face, legend_colours

UPPER_HALF = "▀"
# Dark to bright: on a dark terminal background a bright pixel is the densest character.
RAMP = " .:-=+*#%@"

HEAT_LUT = INFERNO_LUT


def fit(image: np.ndarray, size: int) -> np.ndarray:
    """A uint8 image (H, W) or (H, W, 3) resized to ``size``×``size``: box filter down, nearest up."""
    image = np.asarray(image, np.uint8)
    if image.shape[0] == size and image.shape[1] == size:
        return image
    from PIL import Image

    method = Image.Resampling.BOX if size < image.shape[0] else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), method))


def fit_within(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """A uint8 image scaled, keeping its aspect ratio, to the largest size within ``width``×``height`` pixels."""
    image = np.asarray(image, np.uint8)
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    if size == (w, h):
        return image
    from PIL import Image

    method = Image.Resampling.BOX if scale < 1 else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, method))


BOX_COLOUR = (255, 230, 0)  # bright in colour and in the plain ramp alike


def draw_box(rgb: np.ndarray, box: tuple[int, int, int, int], colour: tuple[int, int, int] = BOX_COLOUR) -> np.ndarray:
    """A copy of ``rgb`` (H, W, 3) with the outline of ``box`` (x, y, width, height, clipped to the image) one pixel wide."""
    out = np.array(rgb if rgb.ndim == 3 else gray_to_rgb(rgb), np.uint8)
    height, width = out.shape[:2]
    x, y, w, h = box
    x0, y0 = min(max(x, 0), width - 1), min(max(y, 0), height - 1)
    x1, y1 = min(max(x + w - 1, x0), width - 1), min(max(y + h - 1, y0), height - 1)
    out[y0, x0:x1 + 1] = out[y1, x0:x1 + 1] = colour
    out[y0:y1 + 1, x0] = out[y0:y1 + 1, x1] = colour
    return out


def photo_with_box(photo: np.ndarray, box: tuple[int, int, int, int], width: int, height: int) -> np.ndarray:
    """``photo`` (uint8 (H, W, 3); ``box`` in its pixels) scaled to fit ``width``×``height`` pixels, the box drawn
    on the scaled picture so that its outline stays one pixel wide however small the picture."""
    small = fit_within(photo, width, height)
    scale = small.shape[1] / photo.shape[1]
    return draw_box(small, tuple(round(v * scale) for v in box))


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """uint8 (H, W) → uint8 (H, W, 3)."""
    return np.repeat(np.asarray(gray, np.uint8)[..., None], 3, axis=2)


def heat_to_rgb(values: np.ndarray) -> np.ndarray:
    """Values in 0..1 (H, W) → heat-map colours uint8 (H, W, 3)."""
    index = np.clip(np.nan_to_num(values) * 255, 0, 255).astype(np.uint8)
    return HEAT_LUT[index]


def saliency_picture(face: np.ndarray, values: np.ndarray, plain: bool = False) -> np.ndarray:
    """A saliency map (0..1) as the Saliency view draws it: in colour over the dimmed face
    (:func:`fer_runtime.explain.heatmap.heat_over_face`, the explain command's rendering too), or, for terminals
    without colour, the map's strength alone as grey levels for the character ramp."""
    if plain:
        return (np.clip(np.asarray(values, np.float32), 0, 1) * 255).astype(np.uint8)
    return heat_over_face(face, values)


def legend_text(width: int, plain: bool = False, low: str = "weak ", high: str = " strong") -> Text:
    """The colour map's legend in ``width`` cells between ``low`` and ``high``: what a colour (or, plain, a character) means."""
    text = Text(no_wrap=True, overflow="crop")
    text.append(low, "dim")
    if plain:
        text.append("".join(RAMP[min(len(RAMP) - 1, i * len(RAMP) // width)] for i in range(width)).replace(" ", "·"))
    else:
        for r, g, b in legend_colours(width).tolist():
            text.append("█", f"rgb({r},{g},{b})")
    text.append(high, "dim")
    return text


def half_block_cells(rgb: np.ndarray) -> list[list[tuple[tuple[int, int, int], tuple[int, int, int]]]]:
    """Rows of cells ``(top colour, bottom colour)``: (H, W, 3) → ceil(H/2) rows of W cells.

    An odd last row repeats its pixel in the bottom half.
    """
    rgb = np.asarray(rgb, np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) colour image, got {rgb.shape}")
    if rgb.shape[0] % 2:
        rgb = np.concatenate([rgb, rgb[-1:]], axis=0)
    top, bottom = rgb[0::2].tolist(), rgb[1::2].tolist()
    return [[(tuple(t), tuple(b)) for t, b in zip(top_row, bottom_row)] for top_row, bottom_row in zip(top, bottom)]


@lru_cache(maxsize=4096)
def _cell_style(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Style:
    return Style.from_color(Color.from_rgb(*top), Color.from_rgb(*bottom))


def half_block_text(rgb: np.ndarray) -> Text:
    """A colour image as rich Text of ``▀`` cells (24-bit colour; rich lowers it for lesser terminals)."""
    text = Text(no_wrap=True, overflow="crop")
    rows = half_block_cells(rgb)
    for y, row in enumerate(rows):
        for top, bottom in row:
            text.append(UPPER_HALF, _cell_style(top, bottom))
        if y < len(rows) - 1:
            text.append("\n")
    return text


# One shared "▀" segment per (top, bottom) colour pair, packed in 48 bits. Kept small: a face uses about a
# thousand pairs, and a cache of hundreds of thousands of objects makes every full garbage collection slow.
_SEGMENTS: dict[int, Segment] = {}
_SEGMENTS_MAX = 4_096


def _segment(key: int) -> Segment:
    segment = _SEGMENTS.get(key)
    if segment is None:
        if len(_SEGMENTS) >= _SEGMENTS_MAX:
            _SEGMENTS.clear()
        top, bottom = key >> 24, key & 0xFFFFFF
        style = Style.from_color(Color.from_rgb(top >> 16, (top >> 8) & 255, top & 255),
                                 Color.from_rgb(bottom >> 16, (bottom >> 8) & 255, bottom & 255))
        segment = _SEGMENTS[key] = Segment(UPPER_HALF, style)
    return segment


def image_lines(image: np.ndarray, size: int | None = None, plain: bool = False) -> list[list[Segment]]:
    """Like :func:`image_text`, as one list of segments per terminal row (for widgets that draw line by line).
    ``size``: scaled to ``size``×``size`` first; None: as it is (any shape).

    Fast enough to redraw on every cursor move: colours are packed into integers with numpy and each
    colour pair's segment is made once.
    """
    image = np.asarray(image)
    if size is not None:
        image = fit(image, size)
    if plain:
        gray = luminance(image) if image.ndim == 3 else image
        return [[Segment(line, Style())] for line in plain_lines(gray)]
    rgb = (image if image.ndim == 3 else gray_to_rgb(image)).astype(np.uint64)
    if rgb.shape[0] % 2:
        rgb = np.concatenate([rgb, rgb[-1:]], axis=0)
    packed = (rgb[..., 0] << np.uint64(16)) | (rgb[..., 1] << np.uint64(8)) | rgb[..., 2]  # (H, W) 24-bit colours
    keys = (packed[0::2] << np.uint64(24)) | packed[1::2]
    return [[_segment(key) for key in row] for row in keys.tolist()]


def plain_lines(gray: np.ndarray, ramp: str = RAMP) -> list[str]:
    """A grayscale image (H, W) as ceil(H/2) lines of W characters from ``ramp`` (dark → bright).

    Each character stands for the mean of the two pixels it covers, so the aspect ratio matches the
    half-block rendering.
    """
    g = np.asarray(gray, np.float32)
    if g.ndim != 2:
        raise ValueError(f"expected a (H, W) grayscale image, got {g.shape}")
    if g.shape[0] % 2:
        g = np.concatenate([g, g[-1:]], axis=0)
    cells = (g[0::2] + g[1::2]) / 2
    index = np.clip((cells / 256.0 * len(ramp)).astype(int), 0, len(ramp) - 1)
    return ["".join(ramp[i] for i in row) for row in index]


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Perceived brightness of an (H, W, 3) image, 0..255 float (Rec. 601)."""
    rgb = np.asarray(rgb, np.float32)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def image_text(image: np.ndarray, size: int | None = None, plain: bool = False) -> Text:
    """A grayscale (H, W) or colour (H, W, 3) uint8 image as Text, ``size`` pixels wide and tall.

    ``plain``: characters only (no colour), for terminals without colour or ``NO_COLOR``.
    """
    image = np.asarray(image)
    if size is not None:
        image = fit(image, size)
    if plain:
        gray = luminance(image) if image.ndim == 3 else image
        return Text("\n".join(plain_lines(gray)), no_wrap=True, overflow="crop")
    return half_block_text(image if image.ndim == 3 else gray_to_rgb(image))


def bar(fraction: float, width: int, full: str = "█", partials: str = " ▏▎▍▌▋▊▉") -> str:
    """A horizontal bar ``width`` cells long filled to ``fraction`` (eighths of a cell), padded with spaces."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    eighths = int(round(fraction * width * 8))
    whole, rest = divmod(eighths, 8)
    text = full * whole + (partials[rest] if rest and whole < width else "")
    return text.ljust(width)
