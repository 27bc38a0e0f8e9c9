"""A model file's metadata as Python values: every value is JSON text, written by ``fer_train`` (see
:mod:`fer_runtime.contract` for the keys)."""

from __future__ import annotations

import json


def decode_value(value: str):
    """One metadata value: its JSON decoded, or the text itself when it is not JSON."""
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


def decode_metadata(session) -> dict:
    """An onnxruntime session's custom metadata, decoded."""
    return {k: decode_value(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
