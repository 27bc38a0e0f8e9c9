"""Sanity checks of the saliency methods (Adebayo et al. 2018) with torch models in memory: the maps of a trained
model against those of the same model with randomised weights, and of one trained on randomised labels.

The maps are :func:`fer_runtime.explain.methods.method_maps`, the very code the TUI runs, with torch autograd
behind it; the comparison is :func:`fer_runtime.explain.rank_correlation` of the maps for the same faces and the
same classes (the trained model's predictions).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from fer_runtime.explain import MEASURED_ONLY, METHODS, rank_correlation

from .backward import UnsupportedModelError
from .saliency import torch_logits_fn, torch_maps


def randomised_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer's parameters drawn again by its own initialiser (Adebayo's "full
    randomisation"); the architecture and the pixel scaling stay."""
    torch.manual_seed(seed)
    other = copy.deepcopy(model)
    for module in other.modules():
        if hasattr(module, "reset_parameters") and module is not other:
            module.reset_parameters()
    return other.eval()


def map_correlations(trained: nn.Module, other: nn.Module, images: np.ndarray, methods=(*METHODS, *MEASURED_ONLY)) -> dict[str, np.ndarray]:
    """Method → the rank correlation, face by face (N,), of ``trained``'s maps and ``other``'s, both for the class
    ``trained`` predicts. Methods the models cannot run (Grad-CAM without conv layers) are left out."""
    classes = torch_logits_fn(trained)(images).argmax(1)
    out = {}
    for name in methods:
        try:
            out[name] = rank_correlation(torch_maps(trained, name, images, classes), torch_maps(other, name, images, classes))
        except UnsupportedModelError:
            continue
    return out


def small_cnn(widths: tuple[int, int, int] = (8, 16, 16), classes: int = 7) -> nn.Module:
    """Three 3×3 conv stages (48 → 24 → 12 → 6) and a linear head: a plain chain that trains in seconds, for the
    randomised-label check (a model trained on shuffled labels must be trained, so it must be cheap)."""
    from ..models import PixelScale

    a, b, c = widths
    return nn.Sequential(PixelScale(0.5, 0.25),
                         nn.Conv2d(1, a, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, a, 24, 24)
                         nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, b, 12, 12)
                         nn.Conv2d(b, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, c, 6, 6)
                         nn.Flatten(), nn.Linear(c * 6 * 6, classes))


def train_small(images: np.ndarray, labels: np.ndarray, epochs: int, widths=(8, 16, 16), seed: int = 0, batch_size: int = 30,
                lr: float = 3e-3) -> nn.Module:
    """:func:`small_cnn` trained with Adam on ``images`` (N, 48, 48) and ``labels``; returned in eval mode."""
    torch.manual_seed(seed)
    model = small_cnn(widths)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = torch.from_numpy(np.asarray(images, np.float32)[:, None]), torch.from_numpy(np.asarray(labels, np.int64))
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x)).split(batch_size):
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    return model.eval()
