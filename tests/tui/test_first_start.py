"""What a user meets on a second start and when something goes wrong: predictions stored on disk by content (a
second start reads them, a changed model or changed data never does), and notifications that show file names
and other programs' words as they are (no Rich markup eaten)."""

from __future__ import annotations

import numpy as np

from fer_runtime.catalog import load_entry
from fer_runtime.io import load_source
from fer_runtime.splits import make_splits
from fer_tui.app import make_app
from fer_tui.predictions import DiskPredictions, PredictionCache, content_key
from tui_support import headless, screen_text, settle, template_model, wait_until

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
