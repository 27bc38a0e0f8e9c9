"""On-the-fly augmentation on whole batches, equivalent to the study's Keras ImageDataGenerator
(``rotation_range=40, width_shift_range=0.2, height_shift_range=0.2``, fill mode 'nearest').

Working on the batch tensor with one ``affine_grid``/``grid_sample`` keeps it cheap next to the model.
:func:`random_erase` (not in the study) is random erasing (Zhong et al., 2017), also done on the whole batch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def random_affine(x: torch.Tensor, generator: torch.Generator, rotation: float = 40.0, shift: float = 0.2, flip: bool = False,
                  scale: float = 0.0) -> torch.Tensor:
    """Rotate each image by U(-rotation, rotation) degrees and shift it by U(-shift, shift) of its size; with
    ``scale`` > 0 also zoom it by a factor drawn from U(1 - scale, 1 + scale) (Keras' ``zoom_range``: above 1 the
    face grows and its edges leave the picture, as in a random resized crop; below 1 it shrinks).

    ``x`` is (N, C, H, W); edges are filled with the nearest border pixel, as Keras' 'nearest' does.
    The random numbers come from ``generator`` (on the CPU), so a seeded run repeats exactly; without ``scale`` they
    are the same draws as before it existed.
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
    if scale > 0:  # theta maps output to input coordinates: a zoom of z samples 1/z of the image
        zoom = 1 + (torch.rand(n, generator=generator) * 2 - 1) * scale
        theta[:, :, :2] /= zoom[:, None, None]
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_erase(x: torch.Tensor, generator: torch.Generator, p: float = 0.5, area: tuple[float, float] = (0.02, 0.25),
                 aspect: tuple[float, float] = (0.3, 3.3)) -> torch.Tensor:
    """Random erasing: with probability ``p`` per image, fill one rectangle with uniform noise over 0..255.

    The rectangle covers ``area`` (a fraction of the image, drawn uniformly) with a height/width ratio drawn
    log-uniformly from ``aspect``, clipped to the image, at a uniform position. ``x`` is (N, C, H, W) in pixel units
    (0..255); a new tensor is returned. The random numbers come from ``generator`` (on the CPU), as in
    :func:`random_affine`, so a seeded run repeats exactly.
    """
    n, _, height, width = x.shape
    u = torch.rand(n, 5, generator=generator)
    noise = torch.rand(x.shape, generator=generator) * 255
    target = (area[0] + u[:, 0] * (area[1] - area[0])) * height * width
    ratio = torch.exp(math.log(aspect[0]) + u[:, 1] * (math.log(aspect[1]) - math.log(aspect[0])))
    h = (target * ratio).sqrt().round().clamp(1, height).long()
    w = (target / ratio).sqrt().round().clamp(1, width).long()
    top = (u[:, 2] * (height - h + 1)).long()
    left = (u[:, 3] * (width - w + 1)).long()
    rows, cols = torch.arange(height), torch.arange(width)
    inside = (((rows >= top[:, None]) & (rows < (top + h)[:, None]))[:, :, None]
              & ((cols >= left[:, None]) & (cols < (left + w)[:, None]))[:, None, :])  # (N, H, W)
    mask = (inside & (u[:, 4] < p)[:, None, None])[:, None].to(x.device)
    return torch.where(mask, noise.to(device=x.device, dtype=x.dtype), x)


def random_crop(x: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    """A ``size`` × ``size`` crop of each image of ``x`` (N, C, H, W) at a uniform position of its own (the random
    crops of Khaireddin & Chen 2021's recipe, 40 of 48 pixels). The positions come from ``generator``."""
    n, _, height, width = x.shape
    top = torch.randint(0, height - size + 1, (n,), generator=generator)
    left = torch.randint(0, width - size + 1, (n,), generator=generator)
    span = torch.arange(size)
    rows = (top[:, None] + span).to(x.device)  # (N, size)
    cols = (left[:, None] + span).to(x.device)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def mix_batch(x: torch.Tensor, generator: torch.Generator, alpha: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al., 2018): ``λ·x + (1 − λ)·x[perm]`` with λ ~ Beta(α, α) for the batch and a random
    permutation ``perm`` of it; returns the mixed batch, ``perm`` and λ (the loss mixes the labels likewise)."""
    perm = torch.randperm(x.shape[0], generator=generator)
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = perm.to(x.device)
    return lam * x + (1 - lam) * x[perm], perm, lam


def augment_batch(x: torch.Tensor, generator: torch.Generator, config) -> torch.Tensor:
    """A training batch (N, C, H, W) in pixel units as a run's config augments it: the affine part when
    ``config.augment``, a random crop when ``config.crop``, then random erasing when ``config.erase`` > 0 (the
    order the draws are made in). Mixup is the loss's (:func:`mix_batch`)."""
    if config.augment:
        x = random_affine(x, generator, config.rotation, config.shift, config.flip, config.scale)
    if config.crop:
        x = random_crop(x, generator, config.crop)
    if config.erase > 0:
        x = random_erase(x, generator, config.erase)
    return x
