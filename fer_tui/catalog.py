"""The models on offer in the TUI: the runtime's catalogue (:mod:`fer_runtime.catalog`: every model file in
``exported/`` or given on the command line, loaded safely, companions left out) plus the two choices only the app
makes — how a re-export replaces an entry, and which model it opens on. Torch-free and textual-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from fer_runtime.catalog import ModelEntry, default_model_dirs, find_models, is_companion, load_entry, most_accurate

__all__ = ["ModelEntry", "default_model_dirs", "find_models", "is_companion", "load_entry", "merge_entries", "most_accurate", "opening_model"]


def merge_entries(models: Sequence[ModelEntry], loaded: Iterable[ModelEntry]) -> list[ModelEntry]:
    """``models`` with ``loaded`` added at the end, or in place of the entry of the same file (a re-export)."""
    merged = list(models)
    for entry in loaded:
        same = next((i for i, m in enumerate(merged) if m.path == entry.path), None)
        if same is None:
            merged.append(entry)
        else:
            merged[same] = entry
    return merged


def opening_model(models: Sequence[ModelEntry], named: Iterable[str | Path] = ()) -> ModelEntry | None:
    """The model the app opens on: the first usable one of the model files ``named`` on the command line, in
    their order; else (none named, or none of them usable) the most accurate of all (:func:`most_accurate`)."""
    for raw in named:
        path = Path(raw)
        if path.is_dir():
            continue  # a folder names no model in particular: its models compete by accuracy
        path = path.resolve() if path.exists() else path
        entry = next((m for m in models if m.path == path and m.ok), None)
        if entry is not None:
            return entry
    return most_accurate(models)
