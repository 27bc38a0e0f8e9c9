"""A model as a chain of layers, each paired with its backward pass written in forward operators only, so that
the ordinary ONNX exporter translates the gradient graphs made of them (:mod:`.backward`).

torch's ONNX exporters stop at backward operators (``convolution_backward``, ``avg_pool2d_backward`` and
``max_pool2d_with_indices_backward`` have no ONNX translation). Rather than write custom translations of
those aten operators (private exporter hooks, one per operator and per exporter, to be kept in step with
torch), every layer here pairs its forward pass with its backward pass spelled in forward operators:

    layer                    gradient of the input from the gradient g of the output
    Conv2d                   conv_transpose2d(g, the same weights)                    → ONNX ConvTranspose
    Linear                   g @ W                                                    → MatMul
    ElementPReLU             g · ([x ≥ 0] + w·[x ≤ 0])  (autograd's clamp rule: both   → Cast, Mul, Add
                             branches pass at x = 0, so ties match exactly)
    ReLU / PReLU             g · [x > 0]  /  g · ([x > 0] + w·[x ≤ 0])
    MaxPool2d                scatter-add of g at the forward's argmax indices         → MaxPool indices, ScatterElements(add)
                             (MaxUnpool would overwrite where 5×5 windows of stride 2 overlap; autograd adds)
    AvgPool2d                conv_transpose2d(g, constant 1/k² kernel, groups=C)       → ConvTranspose
    ZeroPad2d                slicing the padding off                                   → Slice
    CentreCrop               zero padding back to the 48-pixel face                    → Pad
    Flatten / Dropout        reshape / identity (eval mode)
    PixelScale               g / (255 · std)

Each :class:`Step` is an ``nn.Module`` like any other: tested against autograd in torch first, exported by the same
exporter as the model, run by the same onnxruntime kernels. The model must be a plain chain of these layers
(found by tracing it with ``torch.fx``); anything else fails with :class:`UnsupportedModelError` naming
the layer or operation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fer_runtime.contract import IMAGE_SIZE
from ..models import CentreCrop, ElementPReLU, PixelScale


class UnsupportedModelError(ValueError):
    """The model cannot get a hand-written backward pass; the message names the layer and why."""


@dataclass(frozen=True)
class LayerInfo:
    """A conv layer as the explanation graphs name it: ``conv1`` … in forward order."""

    name: str  # "conv2"
    module: str  # qualified name in the model, "features.4"
    channels: int
    height: int
    width: int
    # the square of the 48-pixel face the layer sees, (offset, side): (4, 40) for a model that centre-crops to 40 (--crop)
    window: tuple[int, int] = (0, IMAGE_SIZE)

    def to_dict(self) -> dict:
        return {"name": self.name, "module": self.module, "channels": self.channels, "height": self.height, "width": self.width,
                "window": list(self.window)}


# -- the chain of layers ------------------------------------------------------------------------------

def _leaf_types() -> tuple[type, ...]:
    return tuple(STEP_TYPES)


def layer_chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's layers in the order its ``forward`` applies them, each to the previous one's output.

    Traced with ``torch.fx`` so that the order is the one ``forward`` really uses, not the order of
    registration. Raises :class:`UnsupportedModelError` for branches, functional calls or unknown layers.
    """
    leaves = _leaf_types()

    class Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, leaves) or super().is_leaf_module(m, qualname)

    kind = type(model).__name__
    try:
        graph = Tracer().trace(model)
    except Exception as exc:  # torch.fx raises many kinds (TraceError, TypeError …)
        raise UnsupportedModelError(f"{kind}: cannot trace its forward into a chain of layers ({exc})") from exc
    modules = dict(model.named_modules())
    chain: list[tuple[str, nn.Module]] = []
    previous = None
    for node in graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                raise UnsupportedModelError(f"{kind}: forward takes more than one input")
            previous = node
        elif node.op == "call_module":
            layer = modules[node.target]
            if not isinstance(layer, leaves):
                names = ", ".join(sorted(t.__name__ for t in leaves))
                raise UnsupportedModelError(f"{kind}: layer {node.target!r} ({type(layer).__name__}) has no hand-written backward; supported: {names}")
            if list(node.args) != [previous] or node.kwargs:
                raise UnsupportedModelError(f"{kind}: layer {node.target!r} does not take the previous layer's output alone; only plain chains are supported")
            chain.append((node.target, layer))
            previous = node
        elif node.op == "output":
            if node.args[0] is not previous:
                raise UnsupportedModelError(f"{kind}: forward does not return its last layer's output")
        elif node.op == "get_attr":
            raise UnsupportedModelError(f"{kind}: forward reads the tensor {node.target!r} directly; only plain chains of layers are supported")
        else:
            raise UnsupportedModelError(f"{kind}: forward applies {node.op} {getattr(node.target, '__name__', node.target)!r} "
                                        "between layers; only plain chains of layers are supported")
    if not chain:
        raise UnsupportedModelError(f"{kind}: no layers found")
    return chain


