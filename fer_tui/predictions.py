"""A model's predictions over a split, computed once and cached while the app runs, and the filters of Browse.

Torch-free and textual-free: the prediction worker calls :meth:`PredictionCache.compute`, the views call
:func:`select`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from fer_runtime.io import Split
from fer_runtime.metrics import Report, classification_report, softmax

from .catalog import ModelEntry

SORTS = ("file", "confidence-down", "confidence-up")
OUTCOMES = ("all", "right", "wrong")


class Cancelled(Exception):
    """Raised inside a computation whose worker was cancelled."""


@dataclass
class Predictions:
    """Logits of one model on one split, with what every view derives from them."""

    model_key: tuple
    split_name: str
    logits: np.ndarray  # float32 (N, C)
    labels: np.ndarray  # int64 (N,), -1 where unlabelled
    class_names: list[str]
    seconds: float = 0.0
    ran: str = ""  # the file that computed them: the fastest variant that passed the gate (ModelEntry.runner)
    probs: np.ndarray = field(init=False, repr=False)
    predicted: np.ndarray = field(init=False, repr=False)
    confidence: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.probs = softmax(self.logits.astype(np.float64)).astype(np.float32) if len(self.logits) else np.zeros((0, len(self.class_names)), np.float32)
        self.predicted = self.probs.argmax(axis=1) if len(self.probs) else np.zeros(0, np.int64)
        self.confidence = self.probs.max(axis=1) if len(self.probs) else np.zeros(0, np.float32)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def labelled(self) -> bool:
        return len(self.labels) > 0 and bool((self.labels >= 0).all())

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels

    def report(self) -> Report | None:
        """Accuracy, per-class precision/recall/F1 and the confusion matrix; None without labels."""
        if not self.labelled:
            return None
        return classification_report(self.labels, self.predicted, self.class_names)


def predict_split(entry: ModelEntry, split_name: str, split: Split, progress: Callable[[int, int], None] | None = None,
                  cancelled: Callable[[], bool] | None = None, batch_size: int = 256, clock=time.perf_counter) -> Predictions:
    """Run the model over the split in batches; ``progress(done, total)`` after each, :class:`Cancelled` if asked."""
    if entry.classifier is None:
        raise ValueError(f"{entry.path}: cannot predict with a model that did not load ({entry.error})")

    def tick(done: int, total: int) -> None:
        if cancelled is not None and cancelled():
            raise Cancelled
        if progress is not None:
            progress(done, total)

    start = clock()
    runner = entry.runner  # the fastest variant that passed the gate, else the model itself
    logits = runner.predict_logits(split.images, batch_size=batch_size, progress=tick)
    return Predictions(entry.key, split_name, logits, np.asarray(split.labels, np.int64), entry.class_names, clock() - start,
                       ran=runner.path.name)


class PredictionCache:
    """Predictions by (model, split): each is computed once per app run. Safe to use from worker threads."""

    def __init__(self):
        self._items: dict[tuple, Predictions] = {}
        self._lock = threading.Lock()

    def get(self, entry: ModelEntry, split_name: str) -> Predictions | None:
        with self._lock:
            return self._items.get((entry.key, split_name))

    def put(self, predictions: Predictions) -> None:
        with self._lock:
            self._items[(predictions.model_key, predictions.split_name)] = predictions

    def compute(self, entry: ModelEntry, split_name: str, split: Split, **kwargs) -> Predictions:
        cached = self.get(entry, split_name)
        if cached is not None:
            return cached
        predictions = predict_split(entry, split_name, split, **kwargs)
        self.put(predictions)
        return predictions

    def __len__(self) -> int:
        return len(self._items)


def select(labels: np.ndarray, predictions: Predictions | None = None, *, true: int | None = None, predicted: int | None = None,
           outcome: str = "all", sort: str = "file") -> np.ndarray:
    """Indices of the faces that pass Browse's filters, in the chosen order.

    Without predictions only the true-class filter applies (and file order).
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
    labels = np.asarray(labels)
    keep = np.ones(len(labels), bool)
    if true is not None:
        keep &= labels == true
    if predictions is not None:
        if predicted is not None:
            keep &= predictions.predicted == predicted
        if outcome != "all":
            right = predictions.predicted == labels
            keep &= right if outcome == "right" else ~right & (labels >= 0)
    index = np.flatnonzero(keep)
    if predictions is not None and sort != "file":
        confidence = predictions.confidence[index]
        index = index[np.argsort(-confidence if sort == "confidence-down" else confidence, kind="stable")]
    return index
