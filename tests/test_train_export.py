"""End to end on generated faces: train a few batches → checkpoint → export → onnxruntime equals torch."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from fer_train.checkpoint import load_checkpoint, model_from_checkpoint
from fer_train.cli import main as cli_main
from fer_train.config import TrainConfig
from fer_runtime.contract import CLASS_NAMES
from fer_train.export import ExportError, export_onnx, export_run
from fer_runtime.metrics import decode_predictions, encode_predictions
from fer_train.models import create_model
from fer_train.progress import Reporter
from fer_runtime.classifier import ModelError, load_classifier
from fer_train.data import load_splits
from fer_train.train import train

from cli_support import planned_config, sigterm_after_event


def _config(demo_csv, **kw):
    base = dict(model="cnn", data=str(demo_csv), epochs=2, batch_size=32, limit_train=96, limit_val=48, threads=1)
    return TrainConfig.from_recipe("study", **{**base, **kw})  # the study's recipe: no schedule, no flips or erasing


def test_train_checkpoint_export_predict(demo_csv, tmp_path, capsys):
    config = _config(demo_csv, export_name="tiny", export_dir=str(tmp_path / "exported"))
    result = train(config, tmp_path / "run", Reporter("json"))
    run = result.run_dir
    for name in ("config.json", "history.json", "best.pt", "last.pt", "curves.png", "model.onnx"):
        assert (run / name).exists(), name
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]

    # the checkpoint rebuilds its model alone, with weights_only loading
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert {"state_dict", "optimizer", "model_kwargs", "config", "epoch", "best_metric"} <= set(ckpt)
    assert ckpt["epoch"] == 2 and ckpt["config"]["batch_size"] == 32

    # the exported file: the contract and its metadata
    clf = load_classifier(tmp_path / "exported" / "tiny.onnx")
    assert clf.class_names == list(CLASS_NAMES) and clf.architecture == "cnn"
    assert clf.metadata["parameter_count"] == 2_414_599
    assert set(clf.metadata["metrics"]) == {"val", "test"}
    assert clf.metadata["train_config"]["model"] == "cnn"
    # every face's predicted class is recorded with the numbers, and they are the file's own
    val = load_splits(config).val
    recorded = clf.metadata["metrics"]["val"]
    predicted = decode_predictions(recorded["predictions"])
    np.testing.assert_array_equal(predicted, clf.predict_logits(val.images).argmax(1))
    assert recorded["accuracy"] == pytest.approx(float((predicted == val.labels).mean()), abs=1e-5)
    inp = clf.session.get_inputs()[0]
    assert inp.name == "image" and inp.shape[1:] == [1, 48, 48] and isinstance(inp.shape[0], str)
    # the model and its explanation graphs keep their tensors in one <stem>.weights, in the run folder and in exported/
    import onnx

    from fer_train.shared_weights import external_locations, family_of

    for folder, stem in ((run, "model"), (tmp_path / "exported", "tiny")):
        graphs = family_of(folder / f"{stem}.onnx")
        assert len(graphs) == 9  # the model, its gradient, Grad-CAM and layers graphs, five filter graphs
        assert all(external_locations(onnx.load(str(g), load_external_data=False)) == {f"{stem}.weights"} for g in graphs)

    from fer_runtime.io import load_source

    images = load_source(demo_csv).splits["PublicTest"].images[:37]  # an odd batch size: the axis is dynamic
    best = model_from_checkpoint(load_checkpoint(run))
    with torch.no_grad():
        expected = best(torch.from_numpy(images).float().unsqueeze(1)).numpy()
    np.testing.assert_allclose(clf.predict_logits(images), expected, atol=1e-4)

    # the JSON stream a program reads
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("epoch") == 2 and "batch" in kinds and "exported" in kinds


def test_predictions_are_recorded_as_one_digit_per_face_and_read_back():
    predicted = np.array([0, 6, 3, 3, 1, 5, 2, 4])
    assert encode_predictions(predicted) == "06331524"
    np.testing.assert_array_equal(decode_predictions(encode_predictions(predicted)), predicted)
    assert encode_predictions(np.array([], np.int64)) == "" and decode_predictions("").size == 0
    for bad in ("06a3", "0 6", "3²", None):
        with pytest.raises(ValueError):
            decode_predictions(bad)
    with pytest.raises(ValueError, match="0–9"):
        encode_predictions(np.array([3, 12]))


def test_batchnorm_model_exports_folded_with_its_gradient_graph_and_history(demo_csv, tmp_path):
    config = _config(demo_csv, model="fernet", epochs=2, optimizer="sgd", lr=0.05, schedule="onecycle", flip=True, channels_last=True,
                     export_name="best", export_dir=str(tmp_path / "exported"))
    result = train(config, tmp_path / "run", Reporter("plain"))
    exported = tmp_path / "exported"
    assert (exported / "best.grad.onnx").exists() and (exported / "best.layers.onnx").exists()
    clf = load_classifier(exported / "best.onnx")
    assert clf.architecture == "fernet" and clf.metadata["parameter_count"] == 1_174_439  # the trained model's count
    training = clf.metadata["training"]["training"]
    assert [h["epoch"] for h in training["history"]] == [1, 2] and training["epochs"] == 2
    assert training["wall_seconds"] > 0 and "threads" in training["hardware"]

    from fer_runtime.io import load_source

    images = load_source(demo_csv).splits["PublicTest"].images[:9]
    trained = model_from_checkpoint(load_checkpoint(result.run_dir))  # BatchNorm unfolded, eval mode
    with torch.no_grad():
        expected = trained(torch.from_numpy(images).float().unsqueeze(1)).numpy()
    np.testing.assert_allclose(clf.predict_logits(images), expected, atol=1e-3)


def test_learns_generated_faces(demo_csv, tmp_path):
    """A real signal, not just a run: the CNN separates drawn expressions well above chance."""
    config = _config(demo_csv, epochs=8, limit_train=None, limit_val=None, optimizer="adam", lr=3e-4, augment=False, batch_size=32)
    result = train(config, tmp_path / "run", Reporter("plain"), export=False)
    assert result.best_val_acc > 0.5  # chance is 1/7


def test_resume_reaches_the_same_weights(demo_csv, tmp_path):
    straight = train(_config(demo_csv, epochs=2), tmp_path / "a", Reporter("plain"), export=False)
    train(_config(demo_csv, epochs=1), tmp_path / "b", Reporter("plain"), export=False)
    resumed = train(_config(demo_csv, epochs=2), tmp_path / "b", Reporter("plain"), resume=True, export=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    a = load_checkpoint(straight.run_dir, "last")["state_dict"]
    b = load_checkpoint(resumed.run_dir, "last")["state_dict"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _assert_holds_the_parents_best_weights(parent, child) -> None:
    """After one epoch at learning rate zero, ``child`` holds ``parent``'s best weights exactly and starts where they scored."""
    best = load_checkpoint(parent.run_dir, "best")
    tuned = load_checkpoint(child.run_dir, "last")["state_dict"]
    for key, value in best["state_dict"].items():
        assert torch.equal(value, tuned[key]), key
    best_val = next(h["val_loss"] for h in parent.history if h["epoch"] == best["best_epoch"])
    assert child.history[0]["val_loss"] == pytest.approx(best_val, rel=1e-5)


