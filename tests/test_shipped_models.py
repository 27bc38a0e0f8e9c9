"""The models shipped in ``exported/``: the TUI opens each one, and the numbers in its metadata are its own,
measured again here on the real FER2013 (skipped, with the reason, when the data is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_train.config import TrainConfig
from fer_runtime.contract import CLASS_NAMES
from fer_runtime.metrics import classification_report, decode_predictions, softmax
from fer_train.data import load_splits
from fer_tui.catalog import find_models, load_entry

EXPORTED = Path(__file__).resolve().parent.parent / "exported"
SAMPLE, SAMPLE_SEED = 400, 2026  # faces per split run through a model that records its predictions (an ensemble takes 50 ms a face)
SHIPPED = ("cnn", "dnn", "cnn-semi", "cnn-half", "fer-best", "fer-best.tta")  # the study's three, the labeled half cnn-semi learnt beside, ours, ours with its views


@pytest.fixture(scope="module")
def splits(real_data):
    return load_splits(TrainConfig(data=str(real_data)))


def test_the_tui_lists_every_shipped_model_without_its_companions():
    names = {p.name for p in find_models([EXPORTED])}
    assert {f"{n}.onnx" for n in SHIPPED} <= names
    assert not any(".grad." in n or ".layers." in n or ".filters." in n for n in names)


def _check_sample_against_record(classifier, images, recorded, split):
    """The model predicts, on a seeded sample of ``SAMPLE`` faces, the classes its metadata records for them;
    it may differ only where its two best classes tie within float rounding (another CPU's kernels)."""
    rows = np.sort(np.random.default_rng(SAMPLE_SEED).choice(len(images), size=min(SAMPLE, len(images)), replace=False))
    probabilities = softmax(classifier.predict_logits(images[rows]))
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    differ = (probabilities.argmax(1) != recorded[rows]) & (top_two[:, 1] - top_two[:, 0] > 1e-4)
    assert not differ.any(), f"{split}: faces {rows[differ][:10].tolist()} predict otherwise than the metadata records"


@pytest.mark.real_data
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_opens_and_its_metadata_tells_the_truth(name, splits):
    entry = load_entry(EXPORTED / f"{name}.onnx", threads=2)
    assert entry.ok, entry.error
    assert entry.class_names == list(CLASS_NAMES) and entry.gradient_path is not None
    training = entry.metadata["training"]["training"]
    assert training["epochs"] >= 1 and training["wall_seconds"] > 0 and training["hardware"]
    assert len(training["history"]) >= 1 and all("val_acc" in h for h in training["history"])
    for split in ("val", "test"):
        s = getattr(splits, split)
        record = entry.metadata["metrics"][split]
        if "predictions" in record:  # checked on every face against the labels, and the model against it on a sample
            predicted = decode_predictions(record["predictions"])
            assert len(predicted) == len(s.labels), split
            _check_sample_against_record(entry.classifier, s.images, predicted, split)
        else:
            predicted = entry.classifier.predict_logits(s.images).argmax(1)
        report = classification_report(s.labels, predicted)
        assert record["accuracy"] == pytest.approx(report.accuracy, abs=1e-4), split
        assert record["count"] == len(s.labels)
        np.testing.assert_allclose([record["recall"][c] for c in CLASS_NAMES], report.recall, atol=1e-3)


@pytest.mark.parametrize("name", ["cnn", "cnn-semi", "cnn-half", "fer-best", "dnn"])
def test_each_model_predicts_with_its_int8_variant_which_passed_the_gate(name):
    entry = load_entry(EXPORTED / f"{name}.onnx")
    assert entry.runner is not None and entry.runner.path.name == f"{name}.int8.onnx"
    meta = entry.runner.metadata
    assert meta["variant_test_accuracy"] >= meta["fp32_test_accuracy"] - 0.005  # within the gate's 0.5 points
    assert load_entry(EXPORTED / f"{name}.onnx", variant="fp32").runner.path.name == f"{name}.onnx"
