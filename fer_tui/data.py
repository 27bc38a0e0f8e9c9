"""Which faces the UI shows: FER2013 (or any source fer_train reads) found on its own, or demo faces.

Resolution order: the ``--data`` option, ``$FER_DATA``, the project's default path
(``fer_runtime.io.default_data_path``), else a built-in set of procedurally drawn demo faces.
Splits follow the study's protocol (``fer_runtime.splits.make_splits``), so ``val`` here is the same
validation set that training held out. Torch-free and textual-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from fer_runtime.contract import DATA_ENV_VAR
from fer_runtime.io import DataError, Source, Split, cache_root, default_data_path, load_source
from fer_runtime.splits import TRAIN_NAMES, make_splits
from fer_runtime.synthetic import make_faces, write_demo_csv

from .photos import (CROPS_SPLIT, PHOTO_SPLIT, PhotoFaces, Progress, is_class_folder, is_photo_folder, load_crops,
                     load_photos)

SPLIT_ORDER = ("val", "test", "train", "privatetest")
DEMO_TRAIN, DEMO_TEST, DEMO_SEED = 700, 280, 0
DEMO_HINT = f"demo faces (drawn, not FER2013): point fer-tui at FER2013 with --data PATH or {DATA_ENV_VAR}=PATH"


@dataclass
class DataSet:
    """The faces on offer, by split name, and where they came from."""

    name: str  # what the UI shows: the file name, or "demo faces"
    splits: dict[str, Split]  # in menu order; val first when the source has one
    path: Path | None = None  # the source file or folder; None for demo faces
    demo: bool = False
    notes: list[str] = field(default_factory=list)  # skipped rows, why demo faces are shown, ...
    photos: PhotoFaces | None = None  # for a folder of photographs: where each face of the split comes from

    @property
    def default_split(self) -> str:
        return "val" if "val" in self.splits else next(iter(self.splits))

    def describe(self) -> str:
        return self.name if self.path is None else str(self.path)

    def training_data(self, cache_dir: Path | None = None) -> Path:
        """A path ``fer-train --data`` can read: the source itself, or the demo faces written as CSV."""
        if self.path is not None:
            return self.path
        folder = cache_dir or cache_root()
        target = folder / f"demo-faces-{DEMO_TRAIN}-{DEMO_TEST}-{DEMO_SEED}.csv"
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            write_demo_csv(tmp, n_train=DEMO_TRAIN, n_test=DEMO_TEST, seed=DEMO_SEED)
            os.replace(tmp, target)
        return target


def resolve_data_path(option: str | Path | None) -> tuple[Path | None, str]:
    """The data to open and how it was found: ``--data``, ``$FER_DATA``, the default path, or none."""
    if option:
        return Path(option), "--data"
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env), f"${DATA_ENV_VAR}"
    default = default_data_path()
    return (default, "default path") if default is not None else (None, "")


def splits_of(source: Source) -> dict[str, Split]:
    """The study's val/test/train when the source has a training split; else the source's own splits."""
    has_train = any(name.lower() in TRAIN_NAMES for name in source.splits)
    if source.format != "folder" or has_train:
        try:
            protocol = make_splits(source)
        except DataError:
            protocol = None
        if protocol is not None:
            found = {name: protocol.get_or_none(name) for name in SPLIT_ORDER}
            return {name: split for name, split in found.items() if split is not None and len(split)}
    return {name.lower(): split for name, split in source.splits.items() if len(split)}


def load_dataset(path: str | Path, progress: Progress | None = None) -> DataSet:
    """Read any source fer_train understands, or detect the faces in a folder of photographs
    (:func:`fer_tui.photos.is_photo_folder`; ``progress(done, total, name)`` after each photo);
    :class:`DataError` says which file and what is wrong."""
    path = Path(path)
    notes: list[str] = []
    if path.is_dir() and is_photo_folder(path):
        photos = load_photos(path, progress=progress)
        if len(photos.split):
            return DataSet(name=path.name, splits={PHOTO_SPLIT: photos.split}, path=path, notes=photos.notes(), photos=photos)
        if not photos.photos:
            raise DataError(path, "no image could be read: " + "; ".join(photos.problems()[:3]))
        # Not one face found: these are most likely face crops of another size; show each image whole, as before.
        notes.append(f"no face found in any of the {len(photos.photos)} images by the face detector: each is shown whole "
                     "(its centre square) as one face")
    if path.is_dir() and _nested_without_classes(path):
        return DataSet(name=path.name, splits={CROPS_SPLIT: load_crops(path)}, path=path, notes=notes)  # 48×48 crops in subfolders
    try:
        source = load_source(path)
    except DataError as strict:  # the first bad row, with its line; maybe the rest is good
        try:
            source = load_source(path, skip_bad=True)
        except DataError:
            raise strict from None
    splits = splits_of(source)
    if not splits:
        raise DataError(path, "no faces found")
    if source.skipped:
        first = "; ".join(str(bad) for bad in source.skipped[:3])
        notes.append(f"skipped {len(source.skipped)} unreadable rows or images ({first})")
    return DataSet(name=path.name, splits=splits, path=path, notes=notes)


def _nested_without_classes(path: Path) -> bool:
    """Images in subfolders that are not class folders (and no Kaggle CSV): fer_runtime.io does not read these."""
    if any((path / name).is_file() for name in ("fer2013.csv", "fer2013.csv.gz")) or is_class_folder(path):
        return False
    return any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())


@lru_cache(maxsize=1)
def _demo_source() -> Source:
    # The same faces as fer_runtime.synthetic.write_demo_csv(n_train, n_test, seed), so a model trained on
    # the written CSV is evaluated on exactly the demo val/test splits shown here.
    train_x, train_y = make_faces(DEMO_TRAIN, DEMO_SEED)
    test_x, test_y = make_faces(DEMO_TEST, DEMO_SEED + 1)
    lines = np.arange(2, DEMO_TRAIN + DEMO_TEST + 2)
    splits = {"Training": Split(train_x, train_y, lines[:DEMO_TRAIN]), "PublicTest": Split(test_x, test_y, lines[DEMO_TRAIN:])}
    return Source(Path("demo faces"), "demo", splits)


def demo_dataset(reason: str | None = None) -> DataSet:
    """The built-in drawn faces (700 training → 70 val and 630 train, 280 test), clearly marked as such."""
    notes = [reason] if reason else []
    return DataSet(name="demo faces", splits=splits_of(_demo_source()), demo=True, notes=notes + [DEMO_HINT])


def open_dataset(option: str | Path | None, demo: bool = False, progress: Progress | None = None) -> tuple[DataSet, str | None]:
    """The data set to show and an error to report (when the data found could not be read).
    ``progress`` hears of each photo read in a folder of photographs."""
    if demo:
        return demo_dataset(), None
    path, how = resolve_data_path(option)
    if path is None:
        return demo_dataset("no FER2013 found"), None
    try:
        return load_dataset(path, progress), None
    except DataError as exc:
        message = f"cannot read the data given by {how}: {exc}"
        return demo_dataset(message), message
