"""Readers: every supported format, every kind of bad input named by file and line, the cache."""

from __future__ import annotations

import gzip
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from fer_runtime.contract import CLASS_NAMES
from fer_runtime.io import DataError, encode_csv, load_source, read_csv
from fer_runtime.splits import make_splits, stratified_holdout
from fer_runtime.synthetic import make_faces


def _rows(n=14, seed=0):
    return make_faces(n, seed)


def test_kaggle_csv_plain_and_gzip_read_identically(tmp_path):
    x, y = _rows()
    text = encode_csv(x, y, ["Training"] * 10 + ["PublicTest"] * 4)
    plain = tmp_path / "f.csv"
    plain.write_text(text)
    gz = tmp_path / "f.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    for path in (plain, gz):
        src = load_source(path)
        assert src.format == "kaggle"
        assert list(src.splits) == ["Training", "PublicTest"]
        np.testing.assert_array_equal(src.splits["Training"].images, x[:10])
        np.testing.assert_array_equal(src.splits["PublicTest"].labels, y[10:])
        assert list(src.splits["PublicTest"].origin) == list(range(12, 16))  # file lines, header is line 1


def test_a_folder_holding_the_kaggle_file_reads_as_that_file(tmp_path):
    x, y = _rows()
    folder = tmp_path / "fer2013"
    folder.mkdir()
    (folder / "README.md").write_text("not data")
    (folder / "fer2013.csv.gz").write_bytes(gzip.compress(encode_csv(x, y, ["Training"] * 14).encode()))
    src = load_source(folder)  # what $FER_DATA=../shared/data/fer2013 hands the loader
    assert src.format == "kaggle"
    np.testing.assert_array_equal(src.splits["Training"].images, x)
    np.testing.assert_array_equal(src.splits["Training"].labels, y)


def test_course_formats(tmp_path):
    x, y = _rows(7)
    train = tmp_path / "train.csv"
    train.write_text("label,feature\n" + "".join(f"{l},{' '.join(map(str, im.ravel()))}\n" for l, im in zip(y, x)))
    test = tmp_path / "test.csv"
    test.write_text("id,feature\n" + "".join(f"{i},{' '.join(map(str, im.ravel()))}\n" for i, im in enumerate(x)))
    s = load_source(train)
    assert s.format == "course-train" and s.splits["Training"].labelled
    np.testing.assert_array_equal(s.splits["Training"].labels, y)
    t = load_source(test)
    assert t.format == "course-test" and (t.splits["Test"].labels == -1).all()
    np.testing.assert_array_equal(t.splits["Test"].images, x)


def _bad_file(tmp_path, line):
    x, y = _rows(3)
    text = encode_csv(x, y).splitlines()
    text[2] = line  # the second data row is line 3 of the file
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(text) + "\n")
    return path


PIXELS = " ".join(["7"] * 2304)


@pytest.mark.parametrize("line, message", [
    ("3," + " ".join(["7"] * 2303) + ",Training", "expected 2304 pixel values (48×48), found 2303"),
    ("3," + PIXELS.replace("7", "x7", 1) + ",Training", "pixel 1 is 'x7', not a whole number"),
    ("3," + PIXELS[:-1] + "300,Training", "pixel 2304 is 300, outside 0–255"),
    ("9," + PIXELS + ",Training", "label 9 is outside 0–6"),
    ("happy," + PIXELS + ",Training", "label 'happy' is not a whole number"),
    ("3," + PIXELS + ",Holdout", "unknown Usage 'Holdout'"),
    ("3," + PIXELS, "expected 3 comma-separated fields, found 2"),
])
def test_bad_rows_name_file_and_line(tmp_path, line, message):
    path = _bad_file(tmp_path, line)
    with pytest.raises(DataError) as err:
        load_source(path, use_cache=False)
    assert err.value.line == 3
    assert str(err.value).startswith(f"{path}, line 3: ")
    assert message in str(err.value)


def test_skip_bad_reports_every_skipped_row(tmp_path):
    path = _bad_file(tmp_path, "9," + PIXELS + ",Training")
    src = load_source(path, skip_bad=True, use_cache=False)
    assert len(src.splits["Training"]) == 2
    assert [(b.line, b.reason) for b in src.skipped] == [(3, "label 9 is outside 0–6")]
    assert list(src.splits["Training"].origin) == [2, 4]


def _same_source(a, b):
    assert (a.format, list(a.splits), a.skipped) == (b.format, list(b.splits), b.skipped)
    for name in a.splits:
        x, y = a.splits[name], b.splits[name]
        for left, right in ((x.images, y.images), (x.labels, y.labels), (np.asarray(x.origin), np.asarray(y.origin))):
            assert left.dtype == right.dtype and left.shape == right.shape and np.array_equal(left, right), name


