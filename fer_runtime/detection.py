"""What a face detector gives and how a face is cut: :class:`Face`, pictures as arrays, turned squares, 48×48 crops.

The ground that :mod:`fer_runtime.centerface`, :mod:`fer_runtime.haar` and :mod:`fer_runtime.faces` (the API that
people call) stand on. Torch-free: numpy and OpenCV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .contract import CLASS_NAMES, IMAGE_SIZE
from .media import read_image

DEFAULT_MIN_SIZE = 20  # source pixels; smaller faces are rarely found and poorly classified (docs/photos.md#what-fails)
CHANNEL_ORDERS = ("rgb", "bgr")
LANDMARK_NAMES = ("eye (image left)", "eye (image right)", "nose", "mouth corner (image left)", "mouth corner (image right)")

Box = tuple[int, int, int, int]  # x, y, width, height in the source image's pixels


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays inside; two faces are the same face only if they are one object
class Face:
    """One face: where it is, its 48×48 crop and, once classified, the model's probabilities."""

    box: Box
    crop: np.ndarray = field(repr=False)  # uint8 (48, 48), as the models expect
    probabilities: np.ndarray | None = None  # float (K,), in class_names order
    class_names: tuple[str, ...] = CLASS_NAMES
    landmarks: np.ndarray | None = field(default=None, repr=False)  # float (5, 2) x, y in LANDMARK_NAMES order; None: Haar
    score: float | None = None  # the detector's confidence that this is a face (None: Haar gives none)
    detector: str = ""  # the detector's name, for the records

    @property
    def label(self) -> str | None:
        return None if self.probabilities is None else self.class_names[int(np.argmax(self.probabilities))]

    @property
    def confidence(self) -> float | None:
        return None if self.probabilities is None else float(np.max(self.probabilities))

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]

    def record(self, digits: int = 6) -> dict:
        """``box``, ``landmarks`` (when the detector gives them), ``detector``, ``label``, ``confidence`` and
        ``probabilities`` (class name → probability), JSON-ready."""
        out: dict = {"box": [int(v) for v in self.box]}
        if self.landmarks is not None:
            out["landmarks"] = [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks]
        if self.detector:
            out["detector"] = self.detector
        if self.probabilities is not None:
            out["label"] = self.label
            out["confidence"] = round(float(self.confidence), digits)
            out["probabilities"] = {n: round(float(p), digits) for n, p in zip(self.class_names, self.probabilities)}
        return out


class Detector(Protocol):
    """What the pipeline needs of a face detector: its ``name`` (for the records) and ``detect``."""

    name: str

    def detect(self, image, channels: str = "rgb") -> list[Face]: ...



# -- pixels -----------------------------------------------------------------------------------------

