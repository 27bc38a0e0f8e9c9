"""Saliency algorithms on any backend: SmoothGrad and occlusion take plain functions, so onnxruntime (the TUI) and
torch autograd (``fer_train.explain``) run the very same code."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..contract import (IMAGE_SIZE)
from ..metrics import softmax
from .images import as_batch


# A gradient function: (images float32 (n, 48, 48) raw pixels, index int64 (n,)) → (scores (n,), gradients (n, 48, 48)),
# where scores[i] is the chosen logit (or filter activation) of image i and gradients[i] its gradient.
GradientFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
LogitsFn = Callable[[np.ndarray], np.ndarray]  # images (n, 48, 48) → logits (n, K)


# -- saliency algorithms on any backend -------------------------------------------------------------

def smoothgrad(gradient_fn: GradientFn, images: np.ndarray, class_index: np.ndarray, samples: int = 25, noise: float = 0.15,
               seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over ``samples`` noisy copies of each image.

    ``noise`` is the standard deviation as a fraction of the pixel range (0..255). Returns the signed mean
    gradient (N, 48, 48); its absolute value is the map.
    """
    x = as_batch(images)
    classes = np.asarray(class_index, np.int64).reshape(len(x))
    rng = np.random.default_rng(seed)
    total = np.zeros_like(x)
    pairs = samples * len(x)  # (noisy copy, image) pairs, in batches across images
    for start in range(0, pairs, batch_size):
        which = np.arange(start, min(start + batch_size, pairs)) % len(x)
        noisy = x[which] + rng.normal(0, noise * 255, (len(which), IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
        _, g = gradient_fn(noisy, classes[which])
        np.add.at(total, which, g)
    return total / samples


def occlusion_batch(image: np.ndarray, patch: int = 8, stride: int = 4, fill: float | None = None) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The face (48, 48) followed by one copy per ``patch``×``patch`` square (moved by ``stride``) with that
    square set to ``fill`` (default: the face's mean): float32 (1 + P, 48, 48) and the P corners (y, x)."""
    face = np.asarray(image, np.float32).reshape(IMAGE_SIZE, IMAGE_SIZE)
    value = float(face.mean()) if fill is None else float(fill)
    corners = [(y, x) for y in range(0, IMAGE_SIZE - patch + 1, stride) for x in range(0, IMAGE_SIZE - patch + 1, stride)]
    copies = np.repeat(face[None], len(corners) + 1, axis=0)  # the first stays whole: the baseline, in the same batch
    for k, (y, x) in enumerate(corners, start=1):
        copies[k, y:y + patch, x:x + patch] = value
    return copies, corners


def _occluded_probabilities(logits_fn: LogitsFn, image: np.ndarray, patch: int, stride: int, fill: float | None,
                            batch_size: int | None) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Class probabilities (1 + P, K) of the whole face, then of each occluded copy (``batch_size`` None: all in
    one call); and the P corners."""
    copies, corners = occlusion_batch(image, patch, stride, fill)
    batch_size = batch_size or len(copies)
    logits = np.concatenate([logits_fn(copies[i:i + batch_size]) for i in range(0, len(copies), batch_size)])
    return softmax(np.asarray(logits, np.float64)), corners


def _mean_drop(drop: np.ndarray, corners: list[tuple[int, int]], patch: int) -> np.ndarray:
    """Each pixel's mean of ``drop`` over the squares that cover it (48, 48)."""
    total, count = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32), np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    for (y, x), d in zip(corners, drop):
        total[y:y + patch, x:x + patch] += d
        count[y:y + patch, x:x + patch] += 1
    return total / np.maximum(count, 1)


def occlusion(logits_fn: LogitsFn, images: np.ndarray, class_index: np.ndarray, patch: int = 8, stride: int = 4,
              fill: float | None = None, batch_size: int = 128) -> np.ndarray:
    """Occlusion (Zeiler & Fergus 2014): how much the class's probability drops when a patch is hidden.

    Each ``patch``×``patch`` square (moved by ``stride``) is set to ``fill`` (default: the image's mean);
    a pixel's value is the mean drop over the squares that cover it. Positive: hiding it hurts the class.
    """
    x = as_batch(images)
    classes = np.asarray(class_index, np.int64).reshape(len(x))
    out = np.zeros_like(x)
    for n, image in enumerate(x):
        probs, corners = _occluded_probabilities(logits_fn, image, patch, stride, fill, batch_size)
        out[n] = _mean_drop(probs[0, classes[n]] - probs[1:, classes[n]], corners, patch)
    return out


def integrated_gradients(gradient_fn: GradientFn, images: np.ndarray, class_index: np.ndarray, steps: int = 16,
                         baseline: float = 0.0, batch_size: int = 64) -> np.ndarray:
    """Integrated gradients (Sundararajan et al. 2017) from a uniform ``baseline`` image (black by default):
    ``(x − baseline) · mean of the gradient at the midpoints of ``steps`` equal steps along the straight path``.
    Signed (N, 48, 48); its absolute value is the map."""
    x = as_batch(images)
    classes = np.asarray(class_index, np.int64).reshape(len(x))
    alphas = (np.arange(steps, dtype=np.float32) + 0.5) / steps
    total = np.zeros_like(x)
    pairs = steps * len(x)  # (point on the path, image) pairs, in batches across images
    for start in range(0, pairs, batch_size):
        k = np.arange(start, min(start + batch_size, pairs))
        which, alpha = k % len(x), alphas[k // len(x)]
        _, g = gradient_fn(baseline + alpha[:, None, None] * (x[which] - baseline), classes[which])
        np.add.at(total, which, g)
    return (x - baseline) * total / steps
