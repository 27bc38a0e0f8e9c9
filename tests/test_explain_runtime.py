"""The torch-free side: companion file names, numpy helpers, gradient ascent and its regularisers, the Explainer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_runtime import explain as rt
from fer_train.explain.filters import torch_filter_gradient_fn, torch_layer_outputs, visualise_filters
from fer_train.explain.gradient_onnx import copy_companions, export_filter_graph, export_gradient_graph, export_layer_outputs, write_companions
from fer_train.models import create_model
from fer_runtime.synthetic import make_faces


@pytest.fixture(scope="module")
def cnn(random_slope_cnn):
    return random_slope_cnn


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


@pytest.fixture(scope="module")
def exported(cnn, tmp_path_factory):
    """cnn.grad.onnx, cnn.layers.onnx and cnn.filters.conv1.onnx (no cnn.onnx: the Explainer must cope)."""
    path = tmp_path_factory.mktemp("rt") / "cnn.onnx"
    faces, _ = make_faces(6, seed=1)
    export_gradient_graph(cnn, path, faces)
    export_layer_outputs(cnn, path, faces)
    export_filter_graph(cnn, path, "conv1", faces)
    return path


def test_companion_names():
    assert rt.gradient_path("exported/cnn.onnx") == Path("exported/cnn.grad.onnx")
    assert rt.gradient_path("runs/x/model.onnx") == Path("runs/x/model.grad.onnx")
    assert rt.layers_path("exported/cnn.onnx") == Path("exported/cnn.layers.onnx")
    assert rt.filters_path("exported/cnn.v2.onnx", "conv2") == Path("exported/cnn.v2.filters.conv2.onnx")
    companions = ["cnn.grad.onnx", "cnn.layers.onnx", "cnn.filters.conv3.onnx"]
    assert all(rt.is_companion(n) for n in companions) and not any(rt.is_companion(n) for n in ("cnn.onnx", "cnn.int8.onnx"))


def test_companion_contract(exported):
    from fer_runtime.classifier import make_session

    grad = make_session(rt.gradient_path(exported), threads=1)
    assert [(i.name, i.type, i.shape[1:]) for i in grad.get_inputs()] == [("image", "tensor(float)", [1, 48, 48]), ("class_index", "tensor(int64)", [])]
    assert [(o.name, o.shape[1:]) for o in grad.get_outputs()] == [("logits", [7]), ("gradient", [1, 48, 48])]
    assert all(isinstance(i.shape[0], str) for i in grad.get_inputs())  # the batch axis is dynamic
    meta = grad.get_modelmeta().custom_metadata_map
    assert meta["explain_kind"] == "gradient" and meta["explain_of"] == "cnn.onnx" and len(json.loads(meta["class_names"])) == 7
    assert [layer["name"] for layer in json.loads(meta["explain_layers"])] == ["conv1", "conv2", "conv3", "conv4", "conv5"]

    filters = make_session(rt.filters_path(exported, "conv1"), threads=1)
    assert [i.name for i in filters.get_inputs()] == ["image", "filter_index"]
    assert [o.name for o in filters.get_outputs()] == ["activation", "gradient"]
    assert json.loads(filters.get_modelmeta().custom_metadata_map["explain_layer"])["channels"] == 64
    layers = make_session(rt.layers_path(exported), threads=1)
    assert [o.name for o in layers.get_outputs()] == ["conv1", "conv2", "conv3", "conv4", "conv5"]


def test_explain_runtime_is_torch_free(exported):
    code = (f"import json, sys\nfrom fer_runtime.explain import Explainer, AscentConfig\n"
            f"ex = Explainer({str(exported)!r}, threads=1)\nfrom fer_runtime.synthetic import make_faces\n"
            f"face = make_faces(1, seed=0)[0]\nex.saliency(face); ex.layer_outputs(face)\n"
            f"ex.visualise_filters('conv1', AscentConfig(steps=1), filters=[0, 1])\nprint(json.dumps(sorted(sys.modules)))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout))
    assert "onnxruntime" in loaded and not {m for m in loaded if m == "torch" or m.startswith("torch.")}


def test_ascent_in_onnxruntime_follows_torch_step_by_step(cnn, exported):
    config = rt.AscentConfig(steps=4, jitter=1, blur=0.5, blur_every=2, l2=0.01, tv=0.1, seed=3)
    filters = [0, 9, 33, 63]
    onnx = rt.Explainer(exported, threads=1).visualise_filters("conv1", config, filters=filters, snapshots=(2,))
    torch_ = visualise_filters(cnn, "conv1", config, filters=filters, snapshots=(2,))
    assert [r.steps for r in onnx] == [r.steps for r in torch_] == [2, 4]
    for a, b in zip(onnx, torch_):
        assert np.abs(a.images - b.images).max() <= 1e-2  # raw pixels 0..255
        np.testing.assert_allclose(a.activation, b.activation, rtol=1e-4, atol=1e-6)


def test_ascent_raises_each_filters_activation(cnn):
    gradient_fn = torch_filter_gradient_fn(cnn, "conv3")
    start = rt.ascend(gradient_fn, np.arange(8), rt.AscentConfig(steps=0))[-1]  # the noise itself
    after = rt.ascend(gradient_fn, np.arange(8), rt.AscentConfig(steps=15, step_size=2))[-1]
    assert (after.activation > start.activation).all()
    assert after.images.min() >= 0 and after.images.max() <= 255 and after.display().dtype == np.uint8


def test_regularisers_do_what_they_promise(cnn):
    gradient_fn = torch_filter_gradient_fn(cnn, "conv2")
    base = rt.AscentConfig(steps=12, step_size=3)

    def run(**kw):
        return rt.ascend(gradient_fn, np.arange(4), rt.AscentConfig(**{**base.__dict__, **kw}))[-1].images

    def variation(x):
        return np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean()

    plain = run()
    assert variation(run(tv=0.5)) < variation(plain)
    assert variation(run(blur=1.0, blur_every=2)) < variation(plain)
    assert np.abs(run(l2=0.1) - 128).mean() < np.abs(plain - 128).mean()
    assert not np.allclose(run(jitter=2), plain)
    assert rt.AscentConfig(jitter=2, tv=0.3).describe() == "40 steps of 1, jitter 2px, TV 0.3"


def test_ascent_reports_progress_and_stops_when_asked(cnn):
    gradient_fn = torch_filter_gradient_fn(cnn, "conv1")
    ticks = []
    results = rt.ascend(gradient_fn, [0, 1], rt.AscentConfig(steps=10), progress=lambda s, n: ticks.append((s, n)),
                        should_stop=lambda: len(ticks) >= 3)
    assert ticks == [(1, 10), (2, 10), (3, 10)]
    assert len(results) == 1 and results[0].steps == 3 and not results[0].complete


def test_layer_outputs_in_onnxruntime_equal_torch(cnn, exported):
    face = make_faces(1, seed=5)[0]
    got = rt.Explainer(exported, threads=1).layer_outputs(face[0])
    expected = torch_layer_outputs(cnn, face)
    for name in expected:
        assert np.abs(got[name] - expected[name][0]).max() <= 1e-4 * np.abs(expected[name]).max()


def test_explainer_says_what_is_missing(exported, tmp_path):
    ex = rt.Explainer(exported, threads=1)
    assert ex.has_gradient and ex.has_layers and ex.has_filters("conv1") and not ex.has_filters("conv2")
    with pytest.raises(rt.ExplainError, match=r"cnn.filters.conv2.onnx: missing; export the model again"):
        ex.visualise_filters("conv2")
    with pytest.raises(rt.ExplainError, match=r"no conv layer 'conv7' in its explanation graphs \(layers: conv1, conv2"):
        ex.visualise_filters("conv7")
    lonely = rt.Explainer(tmp_path / "dnn.onnx")
    assert not lonely.has_gradient and lonely.layers == [] and lonely.class_names[3] == "Happy"
    with pytest.raises(rt.ExplainError, match="dnn.grad.onnx: missing"):
        lonely.saliency(np.zeros((48, 48)))


def test_numpy_helpers():
    x = np.full((2, 48, 48), 100.0, np.float32)
    np.testing.assert_allclose(rt.gaussian_blur(x, 1.5), x, rtol=1e-5)
    spike = np.zeros((48, 48), np.float32)
    spike[20, 20] = 1
    blurred = rt.gaussian_blur(spike, 1.0)
    assert abs(blurred.sum() - 1) < 1e-5 and blurred.argmax() == 20 * 48 + 20
    m = rt.normalise_map(np.arange(48 * 48, dtype=np.float32).reshape(48, 48))
    assert m.min() == 0 and m.max() == 1 and (m == 1).sum() == 24  # the top 1 % at full strength
    sparse = np.zeros((48, 48), np.float32)
    sparse[0, :5] = [1, 2, 3, -4, 8]  # under 1 % non-zero: the percentile is 0, so the maximum scales it
    assert rt.normalise_map(sparse)[0, 3] == 0.5 and rt.normalise_map(sparse).max() == 1
    assert not rt.normalise_map(np.zeros((2, 48, 48))).any()
    assert rt.as_batch(np.zeros((3, 1, 48, 48), np.uint8)).shape == (3, 48, 48)
    with pytest.raises(ValueError, match=r"got \(3, 47, 48\)"):
        rt.as_batch(np.zeros((3, 47, 48)))


def test_write_and_copy_companions(tmp_path):
    """What the exporter does: all companions beside model.onnx, copied under the export name, stale ones removed."""
    torch.manual_seed(0)
    dnn = create_model("dnn").eval()
    faces, _ = make_faces(4, seed=0)
    run_model = tmp_path / "run" / "model.onnx"
    messages = []

    class Reporter:
        def emit(self, event, **fields):
            messages.append(fields.get("text", ""))

    stale = tmp_path / "exported" / "m.filters.conv1.onnx"  # left over from an earlier CNN of the same name
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    paths = write_companions(dnn, run_model, faces, Reporter())
    assert [p.name for p in paths] == ["model.grad.onnx"]  # a DNN has no conv layers
    assert messages[0].startswith("explanation graph model.grad.onnx: max |Δ|")
    copied = copy_companions(run_model, tmp_path / "exported" / "m.onnx")
    assert [p.name for p in copied] == ["m.grad.onnx"] and not stale.exists()

    class Odd(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :7] * 2

    assert write_companions(Odd().eval(), tmp_path / "odd.onnx", faces, Reporter()) == []
    assert "no explanation graphs for odd.onnx" in messages[-1]
