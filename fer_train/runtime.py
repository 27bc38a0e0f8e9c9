"""Run an exported model with onnxruntime: load, check the contract, read the metadata, predict.

Torch-free: this is what CPU-only users (and the TUI) need. The contract:
input ``image`` float32 ``[N, 1, 48, 48]`` of raw pixels 0..255, output ``logits`` float32 ``[N, 7]``,
class names and metrics in the model's metadata.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .constants import CLASS_NAMES, IMAGE_SIZE, ONNX_INPUT, ONNX_OUTPUT

# Metadata keys written by fer_train.export; values are JSON text.
META_CLASS_NAMES = "class_names"
META_ARCHITECTURE = "architecture"
META_PARAMETERS = "parameter_count"
META_METRICS = "metrics"
META_CONFIG = "train_config"
META_VERSION = "fer_version"
META_INPUT = "input"
META_EXTRA = "training"


class ModelError(ValueError):
    """An ONNX file that cannot serve as a fer model; the message names the file and the problem."""


@dataclass
class OnnxClassifier:
    path: Path
    session: object  # onnxruntime.InferenceSession
    metadata: dict = field(default_factory=dict)
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def architecture(self) -> str:
        return str(self.metadata.get(META_ARCHITECTURE, "unknown"))

    def predict_logits(self, images: np.ndarray, batch_size: int = 256, progress=None) -> np.ndarray:
        """Logits (N, 7) for uint8 or float images shaped (N, 48, 48) or (N, 1, 48, 48), pixels 0..255.

        ``progress(done, total)`` is called after each batch, if given.
        """
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[:, None]
        if x.shape[1:] != (1, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"images must be (N, 48, 48) or (N, 1, 48, 48), got {x.shape}")
        out = np.empty((len(x), len(self.class_names)), np.float32)
        for i in range(0, len(x), batch_size):
            batch = np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)
            out[i:i + len(batch)] = self.session.run([ONNX_OUTPUT], {ONNX_INPUT: batch})[0]
            if progress is not None:
                progress(min(i + batch_size, len(x)), len(x))
        return out


def _decode(value: str):
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


def make_session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle worker threads sleep instead of spin-waiting: spinning keeps every core busy, starving the
    # TUI's own thread and a training job beside it (3,589 faces: 7.3 s → 6.4 s under load, benchmarks/).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def load_classifier(path: str | Path, threads: int | None = None) -> OnnxClassifier:
    """Open an exported model and check it against the contract; :class:`ModelError` says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        session = make_session(path, threads)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0][:200]})") from exc
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names_in = [i.name for i in inputs]
    names_out = [o.name for o in outputs]
    if ONNX_INPUT not in names_in or ONNX_OUTPUT not in names_out:
        raise ModelError(f"{path}: expected input {ONNX_INPUT!r} and output {ONNX_OUTPUT!r}, found inputs {names_in} and outputs {names_out}")
    shape_in = inputs[names_in.index(ONNX_INPUT)].shape
    if len(shape_in) != 4 or list(shape_in[1:]) != [1, IMAGE_SIZE, IMAGE_SIZE]:
        raise ModelError(f"{path}: input {ONNX_INPUT!r} has shape {shape_in}; expected [N, 1, 48, 48]")
    shape_out = outputs[names_out.index(ONNX_OUTPUT)].shape
    if len(shape_out) != 2 or shape_out[1] != len(CLASS_NAMES):
        raise ModelError(f"{path}: output {ONNX_OUTPUT!r} has shape {shape_out}; expected [N, {len(CLASS_NAMES)}] "
                         f"({', '.join(CLASS_NAMES)})")

    meta = {k: _decode(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    warnings = []
    names = meta.get(META_CLASS_NAMES)
    if not (isinstance(names, list) and len(names) == shape_out[1]):
        if names is None:
            warnings.append(f"{path.name} has no class names in its metadata; using the FER2013 names in label order")
        else:
            warnings.append(f"{path.name}: class names in the metadata do not match its {shape_out[1]} outputs; using the FER2013 names")
        names = list(CLASS_NAMES)
    return OnnxClassifier(path, session, meta, [str(n) for n in names], warnings)
