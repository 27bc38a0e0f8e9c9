"""The saliency methods a face's map can be made by, with their settings, and the default among them.

The default was chosen by faithfulness (deletion and insertion curves on 150 validation faces of every shipped
model, grey and blur removal: ``benchmarks/explain_faithfulness.py``, numbers in docs/explanations.md), by the
sanity checks (``benchmarks/explain_sanity.py``: the map must change when the model does) and by speed (a new
face's map within half a second on two cores, for the TUI). Occlusion was the most faithful map of every shipped
model under both removals and passes the checks; its 12-pixel patch was as faithful as the 8-pixel one on the
sweep's faces at 51 passes instead of 123.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..contract import IMAGE_SIZE
from .gradcam import gradcam_map
from .images import as_batch, gaussian_blur
from .saliency import GradientFn, LogitsFn, integrated_gradients, occlusion, smoothgrad


@dataclass(frozen=True)
class Method:
    """One way to make a map, and its settings. The map is blurred by ``smooth`` before it is ranked or shown:
    pixel-wise gradients are speckle, which a reader (and the insertion curve) takes in better as regions."""

    name: str  # gradient, smoothgrad, integrated, occlusion, gradcam or gradcam-middle
    samples: int = 0  # SmoothGrad's noisy copies; integrated gradients' steps
    noise: float = 0.0  # SmoothGrad's noise, a fraction of the pixel range
    patch: int = 0  # occlusion's square, pixels …
    stride: int = 0  # … and how far it moves
    smooth: float = 0.0  # blur of the map, σ in pixels

    @property
    def needs(self) -> str:
        """The companion the method reads: ``gradient`` (the input gradient graph), ``gradcam`` or ``model``."""
        return "gradcam" if self.name.startswith("gradcam") else "model" if self.name == "occlusion" else "gradient"

    @property
    def passes(self) -> int:
        """Images run through the model or a companion for one face's map (the model's own pass included)."""
        if self.name == "occlusion":
            return 2 + len(range(0, IMAGE_SIZE - self.patch + 1, self.stride)) ** 2
        return 1 + (self.samples if self.name in ("smoothgrad", "integrated") else 1)

    def with_(self, **changes) -> "Method":
        return replace(self, **changes)

    def describe(self) -> str:
        smooth = f", blurred σ {self.smooth:g} px" if self.smooth else ""
        what = {
            "gradient": "|d logit / d pixel|",
            "smoothgrad": f"|mean gradient| of {self.samples} noisy copies (σ {self.noise:.0%} of the range)",
            "integrated": f"|integrated gradients| from black, {self.samples} steps",
            "occlusion": f"probability drop under a {self.patch}×{self.patch} px patch of the face's mean grey, stride {self.stride}",
            "gradcam": "Grad-CAM of the last conv layer",
            "gradcam-middle": "Grad-CAM of the middle conv layer",
        }[self.name]
        return what + smooth


# Every method offered, at its chosen settings (the sweeps behind them are in docs/explanations.md).
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("occlusion", patch=12, stride=6),
    Method("gradcam"),
    Method("gradcam-middle"),
    Method("smoothgrad", samples=25, noise=0.15, smooth=1.0),
    Method("gradient", smooth=1.5),
)}
# Measured beside them but not offered: integrated gradients is less faithful than SmoothGrad on every shipped model
# and fails the randomised-weights check (its map is mostly the face times a gradient).
MEASURED_ONLY: dict[str, Method] = {"integrated": Method("integrated", samples=16, smooth=1.5)}
DEFAULT_METHOD = "occlusion"
# "auto": the first that can run for the model (occlusion always can: it needs the model alone).
AUTO_ORDER = ("occlusion",)
FACE_METHODS = ("auto",) + tuple(METHODS)


# (images (n, 48, 48), classes (n,), role "middle" or "last") → (feature maps, their gradients), both (n, C, h, w)
CamFn = Callable[[np.ndarray, np.ndarray, str], tuple[np.ndarray, np.ndarray]]


def method_maps(method: Method, images: np.ndarray, class_index, *, gradient_fn: GradientFn | None = None,
                logits_fn: LogitsFn | None = None, cam_fn: CamFn | None = None,
                cam_window: tuple[int, int] | None = None) -> np.ndarray:
    """Non-negative maps (N, 48, 48) by ``method`` for ``class_index`` (one class or one per face), blurred by its
    ``smooth``: what is ranked by the faithfulness curves and, normalised, shown. Backend-free: onnxruntime's
    companions (:meth:`Explainer.maps`) or torch autograd (the sanity checks) sit behind the functions; each
    method needs one of them (:attr:`Method.needs`). ``cam_window``: the square of the face a model trained on crops
    sees, where Grad-CAM's map goes (:func:`gradcam_map`)."""
    x = as_batch(images)
    classes = np.broadcast_to(np.asarray(class_index, np.int64), (len(x),)).copy()
    if method.name == "occlusion":
        values = np.clip(occlusion(logits_fn, x, classes, patch=method.patch, stride=method.stride), 0, None)
    elif method.name in ("gradcam", "gradcam-middle"):
        role = "middle" if method.name == "gradcam-middle" else "last"
        values = np.concatenate([gradcam_map(*cam_fn(x[i:i + 64], classes[i:i + 64], role), window=cam_window) for i in range(0, len(x), 64)])
    elif method.name == "gradient":
        values = np.abs(gradient_fn(x, classes)[1])
    elif method.name == "smoothgrad":
        values = np.abs(smoothgrad(gradient_fn, x, classes, samples=method.samples, noise=method.noise))
    elif method.name == "integrated":
        values = np.abs(integrated_gradients(gradient_fn, x, classes, steps=method.samples))
    else:
        raise ValueError(f"unknown saliency method {method.name!r}; choose from {', '.join(METHODS)}")
    return gaussian_blur(values, method.smooth) if method.smooth else np.asarray(values, np.float32)
