"""The study's models and a registry to create them by name.

Every model takes raw pixels, float32 ``(N, 1, 48, 48)`` in 0..255, and returns logits ``(N, 7)``:
the normalisation lives inside the model, so the exported ONNX graph carries it too.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from fer_runtime.contract import IMAGE_SIZE, NUM_CLASSES

MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def wrap(cls):
        if name in MODEL_REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        MODEL_REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return wrap


def create_model(name: str, **kwargs) -> nn.Module:
    try:
        cls = MODEL_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(MODEL_REGISTRY))}") from None
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a setting this model does not have (e.g. --crop's input_size for the study's CNN)
        raise ValueError(f"model {name!r} cannot be made with {kwargs}: {exc}") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def keras_init(model: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases, as Keras initialises Dense and Conv2D (the study's framework).

    torch's default (Kaiming-uniform with a=sqrt(5)) gives this deep PReLU stack much smaller
    activations, and the CNN then sits at chance for many epochs.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


class PixelScale(nn.Module):
    """Raw 0..255 pixels to the model's input range: ``(x / 255 - mean) / std``."""

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)), persistent=True)
        self.register_buffer("std", torch.tensor(float(std)), persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x / 255.0 - self.mean) / self.std


class ElementPReLU(nn.Module):
    """PReLU with one learned slope per element, as Keras' ``PReLU()`` does by default.

    torch's ``nn.PReLU`` shares a slope per channel; the study's parameter count (2,414,599) needs one
    per element. Slopes start at 0 (Keras' default), so the layer starts as a ReLU.
    """

    def __init__(self, *shape: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(*shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, min=0) + self.weight * torch.clamp(x, max=0)


@register_model("cnn")
class StudyCNN(nn.Module):
    """The study's CNN: five convolutions with per-element PReLU, 2,414,599 parameters."""

    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = 0.3):
        super().__init__()
        self.scale = PixelScale()
        self.features = nn.Sequential(
            nn.Conv2d(1, 64, 5),  # (N, 64, 44, 44)
            ElementPReLU(64, 44, 44),
            nn.ZeroPad2d(2),  # (N, 64, 48, 48)
            nn.MaxPool2d(5, stride=2),  # (N, 64, 22, 22)
            nn.Conv2d(64, 64, 3, padding=1),
            ElementPReLU(64, 22, 22),
            nn.Conv2d(64, 64, 3, padding=1),
            ElementPReLU(64, 22, 22),
            nn.AvgPool2d(3, stride=2),  # (N, 64, 10, 10)
            nn.Conv2d(64, 128, 3, padding=1),
            ElementPReLU(128, 10, 10),
            nn.Conv2d(128, 128, 3, padding=1),
            ElementPReLU(128, 10, 10),
            nn.ZeroPad2d(1),  # (N, 128, 12, 12); Keras averages the padded zeros too
            nn.AvgPool2d(3, stride=2),  # (N, 128, 5, 5)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (N, 3200)
            nn.Linear(128 * 5 * 5, 512),
            ElementPReLU(512),
            nn.Dropout(dropout),
            nn.Linear(512, 512),
            ElementPReLU(512),
            nn.Dropout(dropout),
            nn.Linear(512, num_classes),
        )
        keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.scale(x)))


@register_model("dnn")
class StudyDNN(nn.Module):
    """The study's DNN of about the CNN's size: six dense layers of 512 with PReLU, 2,500,103 parameters."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 512, depth: int = 6, dropout: float = 0.3, dropout_last: int = 2):
        super().__init__()
        self.scale = PixelScale()
        layers: list[nn.Module] = [nn.Flatten()]  # (N, 2304)
        fan_in = IMAGE_SIZE * IMAGE_SIZE
        for i in range(depth):
            layers += [nn.Linear(fan_in, width), ElementPReLU(width)]
            if i >= depth - dropout_last:
                layers.append(nn.Dropout(dropout))
            fan_in = width
        layers.append(nn.Linear(fan_in, num_classes))
        self.net = nn.Sequential(*layers)
        keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.scale(x))


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """The model's convolutions in forward order, with their qualified names."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


