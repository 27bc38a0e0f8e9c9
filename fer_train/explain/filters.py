"""What the conv filters respond to, in torch: gradient ascent from noise, and a layer's feature maps.

The ascent loop is :func:`fer_runtime.explain.ascend` (numpy), the same one the TUI runs on the
ONNX filter graphs; here autograd supplies the gradient. A filter's activation is the mean over positions
of its channel of the conv layer's output (the Conv2d's output, before its activation function).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fer_runtime import explain as rt
from .backward import LayerInfo, conv_layer_infos, layer_chain, resolve_layer


def trunk(model: nn.Module, layer: str) -> tuple[LayerInfo, nn.Sequential]:
    """The model's layers up to and including the conv layer ``layer`` (``conv2``, ``2`` or ``features.4``)."""
    info = resolve_layer(model, layer)
    chain = layer_chain(model)
    names = [name for name, _ in chain]
    return info, nn.Sequential(*[m for _, m in chain[:names.index(info.module) + 1]]).eval()


def torch_filter_gradient_fn(model: nn.Module, layer: str, batch_size: int = 256) -> rt.GradientFn:
    """``(images, filter_index) → (mean activation of that filter, its gradient with respect to the pixels)``,
    in the model's precision (a float64 copy gives the exact reference the ONNX checks compare with)."""
    info, net = trunk(model, layer)
    dtype = next(model.parameters()).dtype

    def run(images: np.ndarray, index: np.ndarray):
        x_all = rt.as_batch(images)
        idx_all = torch.as_tensor(np.asarray(index, np.int64))
        if len(idx_all) and (int(idx_all.min()) < 0 or int(idx_all.max()) >= info.channels):
            raise IndexError(f"{info.name} has {info.channels} filters; got filter indices {int(idx_all.min())}..{int(idx_all.max())}")
        acts, grads = [], []
        for i in range(0, len(x_all), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(x_all[i:i + batch_size, None])).to(dtype).requires_grad_(True)
            out = net(x)  # (n, C, H, W)
            idx = idx_all[i:i + batch_size]
            activation = out[torch.arange(len(idx)), idx].mean(dim=(1, 2))  # (n,)
            (grad,) = torch.autograd.grad(activation.sum(), x)
            acts.append(activation.detach().numpy())
            grads.append(grad[:, 0].numpy())
        return np.concatenate(acts), np.concatenate(grads)

    return run


def visualise_filters(model: nn.Module, layer: str, config: rt.AscentConfig | None = None, filters=None, snapshots=(),
                      progress=None) -> list[rt.AscentResult]:
    """Gradient ascent for ``filters`` (default: all) of ``layer``; results at each snapshot step and the last."""
    info = resolve_layer(model, layer)
    index = np.arange(info.channels) if filters is None else np.asarray(filters, np.int64)
    return rt.ascend(torch_filter_gradient_fn(model, info.name), index, config, snapshots, progress)


def torch_layer_outputs(model: nn.Module, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every conv layer's output for a batch: ``conv1`` … → (N, C, H, W)."""
    infos = conv_layer_infos(model)
    by_module = {info.module: info.name for info in infos}
    modules = dict(model.named_modules())
    outputs: dict[str, np.ndarray] = {}
    hooks = [modules[m].register_forward_hook(lambda mod, inp, out, name=name: outputs.__setitem__(name, out.detach().numpy()))
             for m, name in by_module.items()]
    try:
        with torch.no_grad():
            model.eval()(torch.from_numpy(np.ascontiguousarray(rt.as_batch(images)[:, None])))
    finally:
        for hook in hooks:
            hook.remove()
    return {info.name: outputs[info.name] for info in infos}


def layer_outputs(model: nn.Module, image: np.ndarray, layer: str) -> np.ndarray:
    """The feature maps (C, H, W) of one conv layer for one image."""
    info = resolve_layer(model, layer)
    return torch_layer_outputs(model, rt.as_batch(image)[:1])[info.name][0]
