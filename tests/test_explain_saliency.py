"""Saliency in torch and in onnxruntime: it must concentrate where the model looks, and both backends agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fer_train.explain.gradient_onnx import export_gradient_graph
from fer_train.explain.saliency import input_gradient, occlusion, saliency_maps, smoothgrad
from fer_runtime.explain import Explainer, masked_image, normalise_map
from fer_train.models import create_model
from fer_runtime.synthetic import make_faces

BOX = (slice(8, 20), slice(27, 41))  # the only pixels the model sees: around the right eye of the drawn faces


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


@pytest.fixture(scope="module")
def one_region_model():
    """The DNN with every weight from a pixel outside BOX set to zero: it cannot see anything else."""
    torch.manual_seed(0)
    model = create_model("dnn").eval()
    mask = torch.zeros(48, 48)
    mask[BOX] = 1
    with torch.no_grad():
        model.net[1].weight *= mask.flatten()
    return model


@pytest.fixture(scope="module")
def faces():
    images, labels = make_faces(4, seed=21)
    return np.clip(images, 1, 255), labels  # no pixel equals the mask's fill value 0


def _inside(maps: np.ndarray, box=BOX) -> float:
    inside = np.zeros(maps.shape[-2:], bool)
    inside[box] = True
    weight = np.abs(np.asarray(maps, np.float64))
    return float(weight[..., inside].sum() / weight.sum())


def test_every_method_concentrates_on_the_region_the_model_sees(one_region_model, faces):
    images, _ = faces
    result = input_gradient(one_region_model, images)
    assert result.map.shape == (4, 48, 48) and (result.class_index == result.logits.argmax(1)).all()
    assert _inside(result.map) == 1.0 and (result.map[:, BOX[0], BOX[1]] > 0).mean() > 0.9
    assert _inside(smoothgrad(one_region_model, images, samples=4)) == 1.0
    occ = occlusion(one_region_model, images, patch=8, stride=4)
    grown = (slice(BOX[0].start - 7, BOX[0].stop + 7), slice(BOX[1].start - 7, BOX[1].stop + 7))  # patches that touch BOX
    assert np.abs(occ).sum() > 0 and _inside(occ, grown) >= 0.9999  # outside: float rounding at most


def test_masked_face_keeps_the_salient_region(one_region_model, faces):
    images, _ = faces
    sal = input_gradient(one_region_model, images[:1]).map[0]
    box_size = (BOX[0].stop - BOX[0].start) * (BOX[1].stop - BOX[1].start)
    masked = masked_image(images[0], sal, hide=1 - box_size / 48**2, smooth=0)
    kept = masked > 0
    assert kept.sum() == box_size and kept[BOX].all()
    assert (masked[kept] == images[0][kept]).all()
    half = masked_image(images[0], sal, hide=0.5)
    assert (half == 0).sum() == 48 * 48 // 2
    with pytest.raises(ValueError, match="fraction"):
        masked_image(images[0], sal, hide=1.5)


def test_chosen_class_and_batches(one_region_model, faces):
    images, _ = faces
    batch = input_gradient(one_region_model, images, class_index=[0, 1, 2, 3])
    single = input_gradient(one_region_model, images[2], class_index=2)
    np.testing.assert_allclose(batch.gradient[2], single.gradient[0], rtol=1e-5, atol=1e-9)
    other = input_gradient(one_region_model, images[2], class_index=5)
    assert not np.allclose(other.gradient, single.gradient)
    assert normalise_map(batch.map).max() == 1.0


def test_onnxruntime_saliency_equals_torch(one_region_model, faces, tmp_path):
    images, _ = faces
    export_gradient_graph(one_region_model, tmp_path / "one.onnx", images)
    explainer = Explainer(tmp_path / "one.onnx", threads=1)  # no one.onnx beside it: the logits come from the gradient graph
    got = explainer.saliency(images)
    expected = input_gradient(one_region_model, images)
    assert (got.class_index == expected.class_index).all()
    assert np.abs(got.gradient - expected.gradient).max() <= 1e-4 * np.abs(expected.gradient).max()
    assert _inside(got.map) == 1.0
    sg_onnx = explainer.smoothgrad(images[:2], samples=3, seed=4)
    sg_torch = smoothgrad(one_region_model, images[:2], samples=3, seed=4)
    assert np.abs(sg_onnx - sg_torch).max() <= 1e-4 * np.abs(sg_torch).max()


def test_saliency_maps_of_all_methods(one_region_model, faces):
    images, _ = faces
    calls = []
    maps = saliency_maps(one_region_model, images[:2], methods=("gradient", "smoothgrad", "occlusion"), progress=calls.append)
    assert calls == ["gradient", "smoothgrad", "occlusion"]
    assert all(m.shape == (2, 48, 48) and (m >= 0).all() for m in maps.maps.values())
    assert np.allclose(maps.probabilities.sum(1), 1)
    with pytest.raises(ValueError, match="unknown saliency method 'lime'"):
        saliency_maps(one_region_model, images[:1], methods=("lime",))


def test_the_export_checks_reference_is_float64_autograd(faces):
    """The explanation graphs are checked against autograd on a float64 copy of the model: both torch functions run
    such a copy in float64 (float32 pixels in) and agree with the float32 model away from ties."""
    from fer_train.explain.filters import torch_filter_gradient_fn
    from fer_train.explain.gradient_onnx import _exact
    from fer_train.explain.saliency import torch_gradient_fn

    torch.manual_seed(3)
    model = create_model("cnn").eval()
    exact = _exact(model)
    assert next(exact.parameters()).dtype == torch.float64 and next(model.parameters()).dtype == torch.float32
    images, classes = faces[0].astype(np.float32), np.arange(len(faces[0])) % 7
    for fn32, fn64 in [(torch_gradient_fn(model), torch_gradient_fn(exact)),
                       (torch_filter_gradient_fn(model, "conv2"), torch_filter_gradient_fn(exact, "conv2"))]:
        (v32, g32), (v64, g64) = fn32(images, classes), fn64(images, classes)
        assert g64.dtype == np.float64 and g32.dtype == np.float32
        np.testing.assert_allclose(v64, v32, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(g64, g32, atol=1e-4 * np.abs(g64).max())