def test_init_from_starts_from_the_parents_best_weights_and_records_it(demo_csv, tmp_path):
    parent = train(_config(demo_csv, epochs=2), tmp_path / "parent", Reporter("plain"), export=False)
    # a learning rate of zero keeps the weights: the fine-tuned run must then hold the parent's best ones exactly
    child = train(_config(demo_csv, epochs=1, lr=0.0, init_from=str(parent.run_dir), export_name="child", export_dir=str(tmp_path / "x")),
                  tmp_path / "child", Reporter("plain"))
    _assert_holds_the_parents_best_weights(parent, child)
    training = load_classifier(tmp_path / "x" / "child.onnx").metadata["training"]["training"]
    assert training["epochs"] == 1 and training["initialized_from"]["epochs"] == 2
    assert [h["epoch"] for h in training["initialized_from"]["history"]] == [1, 2]  # the report draws the whole curve

    from fer_train.study_report import _history

    whole = _history(load_classifier(tmp_path / "x" / "child.onnx").metadata)
    assert [h["epoch"] for h in whole] == [1, 2, 3] and whole[2]["val_acc"] == pytest.approx(child.history[0]["val_acc"], abs=1e-5)

    # a second fine-tuning, from the fine-tuned run: the chain is followed back to the first run
    train(_config(demo_csv, epochs=1, init_from=str(child.run_dir), export_name="grandchild", export_dir=str(tmp_path / "x")),
          tmp_path / "grandchild", Reporter("plain"))
    meta = load_classifier(tmp_path / "x" / "grandchild.onnx").metadata
    earlier = meta["training"]["training"]["initialized_from"]
    assert earlier["run"] == str(child.run_dir) and earlier["epochs"] == 3
    assert [(c["run"], c["epochs"]) for c in earlier["cycles"]] == [(str(parent.run_dir), 2), (str(child.run_dir), 1)]
    whole = _history(meta)
    assert [h["epoch"] for h in whole] == [1, 2, 3, 4] and whole[2]["val_acc"] == pytest.approx(child.history[0]["val_acc"], abs=1e-5)


