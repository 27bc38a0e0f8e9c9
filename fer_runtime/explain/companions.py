"""Where a model's explanation graphs live: ``<stem>.grad.onnx``, ``<stem>.layers.onnx``, ``<stem>.filters.<layer>.onnx``."""

from __future__ import annotations

from pathlib import Path

from ..contract import FILTERS_INFIX, GRADIENT_SUFFIX, LAYERS_SUFFIX, MODEL_SUFFIX, VARIANT_NAMES


def _stem(model_path: str | Path) -> Path:
    """``exported/cnn.onnx`` (or ``cnn.fast.onnx``) → ``exported/cnn``."""
    path = Path(model_path)
    stem = path.with_name(path.name[: -len(MODEL_SUFFIX)]) if path.name.endswith(MODEL_SUFFIX) else path
    base, _, last = stem.name.rpartition(".")
    return stem.with_name(base) if base and last in VARIANT_NAMES else stem


def gradient_path(model_path: str | Path) -> Path:
    """``exported/cnn.onnx`` → ``exported/cnn.grad.onnx``."""
    return _stem(model_path).with_name(_stem(model_path).name + GRADIENT_SUFFIX)


def layers_path(model_path: str | Path) -> Path:
    return _stem(model_path).with_name(_stem(model_path).name + LAYERS_SUFFIX)


def filters_path(model_path: str | Path, layer: str) -> Path:
    """``exported/cnn.onnx``, ``conv2`` → ``exported/cnn.filters.conv2.onnx``."""
    return _stem(model_path).with_name(f"{_stem(model_path).name}{FILTERS_INFIX}{layer}{MODEL_SUFFIX}")


def is_companion(path: str | Path) -> bool:
    """Whether ``path`` is one of the explanation graphs rather than a model."""
    name = Path(path).name
    return name.endswith(GRADIENT_SUFFIX) or name.endswith(LAYERS_SUFFIX) or (FILTERS_INFIX in name and name.endswith(MODEL_SUFFIX))
