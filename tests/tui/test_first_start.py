"""What a user meets on a first and a second start and when something goes wrong: predictions stored on disk by
content (a second start reads them, a changed model or changed data never does), predictions shipped beside the model
under the same key (a first start reads them, with the same guarantee), and notifications that show file names and
other programs' words as they are (no Rich markup eaten)."""

from __future__ import annotations

import numpy as np
import pytest

import fer_tui.predictions
from fer_runtime.catalog import best_model, load_entry
from fer_runtime.io import load_source
from fer_runtime.metrics import decode_predictions
from fer_runtime.recorded_predictions import content_key, model_sha256, read_index, shipped_path
from fer_runtime.splits import make_splits
from fer_train.record_predictions import record_predictions
from fer_tui.app import make_app
from fer_tui.data import load_dataset
from fer_tui.predictions import DiskPredictions, PredictionCache
from tui_support import headless, screen_text, settle, template_metadata, template_model, wait_until

SIZE = (120, 40)


def _split(demo_csv):
    return make_splits(load_source(demo_csv)).get("val")


def test_a_second_start_reads_the_predictions_a_first_start_stored(tmp_path, demo_csv):
    model = template_model(tmp_path / "m" / "template.onnx")
    split, disk = _split(demo_csv), DiskPredictions(tmp_path / "cache")
    first = PredictionCache(disk).compute(load_entry(model), "val", split)
    assert not first.stored and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    second = PredictionCache(disk).compute(load_entry(model), "val", split)  # a new app run: memory empty
    assert second.stored and np.array_equal(second.logits, first.logits) and second.ran == first.ran == "template.onnx"
    assert second.report().accuracy == first.report().accuracy


def test_stored_predictions_are_never_served_for_another_model_or_other_data(tmp_path, demo_csv):
    model = template_model(tmp_path / "m" / "template.onnx")
    split = _split(demo_csv)
    key = content_key(model, split)
    changed_labels = type(split)(split.images, np.roll(split.labels, 1), split.origin)
    changed_pixels = type(split)(split.images.copy(), split.labels, split.origin)
    changed_pixels.images[0, 0, 0] ^= 1
    assert content_key(model, changed_labels) != key and content_key(model, changed_pixels) != key
    template_model(model, {"class_names": ["A", "B", "C", "D", "E", "F", "G"]})  # re-exported: other bytes, same name
    assert content_key(model, split) != key


def test_a_damaged_cache_file_is_computed_again(tmp_path, demo_csv):
    model = template_model(tmp_path / "m" / "template.onnx")
    split, disk = _split(demo_csv), DiskPredictions(tmp_path / "cache")
    first = PredictionCache(disk).compute(load_entry(model), "val", split)
    stored = next((tmp_path / "cache").glob("*.npz"))
    stored.write_bytes(stored.read_bytes()[:40])  # cut short, as by a crash
    again = PredictionCache(disk).compute(load_entry(model), "val", split)
    assert not again.stored and np.array_equal(again.logits, first.logits)
    assert PredictionCache(disk).compute(load_entry(model), "val", split).stored  # and stored whole again


@headless
async def test_the_app_says_when_predictions_come_from_the_cache(tmp_path, demo_csv):
    model = template_model(tmp_path / "m" / "template.onnx")
    for expected in ("predictions in", "predictions from the cache"):
        app = make_app(data=demo_csv, models=[model], model_dirs=[])
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert await wait_until(pilot, lambda: app.context.predictions is not None)
            assert expected in app.activity, app.activity


def _never_run(*args, **kwargs):
    raise AssertionError("the model ran: the shipped predictions were not served")


def test_a_first_start_reads_the_predictions_shipped_beside_the_model(tmp_path, demo_csv, monkeypatch):
    model = template_model(tmp_path / "m" / "template.onnx")
    path, size = record_predictions(model, demo_csv, log=lambda line: None)
    assert path == tmp_path / "m" / "template.predictions.npz" and path.stat().st_size == size
    assert sorted(r.split for r in read_index(path).values()) == ["test", "val"]
    computed = PredictionCache(shipped=False).compute(load_entry(model), "val", load_dataset(demo_csv).splits["val"])
    monkeypatch.setattr(fer_tui.predictions, "predict_split", _never_run)
    split = load_dataset(demo_csv).splits["val"]  # the split as the app loads it: the key must be the recorder's
    first = PredictionCache(DiskPredictions(tmp_path / "cache")).compute(load_entry(model), "val", split)
    assert first.shipped and not first.stored and first.ran == "template.onnx"
    assert np.array_equal(first.predicted, computed.predicted)
    np.testing.assert_allclose(first.probs, computed.probs, atol=2e-3)  # kept as float16 log-probabilities
    assert first.report().accuracy == computed.report().accuracy
    assert not list((tmp_path / "cache").glob("*.npz"))  # nothing computed, so nothing to keep


