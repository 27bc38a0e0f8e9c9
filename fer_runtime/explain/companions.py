"""Where a model's explanation graphs live: ``<stem>.grad.onnx``, ``<stem>.layers.onnx``, ``<stem>.gradcam.onnx``,
``<stem>.filters.<layer>.onnx`` — the family's, shared by every variant (``cnn.int8.onnx`` and ``fer-best.tta.int8.onnx``
use ``cnn.grad.onnx`` and ``fer-best.grad.onnx``). The names are read by :func:`fer_runtime.family.model_name`."""

from __future__ import annotations

from pathlib import Path

from ..family import model_name


def _companion(model_path: str | Path, kind: str) -> Path:
    path = Path(model_path)
    return path.with_name(model_name(path).companion_name(kind))


def gradient_path(model_path: str | Path) -> Path:
    """``exported/cnn.onnx`` → ``exported/cnn.grad.onnx``."""
    return _companion(model_path, "grad")


def layers_path(model_path: str | Path) -> Path:
    return _companion(model_path, "layers")


def gradcam_path(model_path: str | Path) -> Path:
    """``exported/cnn.onnx`` → ``exported/cnn.gradcam.onnx``."""
    return _companion(model_path, "gradcam")


def filters_path(model_path: str | Path, layer: str) -> Path:
    """``exported/cnn.onnx``, ``conv2`` → ``exported/cnn.filters.conv2.onnx``."""
    return _companion(model_path, f"filters.{layer}")


def is_companion(path: str | Path) -> bool:
    """Whether ``path`` is one of the explanation graphs (or a graph being written) rather than a model."""
    return model_name(path).is_companion