def _both_paths(path):
    """What the fast path and the careful path make of a file (the fast one None when it declines)."""
    import fer_runtime.csv_parse as csv_parse

    raw = path.read_bytes()
    fast = csv_parse._parse_clean_csv(path, raw)
    return fast, csv_parse._parse_csv_rows(path, csv_parse._decode(path, raw), skip_bad=False)


def _kaggle_lines(n=14, seed=0):
    x, y = _rows(n, seed)
    usages = (["Training", "PublicTest", "PrivateTest"] * n)[:n]
    return encode_csv(x, y, usages).splitlines()


@pytest.mark.parametrize("variant", ["plain", "bom", "blank lines at the end", "leading zeros", "spaces around pixels",
                                     "course-train", "course-test", "one block per row pair"])
def test_the_fast_path_reads_exactly_what_the_careful_one_reads(tmp_path, monkeypatch, variant):
    import fer_runtime.csv_parse as csv_parse

    lines = _kaggle_lines()
    if variant == "bom":
        lines[0] = "\ufeff" + lines[0]
    elif variant == "blank lines at the end":
        lines += ["", "   ", "\t"]
    elif variant == "leading zeros":
        label, pixels, usage = lines[1].split(",")
        lines[1] = f"{label},{' '.join(v.zfill(3) for v in pixels.split())},{usage}"  # 7 → 007: three digits still
    elif variant == "spaces around pixels":
        label, pixels, usage = lines[2].split(",")
        lines[2] = f"{label},  {pixels.replace(' ', '  ', 9)} ,{usage}"
    elif variant in ("course-train", "course-test"):
        lines = ["label,feature" if variant == "course-train" else "id,feature"] + [
            f"{i if variant == 'course-test' else line.split(',')[0]},{line.split(',')[1]}" for i, line in enumerate(lines[1:])]
    elif variant == "one block per row pair":
        monkeypatch.setattr(csv_parse, "CLEAN_BLOCK_ROWS", 2)  # several blocks, the last one short
    path = tmp_path / "clean.csv"
    path.write_bytes("\n".join(lines).encode() + b"\n")
    fast, careful = _both_paths(path)
    assert fast is not None, "the fast path declined a clean file"
    _same_source(fast, careful)
    _same_source(load_source(path, use_cache=False), careful)


@pytest.mark.parametrize("change", ["crlf", "tab", "label with a space", "label 03", "arabic-indic label", "usage with a space",
                                    "four digits"])
def test_what_the_fast_path_declines_the_careful_path_reads(tmp_path, change):
    lines = _kaggle_lines()
    label, pixels, usage = lines[3].split(",")
    edits = {"tab": f"{label},{pixels.replace(' ', chr(9), 1)},{usage}", "label with a space": f" {label},{pixels},{usage}",
             "label 03": f"0{label},{pixels},{usage}", "arabic-indic label": f"{chr(0x660 + int(label))},{pixels},{usage}",
             "usage with a space": f"{label},{pixels},{usage} ",
             "four digits": f"{label},{' '.join(v.zfill(4) for v in pixels.split())},{usage}"}
    lines[3] = edits.get(change, lines[3])
    path = tmp_path / "odd.csv"
    path.write_bytes(("\r\n".join(lines) if change == "crlf" else "\n".join(lines)).encode() + b"\n")
    fast, careful = _both_paths(path)
    assert fast is None
    _same_source(load_source(path, use_cache=False), careful)
    x, y = _rows()
    edited = careful.splits["PrivateTest"]  # lines[3]: the third row, line 4 of the file
    assert edited.origin[0] == 4 and np.array_equal(edited.images[0], x[2]) and edited.labels[0] == y[2]


def test_a_bad_row_in_a_later_block_is_named_by_its_line(tmp_path, monkeypatch):
    import fer_runtime.csv_parse as csv_parse

    monkeypatch.setattr(csv_parse, "CLEAN_BLOCK_ROWS", 4)
    lines = _kaggle_lines()
    lines[11] = lines[11].replace(" ", " 256 ", 1)  # line 12 of the file, in the third block: one number too many, and too large
    path = tmp_path / "late.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        load_source(path, use_cache=False)
    assert err.value.line == 12 and "expected 2304 pixel values (48×48), found 2305" in str(err.value)
    skipped = load_source(path, skip_bad=True, use_cache=False)
    assert [bad.line for bad in skipped.skipped] == [12] and 12 not in np.concatenate([s.origin for s in skipped.splits.values()])


