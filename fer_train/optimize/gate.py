"""The accuracy gate: a variant ships only if it loses at most :data:`MAX_ACCURACY_DROP` points of PublicTest
accuracy against its fp32 model (gains are fine)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fer_runtime.contract import IMAGE_SIZE, ONNX_INPUT, ONNX_OUTPUT
from fer_runtime.family import MAX_ACCURACY_DROP  # one gate: the tools that pick a variant read the same number

from .graph import as_model


def logits_of(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of an ONNX model (path or proto) for uint8 images (N, 48, 48), with onnxruntime."""
    from fer_runtime.sessions import make_session

    session = make_session(as_model(model).SerializeToString())
    out = []
    for i in range(0, len(images), batch_size):
        batch = np.asarray(images[i:i + batch_size], np.float32).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
        out.append(session.run([ONNX_OUTPUT], {ONNX_INPUT: batch})[0])
    return np.concatenate(out)


def accuracy_points(logits: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy in percentage points (0–100)."""
    return 100.0 * float((np.asarray(logits).argmax(1) == np.asarray(labels)).mean())


@dataclass
class GateResult:
    fp32_accuracy: float  # points
    variant_accuracy: float  # points
    max_drop: float

    @property
    def drop(self) -> float:
        return self.fp32_accuracy - self.variant_accuracy

    @property
    def passed(self) -> bool:
        return self.drop <= self.max_drop + 1e-9

    def __str__(self) -> str:
        if self.drop <= -0.005:
            change = f"{-self.drop:.2f} points gained"
        else:
            lost = f"{self.drop:.2f} points lost" if self.drop >= 0.005 else "no change"
            change = f"{lost}, {'within' if self.passed else 'more than'} the {self.max_drop:g} allowed"
        return f"PublicTest accuracy {self.variant_accuracy:.2f}% against {self.fp32_accuracy:.2f}% for fp32: {change}"


def accuracy_gate(fp32_accuracy: float, variant_accuracy: float, max_drop: float = MAX_ACCURACY_DROP) -> GateResult:
    """Whether a variant may ship: it loses at most ``max_drop`` points of accuracy (gains are fine)."""
    return GateResult(float(fp32_accuracy), float(variant_accuracy), float(max_drop))
