"""Run an exported model with onnxruntime: load, check the contract, read the metadata, predict.

Torch-free: this is what CPU-only users (and the TUI) need. The contract:
input ``image`` float32 ``[N, 1, 48, 48]`` of raw pixels 0..255, output ``logits`` float32 ``[N, 7]``,
class names and metrics in the model's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .contract import (
    CLASS_NAMES,
    IMAGE_SIZE,
    META_ARCHITECTURE,
    META_CLASS_NAMES,
    ONNX_INPUT,
    ONNX_OUTPUT,
)
from .metadata import decode_metadata
from .sessions import make_session  # noqa: F401  (re-exported: fer_runtime.classifier.make_session)


class ModelError(ValueError):
    """An ONNX file that cannot serve as a fer model; the message names the file and the problem."""


@dataclass
class OnnxClassifier:
    path: Path
    session: object  # onnxruntime.InferenceSession
    metadata: dict = field(default_factory=dict)
    class_names: list[str] = field(default_factory=lambda: list(CLASS_NAMES))
    warnings: list[str] = field(default_factory=list)
    requested: Path | None = None  # the file asked for, when load_classifier(variant=...) opened another (path)

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


def load_classifier(path: str | Path, threads: int | None = None, variant: str | None = None) -> OnnxClassifier:
    """Open an exported model and check it against the contract; :class:`ModelError` says what is wrong.

    ``variant=None`` (the default) opens exactly ``path``. ``variant="auto"`` opens the fastest speed variant
    of the model that passed the accuracy gate (``<stem>.int8.onnx``, else ``<stem>.fast.onnx``, else
    ``path``; :func:`fer_runtime.family.fastest_variant`); ``"fp32"``, ``"int8"`` or ``"fast"`` that one.
    The classifier's ``path`` is then the file opened and ``requested`` the one asked for.
    """
    path = requested = Path(path)
    if variant is not None:
        from .family import fastest_variant

        try:
            path = fastest_variant(requested, variant)
        except (ValueError, FileNotFoundError) as exc:
            raise ModelError(str(exc)) from exc
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        session = make_session(path, threads)
    except Exception as exc:  # onnxruntime raises its own exception types
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "external" in detail.lower():  # its tensors live in a weights file beside it (<stem>.weights), which failed
            import re

            from .contract import MODEL_SUFFIX, WEIGHTS_SUFFIX

            named = re.search(r'External data path does not exist: "([^"]+)"', detail)
            found = [named.group(1)] if named else {m.decode() for m in re.findall(rb"[\w.+-]+" + re.escape(WEIGHTS_SUFFIX.encode()), path.read_bytes())}
            weights = sorted(str(path.parent / Path(w).name) for w in found)
            missing = [w for w in weights if not Path(w).is_file()]
            if missing:
                raise ModelError(f"{path}: its weights file {', '.join(missing)} is missing (a model is its {MODEL_SUFFIX} file and "
                                 f"the {WEIGHTS_SUFFIX} file beside it: copy both)") from exc
            raise ModelError(f"{path}: its weights file {', '.join(weights) or '(unnamed)'} does not hold the tensors the graph "
                             f"expects (truncated, or from another export?): {detail[-200:]}") from exc
        raise ModelError(f"{path}: not a loadable ONNX model ({detail[:200]})") from exc
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

    meta = decode_metadata(session)
    warnings = []
    names = meta.get(META_CLASS_NAMES)
    if not (isinstance(names, list) and len(names) == shape_out[1]):
        if names is None:
            warnings.append(f"{path.name} has no class names in its metadata; using the FER2013 names in label order")
        else:
            warnings.append(f"{path.name}: class names in the metadata do not match its {shape_out[1]} outputs; using the FER2013 names")
        names = list(CLASS_NAMES)
    return OnnxClassifier(path, session, meta, [str(n) for n in names], warnings, requested)