def test_train_seed_trains_another_model_on_the_same_validation_split(demo_csv, tmp_path):
    runs = {name: train(_config(demo_csv, epochs=1, **kw), tmp_path / name, Reporter("plain"), export=False)
            for name, kw in [("default", {}), ("same", dict(train_seed=0)), ("other", dict(train_seed=1))]}
    weights = {name: load_checkpoint(r.run_dir, "last")["state_dict"] for name, r in runs.items()}
    assert all(torch.equal(weights["default"][k], weights["same"][k]) for k in weights["default"])  # the default is --seed
    assert not torch.equal(weights["default"]["features.0.weight"], weights["other"]["features.0.weight"])
    # the validation split is --seed's alone: a model trained with another --train-seed may start from the first
    train(_config(demo_csv, epochs=1, train_seed=1, init_from=str(runs["default"].run_dir)), tmp_path / "tuned", Reporter("plain"), export=False)
    with pytest.raises(ValueError, match="seed=0"):
        train(_config(demo_csv, epochs=1, seed=1, init_from=str(runs["default"].run_dir)), tmp_path / "refused", Reporter("plain"), export=False)


def test_a_fine_tuning_run_draws_new_augmentation_not_its_parents_again(demo_csv, tmp_path, monkeypatch):
    """With the same seed, cycle 2 must not replay cycle 1's order, shifts and erased rectangles epoch for epoch: it
    draws what epoch 3 of one long run would, and a chain of fine-tunings goes on counting."""
    import fer_train.augment as augment_module  # train_one_epoch erases through augment_batch

    real, seen = augment_module.random_erase, []
    monkeypatch.setattr(augment_module, "random_erase", lambda x, *a, **kw: seen.append(out := real(x, *a, **kw)) or out)

    def batches(name, **kw):  # the augmented batches of every epoch of a run
        seen.clear()
        result = train(_config(demo_csv, model="dnn", erase=1.0, **kw), tmp_path / name, Reporter("plain"), export=False)
        return result, [b.clone() for b in seen]

    _, straight = batches("straight", epochs=4)
    parent, first = batches("parent", epochs=2)
    child, second = batches("child", epochs=1, init_from=str(parent.run_dir))
    _, third = batches("grandchild", epochs=1, init_from=str(child.run_dir))
    per_epoch = len(first) // 2
    assert len(second) == len(third) == per_epoch == 3
    assert all(torch.equal(a, b) for a, b in zip(first, straight[:2 * per_epoch]))
    assert not any(torch.equal(a, b) for a, b in zip(second, first[:per_epoch]))  # not the parent's epoch 1 again
    assert all(torch.equal(a, b) for a, b in zip(second, straight[2 * per_epoch:3 * per_epoch]))
    assert all(torch.equal(a, b) for a, b in zip(third, straight[3 * per_epoch:]))


