"""Where a model looks: saliency maps from the gradient graph, or by occlusion with forward passes only.

Two methods, one result type:

- **gradient** — when ``<model>.grad.onnx`` sits beside the model (inputs ``image`` float32 [N,1,48,48]
  raw 0–255 and ``class_index`` int64 [N]; outputs ``logits`` [N,C] and ``gradient`` [N,1,48,48] =
  d logit[class] / d image), the map is |gradient|, as in the study;
- **occlusion** — any conforming model: grey out one square patch at a time and measure how much the
  class probability drops. All occluded copies of the face go through onnxruntime in one batch.

Then the face is masked to its most salient part. numpy and onnxruntime only: no textual, no torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fer_train.constants import IMAGE_SIZE, NUM_CLASSES, ONNX_INPUT, ONNX_OUTPUT
from fer_train.metrics import softmax
from fer_train.runtime import ModelError, make_session

from .catalog import gradient_companion

METHODS = ("auto", "gradient", "occlusion")
GRAD_CLASS_INPUT = "class_index"
GRAD_OUTPUT = "gradient"
OCCLUSION_PATCH = 8
OCCLUSION_STRIDE = 4


@dataclass
class SaliencyMap:
    values: np.ndarray  # float32 (48, 48), 0..1, larger = more important for the class
    method: str  # "gradient" or "occlusion"
    class_index: int
    probs: np.ndarray  # the model's class probabilities for the unaltered face
    forward_passes: int  # images run through the model (1 for the gradient)
    seconds: float
    detail: str = ""


def _positions(size: int, patch: int, stride: int) -> list[int]:
    """Patch origins covering 0..size, the last one flush with the edge."""
    starts = list(range(0, max(size - patch, 0) + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)
    return starts


def occlusion_batch(image: np.ndarray, patch: int = OCCLUSION_PATCH, stride: int = OCCLUSION_STRIDE,
                    fill: float | None = None) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The face followed by one copy per patch position with that patch set to ``fill`` (the face's mean).

    Returns float32 (1 + P, 1, H, W) and the P patch origins (y, x).
    """
    face = np.asarray(image, np.float32)
    h, w = face.shape
    fill = float(face.mean()) if fill is None else float(fill)
    origins = [(y, x) for y in _positions(h, patch, stride) for x in _positions(w, patch, stride)]
    batch = np.repeat(face[None, None], len(origins) + 1, axis=0)
    for k, (y, x) in enumerate(origins, start=1):
        batch[k, 0, y:y + patch, x:x + patch] = fill
    return batch, origins


def occlusion_saliency(predict_logits: Callable[[np.ndarray], np.ndarray], image: np.ndarray, class_index: int | None = None,
                       patch: int = OCCLUSION_PATCH, stride: int = OCCLUSION_STRIDE, clock=time.perf_counter) -> SaliencyMap:
    """Occlusion saliency: each pixel gets the mean probability drop of the patches covering it.

    ``predict_logits`` maps float32 (N, 1, 48, 48) to logits (N, C) in one call; ``class_index`` None
    means the predicted class.
    """
    start = clock()
    batch, origins = occlusion_batch(image, patch, stride)
    probs = softmax(np.asarray(predict_logits(batch), np.float64))
    base = probs[0]
    target = int(base.argmax()) if class_index is None else int(class_index)
    drop = base[target] - probs[1:, target]
    total = np.zeros(batch.shape[2:], np.float64)
    count = np.zeros(batch.shape[2:], np.float64)
    for (y, x), d in zip(origins, drop):
        total[y:y + patch, x:x + patch] += d
        count[y:y + patch, x:x + patch] += 1
    heat = np.clip(np.divide(total, count, out=np.zeros_like(total), where=count > 0), 0, None)
    peak = heat.max()
    values = (heat / peak if peak > 0 else heat).astype(np.float32)
    return SaliencyMap(values, "occlusion", target, base.astype(np.float32), len(batch), clock() - start,
                       f"{len(origins)} patches of {patch}×{patch} px, stride {stride}")


