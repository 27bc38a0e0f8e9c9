"""The companions of one model file in onnxruntime: :class:`Explainer` gives saliency, layer outputs and filter
pictures for faces."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..classifier import make_session
from ..contract import (ACTIVATION, CLASS_INDEX, CLASS_NAMES, FILTER_INDEX, GRADIENT, META_CLASS_NAMES, META_LAYERS, ONNX_INPUT, ONNX_OUTPUT)
from ..metrics import softmax
from .ascent import AscentConfig, AscentResult, ascend
from .companions import filters_path, gradient_path, layers_path
from .images import as_batch, normalise_map
from .saliency import GradientFn, LogitsFn, _mean_drop, _occluded_probabilities, smoothgrad


# -- the companions in onnxruntime ------------------------------------------------------------------

class ExplainError(ValueError):
    """A companion graph is missing or does not keep the contract; the message names the file."""


@dataclass
class SaliencyResult:
    logits: np.ndarray  # (N, K)
    class_index: np.ndarray  # (N,) the class each gradient is of
    gradient: np.ndarray  # (N, 48, 48) signed, d logit / d pixel

    @property
    def map(self) -> np.ndarray:
        """|gradient|, the saliency map (N, 48, 48)."""
        return np.abs(self.gradient)


# What Explainer.face_saliency can do; "auto" is the gradient when the model has a usable gradient graph, else occlusion.
FACE_METHODS = ("auto", "gradient", "occlusion", "smoothgrad")
OCCLUSION_PATCH, OCCLUSION_STRIDE = 8, 4
SMOOTHGRAD_SAMPLES = 25


@dataclass
class FaceSaliency:
    """One face's saliency map for one class, ready to draw."""

    values: np.ndarray  # float32 (48, 48) in 0..1 by normalise_map; larger = more important for the class
    method: str  # gradient, occlusion or smoothgrad
    class_index: int  # the class explained
    probs: np.ndarray  # float32 (K,): the model's probabilities for the whole face
    forward_passes: int  # images run through the model or its gradient graph
    seconds: float
    detail: str  # how it was made, in words


