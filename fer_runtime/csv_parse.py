"""FER2013 CSV text into a :class:`~fer_runtime.source.Source`: the Kaggle file ``emotion,pixels,Usage`` and the
course files ``label,feature`` and ``id,feature``, plain or gzip.

Two parsers read the same files the same way: a fast one that takes a file exactly as Kaggle or the course wrote
it in blocks of numpy work (:func:`_parse_clean_csv`), and a careful one that reads anything else row by row and
names the line and what is wrong with it (:func:`_parse_csv_rows`). :func:`parse_csv` tries the first, then the
second. Finding the file and caching what was read is :func:`fer_runtime.io.read_csv`'s work.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np

from .contract import IMAGE_SIZE, NUM_CLASSES, NUM_PIXELS
from .source import UNLABELLED, BadRow, DataError, Source, Split

KAGGLE_USAGES = ("Training", "PublicTest", "PrivateTest")  # the values of the Kaggle file's Usage column
CSV_FORMATS = {("emotion", "pixels", "usage"): "kaggle", ("label", "feature"): "course-train", ("id", "feature"): "course-test"}
FIXED_USAGE = {"course-train": "Training", "course-test": "Test"}  # the course files have no Usage column


def _csv_format(header: str) -> str | None:
    return CSV_FORMATS.get(tuple(h.strip().lower() for h in header.split(",")))


def parse_csv(path: Path, *, skip_bad: bool) -> Source:
    """A clean file is read by :func:`_parse_clean_csv` in whole blocks; anything unexpected sends the file through
    the careful per-row parser, which names the line and what is wrong with it."""
    raw = _read_bytes(path)
    clean = _parse_clean_csv(path, raw)
    return clean if clean is not None else _parse_csv_rows(path, _decode(path, raw), skip_bad=skip_bad)


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as exc:
        raise DataError(path, f"cannot read the file ({exc})") from exc


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(path, "not a text file (bytes that are not UTF-8)", line) from exc


# -- the careful path: row by row, every problem named


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


def _parse_row(fmt: str, fields: list[str], ncols: int) -> tuple[int, str, np.ndarray] | str:
    """``(label, usage, pixels)`` of one row, or a description of what is wrong with it."""
    if len(fields) != ncols:
        return f"expected {ncols} comma-separated fields, found {len(fields)}"
    if fmt == "course-test":
        label: int | str = UNLABELLED if fields[0].strip().isdigit() else f"id {fields[0][:20]!r} is not a whole number"
    else:
        label = _parse_label(fields[0])
    if isinstance(label, str):
        return label
    usage = fields[2].strip() if fmt == "kaggle" else FIXED_USAGE[fmt]
    if fmt == "kaggle" and usage not in KAGGLE_USAGES:
        return f"unknown Usage {usage[:30]!r}; expected one of {', '.join(KAGGLE_USAGES)}"
    pixels = _parse_pixels(fields[1])
    return pixels if isinstance(pixels, str) else (label, usage, pixels)


def _parse_csv_rows(path: Path, text: str, *, skip_bad: bool) -> Source:
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(path, "the file is empty")
    fmt = _csv_format(lines[0])
    if fmt is None:
        raise DataError(path, f"unknown header {lines[0][:80]!r}; expected 'emotion,pixels,Usage', 'label,feature' or 'id,feature'", 1)
    if len(lines) == 1:
        raise DataError(path, "the file has a header but no rows")
    ncols = len(lines[0].split(","))
    images = np.empty((len(lines) - 1, NUM_PIXELS), np.uint8)
    labels = np.empty(len(lines) - 1, np.int64)
    usages: list[str] = []
    kept_lines: list[int] = []
    skipped: list[BadRow] = []
    for lineno, line in enumerate(lines[1:], start=2):
        row = _parse_row(fmt, line.split(","), ncols)
        if isinstance(row, str):
            if not skip_bad:
                raise DataError(path, row, lineno)
            skipped.append(BadRow(lineno, str(path), row))
            continue
        label, usage, pixels = row
        images[len(usages)], labels[len(usages)] = pixels, label
        usages.append(usage)
        kept_lines.append(lineno)
    if not usages:
        raise DataError(path, f"no usable rows: all {len(skipped)} rows are bad (first: {skipped[0].reason})")
    n = len(usages)
    return _source(path, fmt, images[:n], labels[:n], usages, np.array(kept_lines, np.int64), skipped)


def _source(path: Path, fmt: str, images: np.ndarray, labels: np.ndarray, usages: list[str], lines: np.ndarray,
            skipped: list[BadRow]) -> Source:
    """Rows grouped into splits by their Usage, each split in file order, the splits in order of first appearance."""
    images = images.reshape(len(images), IMAGE_SIZE, IMAGE_SIZE)
    usage_arr = np.array(usages)
    splits = {}
    for usage in dict.fromkeys(usages):
        index = np.flatnonzero(usage_arr == usage)
        splits[usage] = Split(images[index], labels[index], lines[index])
    return Source(path, fmt, splits, skipped)


# -- the fast path: a clean file in whole blocks

CLEAN_BLOCK_ROWS = 2048  # rows parsed per numpy pass: about 14 MB of FER2013 text, so the temporaries stay small
# Bytes that end a line for str.splitlines (the careful path) but not for bytes.split(b"\n") (this one)
OTHER_LINE_BREAKS = (b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e")
CLEAN_LABELS = {str(label).encode() for label in range(NUM_CLASSES)}


def _parse_clean_csv(path: Path, raw: bytes) -> Source | None:
    """The whole file when it is exactly as Kaggle or the course wrote it — ASCII, ``\\n`` line ends, one-digit labels
    0–6, known Usage names, 2,304 numbers 0–255 of at most three digits separated by spaces — its pixels parsed by
    numpy in blocks of :data:`CLEAN_BLOCK_ROWS` rows, without a Python object per number. None as soon as anything
    else turns up: then the careful parser reads the file and names what it found."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # the byte-order mark that utf-8-sig drops
    if not raw.isascii() or any(mark in raw for mark in OTHER_LINE_BREAKS):
        return None
    header_end = raw.find(b"\n")
    fmt = _csv_format(raw[:header_end].decode()) if header_end > 0 else None
    if fmt is None:
        return None
    rows = _clean_rows(raw, header_end + 1, ncols=raw.count(b",", 0, header_end) + 1)
    if not rows:
        return None
    if fmt == "course-test":
        labels = np.full(len(rows), UNLABELLED, np.int64)
        if not all(first.isdigit() for first, *_ in rows):
            return None
    elif {first for first, *_ in rows} <= CLEAN_LABELS:
        labels = np.array([int(first) for first, *_ in rows], np.int64)
    else:
        return None
    usages = [usage.decode() for _, usage, *_ in rows] if fmt == "kaggle" else [FIXED_USAGE[fmt]] * len(rows)
    if fmt == "kaggle" and not set(usages) <= set(KAGGLE_USAGES):
        return None
    images = np.empty((len(rows), NUM_PIXELS), np.uint8)
    for first in range(0, len(rows), CLEAN_BLOCK_ROWS):
        block = _clean_pixels(raw, [(start, end) for *_, start, end in rows[first:first + CLEAN_BLOCK_ROWS]])
        if block is None:
            return None
        images[first:first + len(block)] = block
    return _source(path, fmt, images, labels, usages, np.arange(2, len(rows) + 2, dtype=np.int64), [])