class GradientGraph:
    """The companion ``<model>.grad.onnx``: logits and d logit[class] / d image in one run."""

    def __init__(self, path: str | Path, threads: int | None = None):
        self.path = Path(path)
        try:
            self.session = make_session(self.path, threads)
        except Exception as exc:
            raise ModelError(f"{self.path}: not a loadable ONNX gradient graph ({str(exc).splitlines()[0][:200]})") from exc
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if not {ONNX_INPUT, GRAD_CLASS_INPUT} <= inputs or not {ONNX_OUTPUT, GRAD_OUTPUT} <= outputs:
            raise ModelError(f"{self.path}: expected inputs {ONNX_INPUT!r}, {GRAD_CLASS_INPUT!r} and outputs {ONNX_OUTPUT!r}, "
                             f"{GRAD_OUTPUT!r}; found inputs {sorted(inputs)} and outputs {sorted(outputs)}")
        classes = next(o.shape for o in self.session.get_outputs() if o.name == ONNX_OUTPUT)
        self.num_classes = classes[1] if len(classes) == 2 and isinstance(classes[1], int) else NUM_CLASSES

    def run(self, images: np.ndarray, class_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits (N, C) and gradients (N, 1, 48, 48) for float32 images (N, 1, 48, 48) and classes (N,)."""
        logits, gradient = self.session.run([ONNX_OUTPUT, GRAD_OUTPUT], {
            ONNX_INPUT: np.ascontiguousarray(images, np.float32), GRAD_CLASS_INPUT: np.asarray(class_index, np.int64)})
        return logits, gradient


def gradient_saliency(graph: GradientGraph, image: np.ndarray, class_index: int | None = None, clock=time.perf_counter) -> SaliencyMap:
    """|d logit[class] / d pixel|, scaled so its 99.5th percentile is 1 (a few extreme pixels do not wash it out).

    One run of the graph on a batch of one copy of the face per class gives every class's gradient, so
    the predicted class (``class_index`` None) needs no extra run.
    """
    start = clock()
    classes = graph.num_classes
    x = np.repeat(np.asarray(image, np.float32).reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE), classes, axis=0)
    logits, gradient = graph.run(x, np.arange(classes))
    probs = softmax(np.asarray(logits[:1], np.float64))[0]
    target = int(probs.argmax()) if class_index is None else int(class_index)
    magnitude = np.abs(np.asarray(gradient, np.float64)[target, 0])
    scale = np.percentile(magnitude, 99.5)
    values = np.clip(magnitude / scale, 0, 1) if scale > 0 else np.zeros_like(magnitude)
    return SaliencyMap(values.astype(np.float32), "gradient", target, probs.astype(np.float32), 1, clock() - start,
                       f"|d logit / d pixel| from {graph.path.name}")


def smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (separable, edges reflected)."""
    if sigma <= 0:
        return np.asarray(values, np.float64)
    radius = max(1, int(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(np.asarray(values, np.float64), radius, mode="reflect")
    rows = np.apply_along_axis(lambda r: np.convolve(r, taps, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, taps, mode="valid"), 0, rows)


def salient_mask(values: np.ndarray, keep: float = 0.25, sigma: float = 1.5) -> np.ndarray:
    """The ``keep`` share of pixels with the highest (lightly smoothed) saliency, as a bool mask.

    Exactly that share, ties broken by position, so the mask's size never depends on flat regions.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"the share of pixels to keep must lie in (0, 1], got {keep}")
    smoothed = smooth(values, sigma)
    count = max(1, int(round(keep * smoothed.size)))
    mask = np.zeros(smoothed.size, bool)
    mask[np.argsort(-smoothed.ravel(), kind="stable")[:count]] = True
    return mask.reshape(smoothed.shape)


def masked_face(image: np.ndarray, mask: np.ndarray, dim: float = 0.0) -> np.ndarray:
    """The face where ``mask`` holds, ``dim`` × its brightness elsewhere (0: black), as in the study's figures."""
    face = np.asarray(image, np.float32)
    return np.where(mask, face, face * dim).astype(np.uint8)


class SaliencyRunner:
    """Saliency for one model: its gradient graph when it has one (and ``method`` allows), else occlusion."""

    def __init__(self, classifier):
        self.classifier = classifier
        self.gradient_path = gradient_companion(Path(classifier.path))
        self._graph: GradientGraph | None = None
        self.gradient_error: str | None = None

    def graph(self) -> GradientGraph | None:
        if self._graph is None and self.gradient_error is None:
            if not self.gradient_path.is_file():
                self.gradient_error = f"no gradient graph {self.gradient_path.name} beside {self.classifier.path.name}"
            else:
                try:
                    self._graph = GradientGraph(self.gradient_path)
                except ModelError as exc:
                    self.gradient_error = str(exc)
        return self._graph

    def compute(self, image: np.ndarray, class_index: int | None = None, method: str = "auto", clock=time.perf_counter) -> SaliencyMap:
        """``method`` auto: the gradient when the graph exists, else occlusion; ModelError if gradient is asked and absent."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        graph = self.graph() if method in ("auto", "gradient") else None
        if graph is not None:
            return gradient_saliency(graph, image, class_index, clock=clock)
        if method == "gradient":
            raise ModelError(self.gradient_error or "no gradient graph")

        def predict(batch: np.ndarray) -> np.ndarray:
            return self.classifier.predict_logits(batch, batch_size=len(batch))

        return occlusion_saliency(predict, image, class_index, clock=clock)
