"""A model's predictions over a split, computed once and kept — in memory while the app runs, and on disk for the
next start — and the filters of Browse.

The disk copy (:class:`DiskPredictions`, under ``$FER_CACHE_DIR/predictions``) is keyed by content, never by names
or times (:func:`fer_runtime.recorded_predictions.content_key`: the SHA-256 of the file that ran, of the weights file
beside it, and of the split's pixels and labels). A re-exported model, an edited CSV or another split gets another
key, so a stored result can never be stale; a file that cannot be read is ignored and computed again. Under the same
key, the predictions shipped beside the model (``<stem>.predictions.npz``, recorded at export) spare a first start
on a new machine the model run for FER2013's splits.

Torch-free and textual-free: the prediction worker calls :meth:`PredictionCache.compute`, the views call
:func:`select`.
"""

from __future__ import annotations

import os
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fer_runtime.io import Split, cache_root
from fer_runtime.metrics import Report, classification_report, softmax
from fer_runtime.recorded_predictions import content_key, load_shipped, shipped_path

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
    stored: bool = False  # read back from the disk cache (``seconds``: what computing them took then)
    shipped: bool = False  # read from the predictions shipped beside the model (``seconds``: what computing them took at export)
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


def default_folder() -> Path:
    """``$FER_CACHE_DIR/predictions`` (default ``~/.cache/fer/predictions``)."""
    return cache_root() / "predictions"


class DiskPredictions:
    """Logits on disk, one ``.npz`` per :func:`content_key`; never raises on a damaged or unwritable cache."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder is not None else default_folder()

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def load(self, key: str) -> tuple[np.ndarray, float, str] | None:
        """``(logits, seconds, ran)`` stored under ``key``, or None."""
        try:
            with np.load(self._path(key), allow_pickle=False) as stored:
                return stored["logits"].astype(np.float32), float(stored["seconds"]), str(stored["ran"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # absent, or cut short by a crash: compute again
            return None

    def save(self, key: str, predictions: Predictions) -> bool:
        """Store atomically (a reader never sees half a file); False when the folder cannot be written."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{key}.{os.getpid()}.{threading.get_ident()}.tmp.npz"
            np.savez(tmp, logits=predictions.logits, seconds=predictions.seconds, ran=predictions.ran)
            os.replace(tmp, self._path(key))
            return True
        except OSError:
            return False


class PredictionCache:
    """Predictions by (model, split): each is computed once per app run, read from ``disk`` (a
    :class:`DiskPredictions`, None for memory only) when an earlier run computed it, or from the predictions
    shipped beside the model when ``shipped``. Safe from worker threads."""

    def __init__(self, disk: DiskPredictions | None = None, shipped: bool = True):
        self._items: dict[tuple, Predictions] = {}
        self._lock = threading.Lock()
        self.disk = disk
        self.shipped = shipped

    def get(self, entry: ModelEntry, split_name: str) -> Predictions | None:
        with self._lock:
            return self._items.get((entry.key, split_name))

    def put(self, predictions: Predictions) -> None:
        with self._lock:
            self._items[(predictions.model_key, predictions.split_name)] = predictions

    def compute(self, entry: ModelEntry, split_name: str, split: Split, **kwargs) -> Predictions:
        """From memory, else from disk (the user's cache, then the predictions shipped beside the model), else computed
        (and then stored in both)."""
        cached = self.get(entry, split_name)
        if cached is not None:
            return cached
        runner = entry.runner
        kept = runner is not None and (self.disk is not None or (self.shipped and shipped_path(runner.path).is_file()))
        key = content_key(runner.path, split) if kept else None
        predictions = self._read(key, runner.path, entry, split_name, split) if key is not None else None
        if predictions is None:
            predictions = predict_split(entry, split_name, split, **kwargs)
            if key is not None and self.disk is not None:
                self.disk.save(key, predictions)
        self.put(predictions)
        return predictions

    def _read(self, key: str, model_file: Path, entry: ModelEntry, split_name: str, split: Split) -> Predictions | None:
        """The predictions kept under ``key``: in the user's cache, else shipped beside the model; None if neither has them."""
        stored = self.disk.load(key) if self.disk is not None else None
        shipped = load_shipped(model_file, key) if stored is None and self.shipped else None
        if stored is not None:
            logits, seconds, ran = stored
        elif shipped is not None:
            logits, seconds, ran = shipped[0], shipped[1].seconds, shipped[1].ran
        else:
            return None
        if logits.shape != (len(split), len(entry.class_names)):
            return None
        return Predictions(entry.key, split_name, logits, np.asarray(split.labels, np.int64), entry.class_names, seconds, ran=ran,
                           stored=stored is not None, shipped=shipped is not None)

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