def test_init_from_an_exported_model_fine_tunes_the_shipped_file(demo_csv, tmp_path):
    """The run folders rarely travel with exported/: the .onnx itself is a starting point, with its record."""
    grand = train(_config(demo_csv, epochs=1), tmp_path / "grand", Reporter("plain"), export=False)
    parent = train(_config(demo_csv, epochs=2, init_from=str(grand.run_dir), export_name="shipped", export_dir=str(tmp_path / "x")),
                   tmp_path / "parent", Reporter("plain"))
    shipped = tmp_path / "x" / "shipped.onnx"
    child = train(_config(demo_csv, epochs=1, lr=0.0, init_from=str(shipped), export_name="child", export_dir=str(tmp_path / "x")),
                  tmp_path / "child", Reporter("plain"))
    _assert_holds_the_parents_best_weights(parent, child)
    earlier = load_classifier(tmp_path / "x" / "child.onnx").metadata["training"]["training"]["initialized_from"]
    assert earlier["run"] == str(shipped) and earlier["epochs"] == 3
    assert [(c["run"], c["epochs"]) for c in earlier["cycles"]] == [(str(grand.run_dir), 1), (str(shipped), 2)]
    assert [h["epoch"] for h in earlier["history"]] == [1, 2, 3]
    # the fine-tuned model is shipped in its parent's place; exporting its run again keeps the record it started with
    shutil.copyfile(tmp_path / "x" / "child.onnx", shipped)
    export_run(child.run_dir, export_name="again", export_dir=tmp_path / "x")
    again = load_classifier(tmp_path / "x" / "again.onnx").metadata["training"]["training"]["initialized_from"]
    assert again["cycles"] == earlier["cycles"] and again["epochs"] == 3

    with pytest.raises(ValueError, match="not the 'dnn'"):
        train(_config(demo_csv, model="dnn", init_from=str(shipped)), tmp_path / "dnn", Reporter("plain"), export=False)
    with pytest.raises(ValueError, match="limit_val=48"):
        train(_config(demo_csv, limit_val=40, init_from=str(shipped)), tmp_path / "other-split", Reporter("plain"), export=False)


@pytest.mark.parametrize("change, message", [(dict(model="dnn"), "not the 'dnn'"), (dict(limit_val=40), "limit_val=48")])
def test_init_from_refuses_another_model_or_another_validation_split(demo_csv, tmp_path, change, message):
    parent = train(_config(demo_csv, epochs=1), tmp_path / "parent", Reporter("plain"), export=False)
    with pytest.raises(ValueError, match=message):
        train(_config(demo_csv, init_from=str(parent.run_dir), **change), tmp_path / "child", Reporter("plain"), export=False)


def test_sigterm_keeps_completed_epochs_and_resume_finishes(demo_csv, tmp_path, capsys):
    run = tmp_path / "run"
    code, last = sigterm_after_event(["--data", str(demo_csv), "--epochs", "40", "--limit-train", "96", "--limit-val", "48",
                                      "--threads", "1", "--run-dir", str(run), "--no-export"], "epoch")
    assert code == 130
    assert last["event"] == "interrupted"
    done = load_checkpoint(run, "last")["epoch"]
    assert done == last["epoch"] >= 1
    assert cli_main(["--resume", str(run), "--epochs", str(done + 1), "--progress", "plain", "--no-export"]) == 0
    assert load_checkpoint(run, "last")["epoch"] == done + 1
    # a one-cycle run (the default recipe's) ends its learning rate with its budget: extending it is refused, with the way on
    assert cli_main(["--resume", str(run), "--epochs", "41", "--progress", "plain", "--no-export"]) == 2
    assert (f"--resume {run} --epochs 41: the run has {done + 1} epochs and its onecycle schedule was sized for them; to train on, "
            f"start from its best weights with a new schedule: fer-train --init-from {run} --epochs N") in capsys.readouterr().err


def test_export_fails_loudly_when_onnxruntime_disagrees(tmp_path, faces):
    class Sneaky(torch.nn.Module):
        """Behaves differently when traced, as a model with a data-dependent branch can."""

        def __init__(self):
            super().__init__()
            self.inner = create_model("dnn")

        def forward(self, x):
            out = self.inner(x)
            return out + 1.0 if torch.jit.is_tracing() else out

    with pytest.raises(ExportError, match="onnxruntime disagrees with torch"):
        export_onnx(Sneaky().eval(), tmp_path / "m.onnx", metadata={}, check_images=faces[0])
    assert not (tmp_path / "m.onnx").exists()


