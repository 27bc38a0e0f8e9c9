"""Faces followed through a video: CenterFace on the whole frame every few frames, and in between only around the
faces it found, which is several times cheaper.

A whole 640×480 frame costs CenterFace about 40 ms on two cores; the square around one face, scaled to 128
pixels, about 3 ms. So :class:`FaceTracker` looks at the whole frame every ``every``-th frame (a face that enters
is found within that many frames) and, in the frames between, looks for each face it follows in a square of twice
its box around where it was (:meth:`~fer_runtime.centerface.CenterFaceDetector.around`): a face that moves by less
than half its width from one frame to the next stays inside that square and followed, with fresh landmarks and
crop in every frame. A face that is not found around its last place is dropped until the next whole-frame look.
Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .centerface import CenterFaceDetector
from .detection import Face, box_iou, to_gray, to_rgb

DEFAULT_EVERY = 10  # a whole-frame look every this many frames (a third of a second at 30 frames/s)
WHOLE_SIDE = 640  # whole frames are looked at with their longest side scaled down to this (never up: ~40 ms at 640×480)
SAME_FACE_IOU = 0.5  # two followed boxes overlapping this much are one face


@dataclass
class FaceTracker:
    """Detects like ``detector`` (a :class:`~fer_runtime.centerface.CenterFaceDetector`), frame after frame, looking
    at the whole frame only every ``every``-th call. Use one tracker per video; :meth:`reset` between videos."""

    detector: CenterFaceDetector = field(default_factory=CenterFaceDetector)
    every: int = DEFAULT_EVERY
    _boxes: np.ndarray = field(default_factory=lambda: np.empty((0, 4)), repr=False)  # x0, y0, x1, y1 of each face followed
    _calls: int = field(default=0, repr=False)

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"every must be 1 or more, got {self.every}")

    @property
    def name(self) -> str:
        return self.detector.name

    def describe(self) -> str:
        """How this tracker finds faces, for a video's summary."""
        if self.every == 1:
            return f"{self.detector.name}, every frame"
        return f"{self.detector.name}, the whole frame every {self.every} analysed frames, the faces followed in between"

    def reset(self) -> None:
        self._boxes, self._calls = np.empty((0, 4)), 0

    def detect(self, image, channels: str = "rgb") -> list[Face]:
        """The faces in this frame of the video, left to right (as :meth:`CenterFaceDetector.detect`)."""
        rgb = to_rgb(image, channels)
        whole = self._calls % self.every == 0
        self._calls += 1
        if whole:
            boxes, scores, landmarks = self.detector.locate(rgb, scale=min(1.0, WHOLE_SIDE / max(rgb.shape[:2])))
        else:
            boxes, scores, landmarks = self._follow(rgb)
        self._boxes = boxes
        return self.detector.faces(to_gray(rgb), boxes, scores, landmarks)

    def _follow(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each followed face looked for around its last box (:meth:`CenterFaceDetector.around`); two that converge
        on one face are one."""
        found = []
        for box in self._boxes:
            hit = self.detector.around(rgb, box)
            if hit is not None and not any(box_iou(_xywh(hit[0]), _xywh(other[0])) > SAME_FACE_IOU for other in found):
                found.append(hit)
        if not found:
            return np.empty((0, 4)), np.empty(0), np.empty((0, 5, 2))
        return tuple(np.array(values) for values in zip(*found))


def _xywh(box: np.ndarray) -> tuple[float, float, float, float]:
    return box[0], box[1], box[2] - box[0], box[3] - box[1]
