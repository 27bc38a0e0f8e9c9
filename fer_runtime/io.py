"""Readers for FER2013 and similar data, with errors that name the file and the line.

Torch-free on purpose: the TUI reads data through this module too.

Three sources are understood:
- the Kaggle CSV ``emotion,pixels,Usage`` (plain or gzip);
- the original course format: ``label,feature`` (training) or ``id,feature`` (test, no labels);
- a folder of images ``<split>/<class name>/*`` (any size or colour), or ``<class name>/*``,
  or a flat folder of images without labels.

Every reader returns a :class:`Source`: its images as uint8 ``(N, 48, 48)`` grouped by the file's own
split names (``Training``, ``PublicTest``, ``PrivateTest``; folder names for image folders).
"""

from __future__ import annotations

import gzip
import hashlib
import io as _io
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .contract import CLASS_NAMES, DATA_ENV_VAR, DEFAULT_DATA_RELATIVE, IMAGE_SIZE, NUM_CLASSES, NUM_PIXELS

KAGGLE_USAGES = ("Training", "PublicTest", "PrivateTest")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
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
# CSV (Kaggle and course formats)


def cache_root() -> Path:
    """Where fer keeps what it can compute again: $FER_CACHE_DIR, else $XDG_CACHE_HOME/fer or ~/.cache/fer."""
    return Path(os.environ.get("FER_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fer")


def _cache_file(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / f"{path.name}.{key}.npz"


def read_csv(path: str | Path, *, skip_bad: bool = False, use_cache: bool = True) -> Source:
    """Read a Kaggle or course-format CSV, plain or gzip.

    A clean file is cached as .npz (keyed on path, size and modification time), so the second load of
    the 32,298-row FER2013 file takes a fraction of a second instead of about four.
    """
    path = Path(path)
    cache = _cache_file(path) if use_cache else None
    if cache is not None and cache.exists():
        try:
            return _read_cache(path, cache)
        except Exception:  # a damaged cache is rebuilt, never trusted
            cache.unlink(missing_ok=True)
    source = _parse_csv(path, skip_bad=skip_bad)
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


def _read_text(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(path, f"cannot read the file ({exc})") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(path, "not a text file (bytes that are not UTF-8)", line) from exc


def _parse_pixels(text: str) -> np.ndarray | str:
    """The 2,304 pixel values of one row, or a description of what is wrong with them."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns (instead of failing) on a token it cannot parse
        try:
            values = np.fromstring(text, dtype=np.int32, sep=" ")
        except (DeprecationWarning, ValueError):
            values = None
    if values is None:
        for i, token in enumerate(text.split()):
            if not token.lstrip("-").isdigit():
                return f"pixel {i + 1} is {token[:20]!r}, not a whole number"
        return "pixels are not space-separated whole numbers"
    if values.size != NUM_PIXELS:
        return f"expected {NUM_PIXELS} pixel values (48×48), found {values.size}"
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 255:
        bad = int(np.flatnonzero((values < 0) | (values > 255))[0])
        return f"pixel {bad + 1} is {int(values[bad])}, outside 0–255"
    return values.astype(np.uint8)


def _parse_label(text: str) -> int | str:
    text = text.strip()
    if not text.lstrip("-").isdigit():
        return f"label {text[:20]!r} is not a whole number"
    label = int(text)
    if not 0 <= label < NUM_CLASSES:
        return f"label {label} is outside 0–{NUM_CLASSES - 1}"
    return label


def _parse_csv(path: Path, *, skip_bad: bool) -> Source:
    text = _read_text(path)
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(path, "the file is empty")
    header = [h.strip().lower() for h in lines[0].split(",")]
    formats = {("emotion", "pixels", "usage"): "kaggle", ("label", "feature"): "course-train", ("id", "feature"): "course-test"}
    fmt = formats.get(tuple(header))
    if fmt is None:
        raise DataError(path, f"unknown header {lines[0][:80]!r}; expected 'emotion,pixels,Usage', 'label,feature' or 'id,feature'", 1)
    if len(lines) == 1:
        raise DataError(path, "the file has a header but no rows")

    ncols = len(header)
    images = np.empty((len(lines) - 1, NUM_PIXELS), np.uint8)
    labels = np.empty(len(lines) - 1, np.int64)
    usages: list[str] = []
    kept_lines: list[int] = []
    skipped: list[BadRow] = []
    n = 0
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split(",")
        if len(fields) != ncols:
            problem: str | None = f"expected {ncols} comma-separated fields, found {len(fields)}"
        else:
            problem = None
            if fmt == "course-test":
                label: int | str = UNLABELLED if fields[0].strip().isdigit() else f"id {fields[0][:20]!r} is not a whole number"
            else:
                label = _parse_label(fields[0])
            usage = fields[2].strip() if fmt == "kaggle" else ("Training" if fmt == "course-train" else "Test")
            if isinstance(label, str):
                problem = label
            elif fmt == "kaggle" and usage not in KAGGLE_USAGES:
                problem = f"unknown Usage {usage[:30]!r}; expected one of {', '.join(KAGGLE_USAGES)}"
            else:
                pixels = _parse_pixels(fields[1])
                if isinstance(pixels, str):
                    problem = pixels
        if problem is not None:
            if not skip_bad:
                raise DataError(path, problem, lineno)
            skipped.append(BadRow(lineno, str(path), problem))
            continue
        images[n] = pixels
        labels[n] = label
        usages.append(usage)
        kept_lines.append(lineno)
        n += 1
    if n == 0:
        raise DataError(path, f"no usable rows: all {len(skipped)} rows are bad (first: {skipped[0].reason})")

    images = images[:n].reshape(n, IMAGE_SIZE, IMAGE_SIZE)
    usage_arr = np.array(usages)
    line_arr = np.array(kept_lines, np.int64)
    splits = {}
    for usage in dict.fromkeys(usages):  # file order
        index = np.flatnonzero(usage_arr == usage)
        splits[usage] = Split(images[index], labels[:n][index], line_arr[index])
    return Source(path, fmt, splits, skipped)


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