def test_the_fast_path_never_reads_a_file_otherwise_than_the_careful_one(tmp_path):
    """Seeded random damage to a clean file: whenever the fast path accepts the result, the careful path reads it
    the same; wherever the careful path finds a bad row, the fast path has declined."""
    clean = ("\n".join(_kaggle_lines(4)) + "\n").encode()
    rng = np.random.default_rng(31)
    pieces = [b" ", b"  ", b",", b"\n", b"\r", b"\t", b"0", b"7", b"25", b"300", b"-", b"+", b"x", b"\x1f", b"\xc3\xa9", b""]
    accepted = 0
    path = tmp_path / "damaged.csv"
    for _ in range(300):
        raw = bytearray(clean)
        for _ in range(rng.integers(1, 3)):
            at = int(rng.integers(0, len(raw)))
            raw[at:at + int(rng.integers(0, 3))] = pieces[rng.integers(len(pieces))]
        path.write_bytes(bytes(raw))
        try:
            fast, careful = _both_paths(path)
        except DataError:
            import fer_runtime.csv_parse as csv_parse

            assert csv_parse._parse_clean_csv(path, bytes(raw)) is None, bytes(raw)[:200]
            continue
        if fast is not None:
            accepted += 1
            _same_source(fast, careful)
    assert accepted > 10  # the damage sometimes leaves a file that is still clean (a 7 for a 0, say)


def test_empty_and_headerless_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.csv: the file is empty"):
        load_source(empty)
    only_header = tmp_path / "header.csv"
    only_header.write_text("emotion,pixels,Usage\n")
    with pytest.raises(DataError, match="header but no rows"):
        load_source(only_header)
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"odd.csv, line 1: unknown header"):
        load_source(odd)


def test_image_folder_any_size_and_colour(tmp_path):
    x, y = _rows(7)
    for split in ("train", "test"):
        for img, label in zip(x, y):
            folder = tmp_path / split / CLASS_NAMES[label].lower()
            folder.mkdir(parents=True, exist_ok=True)
            rgb = Image.fromarray(img).convert("RGB").resize((96, 120))  # not square, not gray, not 48
            rgb.save(folder / f"{label}.png" if split == "train" else folder / f"{label}.jpg")
    src = load_source(tmp_path)
    assert src.format == "folder" and set(src.splits) == {"train", "test"}
    train = src.splits["train"]
    assert train.images.shape == (7, 48, 48) and train.images.dtype == np.uint8
    assert sorted(train.labels.tolist()) == list(range(7))
    splits = make_splits(src)
    assert splits.test is not None and len(splits.test) == 7


def test_unreadable_image_is_named(tmp_path):
    folder = tmp_path / "train" / "happy"
    folder.mkdir(parents=True)
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken.png: unreadable image"):
        load_source(tmp_path)
    (folder / "ok.png").write_bytes(b"")
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(folder / "ok.png")
    src = load_source(tmp_path, skip_bad=True)
    assert len(src.splits["train"]) == 1 and "broken.png" in src.skipped[0].where


def test_unknown_class_folder(tmp_path):
    (tmp_path / "train" / "Bored").mkdir(parents=True)
    with pytest.raises(DataError, match="'Bored' is not a class"):
        load_source(tmp_path)


def test_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))
    x, y = _rows()
    path = tmp_path / "d.csv"
    path.write_text(encode_csv(x, y))
    first = read_csv(path)
    assert len(list((tmp_path / "cache").iterdir())) == 1
    np.testing.assert_array_equal(read_csv(path).splits["Training"].images, first.splits["Training"].images)
    x2, y2 = _rows(seed=9)
    path.write_text(encode_csv(x2[:5], y2[:5]))
    os.utime(path, ns=(1, 1))  # a new size and time: the old cache no longer matches
    again = read_csv(path)
    np.testing.assert_array_equal(again.splits["Training"].images, x2[:5])


def test_two_loads_writing_the_cache_at_once_both_succeed(tmp_path, monkeypatch):
    """Two trainings started together both parse the file and write the cache; their writes interleave here."""
    import fer_runtime.io as fio

    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))
    x, y = _rows()
    path = tmp_path / "d.csv"
    path.write_text(encode_csv(x, y))
    real_savez, calls = np.savez, []

    def savez_while_another_loads(file, **arrays):
        calls.append(file)
        if len(calls) == 1:  # the other process writes and renames its file while this one is writing
            read_csv(path)
        real_savez(file, **arrays)

    monkeypatch.setattr(fio.np, "savez", savez_while_another_loads)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "could not write the data cache" would fail the test
        first = read_csv(path)
    assert len(calls) == 2 and calls[0] != calls[1]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [fio._cache_file(path).name]  # no temporary file left
    monkeypatch.setattr(fio.np, "savez", real_savez)
    np.testing.assert_array_equal(read_csv(path).splits["Training"].images, first.splits["Training"].images)


def test_holdout_is_stratified_and_seeded():
    labels = np.repeat(np.arange(7), [400, 44, 410, 722, 483, 317, 496])
    keep, held = stratified_holdout(labels, 0.1, seed=0)
    assert len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == len(labels)
    np.testing.assert_array_equal(np.bincount(labels[held]), [40, 4, 41, 72, 48, 32, 50])
    np.testing.assert_array_equal(held, stratified_holdout(labels, 0.1, seed=0)[1])
    assert not np.array_equal(held, stratified_holdout(labels, 0.1, seed=1)[1])
