"""Readers for FER2013 and similar data, with errors that name the file and the line.

Torch-free on purpose: the TUI reads data through this module too.

Three sources are understood:
- the Kaggle CSV ``emotion,pixels,Usage`` (plain or gzip);
- the original course format: ``label,feature`` (training) or ``id,feature`` (test, no labels);
- a folder of images ``<split>/<class name>/*`` (any size or colour), or ``<class name>/*``,
  or a flat folder of images without labels.

Every reader returns a :class:`Source`: its images as uint8 ``(N, 48, 48)`` grouped by the file's own
split names (``Training``, ``PublicTest``, ``PrivateTest``; folder names for image folders).

This module finds the data, caches what was read from a CSV and reads image folders; the CSV text itself is parsed
by :mod:`fer_runtime.csv_parse`. :class:`Source`, :class:`Split`, :class:`BadRow` and :class:`DataError` live in
:mod:`fer_runtime.source`, which both import, and are importable from here as well.
"""

from __future__ import annotations

import hashlib
import io as _io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .contract import CLASS_NAMES, DATA_ENV_VAR, DEFAULT_DATA_RELATIVE, IMAGE_SIZE
from .csv_parse import KAGGLE_USAGES, parse_csv
from .source import UNLABELLED, BadRow, DataError, Source, Split

