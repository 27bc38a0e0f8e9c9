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
from ..contract import (ACTIVATION, CAM_ACTIVATION_PREFIX, CAM_GRADIENT_PREFIX, CLASS_INDEX, CLASS_NAMES, FILTER_INDEX, GRADIENT,
                        META_CAM_LAYERS, META_CLASS_NAMES, META_LAYERS, ONNX_INPUT, ONNX_OUTPUT)
from ..metrics import softmax
from .ascent import AscentConfig, AscentResult, ascend
from .companions import filters_path, gradcam_path, gradient_path, layers_path
from .faithfulness import FaceFaithfulness, face_faithfulness
from .images import as_batch, normalise_map
from .methods import AUTO_ORDER, FACE_METHODS, METHODS, CamFn, Method, method_maps
from .saliency import GradientFn, LogitsFn, smoothgrad


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


@dataclass
class FaceSaliency:
    """One face's saliency map for one class, ready to draw."""

    values: np.ndarray  # float32 (48, 48) in 0..1 by normalise_map; larger = more important for the class
    method: str  # a name of METHODS
    class_index: int  # the class explained
    probs: np.ndarray  # float32 (K,): the model's probabilities for the whole face
    forward_passes: int  # images run through the model or its companion graphs
    seconds: float
    detail: str  # how it was made, in words
    faithfulness: FaceFaithfulness | None = None  # the map's deletion and insertion scores on this face


