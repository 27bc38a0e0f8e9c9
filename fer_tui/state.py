"""What every view looks at: the data, the split, the models, the active model and its predictions.

The app holds one :class:`Context` and replaces it whenever something changes, then hands the new one to
every view (``View.update_context``). Frozen, so a view can compare the old and new to see what changed.
No textual, no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fer_runtime.contract import CLASS_NAMES
from fer_runtime.io import Split

from .catalog import ModelEntry
from .data import DataSet
from .predictions import PredictionCache, Predictions


@dataclass(frozen=True)
class Settings:
    """Where the app writes: the Train view's export folder and run folders, and its thread count."""

    export_dir: Path = Path("exported")
    runs_root: Path = Path("runs")
    train_threads: int = max(1, (os.cpu_count() or 2) - 1)  # leave a core for the UI
    variant: str = "auto"  # which file predicts a split: the fastest variant that passed the gate, or fp32/fast/int8
    disk_cache: bool = True  # keep predictions on disk for the next start, and read those shipped beside the model (fer_tui.predictions)


@dataclass(frozen=True)
class Context:
    dataset: DataSet | None = None
    split_name: str | None = None
    models: tuple[ModelEntry, ...] = ()
    models_loaded: bool = False  # the first search for models has finished
    model: ModelEntry | None = None  # the active model (None: no usable model)
    predictions: Predictions | None = None  # of the active model on the split, once computed
    selected: int | None = None  # the selected face: an index into the split
    plain: bool = False  # characters instead of colour for pictures
    settings: Settings = Settings()
    cache: PredictionCache = field(default_factory=PredictionCache, compare=False)

    def evolve(self, **changes) -> "Context":
        return replace(self, **changes)

    @property
    def split(self) -> Split | None:
        if self.dataset is None or self.split_name is None:
            return None
        return self.dataset.splits.get(self.split_name)

    @property
    def class_names(self) -> list[str]:
        return self.model.class_names if self.model is not None and self.model.ok else list(CLASS_NAMES)

    @property
    def image(self) -> np.ndarray | None:
        split = self.split
        if split is None or self.selected is None or not 0 <= self.selected < len(split):
            return None
        return split.images[self.selected]

    @property
    def label(self) -> int | None:
        split = self.split
        if split is None or self.selected is None or not 0 <= self.selected < len(split):
            return None
        return int(split.labels[self.selected])

    def model_by_path(self, path) -> ModelEntry | None:
        return next((m for m in self.models if str(m.path) == str(path)), None)
