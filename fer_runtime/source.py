"""What every data reader returns: a :class:`Source`, its images grouped into :class:`Split` objects with the rows it
skipped (:class:`BadRow`), and the :class:`DataError` a reader raises, which names the file and the line.

Its own module so that :mod:`fer_runtime.io` (finding and loading data) and :mod:`fer_runtime.csv_parse` (reading
CSV text) both build these without importing each other; :mod:`fer_runtime.io` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .contract import NUM_CLASSES

UNLABELLED = -1


class DataError(ValueError):
    """Input that cannot be read. ``str()`` names the file, the line (or image) and what was wrong."""

    def __init__(self, path: str | Path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class BadRow:
    """One row (or image) that was skipped because of ``skip_bad``."""

    line: int | None  # 1-based line of the file (the header is line 1); None for images
    where: str  # the file, or the image's path
    reason: str

    def __str__(self) -> str:
        return f"{self.where}, line {self.line}: {self.reason}" if self.line is not None else f"{self.where}: {self.reason}"


@dataclass
class Split:
    """Images of one split. ``lines`` trace each image to its source line (CSV) or file (folders)."""

    images: np.ndarray  # uint8 (N, 48, 48)
    labels: np.ndarray  # int64 (N,), UNLABELLED (-1) where the source has no label
    origin: list[str] | np.ndarray  # CSV: int line numbers; folders: image paths

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "Split":
        origin = np.asarray(self.origin)[index]
        return Split(self.images[index], self.labels[index], origin)

    @property
    def labelled(self) -> bool:
        return len(self.labels) > 0 and bool((self.labels >= 0).all())

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels[self.labels >= 0], minlength=NUM_CLASSES)


@dataclass
class Source:
    path: Path
    format: str  # "kaggle", "course-train", "course-test", "folder"
    splits: dict[str, Split]
    skipped: list[BadRow] = field(default_factory=list)
