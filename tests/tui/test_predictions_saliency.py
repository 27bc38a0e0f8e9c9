"""Predictions, their cache and Browse's filters (fer_tui.predictions); saliency as the Saliency view asks for it
(``fer_runtime.explain.Explainer.face_saliency``, the one implementation)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fer_runtime.classifier import load_classifier
from fer_runtime.explain import (DEFAULT_METHOD, FACE_METHODS, ExplainError, Explainer, gaussian_blur, masked_image, normalise_map, occlusion,
                                 occlusion_batch)
from fer_runtime.metrics import softmax
from fer_tui.catalog import load_entry
from fer_tui.data import demo_dataset
from fer_tui.predictions import Cancelled, PredictionCache, Predictions, predict_split, select
from tui_support import template_gradient, template_model, template_weights, wrong_output_model


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
    batch, corners = occlusion_batch(face, patch=8, stride=4)
    assert batch.shape == (1 + 121, 48, 48) and len(corners) == 121
    assert np.array_equal(batch[0], face)
    y, x = corners[5]
    changed = np.argwhere(batch[6] != face)
    assert changed.min(axis=0).tolist() == [y, x] and changed.max(axis=0).tolist() == [y + 7, x + 7]


def test_occlusion_finds_the_pixels_a_model_looks_at(tmp_path):
    # A "model" whose class 1 logit is the brightness of the top-left 8×8 corner.
    def predict(batch):
        corner = batch[:, :8, :8].mean(axis=(1, 2)) / 10.0
        return np.stack([np.zeros(len(batch)), corner], axis=1)

    face = np.full((48, 48), 50, np.uint8)
    face[:8, :8] = 250
    calls = []
    explainer = Explainer(tmp_path / "none.onnx")  # no graphs at all: occlusion needs the model's logits only
    result = explainer.face_saliency(face, class_index=1, logits_fn=lambda b: (calls.append(len(b)), predict(b))[1], faithfulness=False)
    assert calls == [1, 50]  # the face's probabilities, then every occluded copy and the whole face in one run
    assert result.method == "occlusion" and result.forward_passes == 51 and result.class_index == 1
    assert result.detail == "probability drop under a 12×12 px patch of the face's mean grey, stride 6; 51 passes"
    assert np.allclose(result.probs, softmax(predict(face[None].astype(np.float32)))[0])
    assert result.values.max() == 1.0 and result.values[:6, :6].min() == 1.0
    assert result.values[24:, 24:].max() == 0.0
    # the same numbers as the explain command's occlusion, only clipped at zero and normalised
    raw = occlusion(predict, face, np.array([1]), patch=12, stride=6)[0]
    assert np.allclose(result.values, normalise_map(np.clip(raw, 0, None)))


def test_gradient_saliency_is_the_graphs_gradient_normalised_once(template):
    _, weights = template_weights()
    face = demo_dataset().splits["val"].images[3]
    explainer = Explainer(template.path)
    result = explainer.face_saliency(face, class_index=2, method="gradient", logits_fn=template.classifier.predict_logits)
    # |gradient| blurred by the method's 1.5 px, over its 99th percentile, clipped to 1
    expected = normalise_map(gaussian_blur(np.abs(weights[:, 2].reshape(48, 48)), 1.5))
    assert result.method == "gradient" and result.forward_passes == 2 and result.class_index == 2
    assert np.allclose(result.values, expected, atol=1e-6)
    assert result.detail == "|d logit / d pixel|, blurred σ 1.5 px; 2 passes"
    predicted = explainer.face_saliency(face, method="gradient")
    direct = template.classifier.predict_logits(face[None])[0]
    assert predicted.class_index == int(direct.argmax()) and np.allclose(predicted.probs, softmax(direct[None])[0], atol=1e-6)
    smooth = explainer.face_saliency(face, class_index=predicted.class_index, method="smoothgrad")
    assert smooth.method == "smoothgrad" and smooth.forward_passes == 26
    # a linear model's gradient is the same everywhere: SmoothGrad is the gradient, blurred by its own 1 px
    assert np.allclose(smooth.values, normalise_map(gaussian_blur(np.abs(weights[:, smooth.class_index].reshape(48, 48)), 1.0)), atol=1e-5)
    score = result.faithfulness
    assert score is not None and 0 <= score.deletion <= 1 and 0 <= score.insertion <= 1


def test_auto_is_the_default_and_methods_that_need_a_missing_graph_say_so(template, tmp_path):
    face = demo_dataset().splits["val"].images[0]
    explainer = Explainer(template.path)
    assert explainer.face_saliency(face, faithfulness=False).method == DEFAULT_METHOD == "occlusion"  # chosen by measurement
    assert explainer.face_saliency(face, method="gradient", faithfulness=False).method == "gradient"
    with pytest.raises(ExplainError, match="no Grad-CAM graph t.gradcam.onnx beside t.onnx"):
        explainer.face_saliency(face, method="gradcam")
    bare = Explainer(template_model(tmp_path / "bare.onnx"))
    assert bare.face_saliency(face, faithfulness=False).method == "occlusion"
    with pytest.raises(ExplainError, match="no gradient graph bare.grad.onnx beside bare.onnx"):
        bare.face_saliency(face, method="gradient")
    (tmp_path / "broken.grad.onnx").write_text("not onnx")
    broken = Explainer(template_model(tmp_path / "broken.onnx"))
    assert "broken.grad.onnx: not a loadable ONNX graph" in broken.gradient_problem
    with pytest.raises(ExplainError, match="not a loadable ONNX graph"):
        broken.face_saliency(face, method="smoothgrad")
    wrong_output_model(tmp_path / "odd.grad.onnx")  # loads, but has no class_index input nor gradient output
    odd = Explainer(template_model(tmp_path / "odd.onnx"))
    assert "expected inputs ['class_index', 'image']" in odd.gradient_problem
    with pytest.raises(ValueError, match="method must be one of " + ", ".join(FACE_METHODS)):
        explainer.face_saliency(face, method="lime")


def test_mask_keeps_the_most_salient_share():
    values = np.zeros((48, 48), np.float32)
    values[10:20, 10:30] = 1.0  # 200 pixels
    face = np.full((48, 48), 200, np.uint8)
    masked = masked_image(face, values, hide=0.75)  # the Saliency view's "most salient 25%"
    kept = masked > 0
    assert kept.sum() == 48 * 48 // 4 and kept[15, 20] and not kept[40, 40]
    assert (masked[kept] == 200).all()
    with pytest.raises(ValueError):
        masked_image(face, values, hide=1.5)
