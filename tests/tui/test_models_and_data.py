"""Finding and loading models (fer_tui.catalog) and data (fer_tui.data): never fail, always say why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_runtime.contract import CLASS_NAMES, DATA_ENV_VAR
from fer_tui import data as tui_data
from fer_runtime.explain import gradient_path as gradient_companion
from fer_tui.catalog import (ModelEntry, find_models, is_companion, load_entry, merge_entries, most_accurate,
                             opening_model)
from fer_tui.data import DEMO_HINT, demo_dataset, load_dataset, open_dataset, resolve_data_path
from tui_support import template_gradient, template_model, wrong_output_model, wrong_shape_model


@pytest.mark.parametrize("name,companion", [
    ("cnn.onnx", False), ("cnn.int8.onnx", False), ("filters.onnx", False),
    ("cnn.grad.onnx", True), ("cnn.layers.onnx", True), ("cnn.filters.conv2.onnx", True), ("cnn.filters.onnx", True),
    ("cnn.tmp.onnx", True), ("cnn.int8.grad.onnx", True),
])
def test_companion_files_are_not_models(tmp_path, name, companion):
    assert is_companion(tmp_path / name) is companion


def test_find_models_lists_models_once_in_order_and_skips_companions(tmp_path):
    for name in ("b.onnx", "a.onnx", "a.grad.onnx", "a.int8.onnx", "a.layers.onnx", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    extra = tmp_path / "sub" / "z.onnx"
    extra.parent.mkdir()
    extra.write_bytes(b"x")
    found = [p.name for p in find_models([extra, tmp_path, tmp_path / "a.onnx", tmp_path / "no-folder", tmp_path / "gone.onnx"])]
    assert found == ["z.onnx", "a.int8.onnx", "a.onnx", "b.onnx", "gone.onnx"]
    # optimize's variants explain with their base model's graphs
    assert gradient_companion(tmp_path / "a.int8.onnx").name == "a.grad.onnx"
    assert gradient_companion(tmp_path / "a.fast.onnx").name == "a.grad.onnx"
    assert gradient_companion(tmp_path / "a.onnx").name == "a.grad.onnx"


def test_bad_model_files_load_as_entries_with_a_reason(tmp_path):
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x01garbage that is not protobuf")
    (tmp_path / "text.onnx").write_text("hello")
    wrong_shape_model(tmp_path / "wrong.onnx")
    for name in ("corrupt.onnx", "text.onnx"):
        entry = load_entry(tmp_path / name)
        assert not entry.ok and str(tmp_path / name) in entry.error and "not a loadable ONNX model" in entry.error
    wrong = load_entry(tmp_path / "wrong.onnx")
    assert not wrong.ok and "[N, 1, 48, 48]" in wrong.error
    three = load_entry(wrong_output_model(tmp_path / "three.onnx"))
    assert not three.ok and "has shape" in three.error and "expected [N, 7]" in three.error
    missing = load_entry(tmp_path / "missing.onnx")
    assert not missing.ok and "no such model file" in missing.error


def test_a_model_without_metadata_gets_generic_names_and_a_warning(tmp_path):
    entry = load_entry(template_model(tmp_path / "bare.onnx", with_metadata=False))
    assert entry.ok and entry.class_names == list(CLASS_NAMES)
    assert entry.warnings and "no class names" in entry.warnings[0]
    assert entry.metric("val") is None and entry.parameter_count is None and entry.architecture == "?"


def test_a_model_with_metadata(tmp_path):
    path = template_model(tmp_path / "t.onnx")
    template_gradient(tmp_path / "t.grad.onnx")
    entry = load_entry(path)
    assert entry.ok and not entry.warnings and entry.name == "t"
    assert entry.metric("val") == 0.5 and entry.parameter_count == 2304 * 7 and entry.architecture == "template"
    assert entry.gradient_path == tmp_path / "t.grad.onnx"
    assert entry.key == (str(path), path.stat().st_size, path.stat().st_mtime_ns)


# -- data ------------------------------------------------------------------------------------------


def _entry(path, val_accuracy=None, ok=True) -> ModelEntry:
    """An entry as load_entry makes it, without a file: a stand-in classifier holding the metadata."""
    from types import SimpleNamespace

    metrics = {"metrics": {"val": {"accuracy": val_accuracy}}} if val_accuracy is not None else {}
    return ModelEntry(path, SimpleNamespace(metadata=metrics) if ok else None, error=None if ok else "broken")


def test_the_most_accurate_model_by_its_recorded_val_accuracy(tmp_path):
    semi, cnn, fast, best, broken, bare = (_entry(tmp_path / "cnn-semi.onnx", 0.314), _entry(tmp_path / "cnn.onnx", 0.661),
                                           _entry(tmp_path / "cnn.fast.onnx", 0.661), _entry(tmp_path / "fer-best.tta.onnx", 0.690),
                                           _entry(tmp_path / "zzz.onnx", 0.99, ok=False), _entry(tmp_path / "bare.onnx"))
    assert most_accurate([semi, cnn, fast, best, broken, bare]) is best  # a variant competes; an unusable file does not
    assert most_accurate([semi, fast, cnn]) is fast  # a tie keeps the list's order
    assert most_accurate([bare, semi]) is semi and most_accurate([bare]) is bare  # no metrics: after all that have them
    assert most_accurate([broken]) is None and most_accurate([]) is None
    models = [semi, cnn, best]
    assert opening_model(models, named=[semi.path]) is semi  # named on the command line: first, whatever its accuracy
    assert opening_model(models, named=[tmp_path / "gone.onnx", cnn.path]) is cnn
    assert opening_model(models, named=[tmp_path]) is best  # a folder names no model
    assert opening_model([broken, semi], named=[broken.path]) is semi  # a named file that cannot be used is passed over


def test_merging_a_reexported_model_replaces_its_entry(tmp_path):
    a, b, a2, c = _entry(tmp_path / "a.onnx", 0.1), _entry(tmp_path / "b.onnx"), _entry(tmp_path / "a.onnx", 0.2), _entry(tmp_path / "c.onnx")
    assert merge_entries([a, b], [a2, c]) == [a2, b, c]


def test_data_is_found_in_order_option_env_default(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "env.csv"))
    assert resolve_data_path(tmp_path / "opt.csv") == (tmp_path / "opt.csv", "--data")
    assert resolve_data_path(None) == (tmp_path / "env.csv", f"${DATA_ENV_VAR}")
    monkeypatch.delenv(DATA_ENV_VAR)
    monkeypatch.setattr(tui_data, "default_data_path", lambda: tmp_path / "default.csv")
    assert resolve_data_path(None) == (tmp_path / "default.csv", "default path")
    monkeypatch.setattr(tui_data, "default_data_path", lambda: None)
    dataset, error = open_dataset(None)
    assert dataset.demo and error is None and DEMO_HINT in dataset.notes


def test_demo_faces_follow_the_study_protocol_and_match_the_demo_csv(tmp_path):
    demo = demo_dataset()
    assert demo.demo and demo.name == "demo faces" and list(demo.splits) == ["val", "test", "train"]
    assert (len(demo.splits["val"]), len(demo.splits["train"]), len(demo.splits["test"])) == (70, 630, 280)
    assert demo.default_split == "val"
    # the CSV a training job gets holds the very same faces, so its val split is the same
    written = load_dataset(demo.training_data(tmp_path))
    assert np.array_equal(written.splits["val"].images, demo.splits["val"].images)
    assert np.array_equal(written.splits["test"].labels, demo.splits["test"].labels)


def test_kaggle_csv_gets_val_test_train(demo_csv):
    dataset = load_dataset(demo_csv)
    assert list(dataset.splits) == ["val", "test", "train"] and len(dataset.splits["test"]) == 140
    assert dataset.path == demo_csv and not dataset.demo


def test_unreadable_data_falls_back_to_demo_faces_with_the_reason(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    dataset, error = open_dataset(bad)
    assert dataset.demo and error is not None
    assert str(bad) in error and "line 2" in error and "2304" in error
    assert any("cannot read" in note for note in dataset.notes)
    empty = tmp_path / "empty"
    empty.mkdir()
    dataset, error = open_dataset(empty)
    assert dataset.demo and "no images found" in error


def test_a_folder_of_ordinary_images_any_size_and_colour(tmp_path):
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(100, 80), (30, 30), (64, 120)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"face{i}.png")
    dataset = load_dataset(tmp_path)
    assert list(dataset.splits) == ["images"]
    split = dataset.splits["images"]
    assert split.images.shape == (3, 48, 48) and (split.labels == -1).all()
    labelled = tmp_path / "labelled"
    for cls in ("Happy", "Sad"):
        (labelled / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (50, 50), dtype=np.uint8)).save(labelled / cls / f"{i}.jpg")
    dataset = load_dataset(labelled)
    assert list(dataset.splits) == ["labelled"] and len(dataset.splits["labelled"]) == 6


def test_a_few_bad_rows_are_skipped_and_reported(tmp_path, demo_csv):
    lines = demo_csv.read_text().splitlines()
    lines[5] = "3,1 2 3,Training"
    patched = tmp_path / "patched.csv"
    patched.write_text("\n".join(lines) + "\n")
    dataset = load_dataset(patched)
    assert sum(len(s) for s in dataset.splits.values()) == 489
    assert dataset.notes and "skipped 1" in dataset.notes[0] and "line 6" in dataset.notes[0]


def test_a_split_is_predicted_by_the_fastest_variant_that_passed_the_gate_unless_told():
    from fer_tui.predictions import predict_split

    exported = Path(__file__).resolve().parents[2] / "exported"
    split = demo_dataset().splits["val"]
    fast = predict_split(load_entry(exported / "cnn.onnx"), "val", split)
    exact = predict_split(load_entry(exported / "cnn.onnx", variant="fp32"), "val", split)
    assert fast.ran == "cnn.int8.onnx" and exact.ran == "cnn.onnx"
    assert (fast.predicted == exact.predicted).mean() > 0.9  # the same model, within the gate's tolerance
