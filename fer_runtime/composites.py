"""Faces pasted into larger pictures at known places, and how well detection finds them again.

The measurement behind the crop margin (``benchmarks/face_crop_margin.py``) and the tests of detection: paste
48×48 faces (FER2013's, or drawn ones) at chosen sizes into a background, detect, and match the boxes found
to the boxes pasted. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .faces import Box, box_iou


@dataclass
class Composite:
    image: np.ndarray  # uint8 (H, W) gray
    boxes: list[Box]  # where each face was pasted, in the order given


def paste_faces(faces: Sequence[np.ndarray], sizes: Sequence[int], background: np.ndarray, rng: np.random.Generator) -> Composite:
    """A copy of ``background`` (uint8 (H, W)) with ``faces[i]`` scaled to ``sizes[i]``² pixels, each at a random
    place in its own vertical strip of the picture (strip i of len(faces)), so that no two overlap."""
    import cv2

    image = np.array(background, np.uint8, copy=True)
    height, width = image.shape
    strip = width // max(1, len(faces))
    boxes: list[Box] = []
    for i, (face, size) in enumerate(zip(faces, sizes)):
        size = int(size)
        if size > strip or size > height:
            raise ValueError(f"a face of {size} px does not fit a strip of {strip}×{height} px; use fewer or smaller faces")
        x = i * strip + int(rng.integers(0, strip - size + 1))
        y = int(rng.integers(0, height - size + 1))
        interpolation = cv2.INTER_CUBIC if size > face.shape[0] else cv2.INTER_AREA
        image[y:y + size, x:x + size] = cv2.resize(np.asarray(face, np.uint8), (size, size), interpolation=interpolation)
        boxes.append((x, y, size, size))
    return Composite(image, boxes)


# Photographs without people that ship inside scikit-image's wheel (the dev extra): backgrounds to paste into.
SKIMAGE_BACKGROUNDS = ("brick", "grass", "gravel", "coffee", "coins", "moon", "page", "rocket", "chelsea", "hubble_deep_field",
                       "retina", "horse")


def skimage_backgrounds() -> list[np.ndarray]:
    """:data:`SKIMAGE_BACKGROUNDS` as uint8 gray arrays (no download: these files are inside the wheel)."""
    try:
        from skimage import data
    except ImportError as exc:
        raise ImportError("the background photographs come with scikit-image: pip install scikit-image (or the dev extra)") from exc
    from .faces import to_gray

    return [to_gray(getattr(data, name)()) for name in SKIMAGE_BACKGROUNDS]


def background(photos: Sequence[np.ndarray], height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``height``×``width`` gray crop of a random one of ``photos``, scaled up first where it is smaller."""
    import cv2

    photo = photos[int(rng.integers(len(photos)))]
    scale = max(height / photo.shape[0], width / photo.shape[1], 1.0)
    if scale > 1.0:
        photo = cv2.resize(photo, (int(np.ceil(photo.shape[1] * scale)), int(np.ceil(photo.shape[0] * scale))), interpolation=cv2.INTER_CUBIC)
    y = int(rng.integers(0, photo.shape[0] - height + 1))
    x = int(rng.integers(0, photo.shape[1] - width + 1))
    return np.ascontiguousarray(photo[y:y + height, x:x + width])


def match_boxes(truth: Sequence[Box], found: Sequence[Box], min_iou: float = 0.5) -> list[tuple[int | None, float]]:
    """For each true box, (the index of the found box matched to it, their IoU), or (None, best IoU seen) when
    no found box overlaps it by ``min_iou``. Pairs are taken greedily, highest IoU first; each box is used once."""
    pairs = sorted(((box_iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    result: list[tuple[int | None, float]] = [(None, 0.0)] * len(truth)
    used_truth, used_found = set(), set()
    for iou, i, j in pairs:
        if i in used_truth or j in used_found:
            continue
        if iou >= min_iou:
            result[i] = (j, iou)
            used_truth.add(i)
            used_found.add(j)
        elif result[i][0] is None:
            result[i] = (None, max(result[i][1], iou))
    return result


@dataclass
class DetectionScore:
    pasted: int = 0
    found: int = 0  # pasted faces matched by a detection
    false_positives: int = 0  # detections matched to no pasted face
    ious: list[float] = field(default_factory=list)  # IoU of each match

    @property
    def recall(self) -> float:
        return self.found / self.pasted if self.pasted else 0.0

    @property
    def mean_iou(self) -> float:
        return float(np.mean(self.ious)) if self.ious else 0.0

    def add(self, truth: Sequence[Box], found: Sequence[Box], min_iou: float = 0.5) -> list[tuple[int | None, float]]:
        """Score one picture; returns :func:`match_boxes`' pairs."""
        matches = match_boxes(truth, found, min_iou)
        hits = [iou for j, iou in matches if j is not None]
        self.pasted += len(truth)
        self.found += len(hits)
        self.false_positives += len(found) - len(hits)
        self.ious += hits
        return matches