# -- one step per layer: forward (keeping what the backward needs) and backward ----------------------

class Step(nn.Module):
    """A layer and its backward. ``in_shape``/``out_shape`` are per-image shapes (no batch axis)."""

    def __init__(self, name: str, layer: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
        super().__init__()
        self.name, self.layer = name, layer
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)

    def run(self, x: torch.Tensor):
        """The layer's output and what :meth:`back` needs (the input, by default)."""
        return self.layer(x), x

    def back(self, g: torch.Tensor, saved) -> torch.Tensor:  # pragma: no cover - every step overrides it
        raise NotImplementedError


class ScaleStep(Step):
    def back(self, g, saved):
        return g / (255.0 * self.layer.std)


class IdentityStep(Step):
    def back(self, g, saved):
        return g


class FlattenStep(Step):
    def back(self, g, saved):
        return g.reshape((-1,) + self.in_shape)


class LinearStep(Step):
    def back(self, g, saved):
        return g.matmul(self.layer.weight)


class ElementPReLUStep(Step):
    def back(self, g, x):
        # clamp's backward passes the gradient where x >= min (and x <= max), so at x == 0 both terms do.
        return g * ((x >= 0).to(g.dtype) + self.layer.weight * (x <= 0).to(g.dtype))


class ReLUStep(Step):
    def back(self, g, x):
        return g * (x > 0).to(g.dtype)


