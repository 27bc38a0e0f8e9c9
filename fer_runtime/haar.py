"""OpenCV's Haar-cascade face detector (Viola and Jones, 2001): the one FER2013's faces were found with.

``fer-predict --detector haar`` and :class:`HaarDetector` in Python. No longer the default
(:mod:`fer_runtime.centerface` is: it finds tilted and small faces this one loses, docs/photos.md), but FER2013's
own crops are this detector's box, so its crops need no calibration beyond a margin of 0.025 per side
(``benchmarks/face_crop_margin.py``). Its cascades ship inside ``opencv-python-headless`` 4.x.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .detection import Box, Face, crop_face, to_gray

NAME = "haar"
CASCADES = {"default": "haarcascade_frontalface_default.xml", "alt2": "haarcascade_frontalface_alt2.xml"}
DEFAULT_CASCADE = "alt2"  # as many faces found as "default", 5× fewer false ones: benchmarks/face_crop_margin.py
DEFAULT_MARGIN = 0.025  # per side, in box sides: fer-best's most accurate on re-detected faces (benchmarks/face_crop_margin.py)
DEFAULT_MIN_SIZE = 32  # source pixels; smaller faces are rarely found and poorly classified (docs/photos.md#what-fails)
DEFAULT_NEIGHBORS = 5  # OpenCV's minNeighbors: overlapping hits needed to accept a box
SCALE_STEP = 1.1  # OpenCV's scaleFactor: the detector's window grows by this factor between scales
DETECT_SIDE = 1600  # larger images are scaled down to this longest side to detect, boxes mapped back


@lru_cache(maxsize=None)
def _cascade(name: str):
    """The loaded cascade ``name`` and the lock that its users take: OpenCV does not promise that one cascade
    object may detect in two threads at once."""
    import cv2

    if name not in CASCADES:
        raise ValueError(f"unknown cascade {name!r}; choose one of {', '.join(CASCADES)}")
    path = Path(cv2.data.haarcascades) / CASCADES[name]
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"OpenCV could not load its face detector {path}: is opencv-python-headless 4.x installed "
                           "(the 5.x wheels no longer ship the cascades)?")
    return cascade, threading.Lock()


@dataclass(frozen=True)
class HaarDetector:
    """OpenCV's Haar-cascade face detector with FER2013's cropping. ``min_size`` is in the source image's pixels."""

    min_size: int = DEFAULT_MIN_SIZE
    margin: float = DEFAULT_MARGIN
    cascade: str = DEFAULT_CASCADE
    min_neighbors: int = DEFAULT_NEIGHBORS
    detect_side: int = DETECT_SIDE
    name = NAME  # a class attribute: what records say found the face

    def __post_init__(self):
        _cascade(self.cascade)  # fail now, with the reason, rather than on the first image
        if self.min_size < 1 or self.detect_side < 48 or self.min_neighbors < 0:
            raise ValueError(f"min_size must be ≥ 1, detect_side ≥ 48 and min_neighbors ≥ 0; got {self}")

    def boxes(self, gray: np.ndarray) -> list[Box]:
        """Face boxes in ``gray`` (uint8 (H, W)), left to right. Images longer than ``detect_side`` are scaled
        down to detect (the smallest face found is then 24 px of the scaled image) and boxes mapped back."""
        import cv2

        height, width = gray.shape
        scale = min(1.0, self.detect_side / max(height, width))
        small = gray if scale == 1.0 else cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))),
                                                     interpolation=cv2.INTER_AREA)
        least = max(1, int(self.min_size * scale))
        cascade, lock = _cascade(self.cascade)  # shared by every detector of this cascade
        with lock:
            found = cascade.detectMultiScale(small, scaleFactor=SCALE_STEP, minNeighbors=self.min_neighbors, minSize=(least, least))
        boxes = [tuple(int(round(v / scale)) for v in b) for b in np.asarray(found).reshape(-1, 4)]
        return sorted((b for b in boxes if max(b[2], b[3]) >= self.min_size), key=lambda b: (b[0], b[1]))

    def detect(self, image, channels: str = "rgb") -> list[Face]:
        """The faces in ``image`` (see :func:`~fer_runtime.faces.to_gray` for what it may be), each with its 48×48 crop."""
        gray = to_gray(image, channels)
        return [Face(box, crop_face(gray, box, self.margin), detector=NAME) for box in self.boxes(gray)]
