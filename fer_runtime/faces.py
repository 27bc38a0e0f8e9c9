"""Faces in photographs: find them, crop them the way FER2013's faces were cropped, classify them.

FER2013's faces were found in web images by OpenCV's Haar-cascade detector, cut out and scaled to 48×48 grayscale.
The default detector here is a CNN, CenterFace (:mod:`fer_runtime.centerface`, run by onnxruntime; its file ships
inside this package): it finds heads tilted by 45° and faces of 20 px that the cascade loses, and gives five
landmarks (eyes, nose, mouth corners). Its crops are calibrated to FER2013's cut and, by default, turned so that
the eyes are level (``benchmarks/face_crop_margin.py``, docs/photos.md). OpenCV's cascade stays available as
:class:`fer_runtime.haar.HaarDetector` (``fer-predict --detector haar``).

Images are paths, PIL images or numpy arrays of any size: 2-D gray, ``(H, W, 3)`` colour, ``(H, W, 4)`` with
alpha; ``uint8``, or floats in 0..1. **Colour arrays are taken as RGB** (Pillow, scikit-image, matplotlib);
pass ``channels="bgr"`` for OpenCV's own frames (``cv2.imread``, ``cv2.VideoCapture``). A webcam::

    import cv2
    from fer_runtime.classifier import load_classifier
    from fer_runtime.faces import predict_faces
    model, camera = load_classifier("exported/fer-best.onnx", variant="auto"), cv2.VideoCapture(0)
    while (frame := camera.read()[1]) is not None:
        print([(face.label, round(face.confidence, 2), face.box) for face in predict_faces(frame, model, channels="bgr")])

(for a video, :class:`fer_runtime.tracking.FaceTracker` is several times faster: it detects every few frames and
follows the faces in between). Torch-free: numpy, OpenCV and onnxruntime.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .classifier import OnnxClassifier, load_classifier
from .detection import (  # noqa: F401 -- the names people import from here
    CHANNEL_ORDERS,
    DEFAULT_MIN_SIZE,
    LANDMARK_NAMES,
    Box,
    Detector,
    Face,
    Square,
    box_iou,
    crop_face,
    cut_square,
    largest,
    to_gray,
    to_rgb,
)
from .media import DEFAULT_MAX_PIXELS, read_image
from .metrics import softmax

DETECTORS = ("centerface", "haar")  # fer-predict --detector; the first is the default


def make_detector(name: str = DETECTORS[0], **settings) -> Detector:
    """The detector called ``name`` (one of :data:`DETECTORS`) with ``settings`` (its dataclass's fields)."""
    if name == "centerface":
        from .centerface import CenterFaceDetector

        return CenterFaceDetector(**settings)
    if name == "haar":
        from .haar import HaarDetector

        return HaarDetector(**settings)
    raise ValueError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}")


# -- classification ---------------------------------------------------------------------------------

def classify_faces(faces: list[Face], model: OnnxClassifier) -> list[Face]:
    """``faces`` with the model's probabilities, all crops in one batch through onnxruntime."""
    if not faces:
        return []
    logits = model.predict_logits(np.stack([f.crop for f in faces]))
    probabilities = softmax(logits.astype(np.float64))
    names = tuple(model.class_names)
    return [replace(face, probabilities=p, class_names=names) for face, p in zip(faces, probabilities)]


def detect_faces(image, min_size: int = DEFAULT_MIN_SIZE, *, channels: str = "rgb", detector: Detector | None = None) -> list[Face]:
    """The faces in ``image``, left to right: boxes in its pixels, landmarks and 48×48 crops, not yet classified.
    ``detector``: the default one (CenterFace) with ``min_size`` when None."""
    return (detector or make_detector(min_size=min_size)).detect(image, channels)


def predict_faces(image, model: OnnxClassifier | str | Path, *, channels: str = "rgb", detector: Detector | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Face]:
    """Detect and classify every face in ``image`` (a path, a PIL image or an array, see :func:`to_gray`).

    ``model`` is a loaded classifier (:func:`~fer_runtime.classifier.load_classifier`), or a path that is loaded
    on each call with the fastest variant that passed the accuracy gate (fine once; in a loop, load it first:
    ``load_classifier(path, variant="auto")``). ``detector``: the default (CenterFace) when None. Raises
    :class:`~fer_runtime.media.MediaError` for a path that cannot be read.
    """
    if not isinstance(model, OnnxClassifier):
        model = load_classifier(model, variant="auto")
    if isinstance(image, (str, Path)):
        image, channels = read_image(image, max_pixels), "rgb"
    return classify_faces((detector or make_detector()).detect(image, channels), model)