@register_model("fernet")
class FerNet(nn.Module):
    """Our best CPU model: a VGG-style chain with batch normalisation and a global-average-pooling head.

    Eight 3×3 convolutions in four stages (48→24→12→6→3), widths ``widths``; batch normalisation makes the
    deep chain train in tens of epochs (the study's CNN needs hundreds), and global pooling keeps the head
    small, so most parameters sit in the convolutions. :meth:`fused` folds every BatchNorm into its
    convolution: the exported graph is a plain chain of Conv/ReLU/pooling, which the explanation graphs
    (``fer_train.explain.backward``) support.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, widths: tuple[int, ...] = (32, 64, 128, 256), dropout: float = 0.3,
                 input_size: int = IMAGE_SIZE):
        super().__init__()
        self.input_size = input_size  # below 48 (a model trained on random crops, --crop): a larger input is centre-cropped to it
        self.scale = PixelScale(mean=0.5, std=0.25)
        layers: list[nn.Module] = []
        c_in = 1
        for i, width in enumerate(widths):
            layers += _conv_bn_relu(c_in, width) + _conv_bn_relu(width, width)  # (N, width, 48/2^i, 48/2^i)
            layers.append(nn.MaxPool2d(2))
            c_in = width
        side = input_size // 2 ** len(widths)  # 3 for four stages at 48 pixels, 2 at 40
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.AvgPool2d(side),  # (N, C, 1, 1): global average pooling
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(c_in, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.scale(centre_crop(x, self.input_size))))

    def fused(self) -> nn.Module:
        """An eval-mode copy with each BatchNorm folded into the convolution before it (same outputs)."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        src = list(self.eval().features)
        out: list[nn.Module] = []
        for layers in self._fusion_plan():
            if len(layers) == 2:
                out.append(fuse_conv_bn_eval(src[layers[0]], src[layers[1]]))
            else:
                layer = src[layers[0]]
                out.append(nn.ReLU() if isinstance(layer, nn.ReLU) else layer)  # not in place: the gradient graphs keep inputs
        fused = _Chain(self.scale, nn.Sequential(*out), self.classifier, self.input_size)
        return fused.eval()

    def _fusion_plan(self) -> list[tuple[int, ...]]:
        """For each layer of the fused chain, the indices in ``features`` it comes from: (conv, bn) or (layer,)."""
        src, plan, i = list(self.features), [], 0
        while i < len(src):
            pair = isinstance(src[i], nn.Conv2d) and i + 1 < len(src) and isinstance(src[i + 1], nn.BatchNorm2d)
            plan.append((i, i + 1) if pair else (i,))
            i += 2 if pair else 1
        return plan

    def unfold_state_dict(self, fused_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inverse of :meth:`fused` for weights: a state dict of this model from a fused chain's.

        Each convolution takes the folded weight; its BatchNorm becomes the identity plus the folded bias
        (running mean 0, variance 1 − eps, weight 1), so eval-mode outputs equal the fused chain's.
        ``fer_train.onnx_import.calibrate_unfolded_batchnorm`` then gives the BatchNorms real statistics.
        """
        state = {k: v.clone() for k, v in self.state_dict().items()}
        for key, value in fused_state.items():
            if not key.startswith("features."):
                state[key] = value.clone()
        for j, layers in enumerate(self._fusion_plan()):
            if len(layers) == 2:
                conv, bn = (f"features.{i}" for i in layers)
                eps = self.features[layers[1]].eps
                state[f"{conv}.weight"] = fused_state[f"features.{j}.weight"].clone()
                state[f"{bn}.weight"] = torch.ones_like(state[f"{bn}.weight"])
                state[f"{bn}.bias"] = fused_state[f"features.{j}.bias"].clone()
                state[f"{bn}.running_mean"] = torch.zeros_like(state[f"{bn}.running_mean"])
                state[f"{bn}.running_var"] = torch.full_like(state[f"{bn}.running_var"], 1.0 - eps)
            else:
                for name in self.features[layers[0]].state_dict():
                    state[f"features.{layers[0]}.{name}"] = fused_state[f"features.{j}.{name}"].clone()
        return state


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` × ``size`` of images (N, C, H, W); ``x`` itself when it is no larger (a training batch
    that is already cropped)."""
    height, width = x.shape[-2:]
    if height <= size and width <= size:
        return x
    top, left = (height - size) // 2, (width - size) // 2
    return x[..., top:top + size, left:left + size]


class CentreCrop(nn.Module):
    """The central ``size`` × ``size`` of a 48-pixel face: the first layer of an exported model trained on crops."""

    def __init__(self, size: int):
        super().__init__()
        self.size, self.offset = size, (IMAGE_SIZE - size) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return centre_crop(x, self.size)


class _Chain(nn.Module):
    """(centre crop →) scale → features → classifier, the shape of the exported models."""

    def __init__(self, scale: nn.Module, features: nn.Module, classifier: nn.Module, input_size: int = IMAGE_SIZE):
        super().__init__()
        self.scale, self.features, self.classifier = scale, features, classifier
        self.crop = CentreCrop(input_size) if input_size < IMAGE_SIZE else None  # a model trained on crops (--crop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop is not None:
            x = self.crop(x)
        return self.classifier(self.features(self.scale(x)))


def deployable(model: nn.Module) -> nn.Module:
    """The form of ``model`` that is exported: BatchNorm folded where the model has any."""
    fused = getattr(model, "fused", None)
    return fused() if callable(fused) else model.eval()
