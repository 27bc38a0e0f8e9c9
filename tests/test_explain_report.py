"""End to end on drawn faces: train → export (with the explanation graphs) → ``fer-train explain`` pictures."""

from __future__ import annotations

import json

import pytest
import torch

from fer_train.checkpoint import load_checkpoint, save_checkpoint
from fer_train.cli import main as cli_main
from fer_train.config import TrainConfig
from fer_runtime.explain import Explainer
from fer_train.models import create_model
from fer_train.progress import Reporter
from fer_runtime.synthetic import make_faces
from fer_train.train import train

LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5"]


@pytest.fixture(scope="module")
def cnn_run(demo_csv, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explain")
    config = TrainConfig(model="cnn", data=str(demo_csv), epochs=1, batch_size=32, limit_train=64, limit_val=35, threads=1,
                         export_name="tiny", export_dir=str(tmp / "exported"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FER_CACHE_DIR", str(tmp / "cache"))
        train(config, tmp / "run", Reporter("json", stream=open(tmp / "events.jsonl", "w")))
    return tmp


def test_export_writes_and_ships_the_explanation_graphs(cnn_run):
    run, exported = cnn_run / "run", cnn_run / "exported"
    expected = {"grad", "gradcam", "layers"} | {f"filters.{name}" for name in LAYERS}
    assert {p.name[len("model."):-len(".onnx")] for p in run.glob("model.*.onnx")} == expected
    assert {p.name[len("tiny."):-len(".onnx")] for p in exported.glob("tiny.*.onnx")} == expected
    events = [json.loads(line) for line in (cnn_run / "events.jsonl").read_text().splitlines()]
    checks = [e["text"] for e in events if e["event"] == "message" and e["text"].startswith("explanation graph")]
    assert len(checks) == 8 and all("of scale" in c for c in checks)
    explainer = Explainer(exported / "tiny.onnx", threads=1)
    face = make_faces(1, seed=0)[0]
    assert explainer.saliency(face).map.shape == (1, 48, 48)
    assert explainer.face_saliency(face, method="gradcam", faithfulness=False).values.shape == (48, 48)  # Grad-CAM, torch-free


def test_explain_command_writes_every_picture_and_an_index(cnn_run, capsys):
    out = cnn_run / "pictures"
    torch.set_num_threads(1)
    rc = cli_main(["explain", str(cnn_run / "run"), "--out", str(out), "--layers", "conv2", "3", "--steps", "2", "3", "--threads", "1",
                   "--filters", "16", "--methods", "gradient", "smoothgrad"])  # occlusion: tested in test_explain_saliency
    assert rc == 0
    pictures = {"saliency-classes.png", "saliency-methods.png", "filters-conv2-2.png", "filters-conv2-3.png", "filters-conv3-2.png",
                "filters-conv3-3.png", "regularisers-conv2.png", "outputs-conv2.png", "outputs-conv3.png"}
    assert pictures <= {p.name for p in out.iterdir()}
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pictures)
    index = (out / "index.md").read_text()
    assert all(f"]({p})" in index for p in pictures) and "## Timings" in index
    assert all(f'src="{p}"' in (out / "index.html").read_text() for p in pictures)
    summary = json.loads((out / "explain.json").read_text())
    assert [layer["name"] for layer in summary["layers"]] == ["conv2", "conv3"] and summary["steps"] == [2, 3]
    assert len(summary["faces"]) == 7 and set(summary["files"]) == pictures
    assert capsys.readouterr().out.strip().endswith("index.html")


def test_explain_a_dense_model_and_bad_arguments(cnn_run, capsys):
    config = load_checkpoint(cnn_run / "run")["config"]
    ckpt = save_checkpoint(cnn_run / "dnn.pt", model=create_model("dnn"), model_name="dnn", model_kwargs={}, config=config,
                           epoch=0, best_metric=0.0, best_epoch=0, history=[])
    out = cnn_run / "dnn-pictures"
    assert cli_main(["explain", str(ckpt), "--out", str(out), "--methods", "gradient", "--threads", "1", "--onnx"]) == 0
    assert {p.name for p in out.glob("*.png")} == {"saliency-classes.png"}  # no conv layers: no filters, no outputs
    summary = json.loads((out / "explain.json").read_text())
    assert len(summary["onnx_checks"]) == 1 and "onnxruntime: one saliency map, batch 1" in summary["timings_s"]
    assert (out / "onnx" / "model.grad.onnx").exists() and "## onnxruntime against torch autograd" in (out / "index.md").read_text()

    assert cli_main(["explain", str(cnn_run / "run"), "--out", str(out), "--layers", "conv9", "--threads", "1"]) == 2
    assert "no conv layer 'conv9'; this model has conv1 (features.0, 64 filters)" in capsys.readouterr().err