def _pixels(image, channels: str) -> tuple[np.ndarray, str]:
    """``image`` as a uint8 array (H, W), (H, W, 3) or (H, W, 4), and the order of its colour channels."""
    if isinstance(image, (str, Path)):
        image, channels = read_image(image), "rgb"
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"), np.uint8), "rgb"
    if channels not in CHANNEL_ORDERS:
        raise ValueError(f"channels must be one of {', '.join(CHANNEL_ORDERS)}, got {channels!r}")
    x = np.asarray(image)
    if x.dtype == np.uint16:
        x = (x >> 8).astype(np.uint8)
    elif x.dtype.kind == "f":
        x = np.clip(np.nan_to_num(x) * (255.0 if x.size and float(np.nanmax(x)) <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    elif x.dtype == bool:
        x = x.astype(np.uint8) * 255
    elif x.dtype != np.uint8:
        raise ValueError(f"expected uint8, uint16, float or bool pixels, got {x.dtype}")
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[:, :, 0]
    if not (x.ndim == 2 or (x.ndim == 3 and x.shape[2] in (3, 4))):
        raise ValueError(f"expected an image (H, W), (H, W, 3) or (H, W, 4), got an array of shape {x.shape}")
    return np.ascontiguousarray(x), channels


def to_gray(image, channels: str = "rgb") -> np.ndarray:
    """Any picture as uint8 (H, W) gray, weighted as OpenCV and Pillow do (ITU-R 601: 0.299 R + 0.587 G + 0.114 B).

    ``image``: a path, a PIL image, or an array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), uint8 / uint16 /
    float in 0..1; ``channels`` says whether colour arrays are ``"rgb"`` (the default) or ``"bgr"`` (OpenCV).
    """
    import cv2

    x, channels = _pixels(image, channels)
    if x.ndim == 2:
        return x
    codes = {(3, "rgb"): cv2.COLOR_RGB2GRAY, (3, "bgr"): cv2.COLOR_BGR2GRAY, (4, "rgb"): cv2.COLOR_RGBA2GRAY, (4, "bgr"): cv2.COLOR_BGRA2GRAY}
    return cv2.cvtColor(x, codes[(x.shape[2], channels)])


def to_rgb(image, channels: str = "rgb") -> np.ndarray:
    """Any picture (as for :func:`to_gray`) as uint8 (H, W, 3) RGB; gray pictures have three equal channels."""
    import cv2

    x, channels = _pixels(image, channels)
    if x.ndim == 3 and x.shape[2] == 3 and channels == "rgb":
        return x
    codes = {(2, 1): cv2.COLOR_GRAY2RGB, (3, "bgr"): cv2.COLOR_BGR2RGB, (4, "rgb"): cv2.COLOR_RGBA2RGB, (4, "bgr"): cv2.COLOR_BGRA2RGB}
    return cv2.cvtColor(x, codes[(2, 1)] if x.ndim == 2 else codes[(x.shape[2], channels)])


@dataclass(frozen=True)
class Square:
    """Where a face's crop is cut: a square of ``side`` pixels centred on (``x``, ``y``) whose top edge runs at
    ``angle`` degrees in the picture (clockwise as seen, y pointing down): the angle of the line from the
    image-left eye to the other, so that the crop comes out with the eyes level."""

    x: float
    y: float
    side: float
    angle: float = 0.0

    @classmethod
    def around(cls, box: Box, margin: float) -> "Square":
        """The square of side ``max(w, h) · (1 + 2·margin)`` centred on ``box``."""
        if margin <= -0.5:
            raise ValueError(f"margin must be more than -0.5 (half the box on each side), got {margin}")
        x, y, w, h = box
        return cls(x + w / 2, y + h / 2, max(1, int(round(max(w, h) * (1 + 2 * margin)))))


def cut_square(gray: np.ndarray, square: Square, size: int = IMAGE_SIZE) -> np.ndarray:
    """``square`` of ``gray`` scaled to ``size``×``size``. Parts outside the image repeat its edge pixels, as a
    face at the border would otherwise be cut. Upright squares are cut on whole pixels and scaled by area; turned
    ones are first scaled down by area to twice ``size`` where larger, then sampled bilinearly."""
    import cv2

    height, width = gray.shape
    side = max(1, int(round(square.side)))
    if square.angle == 0.0:
        left, top = int(round(square.x - side / 2)), int(round(square.y - side / 2))
        x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, width), min(top + side, height)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"the square {square} lies outside the {width}×{height} image")
        region = gray[y0:y1, x0:x1]
        if (x0, y0, x1, y1) != (left, top, left + side, top + side):
            region = cv2.copyMakeBorder(region, y0 - top, top + side - y1, x0 - left, left + side - x1, cv2.BORDER_REPLICATE)
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        return cv2.resize(region, (size, size), interpolation=interpolation)
    # the turned square's axis-aligned surroundings (1.42 × its side), shrunk by area first when much larger than size
    reach = int(math.ceil(side * 0.71)) + 2
    left, top = int(math.floor(square.x)) - reach, int(math.floor(square.y)) - reach
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + 2 * reach, width), min(top + 2 * reach, height)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"the square {square} lies outside the {width}×{height} image")
    region = cv2.copyMakeBorder(gray[y0:y1, x0:x1], y0 - top, top + 2 * reach - y1, x0 - left, left + 2 * reach - x1,
                                cv2.BORDER_REPLICATE)
    shrink = min(1.0, 2 * size / side)
    if shrink < 1.0:
        region = cv2.resize(region, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    scale = side * shrink / size  # region pixels per output pixel
    theta = math.radians(square.angle)
    cos, sin = math.cos(theta) * scale, math.sin(theta) * scale
    c = size / 2 - 0.5  # the output's centre, in pixel-centre coordinates
    cx, cy = (square.x - left) * shrink - 0.5, (square.y - top) * shrink - 0.5
    # output pixel (u, v) samples the region at (cx + cos·(u - c) - sin·(v - c), cy + sin·(u - c) + cos·(v - c))
    matrix = np.array([[cos, -sin, cx - cos * c + sin * c], [sin, cos, cy - sin * c - cos * c]], np.float64)
    return cv2.warpAffine(region, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


def crop_face(gray: np.ndarray, box: Box, margin: float = 0.0, size: int = IMAGE_SIZE) -> np.ndarray:
    """The square of side ``max(w, h) · (1 + 2·margin)`` centred on ``box``, scaled to ``size``×``size``
    (:meth:`Square.around`, :func:`cut_square`)."""
    return cut_square(gray, Square.around(box, margin), size)


# -- boxes -----------------------------------------------------------------------------------------

def largest(faces: list[Face]) -> Face | None:
    """The face with the largest box (the main subject of a video frame), or None."""
    return max(faces, key=lambda f: f.area, default=None)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, width, height) boxes."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0
