"""Input gradients written with forward operators only, so that the ordinary ONNX exporter translates them: the
graphs that get exported beside a model.

    InputGradient     (image, class) → (logits, d logit[class] / d image): saliency
    FilterGradient    (image, filter) → (mean activation of a conv filter, its gradient): filter pictures
    LayerOutputs      image → every conv layer's output
    GradCam           (image, class) → (logits, feature maps and their gradients of the Grad-CAM layers)

Each runs the model's :class:`~.layer_steps.Step` chain (:mod:`.layer_steps`: every layer paired with its backward
pass in forward operators, since torch's ONNX exporters stop at backward operators) forward, then back.
"""

from __future__ import annotations

import torch
from torch import nn

from .layer_steps import (ElementPReLUStep, LayerInfo, PReLUStep, ReLUStep, UnsupportedModelError, build_steps, conv_layer_infos,
                          layer_chain, resolve_layer)

__all__ = ["ACTIVATION_STEPS", "FilterGradient", "GradCam", "InputGradient", "LayerInfo", "LayerOutputs", "UnsupportedModelError",
           "build_steps", "cam_layers", "conv_layer_infos", "layer_chain", "resolve_layer"]  # the chain's names too, as before the split


def _forward(steps: nn.ModuleList, x: torch.Tensor):
    saved = []
    for step in steps:
        x, keep = step.run(x)
        saved.append(keep)
    return x, saved


def _backward(steps: nn.ModuleList, saved: list, g: torch.Tensor) -> torch.Tensor:
    for step, keep in zip(reversed(steps), reversed(saved)):
        g = step.back(g, keep)
    return g


# -- the graphs that get exported -----------------------------------------------------------------------

class InputGradient(nn.Module):
    """``(image, class_index) → (logits, d logits[n, class_index[n]] / d image[n])``, no autograd inside."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.steps = build_steps(model)
        self.num_classes = self.steps[-1].out_shape[-1]

    def forward(self, image: torch.Tensor, class_index: torch.Tensor):
        logits, saved = _forward(self.steps, image)  # (N, K)
        classes = torch.arange(self.num_classes, device=image.device)
        seed = (classes[None, :] == class_index[:, None]).to(logits.dtype)  # one-hot (N, K)
        return logits, _backward(self.steps, saved, seed)  # (N, 1, 48, 48)


class FilterGradient(nn.Module):
    """``(image, filter_index) → (activation, gradient)`` for one conv layer.

    ``activation[n]`` is the mean over positions of the layer's output channel ``filter_index[n]`` for
    image ``n`` (the conv output, before its activation function), ``gradient[n]`` its gradient with
    respect to the raw pixels. Only the layers up to this one are in the graph.
    """

    def __init__(self, model: nn.Module, layer: str):
        super().__init__()
        self.info = resolve_layer(model, layer)
        self.steps = build_steps(model, until=self.info.module)

    def forward(self, image: torch.Tensor, filter_index: torch.Tensor):
        out, saved = _forward(self.steps, image)  # (N, C, H, W)
        channels = torch.arange(self.info.channels, device=image.device)
        pick = (channels[None, :] == filter_index[:, None]).to(out.dtype)  # one-hot (N, C)
        activation = (out.mean(dim=(2, 3)) * pick).sum(dim=1)  # (N,)
        seed = pick[:, :, None, None].expand(-1, -1, self.info.height, self.info.width) / (self.info.height * self.info.width)
        return activation, _backward(self.steps, saved, seed)


class LayerOutputs(nn.Module):
    """``image → (conv1, conv2, …)``: every conv layer's output (N, C, H, W), before its activation."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.infos = conv_layer_infos(model)
        if not self.infos:
            raise UnsupportedModelError(f"{type(model).__name__} has no conv layers")
        self.steps = build_steps(model, until=self.infos[-1].module)
        self.taps = [i for i, s in enumerate(self.steps) if isinstance(s.layer, nn.Conv2d)]

    def forward(self, image: torch.Tensor):
        outputs, x = [], image
        for i, step in enumerate(self.steps):
            x = step.layer(x)
            if i in self.taps:
                outputs.append(x)
        return tuple(outputs)


ACTIVATION_STEPS = (ReLUStep, PReLUStep, ElementPReLUStep)


def cam_layers(model: nn.Module) -> list[LayerInfo]:
    """The conv layers Grad-CAM is exported for: the middle one (``conv{ceil(L/2)}``) and the last one."""
    infos = conv_layer_infos(model)
    if not infos:
        raise UnsupportedModelError(f"{type(model).__name__} has no conv layers: Grad-CAM needs feature maps")
    middle, last = infos[(len(infos) - 1) // 2], infos[-1]
    return [middle, last] if middle != last else [last]


class GradCam(nn.Module):
    """``(image, class_index) → (logits, A₁, dA₁, A₂, dA₂, …)`` for the conv layers ``layers``: each layer's
    feature maps ``A`` (N, C, H, W) after its activation function (the conv's output when none follows) and
    the gradient of the class's logit with respect to them. Grad-CAM (Selvaraju et al. 2017) is then
    ``relu(Σ_c mean_hw(dA_c) · A_c)``, computed by the runtime; the backward pass stops at the earliest layer.
    """

    def __init__(self, model: nn.Module, layers: list[LayerInfo]):
        super().__init__()
        self.infos = list(layers)
        self.steps = build_steps(model)
        self.num_classes = self.steps[-1].out_shape[-1]
        names = [s.name for s in self.steps]
        self.taps = []
        for info in self.infos:
            i = names.index(info.module)
            follows = i + 1 < len(self.steps) and isinstance(self.steps[i + 1], ACTIVATION_STEPS)
            self.taps.append(i + 1 if follows else i)

    def forward(self, image: torch.Tensor, class_index: torch.Tensor):
        x, saved, outputs = image, [], []
        for step in self.steps:
            x, keep = step.run(x)
            saved.append(keep)
            outputs.append(x)
        classes = torch.arange(self.num_classes, device=image.device)
        g = (classes[None, :] == class_index[:, None]).to(x.dtype)  # one-hot (N, K): d logit[class] / d logits
        grads = {}
        for i in range(len(self.steps) - 1, min(self.taps) - 1, -1):
            grads[i] = g  # d logit[class] / d (output of step i)
            if i > min(self.taps):
                g = self.steps[i].back(g, saved[i])
        result = [x]
        for tap in self.taps:
            result += [outputs[tap], grads[tap]]
        return tuple(result)
