"""Pictures of predictions: boxes and labels drawn on a photograph or video frame, with Pillow.

One colour per expression (:data:`CLASS_COLOURS`), shared with the video timelines of :mod:`fer_runtime.timeline`.
Torch-free; no matplotlib.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .faces import Face

# Angry, Disgust, Fear, Happy, Sad, Surprise, Neutral: distinguishable colours (Tableau 10), in class order
CLASS_COLOURS = ((214, 39, 40), (140, 86, 75), (148, 103, 189), (44, 160, 44), (31, 119, 180), (255, 127, 14), (127, 127, 127))


def class_colour(index: int) -> tuple[int, int, int]:
    return CLASS_COLOURS[index % len(CLASS_COLOURS)]


@lru_cache(maxsize=16)
def font(size: int):
    """Pillow's bundled font at ``size`` px (a fixed small bitmap font on Pillow < 10.1)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: no sizes
        return ImageFont.load_default()


def draw_faces(rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
    """A copy of ``rgb`` (uint8 (H, W, 3)) with each face's box and "label 93%" drawn in its expression's colour.
    Unclassified faces are drawn in white, without a label."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(np.asarray(rgb, np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(image)
    side = min(image.size)
    line = max(2, round(side / 250))
    text_font = font(max(12, round(side / 32)))
    for face in faces:
        x, y, w, h = face.box
        if face.probabilities is None:
            draw.rectangle((x, y, x + w - 1, y + h - 1), outline=(255, 255, 255), width=line)
            continue
        colour = class_colour(int(np.argmax(face.probabilities)))
        draw.rectangle((x, y, x + w - 1, y + h - 1), outline=colour, width=line)
        text = f"{face.label} {face.confidence:.0%}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=text_font)
        tw, th = right - left, bottom - top
        pad = max(2, line)
        ty = y - th - 2 * pad if y - th - 2 * pad >= 0 else y + h  # above the box, or below it at the top edge
        draw.rectangle((x, ty, x + tw + 2 * pad, ty + th + 2 * pad), fill=colour)
        draw.text((x + pad - left, ty + pad - top), text, fill=(255, 255, 255), font=text_font)
    return np.asarray(image)
