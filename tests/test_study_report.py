"""``fer-train report`` on tiny models trained on drawn faces: every figure is written and the numbers are the models' own."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fer_train.cli import main as cli_main
from fer_train.config import TrainConfig
from fer_runtime.metrics import classification_report
from fer_train.progress import Reporter
from fer_runtime.classifier import load_classifier
from fer_train.semi import train_semi
from fer_train.study_report import ModelNumbers, _variant_of, build_report, numbers_markdown, one_face_per_class
from fer_train.data import load_splits
from fer_train.train import train


@pytest.fixture(scope="module")
def shipped(demo_csv, tmp_path_factory):
    """exported/cnn.onnx and exported/fer-best.onnx (BatchNorm folded), each with its explanation graphs and history."""
    root = tmp_path_factory.mktemp("report")
    exported = root / "exported"
    base = dict(data=str(demo_csv), epochs=1, batch_size=32, limit_train=64, limit_val=48, threads=1, export_dir=str(exported))
    train(TrainConfig(model="cnn", export_name="cnn", **base), root / "cnn", Reporter("plain"))
    train(TrainConfig(model="fernet", optimizer="sgd", lr=0.05, export_name="fer-best", **base), root / "fernet", Reporter("plain"))
    semi = dict(base, epochs=2, model="dnn", semi=True, semi_rounds=2, semi_epochs_per_round=1, semi_first_round_epochs=None, semi_threshold=0.15, augment=False)
    train_semi(TrainConfig(export_name="cnn-semi", **semi), root / "semi", Reporter("plain"))
    assert cli_main(["export", str(root / "semi" / "baseline"), "--name", "cnn-half", "--export-dir", str(exported)]) == 0  # the same run's baseline
    return exported


def test_report_writes_every_figure_and_the_models_own_numbers(shipped, demo_csv, tmp_path):
    from fer_train.optimize import optimize_model

    splits = load_splits(TrainConfig(data=str(demo_csv)))
    optimize_model(shipped / "fer-best.onnx", splits, variants=["tta", "ensemble"], members=[shipped / "cnn.onnx"], max_drop=100,
                   log=lambda line: None)
    out = tmp_path / "report"
    summary = build_report(shipped, out, data=str(demo_csv), layers=("conv2",), steps=(2, 4), max_filters=3)

    figures, faces = out / "figures", out / "faces"
    for name in ("cnn", "fer-best"):
        assert (figures / f"confusion-{name}.png").stat().st_size > 0
        assert (figures / f"filters-{name}-conv2-2.png").exists() and (figures / f"filters-{name}-conv2-4.png").exists()
        assert (faces / f"saliency-{name}.png").exists()
        assert (faces / f"outputs-{name}-conv2-happy.png").exists() and (faces / f"outputs-{name}-conv2-surprise.png").exists()
    assert (figures / "curves.png").exists() and not (figures / "curves-cnn-dnn.png").exists()  # no dnn shipped here
    assert sorted(summary["curves"]) == ["cnn", "cnn-half", "cnn-semi", "fer-best"]
    assert summary["pictures"]["cnn-semi"]["semi"] == ["semi-cnn-semi.png", "semi-rounds-cnn-semi.png"]
    assert summary["pictures"]["cnn-half"]["semi"] == summary["pictures"]["cnn-semi"]["semi"]  # one run: its comparison drawn once
    assert not (figures / "semi-cnn-half.png").exists()
    assert (figures / "semi-cnn-semi.png").stat().st_size > 0 and (figures / "semi-rounds-cnn-semi.png").stat().st_size > 0

    # the numbers are those of the files themselves, measured independently here
    by_name = {m["name"]: m for m in json.loads((out / "summary.json").read_text())["models"]}
    assert list(by_name) == ["cnn", "cnn-semi", "cnn-half", "fer-best"]  # the report's order, whatever the folder's
    numbers = (out / "numbers.md").read_text()
    # the self-training comparison, with the run's own final accuracies, from the shipped model's metadata alone
    ran = json.loads((shipped.parent / "semi" / "semi.json").read_text())["arms"]
    threshold = json.loads((shipped.parent / "semi" / "semi.json").read_text())["settings"]["threshold"]
    for title, arm in (("labeled part only", "baseline"), (f"self-training (p > {threshold})", "self-training")):
        assert f"| {title} | {100 * ran[arm]['final_val_acc']:.2f}%" in numbers
    assert f"Semi-supervised (`cnn-semi`, dnn: the arm self-training (p > {threshold}))" in numbers and "admitted after each round" in numbers
    assert numbers.count("| labeled part only |") == 1 and "(`cnn-half`," not in numbers
    for name in ("cnn", "fer-best"):
        clf = load_classifier(shipped / f"{name}.onnx")
        for split in ("val", "test"):
            s = splits.get(split)
            expected = classification_report(s.labels, clf.predict_logits(s.images).argmax(1)).accuracy
            assert by_name[name]["accuracy"][split] == pytest.approx(expected, abs=1e-5)
        assert by_name[name]["training"]["epochs"] == 1
        assert f"| `{name}` |" in numbers and f"{100 * by_name[name]['accuracy']['test']:.1f} %" in numbers

    # test-time variants beside a reported model: their own numbers, what they compute, no pictures
    variants = {m["name"]: m for m in summary["variants"]}
    assert list(variants) == ["fer-best.tta", "fer-best.ensemble"] and "fer-best.ensemble" not in summary["pictures"]
    ensemble_members = f"`{shipped / 'fer-best.onnx'}`, `{shipped / 'cnn.onnx'}`"  # as given to optimize
    for name, members in (("fer-best.tta", "`fer-best.onnx`"), ("fer-best.ensemble", ensemble_members)):
        s = splits.get("test")
        expected = classification_report(s.labels, load_classifier(shipped / f"{name}.onnx").predict_logits(s.images).argmax(1)).accuracy
        assert variants[name]["accuracy"]["test"] == pytest.approx(expected, abs=1e-5)
        assert f"| `{name}` | mean log-softmax of" in numbers and f"| {members} |" in numbers
        assert (figures / f"confusion-{name}.png").exists()


def test_a_fine_tuned_model_counts_its_parent_runs_epochs_and_time():
    tuned = ModelNumbers("fer-best", "fernet", 10, {"val": 0.5, "test": 0.4}, training={
        "epochs": 12, "wall_seconds": 4800.0, "hardware": "CPU", "initialized_from": {"run": "runs/a", "epochs": 14, "wall_seconds": 5100.0}})
    alone = ModelNumbers("cnn", "cnn", 10, {"val": 0.5}, training={"epochs": 14, "wall_seconds": 4620.0, "hardware": "CPU"})
    twice = ModelNumbers("fer-best2", "fernet", 10, {"val": 0.5}, training={
        "epochs": 8, "wall_seconds": 3000.0, "hardware": "CPU", "initialized_from": {
            "run": "runs/b", "epochs": 26, "wall_seconds": 9900.0,
            "cycles": [{"run": "runs/a", "epochs": 14, "wall_seconds": 5100.0}, {"run": "runs/b", "epochs": 12, "wall_seconds": 4800.0}]}})
    table = numbers_markdown([tuned, alone, twice])
    assert "| 14 + 12 | 165 min | CPU |" in table and "| 14 | 77 min | CPU |" in table and "| 14 + 12 + 8 | 215 min | CPU |" in table


def test_one_face_per_class_prefers_a_correct_prediction():
    labels = np.array([0, 0, 1, 1, 3])
    logits = np.zeros((5, 7))
    logits[[0, 1, 2, 3, 4], [2, 0, 5, 5, 3]] = 1  # class 0: second right; class 1: none right; class 3: right
    assert one_face_per_class(np.zeros((5, 48, 48)), labels, logits).tolist() == [1, 2, 4]


def test_report_without_models_names_the_folder(tmp_path, demo_csv, capsys):
    assert cli_main(["report", "--models-dir", str(tmp_path), "--data", str(demo_csv), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "cnn.onnx" in err


def test_a_nested_ensemble_lists_the_models_it_holds():
    pair = {"file": "exported/a.ensemble.onnx", "members": [{"file": "exported/a.onnx"}, {"file": "runs/b/model.onnx"}]}
    meta = {"optimization": {"ensemble": "mean log-softmax of 3 models", "member_files": [{"file": "runs/c/model.onnx"}, pair]}}
    assert _variant_of(meta) == {"what": "mean log-softmax of 3 models",
                                 "members": ["runs/c/model.onnx", "exported/a.onnx (in exported/a.ensemble.onnx)",
                                             "runs/b/model.onnx (in exported/a.ensemble.onnx)"]}
    outer = {"optimization": {"ensemble": "mean log-softmax of 4 models",
                              "member_files": [{"file": "runs/d/model.onnx"}, {**meta["optimization"], "file": "runs/abc.ensemble.onnx",
                                                                               "members": meta["optimization"]["member_files"]}]}}
    assert _variant_of(outer)["members"] == ["runs/d/model.onnx", "runs/c/model.onnx (in runs/abc.ensemble.onnx)",
                                             "exported/a.onnx (in exported/a.ensemble.onnx in runs/abc.ensemble.onnx)",
                                             "runs/b/model.onnx (in exported/a.ensemble.onnx in runs/abc.ensemble.onnx)"]


def test_the_semi_section_states_the_threshold_rule_only_for_pseudo_label_arms(shipped, tmp_path):
    from fer_runtime.contract import META_EXTRA
    from fer_train.study_report import semi_section

    semi = load_classifier(shipped / "cnn-semi.onnx").metadata[META_EXTRA]["semi"]
    assert "self-training" in semi["arms"]
    text, _ = semi_section("cnn-semi", semi, tmp_path)
    assert f"admits an unlabeled image when p_max > {semi['settings']['threshold']}" in text
    # the same run with its pseudo-label arm replaced by an arm that has rounds but admits nothing by threshold (a
    # FixMatch arm's shape): no threshold rule to state, whichever arms carry rounds
    other = dict(semi["arms"]["self-training"], title="FixMatch")
    assert other["rounds"]
    without = dict(semi, arm="baseline", arms={"baseline": semi["arms"]["baseline"], "fixmatch": other},
                   histories=dict(semi["histories"], fixmatch=semi["histories"]["self-training"]),
                   comparison=[dict(r, arm="fixmatch" if r["arm"] == "self-training" else r["arm"]) for r in semi["comparison"]])
    text, _ = semi_section("cnn-half", without, tmp_path)
    assert "p_max" not in text and "Semi-supervised (`cnn-half`" in text and "| FixMatch |" in text
