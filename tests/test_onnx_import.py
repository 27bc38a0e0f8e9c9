"""Fine-tuning starts from a shipped .onnx: its weights read back, folded BatchNorm unfolded and calibrated."""

from __future__ import annotations

import pytest
import torch

from fer_train.export import export_onnx
from fer_train.models import create_model, deployable
from fer_train.onnx_import import calibrate_unfolded_batchnorm, checkpoint_from_onnx
from fer_runtime.classifier import load_classifier
from fer_runtime.contract import META_ARCHITECTURE, META_CONFIG, META_EXTRA
from fer_runtime.synthetic import make_faces

from test_models import _fernet_with_running_statistics


def _export(model, path, faces):
    metadata = {META_ARCHITECTURE: "fernet", META_CONFIG: {"model": "fernet", "model_kwargs": {}, "seed": 0},
                META_EXTRA: {"best_epoch": 3, "training": {"epochs": 3, "wall_seconds": 9.0, "history": []}}}
    export_onnx(deployable(model), path, metadata=metadata, check_images=faces)
    return path


def test_an_exported_fernet_unfolds_to_the_same_outputs_and_trains_from_them(tmp_path):
    images, _ = make_faces(96, seed=3)
    path = _export(_fernet_with_running_statistics(), tmp_path / "fer-best.onnx", images[:8])
    ckpt = checkpoint_from_onnx(path)
    assert ckpt["model_name"] == "fernet" and ckpt["unfolded_batchnorm"] and ckpt["epoch"] == 3
    x = torch.from_numpy(images).float().unsqueeze(1)
    shipped = torch.from_numpy(load_classifier(path).predict_logits(images))

    model = create_model("fernet")
    model.load_state_dict(ckpt["state_dict"])
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), shipped, atol=1e-4)
        uncalibrated = model.train().features(model.scale(x))  # batch statistics re-normalise every channel
    model.load_state_dict(ckpt["state_dict"])
    assert calibrate_unfolded_batchnorm(model, x) == 8
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), shipped, atol=1e-4)  # calibration leaves eval mode exact
        expected = model.eval().features(model.scale(x))
        in_training = model.train().features(model.scale(x))
    scale = expected.abs().max()
    assert (in_training - expected).abs().max() < 1e-3 * scale  # training mode starts from the shipped net
    assert (uncalibrated - expected).abs().max() > 0.1 * scale


def test_a_file_that_is_not_a_fer_export_is_refused_by_name(tmp_path):
    bare = tmp_path / "bare.onnx"
    torch.onnx.export(create_model("dnn").eval(), (torch.zeros(1, 1, 48, 48),), str(bare), input_names=["image"],
                      output_names=["logits"], dynamo=False)
    with pytest.raises(ValueError, match="bare.onnx: not a fer export"):
        checkpoint_from_onnx(bare)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not protobuf")
    with pytest.raises(ValueError, match="junk.onnx: not a readable ONNX file"):
        checkpoint_from_onnx(junk)


def test_weights_of_another_architecture_are_refused(tmp_path):
    images, _ = make_faces(8, seed=4)
    path = _export(_fernet_with_running_statistics(), tmp_path / "m.onnx", images)
    import onnx

    proto = onnx.load(str(path))
    next(p for p in proto.metadata_props if p.key == META_ARCHITECTURE).value = "cnn"
    onnx.save(proto, str(path))
    with pytest.raises(ValueError, match="m.onnx: its weights do not fit a 'cnn' model; missing: features.1.weight"):
        checkpoint_from_onnx(path)
