"""Predictions kept for later, under a key made of what decides them: the TUI's disk cache of every split a user
opened (``fer_tui.predictions.DiskPredictions``), and the predictions recorded at export and shipped beside the
model, ``<stem>.predictions.npz`` (:data:`~fer_runtime.contract.PREDICTIONS_SUFFIX`), so that a first start on a new
machine shows FER2013's numbers without running the model.

:func:`content_key` is the SHA-256 of the model file that runs, of the weights file its family shares, and of the
split's pixels and labels. A re-exported model, an edited CSV or another split gets another key, so neither store can
ever serve predictions made for something else; a file that cannot be read is as good as absent.

The shipped file (written by ``fer-train predictions``) holds one float16 array of log-probabilities per key (float32
for a split where float16 would change a predicted class) and an index: for each key the split's name, the file that
ran, its SHA-256, the number of faces and the seconds computing them took. Torch-free and textual-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .contract import PREDICTIONS_SUFFIX
from .family import model_name
from .io import Split
from .metrics import log_softmax

CACHE_FORMAT = 1  # part of every key: a change to what is stored makes old files unreachable
INDEX = "index"  # the shipped file's JSON index, beside one array per key


def _model_files(model_file: Path) -> list[Path]:
    """The files that decide a model's outputs: the graph and, when there, the weights file of its family."""
    return [path for path in (model_file, model_file.with_name(model_name(model_file).weights_name)) if path.is_file()]


def _add_file(digest, path: Path) -> None:
    digest.update(path.name.encode() + b"\0")
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def content_key(model_file: str | Path, split: Split) -> str:
    """The SHA-256 of what decides the logits: the model file that runs, the weights file its family shares
    (``<stem>.weights``, when there), and the split's pixels and labels."""
    digest = hashlib.sha256(f"fer-predictions {CACHE_FORMAT}\n".encode())
    for path in _model_files(Path(model_file)):
        _add_file(digest, path)
    images = np.ascontiguousarray(split.images)
    digest.update(f"{images.dtype}{images.shape}".encode())
    digest.update(memoryview(images).cast("B"))
    digest.update(np.ascontiguousarray(np.asarray(split.labels, np.int64)).tobytes())
    return digest.hexdigest()


def model_sha256(model_file: str | Path) -> str:
    """The SHA-256 of the model's part of :func:`content_key` (graph and weights): whether a shipped record still
    belongs to the file beside it can be told without the data."""
    digest = hashlib.sha256()
    for path in _model_files(Path(model_file)):
        _add_file(digest, path)
    return digest.hexdigest()


def shipped_path(model_file: str | Path) -> Path:
    """Where the predictions shipped with a model lie: ``<stem>.predictions.npz`` beside it, one file per family."""
    model_file = Path(model_file)
    return model_file.with_name(model_name(model_file).stem + PREDICTIONS_SUFFIX)


@dataclass(frozen=True)
class Record:
    """What the shipped file says about one key's predictions."""

    key: str  # content_key(model file, split)
    split: str  # the split's name in fer-tui: val, test
    ran: str  # the model file that computed them
    model_sha256: str  # model_sha256(that file) when they were recorded
    faces: int
    seconds: float  # what computing them took


def _index(stored) -> dict[str, Record]:
    return {entry["key"]: Record(**entry) for entry in json.loads(str(stored[INDEX]))}


UNREADABLE = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile)  # absent, damaged, or another format


def read_index(path: str | Path) -> dict[str, Record]:
    """The records of a shipped file by key; {} when it is absent or cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return _index(stored)
    except UNREADABLE:
        return {}


def load_shipped(model_file: str | Path, key: str) -> tuple[np.ndarray, Record] | None:
    """``(logits, record)`` shipped beside ``model_file`` under ``key`` (log-probabilities as float32: softmax gives
    the probabilities back), or None."""
    path = shipped_path(model_file)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            record = _index(stored).get(key)
            logits = stored[key].astype(np.float32) if record is not None else None
    except UNREADABLE:
        return None
    return (logits, record) if logits is not None and logits.shape[0] == record.faces else None


def compact_log_probabilities(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities as float16 (half the bytes of float32, about three decimal digits); as float32 when float16
    would change the predicted class of any face (two classes within rounding of each other)."""
    log_probs = log_softmax(np.asarray(logits, np.float64))
    half = log_probs.astype(np.float16)
    same = np.array_equal(half.argmax(axis=1), log_probs.argmax(axis=1))
    return half if same else log_probs.astype(np.float32)


def read_shipped(path: str | Path) -> list[tuple[Record, np.ndarray]]:
    """Every ``(record, array as stored)`` of a shipped file; [] when it is absent or cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            return [(record, stored[key]) for key, record in _index(stored).items()]
    except UNREADABLE:
        return []


def write_shipped(path: str | Path, records: list[tuple[Record, np.ndarray]]) -> int:
    """Write ``(record, array)`` pairs as the shipped file at ``path``, atomically, each array as given (see
    :func:`compact_log_probabilities`); returns the file's size in bytes."""
    path = Path(path)
    arrays = {record.key: array for record, array in records}
    index = json.dumps([asdict(record) for record, _ in records], indent=1)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        np.savez_compressed(tmp, **{INDEX: np.array(index)}, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size