def test_shipped_predictions_are_never_served_for_another_model_or_other_data(tmp_path, demo_csv):
    model = template_model(tmp_path / "m" / "template.onnx")
    record_predictions(model, demo_csv, log=lambda line: None)
    split = load_dataset(demo_csv).splits["val"]
    relabelled = type(split)(split.images, np.roll(split.labels, 1), split.origin)
    repainted = type(split)(split.images.copy(), split.labels, split.origin)
    repainted.images[0, 0, 0] ^= 1
    for other in (relabelled, repainted):
        assert not PredictionCache().compute(load_entry(model), "val", other).shipped
    template_model(model, {**template_metadata(), "fer_version": "re-exported"})  # the same function, other bytes, same name
    assert not PredictionCache().compute(load_entry(model), "val", split).shipped
    shipped_path(model).write_bytes(b"PK damaged")  # an unreadable file is as good as none
    assert not PredictionCache().compute(load_entry(model), "val", split).shipped


def test_recording_again_keeps_the_other_current_files_records_and_drops_stale_ones(tmp_path, demo_csv):
    model, tta = template_model(tmp_path / "m" / "template.onnx"), template_model(tmp_path / "m" / "template.tta.onnx")
    record_predictions(model, demo_csv, log=lambda line: None)
    record_predictions(tta, demo_csv, log=lambda line: None)
    assert sorted((r.ran, r.split) for r in read_index(shipped_path(model)).values()) == [
        ("template.onnx", "test"), ("template.onnx", "val"), ("template.tta.onnx", "test"), ("template.tta.onnx", "val")]
    template_model(model, {**template_metadata(), "fer_version": "re-exported"})
    record_predictions(tta, demo_csv, splits=("val",), log=lambda line: None)
    assert [(r.ran, r.split) for r in read_index(shipped_path(model)).values()] == [("template.tta.onnx", "val")]


def test_fer_train_predictions_writes_beside_the_model_and_names_what_is_wrong(tmp_path, demo_csv, capsys):
    from fer_train.cli import main as fer_train

    model = template_model(tmp_path / "m" / "template.onnx")
    assert fer_train(["predictions", str(model), "--data", str(demo_csv), "--splits", "test"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(shipped_path(model)) and "template.onnx on test: 140 faces" in err
    assert [r.split for r in read_index(shipped_path(model)).values()] == ["test"]
    assert fer_train(["predictions", str(tmp_path / "missing.onnx"), "--data", str(demo_csv)]) == 2
    assert "missing.onnx: no such model file" in " ".join(capsys.readouterr().err.split())  # as rich wrapped it


@headless
async def test_the_app_says_when_predictions_were_shipped_with_the_model(tmp_path, demo_csv):
    model = template_model(tmp_path / "m" / "template.onnx")
    record_predictions(model, demo_csv, log=lambda line: None)
    app = make_app(data=demo_csv, models=[model], model_dirs=[])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert await wait_until(pilot, lambda: app.context.predictions is not None)
        assert app.context.predictions.shipped and "predictions shipped with template.onnx" in app.activity, app.activity


def test_the_default_model_ships_its_predictions_for_fer2013():
    """The shipped predictions belong to the model file fer-tui runs by default (not to an earlier export of it), and
    predict the classes its metadata recorded at export, face by face."""
    entry = best_model()
    runner = entry.runner
    records = [r for r in read_index(shipped_path(runner.path)).values() if r.ran == runner.path.name]
    again = f"record them again: fer-train predictions (writes {shipped_path(runner.path).name})"
    assert sorted((r.split, r.faces) for r in records) == [("test", 3589), ("val", 2872)], again
    assert all(r.model_sha256 == model_sha256(runner.path) for r in records), f"made for an earlier {runner.path.name}: {again}"
    assert shipped_path(runner.path).stat().st_size < 200_000
    with np.load(shipped_path(runner.path)) as stored:
        for r in records:
            recorded = decode_predictions(runner.metadata["metrics"][r.split]["predictions"])
            assert np.array_equal(stored[r.key].argmax(axis=1), recorded), r.split


@pytest.mark.real_data
def test_a_first_start_on_fer2013_needs_no_model_run(tmp_path, real_data, monkeypatch):
    entry = best_model()
    monkeypatch.setattr(fer_tui.predictions, "predict_split", _never_run)
    predictions = PredictionCache(DiskPredictions(tmp_path)).compute(entry, "val", load_dataset(real_data).splits["val"])
    assert predictions.shipped and len(predictions) == 2872
    # the predictions are those of the file that ran them (the gate-passing int8 variant where there is one), so their
    # accuracy is the one that file records, which may differ from the chosen file's by a few faces
    assert predictions.ran == entry.runner.path.name
    assert predictions.report().accuracy == pytest.approx(entry.runner.metadata["metrics"]["val"]["accuracy"], abs=1e-5)


@headless
async def test_notifications_keep_brackets_from_files_and_programs(tmp_path):
    app = make_app(demo=True, model_dirs=[tmp_path])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.notify("fer-train exited with code 2: pip install '.[train]' (see [red]the log[/red])", title="training failed")
        await pilot.pause(0.3)
        shown = list(app._notifications)[-1]
        # Textual's Toast renders a message through Content.from_markup only when markup is on
        assert shown.markup is False and shown.message.endswith("pip install '.[train]' (see [red]the log[/red])")
        app.notify("[b]bold on purpose[/b]", markup=True)  # a caller that wants markup still gets it
        await pilot.pause(0.3)
        assert list(app._notifications)[-1].markup is True
