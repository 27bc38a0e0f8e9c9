"""Explanations with onnxruntime and numpy only: saliency, filter visualisation, layer outputs.

Torch-free, like :mod:`fer_train.runtime`: the TUI runs everything here. The algorithms (SmoothGrad,
occlusion, gradient ascent) take plain functions, so ``fer_train.explain`` runs the very same code with
torch autograd behind those functions.

The companion files
-------------------
Beside a model ``<stem>.onnx`` the exporter (``fer_train.explain.gradient_onnx``) writes the graphs below,
each checked against torch autograd when written. All tensors are float32 unless marked, the batch axis
``N`` is dynamic, and ``image`` is the model's own input: ``[N, 1, 48, 48]``, raw pixels 0..255.

``<stem>.grad.onnx`` — the input gradient (every model)
    inputs  ``image``, ``class_index`` int64 ``[N]``
    outputs ``logits`` ``[N, K]``; ``gradient`` ``[N, 1, 48, 48]`` = d logits[n, class_index[n]] / d image[n]

``<stem>.layers.onnx`` — the conv layers' outputs (models with conv layers)
    inputs  ``image``
    outputs ``conv1`` … ``convL``: each conv layer's output ``[N, C, H, W]`` in forward order, before its
    activation function (the Conv2d's own output)

``<stem>.filters.<layer>.onnx`` — one per conv layer, e.g. ``cnn.filters.conv2.onnx``
    inputs  ``image``, ``filter_index`` int64 ``[N]``
    outputs ``activation`` ``[N]`` = the mean over positions of channel ``filter_index[n]`` of the layer's
    output for image ``n``; ``gradient`` ``[N, 1, 48, 48]`` = d activation[n] / d image[n]. Gradient ascent
    on a batch of ``C`` noise images with ``filter_index = 0 … C-1`` visualises the layer's ``C`` filters
    (:func:`ascend`).

Every companion's metadata holds ``explain_kind`` (``gradient``, ``layers`` or ``filters``),
``explain_of`` (the model's file name), ``explain_layers`` (JSON list of ``{name, module, channels,
height, width}``, one per conv layer), ``explain_layer`` (filters only) and the model's ``class_names``.
A folder of models should skip companions when it lists models: :func:`is_companion`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .constants import CLASS_NAMES, IMAGE_SIZE, ONNX_INPUT, ONNX_OUTPUT
from .runtime import META_CLASS_NAMES, make_session

GRADIENT_SUFFIX = ".grad.onnx"
LAYERS_SUFFIX = ".layers.onnx"
FILTERS_INFIX = ".filters."
CLASS_INDEX = "class_index"
FILTER_INDEX = "filter_index"
GRADIENT = "gradient"
ACTIVATION = "activation"
META_KIND = "explain_kind"
META_OF = "explain_of"
META_LAYERS = "explain_layers"
META_LAYER = "explain_layer"

# A gradient function: (images float32 (n, 48, 48) raw pixels, index int64 (n,)) → (scores (n,), gradients (n, 48, 48)),
# where scores[i] is the chosen logit (or filter activation) of image i and gradients[i] its gradient.
GradientFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
LogitsFn = Callable[[np.ndarray], np.ndarray]  # images (n, 48, 48) → logits (n, K)


# -- file names -------------------------------------------------------------------------------------

# fer_train.optimize writes faster variants <stem>.fast.onnx and <stem>.int8.onnx; they are explained with
# their base model's graphs (exact for the fast graph, the fp32 model's gradient for int8).
VARIANT_NAMES = ("fast", "int8", "tta", "ensemble")  # variants share their base model's explanation graphs (an ensemble: its first member's)


def _stem(model_path: str | Path) -> Path:
    """``exported/cnn.onnx`` (or ``cnn.fast.onnx``) → ``exported/cnn``."""
    path = Path(model_path)
    stem = path.with_name(path.name[:-5]) if path.name.endswith(".onnx") else path
    base, _, last = stem.name.rpartition(".")
    return stem.with_name(base) if base and last in VARIANT_NAMES else stem


def gradient_path(model_path: str | Path) -> Path:
    """``exported/cnn.onnx`` → ``exported/cnn.grad.onnx``."""
    return _stem(model_path).with_name(_stem(model_path).name + GRADIENT_SUFFIX)


def layers_path(model_path: str | Path) -> Path:
    return _stem(model_path).with_name(_stem(model_path).name + LAYERS_SUFFIX)


def filters_path(model_path: str | Path, layer: str) -> Path:
    """``exported/cnn.onnx``, ``conv2`` → ``exported/cnn.filters.conv2.onnx``."""
    return _stem(model_path).with_name(f"{_stem(model_path).name}{FILTERS_INFIX}{layer}.onnx")


def is_companion(path: str | Path) -> bool:
    """Whether ``path`` is one of the explanation graphs rather than a model."""
    name = Path(path).name
    return name.endswith(GRADIENT_SUFFIX) or name.endswith(LAYERS_SUFFIX) or (FILTERS_INFIX in name and name.endswith(".onnx"))


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
    """Non-negative maps (..., H, W) → 0..1 per map, the ``percentile`` value and above at 1."""
    v = np.abs(np.asarray(values, np.float32))
    top = np.percentile(v.reshape(*v.shape[:-2], -1), percentile, axis=-1)[..., None, None]
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


def occlusion(logits_fn: LogitsFn, images: np.ndarray, class_index: np.ndarray, patch: int = 8, stride: int = 4,
              fill: float | None = None, batch_size: int = 128) -> np.ndarray:
    """Occlusion (Zeiler & Fergus 2014): how much the class's probability drops when a patch is hidden.

    Each ``patch``×``patch`` square (moved by ``stride``) is set to ``fill`` (default: the image's mean);
    a pixel's value is the mean drop over the squares that cover it. Positive: hiding it hurts the class.
    """
    x = as_batch(images)
    classes = np.asarray(class_index, np.int64).reshape(len(x))
    corners = [(y, xx) for y in range(0, IMAGE_SIZE - patch + 1, stride) for xx in range(0, IMAGE_SIZE - patch + 1, stride)]
    out = np.zeros_like(x)
    for n, image in enumerate(x):
        value = float(image.mean()) if fill is None else float(fill)
        copies = np.repeat(image[None], len(corners) + 1, axis=0)  # the first stays whole: the baseline, in the same batch
        for k, (y, xx) in enumerate(corners, start=1):
            copies[k, y:y + patch, xx:xx + patch] = value
        probs = np.concatenate([_softmax(logits_fn(copies[i:i + batch_size]))[:, classes[n]] for i in range(0, len(copies), batch_size)])
        base, probs = probs[0], probs[1:]
        drop, count = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32), np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
        for (y, xx), p in zip(corners, probs):
            drop[y:y + patch, xx:xx + patch] += base - p
            count[y:y + patch, xx:xx + patch] += 1
        out[n] = drop / np.maximum(count, 1)
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


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


# -- the companions in onnxruntime ------------------------------------------------------------------

class ExplainError(ValueError):
    """A companion graph is missing or does not keep the contract; the message names the file."""


@dataclass
class SaliencyResult:
    logits: np.ndarray  # (N, K)
    class_index: np.ndarray  # (N,) the class each gradient is of
    gradient: np.ndarray  # (N, 48, 48) signed, d logit / d pixel

    @property
    def map(self) -> np.ndarray:
        """|gradient|, the saliency map (N, 48, 48)."""
        return np.abs(self.gradient)


@dataclass
class Explainer:
    """The companions of one model file, opened lazily with onnxruntime.

    >>> ex = Explainer("exported/cnn.onnx")
    >>> sal = ex.saliency(face)                 # predicted class; sal.map is (1, 48, 48)
    >>> maps = ex.layer_outputs(face)["conv2"]  # (64, 22, 22)
    >>> grid = ex.visualise_filters("conv2", AscentConfig(steps=40))[-1]
    """

    model_path: Path
    threads: int | None = None
    _sessions: dict = field(default_factory=dict, repr=False)
    _layers: list | None = field(default=None, repr=False)

    def __post_init__(self):
        self.model_path = Path(self.model_path)

    # what exists
    @property
    def has_gradient(self) -> bool:
        return gradient_path(self.model_path).is_file()

    @property
    def has_layers(self) -> bool:
        return layers_path(self.model_path).is_file()

    def has_filters(self, layer: str) -> bool:
        return filters_path(self.model_path, layer).is_file()

    @property
    def layers(self) -> list[dict]:
        """The conv layers (``name``, ``module``, ``channels``, ``height``, ``width``) from the companions' metadata."""
        if self._layers is None:
            self._layers = []
            for path in [layers_path(self.model_path), gradient_path(self.model_path)]:
                if path.is_file():
                    self._layers = json.loads(self._session(path).get_modelmeta().custom_metadata_map.get(META_LAYERS, "[]"))
                    break
        return self._layers

    @property
    def class_names(self) -> list[str]:
        """The class names in the gradient graph's metadata (the model's), else FER2013's."""
        path = gradient_path(self.model_path)
        if path.is_file():
            names = json.loads(self._session(path).get_modelmeta().custom_metadata_map.get(META_CLASS_NAMES, "null"))
            if isinstance(names, list):
                return [str(n) for n in names]
        return list(CLASS_NAMES)

    def layer(self, name: str) -> dict:
        for info in self.layers:
            if name in (info["name"], info["module"]):
                return info
        have = ", ".join(i["name"] for i in self.layers) or "none"
        raise ExplainError(f"{self.model_path.name}: no conv layer {name!r} in its explanation graphs (layers: {have})")

    def _session(self, path: Path):
        if path not in self._sessions:
            if not path.is_file():
                raise ExplainError(f"{path}: missing; export the model again (fer-train export RUN --name NAME) to write its explanation graphs")
            self._sessions[path] = make_session(path, self.threads)
        return self._sessions[path]

    # the gradient graph
    def gradient_fn(self) -> GradientFn:
        session = self._session(gradient_path(self.model_path))

        def run(images: np.ndarray, index: np.ndarray):
            logits, grad = session.run([ONNX_OUTPUT, GRADIENT], {ONNX_INPUT: as_batch(images)[:, None], CLASS_INDEX: np.asarray(index, np.int64)})
            return logits[np.arange(len(logits)), index], grad[:, 0]

        return run

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits (N, K) from the model file itself (it is cheaper than the gradient graph)."""
        x = as_batch(images)[:, None]
        if self.model_path.is_file():
            return self._session(self.model_path).run([ONNX_OUTPUT], {ONNX_INPUT: x})[0]
        return self._session(gradient_path(self.model_path)).run([ONNX_OUTPUT], {ONNX_INPUT: x, CLASS_INDEX: np.zeros(len(x), np.int64)})[0]

    def saliency(self, images: np.ndarray, class_index=None, batch_size: int = 64) -> SaliencyResult:
        """The gradient of a class's logit with respect to the pixels; ``class_index`` None: the predicted class."""
        x = as_batch(images)
        session = self._session(gradient_path(self.model_path))
        if class_index is None:
            classes = self.logits(x).argmax(axis=1)
        else:
            classes = np.broadcast_to(np.asarray(class_index, np.int64), (len(x),)).copy()
        logits, grads = [], []
        for i in range(0, len(x), batch_size):
            out = session.run([ONNX_OUTPUT, GRADIENT], {ONNX_INPUT: x[i:i + batch_size, None], CLASS_INDEX: classes[i:i + batch_size]})
            logits.append(out[0])
            grads.append(out[1][:, 0])
        return SaliencyResult(np.concatenate(logits), classes, np.concatenate(grads))

    def smoothgrad(self, images: np.ndarray, class_index=None, **kwargs) -> np.ndarray:
        x = as_batch(images)
        classes = self.logits(x).argmax(axis=1) if class_index is None else np.broadcast_to(np.asarray(class_index, np.int64), (len(x),))
        return smoothgrad(self.gradient_fn(), x, classes, **kwargs)

    # layer outputs
    def layer_outputs(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Every conv layer's output for one image: name → (C, H, W)."""
        session = self._session(layers_path(self.model_path))
        names = [o.name for o in session.get_outputs()]
        outputs = session.run(names, {ONNX_INPUT: as_batch(image)[:1, None]})
        return {name: out[0] for name, out in zip(names, outputs)}

    # filters
    def filter_gradient_fn(self, layer: str) -> GradientFn:
        session = self._session(filters_path(self.model_path, self.layer(layer)["name"]))

        def run(images: np.ndarray, index: np.ndarray):
            activation, grad = session.run([ACTIVATION, GRADIENT], {ONNX_INPUT: as_batch(images)[:, None], FILTER_INDEX: np.asarray(index, np.int64)})
            return activation, grad[:, 0]

        return run

    def visualise_filters(self, layer: str, config: AscentConfig | None = None, filters=None, snapshots=(), progress=None,
                          should_stop=None) -> list[AscentResult]:
        """Gradient ascent for ``filters`` (default: all) of ``layer``; see :func:`ascend`."""
        info = self.layer(layer)
        index = np.arange(info["channels"]) if filters is None else np.asarray(filters, np.int64)
        return ascend(self.filter_gradient_fn(info["name"]), index, config, snapshots, progress, should_stop)