@dataclass
class Explainer:
    """The companions of one model file, opened lazily with onnxruntime.

    >>> ex = Explainer("exported/cnn.onnx")
    >>> sal = ex.saliency(face)                 # predicted class; sal.map is (1, 48, 48)
    >>> shown = ex.face_saliency(face)          # normalised map, probabilities, method, faithfulness (the TUI's)
    >>> cams = ex.maps("gradcam", faces, 3)     # Grad-CAM of the last conv layer for Happy, (N, 48, 48)
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
            expected = {gradient_path(self.model_path): ({ONNX_INPUT, CLASS_INDEX}, {ONNX_OUTPUT, GRADIENT}),
                        gradcam_path(self.model_path): ({ONNX_INPUT, CLASS_INDEX}, {ONNX_OUTPUT})}.get(path)
            if expected is not None:
                inputs, outputs = {i.name for i in session.get_inputs()}, {o.name for o in session.get_outputs()}
                if not (expected[0] <= inputs and expected[1] <= outputs):
                    self._failed[path] = (f"{path}: expected inputs {sorted(expected[0])} and outputs {sorted(expected[1])}; "
                                          f"found inputs {sorted(inputs)} and outputs {sorted(outputs)}")
                    raise ExplainError(self._failed[path])
            self._sessions[path] = session
        return self._sessions[path]

    def _problem(self, path: Path, what: str) -> str | None:
        if not path.is_file():
            return f"no {what} graph {path.name} beside {self.model_path.name}"
        try:
            self._session(path)
        except ExplainError as exc:
            return str(exc)
        return None

    @property
    def gradient_problem(self) -> str | None:
        """Why the gradient graph cannot be used (missing, unloadable, not the contract), or None when it can."""
        return self._problem(gradient_path(self.model_path), "gradient")

    @property
    def gradcam_problem(self) -> str | None:
        """Why the Grad-CAM graph cannot be used, or None when it can."""
        return self._problem(gradcam_path(self.model_path), "Grad-CAM")

    def method_problem(self, method: str | Method) -> str | None:
        """Why ``method`` (a name of :data:`METHODS` or a :class:`Method`) cannot run for this model, or None when it can."""
        needs = (METHODS[method] if isinstance(method, str) else method).needs
        return self.gradcam_problem if needs == "gradcam" else self.gradient_problem if needs == "gradient" else None

    @property
    def cam_layers(self) -> list[dict]:
        """The Grad-CAM graph's layers (``name`` … ``role``: middle or last), from its metadata."""
        meta = self._session(gradcam_path(self.model_path)).get_modelmeta().custom_metadata_map
        return json.loads(meta.get(META_CAM_LAYERS, "[]"))

    @property
    def cam_window(self) -> tuple[int, int] | None:
        """The square (offset, side) of the face the Grad-CAM layers see; None for the whole face (and older files)."""
        windows = {tuple(info["window"]) for info in self.cam_layers if "window" in info}
        return windows.pop() if len(windows) == 1 else None

    def cam_fn(self) -> CamFn:
        """``(images, classes, role) → (feature maps, gradients)`` of the ``role`` (middle or last) conv layer from
        ``<stem>.gradcam.onnx``: what :func:`gradcam_map` turns into Grad-CAM."""
        session = self._session(gradcam_path(self.model_path))
        by_role = {info.get("role"): info["name"] for info in self.cam_layers}

        def run(images: np.ndarray, index: np.ndarray, role: str):
            if role not in by_role:
                raise ExplainError(f"{gradcam_path(self.model_path)}: no {role} layer (has {', '.join(map(str, by_role))})")
            names = [CAM_ACTIVATION_PREFIX + by_role[role], CAM_GRADIENT_PREFIX + by_role[role]]
            return tuple(session.run(names, {ONNX_INPUT: as_batch(images)[:, None], CLASS_INDEX: np.asarray(index, np.int64)}))

        return run

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

    def maps(self, method: str | Method, images: np.ndarray, class_index, logits_fn: LogitsFn | None = None) -> np.ndarray:
        """:func:`method_maps` with this model's companions behind it; ``method`` a name of :data:`METHODS` (at its
        settings) or a :class:`Method`. Raises :class:`ExplainError` when the method's companion cannot be used."""
        m = METHODS[method] if isinstance(method, str) else method
        problem = self.method_problem(m)
        if problem is not None:
            raise ExplainError(problem)
        needs = m.needs
        return method_maps(m, images, class_index, logits_fn=logits_fn or self.logits,
                           gradient_fn=self.gradient_fn() if needs == "gradient" else None,
                           cam_fn=self.cam_fn() if needs == "gradcam" else None,
                           cam_window=self.cam_window if needs == "gradcam" else None)

    def resolve(self, method: str) -> str:
        """``auto`` → the first method of :data:`AUTO_ORDER` that can run for this model; any other name as it is."""
        if method not in FACE_METHODS:
            raise ValueError(f"method must be one of {', '.join(FACE_METHODS)}, got {method!r}")
        if method != "auto":
            return method
        return next(m for m in AUTO_ORDER if self.method_problem(m) is None)

    def face_saliency(self, image: np.ndarray, class_index: int | None = None, method: str = "auto",
                      logits_fn: LogitsFn | None = None, clock: Callable[[], float] = time.perf_counter,
                      faithfulness: bool = True) -> FaceSaliency:
        """One face's map for ``class_index`` (None: the predicted class), normalised by :func:`normalise_map`,
        and (``faithfulness``) its deletion and insertion scores on this face (:func:`face_faithfulness`).

        ``method``: one of :data:`FACE_METHODS`. ``logits_fn`` runs the model itself (default :meth:`logits`;
        pass an open classifier's to avoid a second session): the probabilities always come from the model,
        also for a variant whose companions are its base model's. :class:`ExplainError` when the method's
        companion cannot be used (``auto`` falls back along :data:`AUTO_ORDER` instead).
        """
        name = self.resolve(method)
        logits_fn = logits_fn or self.logits
        start = clock()
        face = as_batch(image)[:1]
        probs = softmax(np.asarray(logits_fn(face), np.float64))[0]
        target = int(probs.argmax()) if class_index is None else int(class_index)
        values = self.maps(name, face, target, logits_fn)
        m = METHODS[name]
        score = face_faithfulness(logits_fn, face[0], values[0], target) if faithfulness else None
        return FaceSaliency(normalise_map(values[0]), name, target, probs.astype(np.float32), m.passes, clock() - start,
                            f"{m.describe()}; {m.passes} passes", score)

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
