"""Filter visualisation by gradient ascent on the input, from a gradient function of any backend."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..contract import (IMAGE_SIZE)
from .images import deprocess_filter, gaussian_blur
from .saliency import GradientFn


# -- filter visualisation by gradient ascent --------------------------------------------------------

@dataclass
class AscentConfig:
    """Gradient ascent on a filter's mean activation, from white noise, in raw pixel space (0..255).

    Each step adds ``step_size`` times the gradient scaled to unit RMS, so every filter climbs at the
    same pace (the Keras recipe the study followed). The regularisers are off by default (the study used
    none); each keeps the pattern closer to what a face could hold:
    ``jitter`` shifts the image by up to that many pixels before each gradient (Mordvintsev et al. 2015),
    ``blur`` blurs it by that sigma every ``blur_every`` steps and ``l2`` decays it towards gray (Yosinski
    et al. 2015), ``tv`` penalises the total variation (Mahendran & Vedaldi 2015).
    """

    steps: int = 40
    step_size: float = 1.0
    seed: int = 0
    start: float = 128.0  # the gray the noise is centred on
    noise: float = 20.0  # the noise's full width, pixels
    jitter: int = 0
    blur: float = 0.0
    blur_every: int = 4
    l2: float = 0.0
    tv: float = 0.0
    clip: bool = True  # keep pixels in 0..255, the model's input range

    def describe(self) -> str:
        parts = [f"{self.steps} steps of {self.step_size:g}"]
        parts += [f"jitter {self.jitter}px"] * bool(self.jitter) + [f"blur σ{self.blur:g}/{self.blur_every}"] * bool(self.blur)
        parts += [f"L2 {self.l2:g}"] * bool(self.l2) + [f"TV {self.tv:g}"] * bool(self.tv)
        return ", ".join(parts)


@dataclass
class AscentResult:
    steps: int
    filter_index: np.ndarray  # int64 (n,)
    images: np.ndarray  # float32 (n, 48, 48), raw pixels
    activation: np.ndarray  # float32 (n,), the mean activation each image reaches
    seconds: float
    complete: bool = True  # False when stopped early

    def display(self) -> np.ndarray:
        """uint8 (n, 48, 48), each filter's image stretched for display."""
        return np.stack([deprocess_filter(i) for i in self.images]) if len(self.images) else self.images.astype(np.uint8)


def tv_gradient(x: np.ndarray) -> np.ndarray:
    """The gradient of the anisotropic total variation Σ|x[i+1] − x[i]| of images (n, H, W)."""
    g = np.zeros_like(x)
    for axis in (1, 2):
        d = np.sign(np.diff(x, axis=axis))
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        g[tuple(lo)] -= d
        g[tuple(hi)] += d
    return g


def ascend(gradient_fn: GradientFn, filter_index, config: AscentConfig | None = None, snapshots=(), progress=None,
           should_stop: Callable[[], bool] | None = None) -> list[AscentResult]:
    """Gradient ascent of one noise image per entry of ``filter_index``; results at each snapshot step and the last.

    ``progress(step, steps)`` after each step; ``should_stop()`` is polled before each step and ends the
    ascent early (the last result then has ``complete=False``).
    """
    config = config or AscentConfig()
    index = np.asarray(filter_index, np.int64).reshape(-1)
    rng = np.random.default_rng(config.seed)
    x = (config.start + (rng.random((len(index), IMAGE_SIZE, IMAGE_SIZE)) - 0.5) * config.noise).astype(np.float32)
    wanted = {s for s in snapshots if 0 < s < config.steps} | {config.steps}
    results: list[AscentResult] = []
    t0 = time.perf_counter()

    def snapshot(step: int, complete: bool = True) -> None:
        activation, _ = gradient_fn(x, index)
        results.append(AscentResult(step, index, x.copy(), np.asarray(activation, np.float32), time.perf_counter() - t0, complete))

    if config.steps == 0:
        snapshot(0)
    for step in range(1, config.steps + 1):
        if should_stop is not None and should_stop():
            snapshot(step - 1, complete=False)
            return results
        shift = tuple(int(s) for s in rng.integers(-config.jitter, config.jitter + 1, 2)) if config.jitter else (0, 0)
        _, g = gradient_fn(np.roll(x, shift, axis=(1, 2)) if config.jitter else x, index)
        g = np.asarray(g, np.float32).reshape(x.shape)
        if config.jitter:
            g = np.roll(g, (-shift[0], -shift[1]), axis=(1, 2))
        g = g / (np.sqrt((g**2).mean(axis=(1, 2), keepdims=True)) + 1e-12)
        if config.tv:
            g = g - config.tv * tv_gradient(x)
        x = x + config.step_size * g
        if config.l2:
            x = config.start + (1 - config.l2) * (x - config.start)
        if config.blur and step % config.blur_every == 0:
            x = gaussian_blur(x, config.blur)
        if config.clip:
            np.clip(x, 0, 255, out=x)
        if step in wanted:
            snapshot(step)
        if progress is not None:
            progress(step, config.steps)
    return results
