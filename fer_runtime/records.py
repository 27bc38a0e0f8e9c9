"""Face records as JSON lines or CSV, written as they come and flushed, for ``fer-predict``.

A record is a dict: ``source``; ``frame`` and ``time`` for videos; ``box`` [x, y, width, height]; ``landmarks``
[[x, y] × 5] (eyes, nose, mouth corners, image-left first; detectors that give them); ``detector``; ``label``;
``confidence``; ``probabilities`` (class name → probability). JSON lines keep it as it is; CSV spreads the box
over ``x, y, width, height``, the probabilities over one column per class, named by the model's classes, and the
landmarks over :data:`LANDMARK_COLUMNS` (empty for Haar).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Iterable, Sequence

FORMATS = ("jsonl", "csv")
CSV_FIXED = ("source", "frame", "time", "x", "y", "width", "height", "detector", "label", "confidence")
LANDMARK_COLUMNS = tuple(f"{point}_{axis}" for point in ("eye1", "eye2", "nose", "mouth1", "mouth2") for axis in "xy")  # 1: image left


def csv_header(class_names: Sequence[str]) -> list[str]:
    return [*CSV_FIXED, *class_names, *LANDMARK_COLUMNS]


def csv_row(record: dict, class_names: Sequence[str]) -> list:
    x, y, w, h = record["box"]
    probabilities = record.get("probabilities", {})
    landmarks = [v for point in record.get("landmarks", []) for v in point] or [""] * len(LANDMARK_COLUMNS)
    return [record["source"], record.get("frame", ""), record.get("time", ""), x, y, w, h, record.get("detector", ""),
            record.get("label", ""), record.get("confidence", ""), *(probabilities.get(name, "") for name in class_names), *landmarks]


class RecordWriter:
    """Writes records to ``path`` (None: stdout) in ``fmt``; :meth:`flush` after each batch so nothing waits in a buffer."""

    def __init__(self, path: Path | None, fmt: str, class_names: Sequence[str]):
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.fmt, self.class_names = fmt, list(class_names)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = open(path, "w", encoding="utf-8", newline="") if path is not None else sys.stdout
        self._csv = csv.writer(self.stream, lineterminator="\n") if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(csv_header(self.class_names))
            self.stream.flush()

    def write(self, records: Iterable[dict]) -> None:
        for record in records:
            if self._csv is not None:
                self._csv.writerow(csv_row(record, self.class_names))
            else:
                self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        self.flush()
        if self.stream is not sys.stdout:
            self.stream.close()
