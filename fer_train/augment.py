"""On-the-fly augmentation on whole batches, equivalent to the study's Keras ImageDataGenerator
(``rotation_range=40, width_shift_range=0.2, height_shift_range=0.2``, fill mode 'nearest').

Working on the batch tensor with one ``affine_grid``/``grid_sample`` keeps it cheap next to the model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(x: torch.Tensor, generator: torch.Generator, rotation: float = 40.0, shift: float = 0.2, flip: bool = False) -> torch.Tensor:
    """Rotate each image by U(-rotation, rotation) degrees and shift it by U(-shift, shift) of its size.

    ``x`` is (N, C, H, W); edges are filled with the nearest border pixel, as Keras' 'nearest' does.
    The random numbers come from ``generator`` (on the CPU), so a seeded run repeats exactly.
    """
    n = x.shape[0]
    u = torch.rand(n, 3, generator=generator) * 2 - 1  # (N, 3) in [-1, 1)
    angle = u[:, 0] * math.radians(rotation)
    tx, ty = u[:, 1] * shift * 2, u[:, 2] * shift * 2  # grid coordinates span 2 units per image
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (N, 2, 3)
    if flip:
        mirror = torch.rand(n, generator=generator) < 0.5
        theta[mirror, :, 0] *= -1
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
