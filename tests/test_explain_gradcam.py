"""Grad-CAM without torch: the exported graph against autograd, the runtime's map against torch's, the companion
sharing its model's weights file, and the shipped models' companions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fer_runtime import explain as rt
from fer_runtime.classifier import make_session
from fer_runtime.synthetic import make_faces
from fer_train.explain.gradcam import torch_gradcam
from fer_train.explain.gradient_onnx import export_gradcam_graph, export_gradient_graph
from fer_train.shared_weights import family_stem, share_family

EXPORTED = Path(__file__).resolve().parent.parent / "exported"
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(random_slope_cnn, tmp_path_factory):
    path = tmp_path_factory.mktemp("cam") / "cnn.onnx"
    export_gradcam_graph(random_slope_cnn, path, make_faces(6, seed=1)[0])
    return path


def test_gradcam_graph_keeps_the_contract(exported):
    session = make_session(rt.gradcam_path(exported), threads=1)
    assert [i.name for i in session.get_inputs()] == ["image", "class_index"]
    outputs = {o.name: o.shape[1:] for o in session.get_outputs()}
    # the study CNN's middle conv layer is conv3 (64 × 22 × 22), its last conv5 (128 × 10 × 10)
    assert outputs == {"logits": [7], "activation_conv3": [64, 22, 22], "gradient_conv3": [64, 22, 22],
                       "activation_conv5": [128, 10, 10], "gradient_conv5": [128, 10, 10]}
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["explain_kind"] == "gradcam"
    assert [(layer["name"], layer["role"]) for layer in json.loads(meta["explain_cam_layers"])] == [("conv3", "middle"), ("conv5", "last")]
    assert rt.is_companion(rt.gradcam_path(exported)) and family_stem(rt.gradcam_path(exported)) == "cnn"


def test_runtime_gradcam_equals_torch(random_slope_cnn, exported):
    faces = make_faces(5, seed=4)[0]
    classes = np.array([0, 3, 6, 2, 5])
    ex = rt.Explainer(exported, threads=1)
    for method, layer in (("gradcam", "conv5"), ("gradcam-middle", "conv3")):
        got = ex.maps(method, faces, classes)
        expected = torch_gradcam(random_slope_cnn, faces, classes, layer)
        assert got.shape == (5, 48, 48) and got.min() >= 0
        np.testing.assert_allclose(got, expected, atol=1e-4 * expected.max())


def test_gradcam_map_weights_channels_by_their_mean_gradient():
    activation = np.zeros((1, 2, 4, 4), np.float32)
    activation[0, 0, 1, 1] = 1  # channel 0 fires top left, channel 1 bottom right
    activation[0, 1, 3, 3] = 1
    gradient = np.stack([np.full((4, 4), 1.0), np.full((4, 4), -1.0)])[None].astype(np.float32)
    cam = rt.gradcam_map(activation, gradient, size=8)
    assert cam.shape == (1, 8, 8) and cam[0, 6:, 6:].max() == 0  # the channel that lowers the class is cut by the ReLU
    assert np.unravel_index(cam[0].argmax(), (8, 8)) in {(2, 2), (2, 3), (3, 2), (3, 3)}
    assert np.allclose(rt.upsample(np.full((1, 3, 3), 2.0), 48), 2.0)


def test_gradcam_of_a_model_trained_on_crops_covers_its_crop_only(tmp_path):
    import torch

    from fer_train.models import create_model, deployable

    torch.manual_seed(0)
    model = create_model("fernet", widths=(8, 8, 16, 16), input_size=40)
    for m in model.modules():  # BatchNorm statistics that are not the identity, so folding them is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    model = deployable(model)
    faces = make_faces(4, seed=5)[0]
    path = tmp_path / "crop.onnx"
    export_gradcam_graph(model, path, faces)
    ex = rt.Explainer(path, threads=1)
    assert ex.cam_window == (4, 40)
    classes = np.array([1, 3, 4, 6])
    for method, layer in (("gradcam", "conv8"), ("gradcam-middle", "conv4")):
        got = ex.maps(method, faces, classes)
        expected = torch_gradcam(model, faces, classes, layer)
        np.testing.assert_allclose(got, expected, atol=1e-4 * max(expected.max(), 1e-6))
        ring = np.ones((48, 48), bool)
        ring[4:44, 4:44] = False
        assert got.shape == (4, 48, 48) and got[:, ring].max() == 0 and got[:, ~ring].max() > 0


def test_gradcam_map_in_a_window_is_the_whole_map_on_that_square():
    rng = np.random.default_rng(0)
    activation, gradient = rng.normal(size=(2, 3, 5, 5)).astype(np.float32), rng.normal(size=(2, 3, 5, 5)).astype(np.float32)
    whole = rt.gradcam_map(activation, gradient, size=40)
    placed = rt.gradcam_map(activation, gradient, size=48, window=(4, 40))
    ring = np.ones((48, 48), bool)
    ring[4:44, 4:44] = False
    assert np.array_equal(placed[:, 4:44, 4:44], whole) and whole.max() > 0 and placed[:, ring].max() == 0
    assert np.array_equal(rt.gradcam_map(activation, gradient, window=(0, 48)), rt.gradcam_map(activation, gradient))
    with pytest.raises(ValueError, match="does not fit"):
        rt.gradcam_map(activation, gradient, window=(10, 40))


def test_the_companion_reads_the_shared_weights_and_adds_none(random_slope_cnn, tmp_path):
    import onnx
    from onnx.external_data_helper import uses_external_data

    from fer_train.export import export_onnx

    path = tmp_path / "cnn.onnx"
    faces = make_faces(4, seed=2)[0]
    export_onnx(random_slope_cnn, path, metadata={}, check_images=faces)
    export_gradient_graph(random_slope_cnn, path, faces)
    export_gradcam_graph(random_slope_cnn, path, faces)
    shared = share_family(path)
    cam = rt.gradcam_path(path)
    assert cam in shared.graphs
    proto = onnx.load(str(cam), load_external_data=False)
    big = [t for t in proto.graph.initializer if uses_external_data(t) or len(t.raw_data) >= 1024]
    assert big and all(uses_external_data(t) for t in big)  # every weight is read from cnn.weights
    cam.unlink()
    assert share_family(path).weights_bytes == shared.weights_bytes  # without it the weights file is no smaller


@pytest.mark.parametrize("stem", ["cnn", "cnn-semi", "fer-best"])
def test_shipped_conv_models_have_a_gradcam_companion_reading_their_weights(stem):
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    proto = onnx.load(str(EXPORTED / f"{stem}.gradcam.onnx"), load_external_data=False)
    locations = {ExternalDataInfo(t).location for t in proto.graph.initializer if uses_external_data(t)}
    assert locations == {f"{stem}.weights"}
    assert all(uses_external_data(t) or len(t.raw_data) < 1024 for t in proto.graph.initializer)
    assert not (EXPORTED / "dnn.gradcam.onnx").exists()  # no conv layer, no Grad-CAM
