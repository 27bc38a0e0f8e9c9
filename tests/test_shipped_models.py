"""The models shipped in ``exported/``: the TUI opens each one, and the numbers in its metadata are its own,
measured again here on the real FER2013 (skipped, with the reason, when the data is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_train.config import TrainConfig
from fer_train.constants import CLASS_NAMES
from fer_train.metrics import classification_report
from fer_train.train import load_splits
from fer_tui.catalog import find_models, load_entry

EXPORTED = Path(__file__).resolve().parent.parent / "exported"
SHIPPED = ("cnn", "dnn", "cnn-semi", "fer-best", "fer-best.tta", "fer-best.ensemble", "cnn.int8")  # the four; fer-best with flip averaging, an ensemble; the int8 CNN


@pytest.fixture(scope="module")
def splits(real_data):
    return load_splits(TrainConfig(data=str(real_data)))


def test_the_tui_lists_every_shipped_model_without_its_companions():
    names = {p.name for p in find_models([EXPORTED])}
    assert {f"{n}.onnx" for n in SHIPPED} <= names
    assert not any(".grad." in n or ".layers." in n or ".filters." in n for n in names)


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
        predicted = entry.classifier.predict_logits(s.images).argmax(1)
        report = classification_report(s.labels, predicted)
        recorded = entry.metadata["metrics"][split]
        assert recorded["accuracy"] == pytest.approx(report.accuracy, abs=1e-4), split
        assert recorded["count"] == len(s.labels)
        np.testing.assert_allclose([recorded["recall"][c] for c in CLASS_NAMES], report.recall, atol=1e-3)