class PReLUStep(Step):
    def back(self, g, x):
        w = self.layer.weight
        if w.numel() > 1 and x.dim() == 4:
            w = w.reshape(-1, 1, 1)
        return g * ((x > 0).to(g.dtype) + w * (x <= 0).to(g.dtype))


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _output_padding(size_in: int, size_out: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Rows the transposed convolution must add so that its output has the forward input's size."""
    return size_in - ((size_out - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1)


class ConvStep(Step):
    def __init__(self, name, layer: nn.Conv2d, in_shape, out_shape):
        super().__init__(name, layer, in_shape, out_shape)
        if layer.padding_mode != "zeros":
            raise UnsupportedModelError(f"layer {name!r}: Conv2d with padding_mode={layer.padding_mode!r}; only 'zeros' is supported")
        padding = layer.padding
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            if any((d * (k - 1)) % 2 for k, d in zip(layer.kernel_size, layer.dilation)):
                raise UnsupportedModelError(f"layer {name!r}: Conv2d padding='same' with an even kernel pads unevenly; give explicit padding")
            padding = tuple(d * (k - 1) // 2 for k, d in zip(layer.kernel_size, layer.dilation))
        self.padding = _pair(padding)
        self.output_padding = tuple(_output_padding(in_shape[i + 1], out_shape[i + 1], layer.kernel_size[i], layer.stride[i], self.padding[i], layer.dilation[i])
                                    for i in range(2))

    def back(self, g, saved):
        c = self.layer
        return F.conv_transpose2d(g, c.weight, None, c.stride, self.padding, self.output_padding, c.groups, c.dilation)


class MaxPoolStep(Step):
    def run(self, x):
        p = self.layer
        y, index = F.max_pool2d(x, p.kernel_size, p.stride, p.padding, p.dilation, p.ceil_mode, return_indices=True)
        return y, (x, index)

    def back(self, g, saved):
        x, index = saved
        # Each output's gradient goes to the input its window took the maximum from; overlapping windows add up.
        flat = torch.zeros_like(x).flatten(2).scatter_add(2, index.flatten(2), g.flatten(2))
        return flat.reshape((-1,) + self.in_shape)


class AvgPoolStep(Step):
    def __init__(self, name, layer: nn.AvgPool2d, in_shape, out_shape):
        super().__init__(name, layer, in_shape, out_shape)
        kernel, stride, padding = _pair(layer.kernel_size), _pair(layer.stride or layer.kernel_size), _pair(layer.padding)
        if layer.ceil_mode or layer.divisor_override or (any(padding) and not layer.count_include_pad):
            raise UnsupportedModelError(f"layer {name!r}: AvgPool2d with ceil_mode, divisor_override or count_include_pad=False "
                                        "divides windows unevenly; only the plain average is supported")
        channels = in_shape[0]
        self.stride, self.padding = stride, padding
        self.output_padding = tuple(_output_padding(in_shape[i + 1], out_shape[i + 1], kernel[i], stride[i], padding[i], 1) for i in range(2))
        self.register_buffer("kernel", torch.full((channels, 1) + kernel, 1.0 / (kernel[0] * kernel[1])), persistent=False)

    def back(self, g, saved):
        return F.conv_transpose2d(g, self.kernel.to(g.dtype), None, self.stride, self.padding, self.output_padding, self.in_shape[0])


class PadStep(Step):
    def __init__(self, name, layer: nn.ConstantPad2d, in_shape, out_shape):
        super().__init__(name, layer, in_shape, out_shape)
        self.left, self.right, self.top, self.bottom = layer.padding
        if min(layer.padding) < 0:
            raise UnsupportedModelError(f"layer {name!r}: negative padding (cropping) is not supported")

    def back(self, g, saved):
        h, w = self.out_shape[-2:]
        return g[..., self.top:h - self.bottom, self.left:w - self.right]


class CropStep(Step):
    """A model trained on crops (``--crop``) looks at the centre of the face: the pixels around it get no gradient."""

    def back(self, g, saved):
        before = self.layer.offset
        after = self.in_shape[-1] - self.layer.size - before
        return F.pad(g, (before, after, before, after))


STEP_TYPES: dict[type, type[Step]] = {
    CentreCrop: CropStep,
    PixelScale: ScaleStep,
    nn.Conv2d: ConvStep,
    nn.Linear: LinearStep,
    ElementPReLU: ElementPReLUStep,
    nn.ReLU: ReLUStep,
    nn.PReLU: PReLUStep,
    nn.MaxPool2d: MaxPoolStep,
    nn.AvgPool2d: AvgPoolStep,
    nn.ConstantPad2d: PadStep,  # ZeroPad2d is a ConstantPad2d
    nn.Flatten: FlattenStep,
    nn.Dropout: IdentityStep,
    nn.Identity: IdentityStep,
}


def _step_for(name: str, layer: nn.Module, in_shape, out_shape) -> Step:
    for kind, step in STEP_TYPES.items():
        if isinstance(layer, kind):
            if isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) != (1, -1):
                raise UnsupportedModelError(f"layer {name!r}: only Flatten(start_dim=1, end_dim=-1) is supported")
            return step(name, layer, in_shape, out_shape)
    raise UnsupportedModelError(f"layer {name!r} ({type(layer).__name__}) has no hand-written backward")


def _with_shapes(model: nn.Module):
    """``(name, layer, in_shape, out_shape)`` for each layer of the chain, per-image shapes for a 48×48 input."""
    p = next(model.parameters(), None)
    x = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, dtype=p.dtype if p is not None else torch.float32)
    with torch.no_grad():
        for name, layer in layer_chain(model):
            y = layer(x)
            yield name, layer, tuple(x.shape[1:]), tuple(y.shape[1:])
            x = y


def build_steps(model: nn.Module, until: str | None = None) -> nn.ModuleList:
    """One :class:`Step` per layer of ``model`` (in eval mode), up to and including the layer ``until``."""
    if model.training:
        raise UnsupportedModelError("the model is in training mode (dropout would differ); call model.eval() first")
    steps = nn.ModuleList()
    for name, layer, in_shape, out_shape in _with_shapes(model):
        steps.append(_step_for(name, layer, in_shape, out_shape))
        if name == until:
            return steps
    if until is not None:
        raise UnsupportedModelError(f"no layer {until!r} in the model's chain")
    return steps


def conv_layer_infos(model: nn.Module) -> list[LayerInfo]:
    """The conv layers in forward order, named ``conv1`` … with their output shapes."""
    infos, window = [], (0, IMAGE_SIZE)
    for name, layer, _, out_shape in _with_shapes(model):
        if isinstance(layer, CentreCrop):
            window = (layer.offset, layer.size)
        elif isinstance(layer, nn.Conv2d):
            infos.append(LayerInfo(f"conv{len(infos) + 1}", name, *out_shape, window=window))
    return infos


def resolve_layer(model: nn.Module, spec: str) -> LayerInfo:
    """A conv layer by ``conv2``, ``2`` or its module name ``features.4``."""
    infos = conv_layer_infos(model)
    if not infos:
        raise UnsupportedModelError(f"{type(model).__name__} has no conv layers")
    key = str(spec).strip()
    if key.isdigit():
        key = f"conv{key}"
    for info in infos:
        if key in (info.name, info.module):
            return info
    raise ValueError(f"no conv layer {spec!r}; this model has " + ", ".join(f"{i.name} ({i.module}, {i.channels} filters)" for i in infos))
