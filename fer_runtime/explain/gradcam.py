"""Grad-CAM (Selvaraju et al. 2017) from a layer's feature maps and their gradients, whatever computed them.

``<stem>.gradcam.onnx`` gives both for the middle and the last conv layer (``fer_train.explain.gradient_onnx``);
``fer_train.explain.gradcam`` gives them by torch autograd. The map is the same numpy here for both.
"""

from __future__ import annotations

import numpy as np

from ..contract import IMAGE_SIZE


def upsample(maps: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Bilinear resize of maps (..., h, w) to (..., size, size), pixel centres aligned (as ``align_corners=False``)."""
    maps = np.asarray(maps, np.float32)
    h, w = maps.shape[-2:]

    def weights(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        centre = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
        low = np.floor(centre).astype(int)
        return low, np.minimum(low + 1, n - 1), (centre - low).astype(np.float32)

    y0, y1, fy = weights(h)
    x0, x1, fx = weights(w)
    rows = maps[..., y0, :] * (1 - fy)[:, None] + maps[..., y1, :] * fy[:, None]  # (..., size, w)
    return rows[..., x0] * (1 - fx) + rows[..., x1] * fx


def gradcam_map(activation: np.ndarray, gradient: np.ndarray, size: int = IMAGE_SIZE,
                window: tuple[int, int] | None = None) -> np.ndarray:
    """Grad-CAM of feature maps ``activation`` (N, C, h, w) and ``gradient`` = d class logit / d activation:
    ``relu(Σ_c α_c A_c)`` with ``α_c`` the gradient's spatial mean, upsampled to (N, size, size). Non-negative.

    ``window`` = (offset, side): the square of the face the feature maps cover, for a model that looks at the centre
    of the face only (trained on crops: (4, 40)); the map is upsampled onto that square and zero around it."""
    a, g = np.asarray(activation, np.float32), np.asarray(gradient, np.float32)
    alpha = g.mean(axis=(2, 3), keepdims=True)  # (N, C, 1, 1): how much each channel counts for the class
    cam = np.maximum((alpha * a).sum(axis=1), 0)  # (N, h, w)
    offset, side = window or (0, size)
    if (offset, side) == (0, size):
        return np.maximum(upsample(cam, size), 0)
    if offset < 0 or offset + side > size:
        raise ValueError(f"Grad-CAM window {window} does not fit in a {size}-pixel face")
    out = np.zeros(cam.shape[:-2] + (size, size), np.float32)
    out[..., offset:offset + side, offset:offset + side] = np.maximum(upsample(cam, side), 0)
    return out
