"""Metadata on ONNX files: one way to write it, shared by the exporter, the explanation graphs and the variants."""

from __future__ import annotations

import json
from pathlib import Path

from fer_runtime.contract import META_ARCHITECTURE


class ExportError(RuntimeError):
    """An export that failed its own check (the checker, or onnxruntime against torch)."""


def set_metadata(proto, metadata: dict) -> None:
    """Replace ``proto``'s metadata with ``metadata``, each value JSON-encoded unless it is text already."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)


def write_metadata(path: str | Path, metadata: dict, doc: str | None = None) -> None:
    """Replace the file's metadata and check the model."""
    import onnx

    proto = onnx.load(str(path))
    set_metadata(proto, metadata)
    proto.doc_string = doc or f"fer {metadata.get(META_ARCHITECTURE, '')}: facial expression logits from raw 48x48 grayscale pixels 0..255"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
