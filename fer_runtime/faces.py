"""Faces in photographs: find them, crop them the way FER2013's faces were cropped, classify them.

FER2013's faces were found in web images by OpenCV's Haar-cascade face detector, cut out and scaled to 48×48
grayscale. This module runs the same detector (its cascades ship inside ``opencv-python-headless`` 4.x) and cuts
a square around each box, ``margin`` × the box's side wider on every side. Pasting FER2013's own validation
faces into larger pictures and detecting them again finds boxes of 0.95–0.96 × the pasted crop, centred on it:
FER2013's crops are the detector's box, give or take a few pixels. The default margin, 0.025, is the one under
which ``fer-best`` is most accurate on the re-detected faces; margins from -0.025 to +0.05 are as good
(``benchmarks/face_crop_margin.py``, table in ``docs/photos.md``).

Images are paths, PIL images or numpy arrays of any size: 2-D gray, ``(H, W, 3)`` colour, ``(H, W, 4)`` with
alpha; ``uint8``, or floats in 0..1. **Colour arrays are taken as RGB** (Pillow, scikit-image, matplotlib);
pass ``channels="bgr"`` for OpenCV's own frames (``cv2.imread``, ``cv2.VideoCapture``). A webcam::

    import cv2
    from fer_runtime.classifier import load_classifier
    from fer_runtime.faces import predict_faces
    model, camera = load_classifier("exported/fer-best.onnx", variant="auto"), cv2.VideoCapture(0)
    while (frame := camera.read()[1]) is not None:
        print([(face.label, round(face.confidence, 2), face.box) for face in predict_faces(frame, model, channels="bgr")])

Torch-free: numpy, OpenCV and onnxruntime.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from .classifier import OnnxClassifier, load_classifier
from .contract import CLASS_NAMES, IMAGE_SIZE
from .media import DEFAULT_MAX_PIXELS, read_image
from .metrics import softmax

CASCADES = {"default": "haarcascade_frontalface_default.xml", "alt2": "haarcascade_frontalface_alt2.xml"}
DEFAULT_CASCADE = "alt2"  # as many faces found as "default", 5× fewer false ones: benchmarks/face_crop_margin.py
DEFAULT_MARGIN = 0.025  # per side, in box sides: fer-best's most accurate on re-detected faces (benchmarks/face_crop_margin.py)
DEFAULT_MIN_SIZE = 32  # source pixels; smaller faces are rarely found and poorly classified (docs/photos.md#what-fails)
DEFAULT_NEIGHBORS = 5  # OpenCV's minNeighbors: overlapping hits needed to accept a box
SCALE_STEP = 1.1  # OpenCV's scaleFactor: the detector's window grows by this factor between scales
DETECT_SIDE = 1600  # larger images are scaled down to this longest side to detect, boxes mapped back
CHANNEL_ORDERS = ("rgb", "bgr")

Box = tuple[int, int, int, int]  # x, y, width, height in the source image's pixels


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays inside; two faces are the same face only if they are one object
class Face:
    """One face: where it is, its 48×48 crop and, once classified, the model's probabilities."""

    box: Box
    crop: np.ndarray = field(repr=False)  # uint8 (48, 48), as the models expect
    probabilities: np.ndarray | None = None  # float (K,), in class_names order
    class_names: tuple[str, ...] = CLASS_NAMES

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
        """``box``, ``label``, ``confidence`` and ``probabilities`` (class name → probability), JSON-ready."""
        out: dict = {"box": [int(v) for v in self.box]}
        if self.probabilities is not None:
            out["label"] = self.label
            out["confidence"] = round(float(self.confidence), digits)
            out["probabilities"] = {n: round(float(p), digits) for n, p in zip(self.class_names, self.probabilities)}
        return out


# -- pixels -----------------------------------------------------------------------------------------

def to_gray(image, channels: str = "rgb") -> np.ndarray:
    """Any picture as uint8 (H, W) gray, weighted as OpenCV and Pillow do (ITU-R 601: 0.299 R + 0.587 G + 0.114 B).

    ``image``: a path, a PIL image, or an array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), uint8 / uint16 /
    float in 0..1; ``channels`` says whether colour arrays are ``"rgb"`` (the default) or ``"bgr"`` (OpenCV).
    """
    import cv2

    if isinstance(image, (str, Path)):
        image, channels = read_image(image), "rgb"
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("L"), np.uint8)
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
    if x.ndim == 2:
        return np.ascontiguousarray(x)
    codes = {(3, "rgb"): cv2.COLOR_RGB2GRAY, (3, "bgr"): cv2.COLOR_BGR2GRAY, (4, "rgb"): cv2.COLOR_RGBA2GRAY, (4, "bgr"): cv2.COLOR_BGRA2GRAY}
    if x.ndim != 3 or (x.shape[2], channels) not in codes:
        raise ValueError(f"expected an image (H, W), (H, W, 3) or (H, W, 4), got an array of shape {x.shape}")
    return cv2.cvtColor(np.ascontiguousarray(x), codes[(x.shape[2], channels)])


