"""``fer-train predictions``: a model's predictions on the validation and test splits, recorded beside it in
``<stem>.predictions.npz`` (:mod:`fer_runtime.recorded_predictions`), so that fer-tui's first start on a new machine
shows FER2013's numbers without running the model::

    fer-train predictions                              the model fer-tui opens on: the most accurate in exported/
    fer-train predictions exported/fer-best.onnx --data ../shared/data/fer2013/fer2013.csv.gz

Each split is recorded under the key fer-tui looks it up by (the content of the file that runs and of the split), for
the file fer-tui runs (the model's fastest variant that passed the accuracy gate) on the splits fer-tui shows (the
study's protocol, :func:`fer_runtime.splits.make_splits`). Other records in the file stay while they still belong to
the model file they name; the rest could never be served again and are dropped. Needs only the runtime.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from fer_runtime.catalog import best_model, default_model_dirs, load_entry
from fer_runtime.contract import META_METRICS
from fer_runtime.io import default_data_path, load_source
from fer_runtime.metrics import decode_predictions
from fer_runtime.recorded_predictions import (Record, compact_log_probabilities, content_key, model_sha256, read_shipped,
                                              shipped_path, write_shipped)
from fer_runtime.splits import make_splits

SPLITS = ("val", "test")  # fer-tui's names: FER2013's 2,872 held-out training faces and its 3,589 PublicTest faces


def _still_current(record: Record, folder: Path) -> bool:
    model_file = folder / record.ran
    return model_file.is_file() and model_sha256(model_file) == record.model_sha256


def record_predictions(model: str | Path | None = None, data: str | Path | None = None, splits: tuple[str, ...] = SPLITS,
                       log: Callable[[str], None] = print,
                       progress: Callable[[str, int, int], None] | None = None) -> tuple[Path, int]:
    """Run the model over each split and write its predictions beside it; returns the file and its size in bytes.
    ``progress(split, done, total)`` after each batch."""
    entry = best_model() if model is None else load_entry(model)
    if entry is None:
        raise FileNotFoundError(f"no usable model in {', '.join(str(d) for d in default_model_dirs())}: name one")
    runner = entry.runner
    if runner is None:
        raise ValueError(entry.error or f"{entry.path}: cannot load the model")
    data = Path(data) if data is not None else default_data_path()
    if data is None:
        raise FileNotFoundError("no data found: pass --data PATH or set FER_DATA")
    protocol = make_splits(load_source(data))
    target, digest = shipped_path(runner.path), model_sha256(runner.path)
    records = [(r, array) for r, array in read_shipped(target) if r.ran != runner.path.name and _still_current(r, target.parent)]
    for name in splits:
        split = protocol.get(name)
        start = time.perf_counter()
        logits = runner.predict_logits(split.images, batch_size=256,
                                       progress=(lambda done, total: progress(name, done, total)) if progress else None)
        seconds = time.perf_counter() - start
        record = Record(content_key(runner.path, split), name, runner.path.name, digest, len(split), round(seconds, 2))
        records.append((record, compact_log_probabilities(logits)))
        log(f"{runner.path.name} on {name}: {len(split):,} faces in {seconds:.1f} s{_agreement(runner.metadata, name, logits)}")
    return target, write_shipped(target, records)


def _agreement(metadata: dict, split: str, logits: np.ndarray) -> str:
    """How many faces get the class that the model's metadata recorded for them at export, when it recorded them."""
    recorded = ((metadata.get(META_METRICS) or {}).get(split) or {}).get("predictions")  # fer_runtime.metrics.split_metrics
    if not isinstance(recorded, str) or len(recorded) != len(logits):
        return ""
    same = int((decode_predictions(recorded) == logits.argmax(axis=1)).sum())
    return f"; the class recorded in its metadata for {same:,} of them"
