"""Where the model looks, in torch: every method of :data:`fer_runtime.explain.METHODS` (the input gradient, the
study's method; SmoothGrad, occlusion, Grad-CAM) and those measured beside them (integrated gradients).

The gradient is taken with respect to the raw pixels (0..255), of a class's logit. The maps are the numpy code
of :func:`fer_runtime.explain.methods.method_maps` with torch autograd behind it, so the TUI's onnxruntime maps
and these are the same number for number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fer_runtime import explain as rt
from fer_runtime.explain.methods import method_maps
from fer_runtime.metrics import softmax

from .backward import UnsupportedModelError, cam_layers
from .gradcam import torch_cam_inputs

METHODS = tuple(rt.METHODS)


def torch_gradient_fn(model: nn.Module, batch_size: int = 256) -> rt.GradientFn:
    """``(images, class_index) → (logit of that class, d logit / d pixels)`` by autograd, in the model's precision
    (a float64 copy gives the exact reference the ONNX checks compare with)."""
    model.eval()
    dtype = next(model.parameters()).dtype

    def run(images: np.ndarray, index: np.ndarray):
        x_all = rt.as_batch(images)
        idx_all = torch.as_tensor(np.asarray(index, np.int64))
        scores, grads = [], []
        for i in range(0, len(x_all), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(x_all[i:i + batch_size, None])).to(dtype).requires_grad_(True)
            chosen = model(x).gather(1, idx_all[i:i + batch_size, None])[:, 0]  # (n,)
            (grad,) = torch.autograd.grad(chosen.sum(), x)  # images are independent: the sum's gradient is each one's
            scores.append(chosen.detach().numpy())
            grads.append(grad[:, 0].numpy())
        return np.concatenate(scores), np.concatenate(grads)

    return run


def torch_logits_fn(model: nn.Module) -> rt.LogitsFn:
    model.eval()

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(rt.as_batch(images)[:, None]))).numpy()

    return run


def predict(model: nn.Module, images: np.ndarray) -> np.ndarray:
    return torch_logits_fn(model)(images)


def _classes(model: nn.Module, images: np.ndarray, class_index) -> np.ndarray:
    if class_index is None:
        return predict(model, images).argmax(axis=1)
    return np.broadcast_to(np.asarray(class_index, np.int64), (len(images),)).copy()


def input_gradient(model: nn.Module, images: np.ndarray, class_index=None) -> rt.SaliencyResult:
    """The gradient of the class's logit with respect to the pixels, for one image or a batch.

    ``class_index``: one class for all, one per image, or None for each image's predicted class.
    """
    x = rt.as_batch(images)
    classes = _classes(model, x, class_index)
    _, grad = torch_gradient_fn(model)(x, classes)
    return rt.SaliencyResult(predict(model, x), classes, grad)


def smoothgrad(model: nn.Module, images: np.ndarray, class_index=None, samples: int = 25, noise: float = 0.15, seed: int = 0) -> np.ndarray:
    """SmoothGrad's signed mean gradient (N, 48, 48); see :func:`fer_runtime.explain.smoothgrad`."""
    x = rt.as_batch(images)
    return rt.smoothgrad(torch_gradient_fn(model), x, _classes(model, x, class_index), samples=samples, noise=noise, seed=seed)


def occlusion(model: nn.Module, images: np.ndarray, class_index=None, patch: int = 8, stride: int = 4, fill: float | None = None) -> np.ndarray:
    """The drop of the class's probability when each region is hidden (N, 48, 48)."""
    x = rt.as_batch(images)
    return rt.occlusion(torch_logits_fn(model), x, _classes(model, x, class_index), patch=patch, stride=stride, fill=fill)


@dataclass
class SaliencyMaps:
    """Maps of several methods for the same images and classes; every map is non-negative, (N, 48, 48)."""

    images: np.ndarray  # uint8 (N, 48, 48)
    class_index: np.ndarray
    logits: np.ndarray
    maps: dict[str, np.ndarray]

    @property
    def probabilities(self) -> np.ndarray:
        return softmax(self.logits)


def torch_cam_fn(model: nn.Module):
    """:data:`~fer_runtime.explain.methods.CamFn` by autograd, for the layers the Grad-CAM graph would tap."""
    layers = cam_layers(model)
    by_role = dict(zip(["middle", "last"][-len(layers):], layers))

    def run(images: np.ndarray, index: np.ndarray, role: str):
        _, cams = torch_cam_inputs(model, images, index, [by_role[role]])
        return cams[by_role[role].name]

    return run


def torch_maps(model: nn.Module, method: rt.Method | str, images: np.ndarray, class_index) -> np.ndarray:
    """``method``'s maps (N, 48, 48) of a torch model (a plain chain in eval mode for Grad-CAM, e.g.
    ``deployable(model)``); :class:`UnsupportedModelError` for Grad-CAM of a model without conv layers."""
    known = {**rt.METHODS, **rt.MEASURED_ONLY}
    if isinstance(method, str) and method not in known:
        raise ValueError(f"unknown saliency method {method!r}; choose from {', '.join(known)}")
    method = known[method] if isinstance(method, str) else method
    needs = method.needs
    return method_maps(method, images, class_index, logits_fn=torch_logits_fn(model),
                       gradient_fn=torch_gradient_fn(model) if needs == "gradient" else None,
                       cam_fn=torch_cam_fn(model) if needs == "gradcam" else None,
                       cam_window=cam_layers(model)[-1].window if needs == "gradcam" else None)


def saliency_maps(model: nn.Module, images: np.ndarray, class_index=None, methods=METHODS, progress=None) -> SaliencyMaps:
    """Each method's map of the same images (methods a model cannot run, Grad-CAM without conv layers, are left
    out); ``progress(method)`` after each method."""
    x = rt.as_batch(images)
    result = input_gradient(model, x, class_index)
    maps = {}
    for method in methods:
        try:
            maps[method] = torch_maps(model, method, x, result.class_index)
        except UnsupportedModelError:
            pass
        if progress is not None:
            progress(method)
    return SaliencyMaps(np.clip(x, 0, 255).astype(np.uint8), result.class_index, result.logits, maps)