def crop_face(gray: np.ndarray, box: Box, margin: float = DEFAULT_MARGIN, size: int = IMAGE_SIZE) -> np.ndarray:
    """The square of side ``max(w, h) · (1 + 2·margin)`` centred on ``box``, scaled to ``size``×``size``.
    Parts outside the image repeat its edge pixels, as a face at the border would otherwise be cut."""
    import cv2

    if margin <= -0.5:
        raise ValueError(f"margin must be more than -0.5 (half the box on each side), got {margin}")
    x, y, w, h = box
    side = max(1, int(round(max(w, h) * (1 + 2 * margin))))
    left, top = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
    height, width = gray.shape
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, width), min(top + side, height)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {box} lies outside the {width}×{height} image")
    region = gray[y0:y1, x0:x1]
    if (x0, y0, x1, y1) != (left, top, left + side, top + side):
        region = cv2.copyMakeBorder(region, y0 - top, top + side - y1, x0 - left, left + side - x1, cv2.BORDER_REPLICATE)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(region, (size, size), interpolation=interpolation)


# -- detection --------------------------------------------------------------------------------------

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
class FaceDetector:
    """OpenCV's Haar-cascade face detector with FER2013's cropping. ``min_size`` is in the source image's pixels."""

    min_size: int = DEFAULT_MIN_SIZE
    margin: float = DEFAULT_MARGIN
    cascade: str = DEFAULT_CASCADE
    min_neighbors: int = DEFAULT_NEIGHBORS
    detect_side: int = DETECT_SIDE

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
            found = cascade.detectMultiScale(small, scaleFactor=SCALE_STEP, minNeighbors=self.min_neighbors,
                                                            minSize=(least, least))
        boxes = [tuple(int(round(v / scale)) for v in b) for b in np.asarray(found).reshape(-1, 4)]
        return sorted((b for b in boxes if max(b[2], b[3]) >= self.min_size), key=lambda b: (b[0], b[1]))

    def detect(self, image, channels: str = "rgb") -> list[Face]:
        """The faces in ``image`` (see :func:`to_gray` for what it may be), each with its 48×48 crop."""
        gray = to_gray(image, channels)
        return [Face(box, crop_face(gray, box, self.margin)) for box in self.boxes(gray)]


def detect_faces(image, min_size: int = DEFAULT_MIN_SIZE, *, channels: str = "rgb", margin: float = DEFAULT_MARGIN,
                 cascade: str = DEFAULT_CASCADE, min_neighbors: int = DEFAULT_NEIGHBORS) -> list[Face]:
    """The faces in ``image``, left to right: boxes in its pixels and 48×48 crops, not yet classified."""
    return FaceDetector(min_size, margin, cascade, min_neighbors).detect(image, channels)


# -- classification ---------------------------------------------------------------------------------

def classify_faces(faces: list[Face], model: OnnxClassifier) -> list[Face]:
    """``faces`` with the model's probabilities, all crops in one batch through onnxruntime."""
    if not faces:
        return []
    logits = model.predict_logits(np.stack([f.crop for f in faces]))
    probabilities = softmax(logits.astype(np.float64))
    names = tuple(model.class_names)
    return [replace(face, probabilities=p, class_names=names) for face, p in zip(faces, probabilities)]


def predict_faces(image, model: OnnxClassifier | str | Path, *, channels: str = "rgb", detector: FaceDetector | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Face]:
    """Detect and classify every face in ``image`` (a path, a PIL image or an array, see :func:`to_gray`).

    ``model`` is a loaded classifier (:func:`~fer_runtime.classifier.load_classifier`), or a path that is loaded
    on each call with the fastest variant that passed the accuracy gate (fine once; in a loop, load it first:
    ``load_classifier(path, variant="auto")``). Raises :class:`~fer_runtime.media.MediaError` for a path
    that cannot be read.
    """
    if not isinstance(model, OnnxClassifier):
        model = load_classifier(model, variant="auto")
    if isinstance(image, (str, Path)):
        image, channels = read_image(image, max_pixels), "rgb"
    return classify_faces((detector or FaceDetector()).detect(image, channels), model)


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
