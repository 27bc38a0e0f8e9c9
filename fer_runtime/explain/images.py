"""Pictures as arrays: batches of faces, blur, saliency maps scaled to 0..1, masked faces, filter pictures."""

from __future__ import annotations


import numpy as np

from ..contract import (IMAGE_SIZE)


# -- pictures as arrays -----------------------------------------------------------------------------

def as_batch(images: np.ndarray) -> np.ndarray:
    """uint8 or float images (48, 48), (N, 48, 48) or (N, 1, 48, 48) → float32 (N, 48, 48)."""
    x = np.asarray(images, np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"images must be (48, 48), (N, 48, 48) or (N, 1, 48, 48); got {np.shape(images)}")
    return x


def gaussian_blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (..., H, W), edges reflected."""
    if sigma <= 0:
        return np.asarray(images, np.float32)
    radius = max(1, int(round(3 * sigma)))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = (kernel / kernel.sum()).astype(np.float32)
    x = np.asarray(images, np.float32)
    for axis in (-2, -1):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(x, pad, mode="reflect")
        size = x.shape[axis]
        x = sum(w * np.take(padded, np.arange(i, i + size), axis=axis) for i, w in enumerate(kernel))
    return x.astype(np.float32)


def normalise_map(values: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Saliency maps (..., H, W) → their magnitude in 0..1 per map, the ``percentile`` value and above at 1.

    The one normalisation of every saliency picture (see the module's docstring). A map whose percentile
    is zero (at most 1 % of it non-zero) is divided by its maximum instead; an all-zero map stays zero.
    """
    v = np.abs(np.asarray(values, np.float32))
    flat = v.reshape(*v.shape[:-2], -1)
    top = np.percentile(flat, percentile, axis=-1)
    top = np.where(top > 0, top, flat.max(axis=-1))[..., None, None]
    return np.clip(v / np.maximum(top, 1e-12), 0, 1)


def masked_image(image: np.ndarray, saliency: np.ndarray, hide: float = 0.5, smooth: float = 1.5, fill: float = 0) -> np.ndarray:
    """The face with its ``hide`` fraction of least salient pixels set to ``fill`` (uint8 (48, 48)).

    The map is blurred by ``smooth`` pixels first, so that what stays is regions rather than specks.
    """
    if not 0 <= hide <= 1:
        raise ValueError(f"hide must be a fraction between 0 and 1, got {hide}")
    face = np.asarray(image, np.float32).reshape(IMAGE_SIZE, IMAGE_SIZE)
    weight = gaussian_blur(np.abs(np.asarray(saliency, np.float32)).reshape(IMAGE_SIZE, IMAGE_SIZE), smooth)
    order = np.argsort(weight, axis=None, kind="stable")
    hidden = np.zeros(weight.size, bool)
    hidden[order[:int(round(hide * weight.size))]] = True
    return np.where(hidden.reshape(weight.shape), fill, face).clip(0, 255).astype(np.uint8)


def deprocess_filter(image: np.ndarray, contrast: float = 0.15) -> np.ndarray:
    """An ascent result (48, 48) → uint8 for display: centred, scaled by its spread (as in the Keras recipe)."""
    x = np.asarray(image, np.float32)
    x = (x - x.mean()) / (x.std() + 1e-5) * contrast + 0.5
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)