def test_loader_rejects_non_onnx_and_wrong_shapes(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"definitely not protobuf")
    with pytest.raises(ModelError, match="junk.onnx: not a loadable ONNX model"):
        load_classifier(junk)

    wrong = tmp_path / "wrong.onnx"
    torch.onnx.export(torch.nn.Flatten().eval(), (torch.zeros(1, 1, 32, 32),), str(wrong), input_names=["image"],
                      output_names=["logits"], dynamo=False)
    with pytest.raises(ModelError, match=r"wrong.onnx: input 'image' has shape \[1, 1, 32, 32\]"):
        load_classifier(wrong)


def test_model_without_metadata_gets_generic_names_and_a_warning(tmp_path):
    bare = tmp_path / "bare.onnx"
    torch.onnx.export(create_model("dnn").eval(), (torch.zeros(1, 1, 48, 48),), str(bare), input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}}, dynamo=False)
    clf = load_classifier(bare)
    assert clf.class_names == list(CLASS_NAMES)
    assert clf.warnings and "no class names" in clf.warnings[0]


def test_cli_reports_bad_data_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    assert cli_main(["--data", str(bad), "--progress", "plain"]) == 2
    assert f"{bad}, line 2: expected 2304 pixel values" in capsys.readouterr().err


def test_evaluate_writes_tables_json_and_png(demo_csv, tmp_path):
    from fer_train.evaluate import evaluate

    train(_config(demo_csv, epochs=1), tmp_path / "run", Reporter("plain"))
    for target in (tmp_path / "run", tmp_path / "run" / "model.onnx"):
        ev = evaluate(target, "test", out_dir=tmp_path / "eval")
        data = json.loads(ev.json_path.read_text())
        assert data["count"] == 140 and sum(map(sum, data["confusion"])) == 140  # the whole PublicTest split
        assert abs(data["accuracy"] - np.trace(np.array(data["confusion"])) / 140) < 1e-9
        assert ev.png_path.stat().st_size > 1000


def _planned(tmp_path, *argv: str) -> TrainConfig:
    return planned_config(tmp_path / "run", list(argv))


def test_plain_fer_train_gets_the_default_recipe_and_the_study_is_one_flag_away(tmp_path):
    default = _planned(tmp_path)
    assert default == TrainConfig()  # fer-train without flags runs TrainConfig(): one source of defaults
    assert default.recipe == "default" and default.epochs == 40 and default.fast
    assert (default.optimizer, default.learning_rate, default.schedule, default.batch_size) == ("adam", 1e-3, "onecycle", 64)
    assert (default.rotation, default.shift, default.flip, default.label_smoothing, default.erase) == (15.0, 0.1, True, 0.1, 0.5)

    study = _planned(tmp_path, "--recipe", "study")
    assert study.recipe == "study" and study.epochs == 20 and not study.fast
    assert (study.optimizer, study.learning_rate, study.schedule, study.batch_size) == ("adam", 1e-3, "none", 64)
    assert (study.rotation, study.shift, study.flip, study.label_smoothing, study.erase) == (40.0, 0.2, False, 0.0, 0.0)

    # a flag given wins over the recipe, whichever way it points
    mixed = _planned(tmp_path, "--recipe", "study", "--flip", "--epochs", "3", "--rotation", "10", "--fast")
    assert (mixed.flip, mixed.epochs, mixed.rotation, mixed.shift, mixed.fast) == (True, 3, 10.0, 0.2, True)
    plain = _planned(tmp_path, "--no-flip", "--no-fast", "--schedule", "none", "--erase", "0")
    assert (plain.flip, plain.fast, plain.schedule, plain.erase, plain.rotation) == (False, False, "none", 0.0, 15.0)
    assert _planned(tmp_path, "--optimizer", "sgd").learning_rate == 0.05  # the optimizer's own, not Adam's 1e-3
    by_hand = _planned(tmp_path, "--bf16")  # a path set by hand is kept, not timed away
    assert (by_hand.bf16, by_hand.fast) == (True, False) and _planned(tmp_path, "--channels-last", "--fast").fast
    assert TrainConfig.from_recipe("study", epochs=3) == dataclasses.replace(study, epochs=3)  # the same recipe from Python
    with pytest.raises(ValueError, match="recipe must be one of default, study, got 'fast'"):
        TrainConfig.from_recipe("fast")