def _clean_rows(raw: bytes, start: int, ncols: int) -> list[tuple[bytes, bytes, int, int]] | None:
    """Every line from ``start`` on as ``(first field, Usage field, start, end of the pixel field)`` when each has
    ``ncols`` fields (the Usage field is b"" in the two-column course formats); None when one has not. Blank lines at
    the end are left out, as the careful path leaves them out."""
    last = len(raw)
    while last > start and raw[last - 1] in b" \t\n\r\x0b\x0c":
        last -= 1
    stop = raw.find(b"\n", last)
    stop = len(raw) if stop < 0 else stop  # the end of the last line that is not blank
    rows = []
    while start < stop:
        end = raw.find(b"\n", start, stop)
        end = stop if end < 0 else end
        if raw.count(b",", start, end) != ncols - 1:
            return None
        comma = raw.index(b",", start, end)
        pixels_end = raw.index(b",", comma + 1, end) if ncols == 3 else end
        rows.append((raw[start:comma], raw[pixels_end + 1:end], comma + 1, pixels_end))
        start = end + 1
    return rows


def _clean_pixels(raw: bytes, spans: list[tuple[int, int]]) -> np.ndarray | None:
    """uint8 ``(len(spans), 2304)`` when every pixel field ``raw[start:end]`` holds 2,304 whole numbers 0–255 of one to
    three digits separated by spaces; else None. The fields of consecutive lines at once: a number is read where its
    last digit stands, from the two bytes before it."""
    begin, end = spans[0][0], spans[-1][1]
    text = np.full(end - begin + 3, ord(" "), np.uint8)  # spaces before the first number and after the last
    text[2:-1] = np.frombuffer(raw, np.uint8, count=end - begin, offset=begin)
    for (_, stop), (start, _) in zip(spans, spans[1:]):
        text[stop - begin + 2:start - begin + 2] = ord(" ")  # what lies between two pixel fields: ",Usage\nlabel,"
    digits = text - np.uint8(ord("0"))  # a space wraps round to 240
    is_digit = digits < 10
    if np.count_nonzero(is_digit) + np.count_nonzero(text == ord(" ")) != len(text):
        return None  # a sign, a letter, a tab: not for this path
    if (is_digit[:-3] & is_digit[1:-2] & is_digit[2:-1] & is_digit[3:]).any():
        return None  # four digits in a row
    last = np.flatnonzero(is_digit[2:-1] & ~is_digit[3:])  # text[last + 2] is the last digit of a number
    bounds = np.array([start for start, _ in spans] + [end + 1]) - begin  # field k and what follows: last in [bounds[k], bounds[k + 1])
    if (np.diff(np.searchsorted(last, bounds)) != NUM_PIXELS).any():
        return None  # not 2,304 numbers in every field
    digits *= is_digit  # a space reads as 0 from here on
    ones, tens, hundreds = (digits[2 - shift: len(digits) - 1 - shift][last] for shift in range(3))  # uint8
    hundreds *= is_digit[1:-2][last]  # two bytes before the last digit: the previous number's, after a one-digit one
    values = (ones + tens * 10).astype(np.uint16) + hundreds.astype(np.uint16) * 100  # up to 999 (numpy 1 and 2 alike)
    if values.max() > 255:
        return None
    return values.astype(np.uint8).reshape(len(spans), NUM_PIXELS)