__all__ = ["IMAGE_SUFFIXES", "KAGGLE_FILE_NAMES", "KAGGLE_USAGES", "UNLABELLED", "BadRow", "DataError", "Source",
           "Split", "cache_root", "class_index_of", "default_data_path", "encode_csv", "load_image", "load_source",
           "read_csv", "read_image_folder"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


# ----------------------------------------------------------------------------------------------------
# finding the data


def default_data_path() -> Path | None:
    """``$FER_DATA``, else the shared FER2013 beside this checkout, else None."""
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    for base in (Path.cwd(), here):
        candidate = (base / DEFAULT_DATA_RELATIVE).resolve()
        if candidate.exists():
            return candidate
    return None


KAGGLE_FILE_NAMES = ("fer2013.csv.gz", "fer2013.csv")


def load_source(path: str | Path, *, skip_bad: bool = False, use_cache: bool = True) -> Source:
    """Read any supported source: a CSV, a folder of images, or a folder holding Kaggle's ``fer2013.csv(.gz)``.
    Raises :class:`DataError` on the first bad row unless ``skip_bad``."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or folder")
    if path.is_dir():
        kaggle = [path / name for name in KAGGLE_FILE_NAMES if (path / name).is_file()]
        if kaggle:  # the folder the Kaggle download unpacks to (``$FER_DATA`` may name it rather than the file)
            return read_csv(kaggle[0], skip_bad=skip_bad, use_cache=use_cache)
        return read_image_folder(path, skip_bad=skip_bad)
    return read_csv(path, skip_bad=skip_bad, use_cache=use_cache)


# ----------------------------------------------------------------------------------------------------
# CSV (Kaggle and course formats): the cache around fer_runtime.csv_parse


def cache_root() -> Path:
    """Where fer keeps what it can compute again: $FER_CACHE_DIR, else $XDG_CACHE_HOME/fer or ~/.cache/fer."""
    return Path(os.environ.get("FER_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fer")


def _cache_file(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / f"{path.name}.{key}.npz"


def read_csv(path: str | Path, *, skip_bad: bool = False, use_cache: bool = True) -> Source:
    """Read a Kaggle or course-format CSV, plain or gzip.

    The text is parsed by :func:`fer_runtime.csv_parse.parse_csv`: a file as Kaggle wrote it in blocks by numpy, any
    other row by row, so that a bad row is named by its line. A clean file is cached as .npz (keyed on path, size and
    modification time), so the second load of the 32,298-row FER2013 file takes a fraction of a second instead of two
    or three (most of it gunzip).
    """
    path = Path(path)
    cache = _cache_file(path) if use_cache else None
    if cache is not None and cache.exists():
        try:
            return _read_cache(path, cache)
        except Exception:  # a damaged cache is rebuilt, never trusted
            cache.unlink(missing_ok=True)
    source = parse_csv(path, skip_bad=skip_bad)
    if cache is not None and not source.skipped:
        _write_cache(source, cache)
    return source


def _read_cache(path: Path, cache: Path) -> Source:
    with np.load(cache, allow_pickle=False) as z:
        fmt = str(z["format"])
        names = [str(n) for n in z["split_names"]]
        splits = {n: Split(z[f"{n}/images"], z[f"{n}/labels"], z[f"{n}/lines"]) for n in names}
    return Source(path, fmt, splits)


def _write_cache(source: Source, cache: Path) -> None:
    arrays: dict[str, np.ndarray] = {"format": np.array(source.format), "split_names": np.array(list(source.splits))}
    for name, split in source.splits.items():
        arrays.update({f"{name}/images": split.images, f"{name}/labels": split.labels, f"{name}/lines": np.asarray(split.origin)})
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=cache.stem + ".", suffix=".tmp.npz", dir=cache.parent)  # two trainings started
        os.close(fd)  # together each write their own file; the last rename wins, whole
        tmp = Path(name)
        try:
            np.savez(tmp, **arrays)
            os.replace(tmp, cache)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:  # a read-only home is no reason to fail
        warnings.warn(f"could not write the data cache {cache}: {exc}", stacklevel=2)


# ----------------------------------------------------------------------------------------------------
# folders of images


def class_index_of(name: str) -> int | None:
    lowered = name.strip().lower()
    for i, class_name in enumerate(CLASS_NAMES):
        if lowered == class_name.lower() or lowered == str(i):
            return i
    return None


def load_image(path: str | Path) -> np.ndarray:
    """Any image file as uint8 (48, 48) grayscale: centre-cropped to a square, then resized."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            gray = img.convert("L")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(path, f"unreadable image ({exc.__class__.__name__}: {exc})") from exc
    w, h = gray.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    gray = gray.crop((left, top, left + side, top + side))
    if side != IMAGE_SIZE:
        gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    return np.asarray(gray, dtype=np.uint8)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image_folder(root: str | Path, *, skip_bad: bool = False) -> Source:
    """Read ``root/<split>/<class>/*``, ``root/<class>/*`` or a flat ``root/*`` of unlabelled images."""
    root = Path(root)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs and all(class_index_of(d.name) is not None for d in subdirs):
        layout = {root.name or "images": root}  # root/<class>/*
    elif subdirs:
        layout = {d.name: d for d in subdirs}  # root/<split>/<class>/*
    else:
        layout = {}
    skipped: list[BadRow] = []
    splits: dict[str, Split] = {}
    for split_name, split_dir in layout.items():
        entries: list[tuple[Path, int]] = []
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            label = class_index_of(class_dir.name)
            if label is None:
                raise DataError(class_dir, f"folder name {class_dir.name!r} is not a class; expected one of {', '.join(CLASS_NAMES)} (or 0–6)")
            entries += [(p, label) for p in _images_in(class_dir)]
        splits[split_name] = _read_images(entries, skipped, skip_bad)
    if not layout:
        flat = _images_in(root)
        if flat:
            splits["images"] = _read_images([(p, UNLABELLED) for p in flat], skipped, skip_bad)
    splits = {k: v for k, v in splits.items() if len(v)}
    if not splits:
        raise DataError(root, "no images found; expected <split>/<class name>/*.png|jpg, <class name>/*, or images directly in the folder")
    return Source(root, "folder", splits, skipped)


def _read_images(entries: list[tuple[Path, int]], skipped: list[BadRow], skip_bad: bool) -> Split:
    images, labels, origin = [], [], []
    for path, label in entries:
        try:
            images.append(load_image(path))
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append(BadRow(None, str(path), exc.reason))
            continue
        labels.append(label)
        origin.append(str(path))
    array = np.stack(images) if images else np.empty((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    return Split(array, np.array(labels, np.int64), origin)


def encode_csv(images: np.ndarray, labels: np.ndarray, usages: list[str] | None = None) -> str:
    """Kaggle-format CSV text for the given images (used by tests and demo data)."""
    out = _io.StringIO()
    out.write("emotion,pixels,Usage\n")
    for i, (img, label) in enumerate(zip(images, labels)):
        usage = usages[i] if usages is not None else "Training"
        out.write(f"{int(label)},{' '.join(map(str, np.asarray(img, np.uint8).ravel()))},{usage}\n")
    return out.getvalue()
