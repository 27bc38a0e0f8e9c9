"""Grad-CAM's inputs by torch autograd: the reference that ``<stem>.gradcam.onnx`` is checked against, and Grad-CAM
for a model in memory (the sanity checks' randomised models). The map itself is the runtime's
:func:`fer_runtime.explain.gradcam_map`, one implementation for both backends."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fer_runtime import explain as rt

from .backward import GradCam, LayerInfo, cam_layers


def torch_cam_inputs(model: nn.Module, images: np.ndarray, class_index: np.ndarray,
                     layers: list[LayerInfo] | None = None) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``(logits (N, K), {layer: (A, dA)})`` by autograd, in the model's precision, for the layers
    :class:`~fer_train.explain.backward.GradCam` taps (default :func:`cam_layers`)."""
    model.eval()
    layers = layers or cam_layers(model)
    cam = GradCam(model, layers)
    taps, modules = cam.taps, dict(model.named_modules())
    captured: dict[int, torch.Tensor] = {}  # tap → the tapped layer's output, in the autograd graph
    handles = [modules[cam.steps[tap].name].register_forward_hook(lambda _m, _i, out, tap=tap: captured.__setitem__(tap, out))
               for tap in taps]
    dtype = next(model.parameters()).dtype
    try:
        x = torch.from_numpy(np.ascontiguousarray(rt.as_batch(images)[:, None])).to(dtype)
        logits = model(x)
        chosen = logits.gather(1, torch.as_tensor(np.asarray(class_index, np.int64))[:, None])[:, 0]
        grads = torch.autograd.grad(chosen.sum(), [captured[t] for t in taps])
    finally:
        for handle in handles:
            handle.remove()
    out = {info.name: (captured[tap].detach().numpy(), g.numpy()) for info, tap, g in zip(layers, taps, grads)}
    return logits.detach().numpy(), out


def torch_gradcam(model: nn.Module, images: np.ndarray, class_index: np.ndarray, layer: str | None = None) -> np.ndarray:
    """Grad-CAM maps (N, 48, 48) of a torch model for ``layer`` (default: the last conv layer)."""
    layers = cam_layers(model)
    info = next((i for i in layers if i.name == layer), layers[-1]) if layer else layers[-1]
    _, cams = torch_cam_inputs(model, images, class_index, [info])
    return rt.gradcam_map(*cams[info.name], window=info.window)
