"""A model's ONNX file: written with its metadata and checked against torch on real faces.

The one step every ONNX file of a torch model goes through: a run's export (:mod:`fer_train.export`) and
``fer-train explain --onnx`` (:mod:`fer_train.explain.report`) both call it, so neither imports the other.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fer_runtime.classifier import load_classifier
from fer_runtime.contract import (CLASS_NAMES, IMAGE_SIZE, META_ARCHITECTURE, META_CLASS_NAMES, META_CONFIG, META_EXTRA, META_INPUT,
                                  META_METRICS, META_PARAMETERS, META_VERSION, ONNX_INPUT, ONNX_OUTPUT)

from . import __version__
from .models import count_parameters
from .onnx_meta import ExportError, write_metadata

PARITY_ATOL = 1e-4
OPSET = 17


def export_onnx(model: nn.Module, path: str | Path, *, metadata: dict, check_images: np.ndarray, atol: float = PARITY_ATOL) -> float:
    """Write ``model`` to ``path`` with ``metadata`` and return the max |logit difference| against torch.

    ``check_images`` are real images (N, 48, 48) uint8; the check fails loudly above ``atol``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    dummy = torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    tmp = path.with_name(path.stem + ".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        # The TorchScript-based exporter: fast (0.1 s against 2.5 s for dynamo) and exact for these nets.
        torch.onnx.export(model, (dummy,), str(tmp), input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                          dynamic_axes={ONNX_INPUT: {0: "N"}, ONNX_OUTPUT: {0: "N"}}, opset_version=OPSET, dynamo=False)
    write_metadata(tmp, metadata)

    images = np.asarray(check_images, np.float32).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    if len(images) == 0:
        raise ExportError("the parity check needs at least one real image")
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    got = load_classifier(tmp).predict_logits(images)
    diff = float(np.abs(expected - got).max())
    if not diff <= atol:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{path}: onnxruntime disagrees with torch: max |Δlogit| = {diff:.3e} > {atol:.0e} on {len(images)} images")
    tmp.replace(path)
    return diff


def build_metadata(model: nn.Module, checkpoint: dict, metrics: dict, extra: dict | None = None) -> dict:
    return {
        META_CLASS_NAMES: list(CLASS_NAMES),
        META_ARCHITECTURE: checkpoint["model_name"],
        META_PARAMETERS: count_parameters(model),
        META_METRICS: metrics,
        META_CONFIG: checkpoint.get("config", {}),
        META_VERSION: __version__,
        META_INPUT: {"name": ONNX_INPUT, "shape": ["N", 1, IMAGE_SIZE, IMAGE_SIZE], "range": [0, 255], "dtype": "float32"},
        META_EXTRA: {"best_epoch": checkpoint.get("best_epoch"), "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"), **(extra or {})},
    }