@dataclass
class Explainer:
    """The companions of one model file, opened lazily with onnxruntime.

    >>> ex = Explainer("exported/cnn.onnx")
    >>> sal = ex.saliency(face)                 # predicted class; sal.map is (1, 48, 48)
    >>> shown = ex.face_saliency(face)          # normalised map, probabilities, method (the TUI's)
    >>> maps = ex.layer_outputs(face)["conv2"]  # (64, 22, 22)
    >>> grid = ex.visualise_filters("conv2", AscentConfig(steps=40))[-1]
    """

    model_path: Path
    threads: int | None = None
    _sessions: dict = field(default_factory=dict, repr=False)
    _failed: dict = field(default_factory=dict, repr=False)  # path → why it cannot be used (not retried)
    _layers: list | None = field(default=None, repr=False)

    def __post_init__(self):
        self.model_path = Path(self.model_path)

    # what exists
    @property
    def has_gradient(self) -> bool:
        return gradient_path(self.model_path).is_file()

    @property
    def has_layers(self) -> bool:
        return layers_path(self.model_path).is_file()

    def has_filters(self, layer: str) -> bool:
        return filters_path(self.model_path, layer).is_file()

    @property
    def layers(self) -> list[dict]:
        """The conv layers (``name``, ``module``, ``channels``, ``height``, ``width``) from the companions' metadata."""
        if self._layers is None:
            self._layers = []
            for path in [layers_path(self.model_path), gradient_path(self.model_path)]:
                if path.is_file():
                    self._layers = json.loads(self._session(path).get_modelmeta().custom_metadata_map.get(META_LAYERS, "[]"))
                    break
        return self._layers

    @property
    def class_names(self) -> list[str]:
        """The class names in the gradient graph's metadata (the model's), else FER2013's."""
        path = gradient_path(self.model_path)
        if path.is_file():
            names = json.loads(self._session(path).get_modelmeta().custom_metadata_map.get(META_CLASS_NAMES, "null"))
            if isinstance(names, list):
                return [str(n) for n in names]
        return list(CLASS_NAMES)

    def layer(self, name: str) -> dict:
        for info in self.layers:
            if name in (info["name"], info["module"]):
                return info
        have = ", ".join(i["name"] for i in self.layers) or "none"
        raise ExplainError(f"{self.model_path.name}: no conv layer {name!r} in its explanation graphs (layers: {have})")

    def _session(self, path: Path):
        if path not in self._sessions:
            if not path.is_file():
                raise ExplainError(f"{path}: missing; export the model again (fer-train export RUN --name NAME) to write its explanation graphs")
            if path in self._failed:
                raise ExplainError(self._failed[path])
            try:
                session = make_session(path, self.threads)
            except Exception as exc:  # onnxruntime raises its own exception types
                self._failed[path] = f"{path}: not a loadable ONNX graph ({str(exc).splitlines()[0][:200]})"
                raise ExplainError(self._failed[path]) from exc
            expected = {gradient_path(self.model_path): ({ONNX_INPUT, CLASS_INDEX}, {ONNX_OUTPUT, GRADIENT})}.get(path)
            if expected is not None:
                inputs, outputs = {i.name for i in session.get_inputs()}, {o.name for o in session.get_outputs()}
                if not (expected[0] <= inputs and expected[1] <= outputs):
                    self._failed[path] = (f"{path}: expected inputs {sorted(expected[0])} and outputs {sorted(expected[1])}; "
                                          f"found inputs {sorted(inputs)} and outputs {sorted(outputs)}")
                    raise ExplainError(self._failed[path])
            self._sessions[path] = session
        return self._sessions[path]

    @property
    def gradient_problem(self) -> str | None:
        """Why the gradient graph cannot be used (missing, unloadable, not the contract), or None when it can."""
        path = gradient_path(self.model_path)
        if not path.is_file():
            return f"no gradient graph {path.name} beside {self.model_path.name}"
        try:
            self._session(path)
        except ExplainError as exc:
            return str(exc)
        return None

    # the gradient graph
    def gradient_fn(self) -> GradientFn:
        session = self._session(gradient_path(self.model_path))

        def run(images: np.ndarray, index: np.ndarray):
            logits, grad = session.run([ONNX_OUTPUT, GRADIENT], {ONNX_INPUT: as_batch(images)[:, None], CLASS_INDEX: np.asarray(index, np.int64)})
            return logits[np.arange(len(logits)), index], grad[:, 0]

        return run

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits (N, K) from the model file itself (it is cheaper than the gradient graph)."""
        x = as_batch(images)[:, None]
        if self.model_path.is_file():
            return self._session(self.model_path).run([ONNX_OUTPUT], {ONNX_INPUT: x})[0]
        return self._session(gradient_path(self.model_path)).run([ONNX_OUTPUT], {ONNX_INPUT: x, CLASS_INDEX: np.zeros(len(x), np.int64)})[0]

    def saliency(self, images: np.ndarray, class_index=None, batch_size: int = 64) -> SaliencyResult:
        """The gradient of a class's logit with respect to the pixels; ``class_index`` None: the predicted class."""
        x = as_batch(images)
        session = self._session(gradient_path(self.model_path))
        if class_index is None:
            classes = self.logits(x).argmax(axis=1)
        else:
            classes = np.broadcast_to(np.asarray(class_index, np.int64), (len(x),)).copy()
        logits, grads = [], []
        for i in range(0, len(x), batch_size):
            out = session.run([ONNX_OUTPUT, GRADIENT], {ONNX_INPUT: x[i:i + batch_size, None], CLASS_INDEX: classes[i:i + batch_size]})
            logits.append(out[0])
            grads.append(out[1][:, 0])
        return SaliencyResult(np.concatenate(logits), classes, np.concatenate(grads))

    def smoothgrad(self, images: np.ndarray, class_index=None, **kwargs) -> np.ndarray:
        x = as_batch(images)
        classes = self.logits(x).argmax(axis=1) if class_index is None else np.broadcast_to(np.asarray(class_index, np.int64), (len(x),))
        return smoothgrad(self.gradient_fn(), x, classes, **kwargs)

    def face_saliency(self, image: np.ndarray, class_index: int | None = None, method: str = "auto",
                      logits_fn: LogitsFn | None = None, clock: Callable[[], float] = time.perf_counter) -> FaceSaliency:
        """One face's map for ``class_index`` (None: the predicted class), normalised by :func:`normalise_map`.

        ``method``: one of :data:`FACE_METHODS`. ``logits_fn`` runs the model itself (default :meth:`logits`;
        pass an open classifier's to avoid a second session): the probabilities always come from the model,
        also for a variant whose gradient graph is its base model's. :class:`ExplainError` when the gradient
        graph is asked for and cannot be used (``auto`` falls back to occlusion instead).
        """
        if method not in FACE_METHODS:
            raise ValueError(f"method must be one of {', '.join(FACE_METHODS)}, got {method!r}")
        logits_fn = logits_fn or self.logits
        start = clock()
        face = as_batch(image)[0]
        if method == "auto":
            method = "gradient" if self.gradient_problem is None else "occlusion"
        if method == "occlusion":
            probs, corners = _occluded_probabilities(logits_fn, face, OCCLUSION_PATCH, OCCLUSION_STRIDE, None, None)
            target = int(probs[0].argmax()) if class_index is None else int(class_index)
            drop = _mean_drop(probs[0, target] - probs[1:, target], corners, OCCLUSION_PATCH)
            return FaceSaliency(normalise_map(np.clip(drop, 0, None)), method, target, probs[0].astype(np.float32), len(probs),
                                clock() - start, f"{len(corners)} patches of {OCCLUSION_PATCH}×{OCCLUSION_PATCH} px, "
                                f"stride {OCCLUSION_STRIDE}; {len(probs)} forward passes")
        problem = self.gradient_problem
        if problem is not None:
            raise ExplainError(problem)
        probs = softmax(np.asarray(logits_fn(face[None]), np.float64))[0]
        target = int(probs.argmax()) if class_index is None else int(class_index)
        graph = gradient_path(self.model_path).name
        if method == "gradient":
            signed, passes = self.saliency(face, target).gradient[0], 2
            detail = f"|d logit / d pixel| from {graph}; 2 passes (model + gradient graph)"
        else:
            signed, passes = self.smoothgrad(face, target, samples=SMOOTHGRAD_SAMPLES)[0], 1 + SMOOTHGRAD_SAMPLES
            detail = f"mean gradient of {SMOOTHGRAD_SAMPLES} noisy copies (σ 15% of the range) from {graph}; {passes} passes"
        return FaceSaliency(normalise_map(signed), method, target, probs.astype(np.float32), passes, clock() - start, detail)

    # layer outputs
    def layer_outputs(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Every conv layer's output for one image: name → (C, H, W)."""
        session = self._session(layers_path(self.model_path))
        names = [o.name for o in session.get_outputs()]
        outputs = session.run(names, {ONNX_INPUT: as_batch(image)[:1, None]})
        return {name: out[0] for name, out in zip(names, outputs)}

    # filters
    def filter_gradient_fn(self, layer: str) -> GradientFn:
        session = self._session(filters_path(self.model_path, self.layer(layer)["name"]))

        def run(images: np.ndarray, index: np.ndarray):
            activation, grad = session.run([ACTIVATION, GRADIENT], {ONNX_INPUT: as_batch(images)[:, None], FILTER_INDEX: np.asarray(index, np.int64)})
            return activation, grad[:, 0]

        return run

    def visualise_filters(self, layer: str, config: AscentConfig | None = None, filters=None, snapshots=(), progress=None,
                          should_stop=None) -> list[AscentResult]:
        """Gradient ascent for ``filters`` (default: all) of ``layer``; see :func:`ascend`."""
        info = self.layer(layer)
        index = np.arange(info["channels"]) if filters is None else np.asarray(filters, np.int64)
        return ascend(self.filter_gradient_fn(info["name"]), index, config, snapshots, progress, should_stop)
