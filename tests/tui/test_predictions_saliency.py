"""Predictions, their cache and Browse's filters (fer_tui.predictions); saliency (fer_tui.saliency)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fer_train.metrics import softmax
from fer_train.runtime import ModelError, load_classifier
from fer_tui.catalog import load_entry
from fer_tui.data import demo_dataset
from fer_tui.predictions import Cancelled, PredictionCache, Predictions, predict_split, select
from fer_tui.saliency import (GradientGraph, SaliencyRunner, gradient_saliency, masked_face, occlusion_batch,
                              occlusion_saliency, salient_mask)
from tui_support import template_gradient, template_model, template_weights


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("template")
    template_gradient(folder / "t.grad.onnx")
    return load_entry(template_model(folder / "t.onnx"))


def _predictions(labels, logits):
    return Predictions(("m",), "val", np.asarray(logits, np.float32), np.asarray(labels), ["a", "b", "c"])


def test_select_filters_by_true_predicted_and_outcome_and_sorts_by_confidence():
    labels = np.array([0, 1, 2, 1, 0])
    logits = np.array([[5, 0, 0], [0, 1, 0], [0, 3, 0], [0, 0, 2], [0, 0, 9]], np.float32)
    p = _predictions(labels, logits)
    assert list(p.predicted) == [0, 1, 1, 2, 2]
    assert list(select(labels, p)) == [0, 1, 2, 3, 4]
    assert list(select(labels, p, true=1)) == [1, 3]
    assert list(select(labels, p, predicted=2)) == [3, 4]
    assert list(select(labels, p, true=2, predicted=1)) == [2]
    assert list(select(labels, p, outcome="right")) == [0, 1]
    assert list(select(labels, p, outcome="wrong")) == [2, 3, 4]
    down = select(labels, p, sort="confidence-down")
    assert list(down) == [4, 0, 2, 3, 1] and (np.diff(p.confidence[down]) <= 0).all()
    assert list(select(labels, p, sort="confidence-up")) == list(down[::-1])
    # without predictions only the true class filters
    assert list(select(labels, None, true=0, predicted=1, outcome="wrong", sort="confidence-down")) == [0, 4]
    with pytest.raises(ValueError):
        select(labels, p, outcome="maybe")


def test_report_matches_the_confusion_and_needs_labels():
    p = _predictions([0, 1, 2, 1], [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]])
    report = p.report()
    assert report.accuracy == 0.5 and report.confusion == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]
    assert _predictions([-1, -1], [[1, 0, 0], [0, 1, 0]]).report() is None


def test_predictions_equal_onnxruntime_and_are_cached_once(template):
    split = demo_dataset().splits["test"]
    ticks = []
    predictions = predict_split(template, "test", split, progress=lambda d, t: ticks.append((d, t)), batch_size=100)
    assert ticks == [(100, 280), (200, 280), (280, 280)]
    direct = load_classifier(template.path).predict_logits(split.images)
    assert np.array_equal(predictions.logits, direct)
    assert np.allclose(predictions.probs, softmax(direct.astype(np.float64)), atol=1e-6)

    cache = PredictionCache()
    calls = []
    original = template.classifier.predict_logits

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    template.classifier.predict_logits = counting
    try:
        first = cache.compute(template, "test", split)
        second = cache.compute(template, "test", split)
    finally:
        template.classifier.predict_logits = original
    assert first is second and len(calls) == 1 and len(cache) == 1


def test_prediction_stops_when_cancelled(template):
    split = demo_dataset().splits["train"]
    stop = threading.Event()

    def progress(done, total):
        stop.set()  # cancel after the first batch

    with pytest.raises(Cancelled):
        predict_split(template, "train", split, progress=progress, cancelled=stop.is_set, batch_size=64)


def test_occlusion_batch_greys_one_patch_per_copy():
    face = np.arange(48 * 48, dtype=np.float32).reshape(48, 48) % 255
    batch, origins = occlusion_batch(face, patch=8, stride=4)
    assert batch.shape == (1 + 121, 1, 48, 48) and len(origins) == 121
    assert np.array_equal(batch[0, 0], face)
    y, x = origins[5]
    changed = np.argwhere(batch[6, 0] != face)
    assert changed.min(axis=0).tolist() == [y, x] and changed.max(axis=0).tolist() == [y + 7, x + 7]


def test_occlusion_finds_the_pixels_a_model_looks_at():
    # A "model" whose class 1 logit is the brightness of the top-left 8×8 corner.
    def predict(batch):
        corner = batch[:, 0, :8, :8].mean(axis=(1, 2)) / 10.0
        return np.stack([np.zeros(len(batch)), corner], axis=1)

    face = np.full((48, 48), 50, np.uint8)
    face[:8, :8] = 250
    calls = []
    result = occlusion_saliency(lambda b: (calls.append(len(b)), predict(b))[1], face, class_index=1)
    assert calls == [122]  # every occluded copy in one run
    assert result.method == "occlusion" and result.forward_passes == 122 and result.class_index == 1
    assert result.values.max() == 1.0 and result.values[:4, :4].min() > 0.9
    assert result.values[24:, 24:].max() == 0.0


def test_gradient_saliency_is_the_graphs_gradient(template):
    graph = GradientGraph(template.gradient_path)
    _, weights = template_weights()
    face = demo_dataset().splits["val"].images[3]
    result = gradient_saliency(graph, face, class_index=2)
    expected = np.abs(weights[:, 2]).reshape(48, 48)
    expected = np.clip(expected / np.percentile(expected, 99.5), 0, 1)
    assert result.method == "gradient" and result.forward_passes == 1
    assert np.allclose(result.values, expected, atol=1e-5)
    predicted = gradient_saliency(graph, face)
    direct = template.classifier.predict_logits(face[None])[0]
    assert predicted.class_index == int(direct.argmax())


def test_runner_prefers_the_gradient_graph_and_falls_back_to_occlusion(template, tmp_path):
    face = demo_dataset().splits["val"].images[0]
    runner = SaliencyRunner(template.classifier)
    assert runner.compute(face).method == "gradient"
    assert runner.compute(face, method="occlusion").method == "occlusion"
    bare = load_entry(template_model(tmp_path / "bare.onnx"))
    runner = SaliencyRunner(bare.classifier)
    assert runner.compute(face).method == "occlusion"
    with pytest.raises(ModelError, match="no gradient graph bare.grad.onnx"):
        runner.compute(face, method="gradient")
    (tmp_path / "broken.grad.onnx").write_text("not onnx")
    broken = SaliencyRunner(load_entry(template_model(tmp_path / "broken.onnx")).classifier)
    assert broken.compute(face).method == "occlusion" and "broken.grad.onnx" in broken.gradient_error


def test_mask_keeps_the_most_salient_share():
    values = np.zeros((48, 48), np.float32)
    values[10:20, 10:30] = 1.0  # 200 pixels
    mask = salient_mask(values, keep=0.25)
    assert abs(mask.mean() - 0.25) < 0.02 and mask[15, 20]
    assert not mask[40, 40]
    face = np.full((48, 48), 200, np.uint8)
    masked = masked_face(face, mask)
    assert (masked[mask] == 200).all() and (masked[~mask] == 0).all()
    with pytest.raises(ValueError):
        salient_mask(values, keep=0)
