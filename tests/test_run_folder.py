"""A damaged or missing file of a run folder, and a flag out of range, get a message that names the file or flag,
says what is wrong and what to do: never a traceback, never torch's advice. Nothing here trains."""

from __future__ import annotations

import json

import pytest
import torch

from fer_train import cli, train_cli
from fer_train.checkpoint import save_checkpoint
from fer_train.config import TrainConfig
from fer_train.models import create_model


@pytest.fixture
def run(tmp_path, demo_csv):
    """A run folder as a study-recipe run of the dnn leaves it after its first epoch of two."""
    folder = tmp_path / "run"
    folder.mkdir()
    config = TrainConfig.from_recipe("study", model="dnn", data=str(demo_csv), epochs=2)
    model = create_model("dnn")
    fields = dict(model=model, model_name="dnn", model_kwargs={}, config=config.to_dict(), epoch=1, best_metric=0.2, best_epoch=1,
                  history=[{"epoch": 1, "val_acc": 0.2}])
    save_checkpoint(folder / "best.pt", **fields)
    save_checkpoint(folder / "last.pt", optimizer=torch.optim.Adam(model.parameters()), **fields)
    (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    return folder


def _error(capsys, *argv: str) -> str:
    assert cli.main([*argv, "--progress", "plain"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "weights_only" not in err, err
    return " ".join(err.split())  # the console wraps long lines


@pytest.mark.parametrize("damage, expected", [
    (lambda run: (run / "last.pt").unlink(), "last.pt: missing (best.pt is there)"),
    (lambda run: (run / "last.pt").write_bytes(b""), "last.pt: empty (0 bytes)"),
    (lambda run: (run / "last.pt").write_bytes(bytes(range(256)) * 20), "last.pt: damaged: not a PyTorch checkpoint"),
    (lambda run: (run / "last.pt").write_bytes((run / "last.pt").read_bytes()[:3000]), "last.pt: damaged: the checkpoint cannot be read"),
    (lambda run: (run / "config.json").write_text((run / "config.json").read_text()[:300]), "config.json: damaged: not valid JSON at line"),
    (lambda run: (run / "config.json").write_text("[1, 2]"), "config.json: damaged: holds a JSON list"),
    (lambda run: (run / "config.json").unlink(), "config.json: missing"),
])
def test_resume_names_the_damaged_file_and_what_to_do(run, capsys, damage, expected):
    damage(run)
    message = _error(capsys, "--resume", str(run))
    assert expected in message
    assert "--init-from" in message  # what to do


def test_a_damaged_best_checkpoint_points_to_the_last_one(run, capsys):
    (run / "best.pt").write_bytes(b"not a checkpoint at all")
    assert cli.main(["export", str(run)]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "best.pt: damaged" in message and f"export {run} --last" in message and "Traceback" not in message


@pytest.mark.parametrize("argv, expected", [
    (["--epochs", "0"], "--epochs must be a whole number of at least 1, got 0"),
    (["--batch-size", "0"], "--batch-size must be a whole number of at least 1, got 0"),
    (["--semi", "--threshold", "1.5"], "--threshold must lie in [0, 1), got 1.5"),
    (["--semi", "--labeled-fraction", "1"], "--labeled-fraction must lie strictly between 0 and 1"),
])
def test_flags_are_checked_before_anything_is_timed_or_loaded(demo_csv, tmp_path, capsys, monkeypatch, argv, expected):
    def never(*args, **kwargs):
        raise AssertionError("timed, loaded or trained before the flags were checked")

    monkeypatch.setattr(train_cli, "_fastest_path", never)  # the default recipe's --fast times training steps first
    monkeypatch.setattr("fer_train.data.load_splits", never)
    assert expected in _error(capsys, "--data", str(demo_csv), "--run-dir", str(tmp_path / "run"), *argv)
    assert not (tmp_path / "run").exists()


def test_a_semi_run_names_the_damaged_checkpoint_of_its_arm(tmp_path, demo_csv, capsys):
    run = tmp_path / "semi"
    (run / "self-training").mkdir(parents=True)
    config = TrainConfig.from_recipe("study", model="dnn", data=str(demo_csv), semi=True)
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    (run / "self-training" / "last.pt").write_bytes(b"")
    message = _error(capsys, "--resume", str(run))
    assert "self-training/last.pt: empty (0 bytes)" in message and f"delete the folder {run / 'self-training'}" in message


@pytest.fixture
def semi_run(run):
    """A summarised semi-supervised run: ``semi.json`` and two arms, each an ordinary run folder."""
    semi = run.parent / "semi"
    for arm in ("baseline", "self-training"):
        (semi / arm).mkdir(parents=True)
        for name in ("best.pt", "last.pt", "config.json"):
            (semi / arm / name).write_bytes((run / name).read_bytes())
        (semi / arm / "history.json").write_text(json.dumps([{"epoch": 1, "val_acc": 0.2}]))
    (semi / "semi.json").write_text(json.dumps({"arms": {"baseline": {"best_val_acc": 0.2}, "self-training": {"best_val_acc": 0.2}}}))
    return semi


@pytest.mark.parametrize("damage, expected", [
    (lambda semi: (semi / "semi.json").write_text('{"arms": {"base'), "semi.json: damaged: not valid JSON at line 1"),
    (lambda semi: (semi / "semi.json").write_text(""), "semi.json: empty (0 bytes of JSON)"),
    (lambda semi: (semi / "semi.json").write_text("[]"), "semi.json: damaged: holds a JSON list, not the dict"),
    (lambda semi: (semi / "semi.json").write_text('{"arms": ["baseline"]}'), "semi.json: damaged: has no table of arms"),
    (lambda semi: (semi / "self-training" / "history.json").unlink(), "self-training/history.json: missing"),
    (lambda semi: (semi / "self-training" / "history.json").write_text("[1]"), "self-training/history.json: damaged: record 1 is a JSON int"),
])
def test_the_summary_an_arm_exports_names_the_damaged_file(semi_run, damage, expected):
    from fer_runtime.io import DataError
    from fer_train.export import semi_summary

    assert set(semi_summary(semi_run / "baseline")["semi"]["histories"]) == {"baseline", "self-training"}
    damage(semi_run)
    with pytest.raises(DataError) as caught:
        semi_summary(semi_run / "baseline")
    message = str(caught.value)
    assert expected in message
    assert f"--resume {semi_run}" in message  # what to do


def test_exporting_an_arm_of_a_damaged_semi_run_says_which_file(semi_run, capsys):
    (semi_run / "semi.json").write_text('{"arms": ')
    assert cli.main(["export", str(semi_run / "baseline")]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert f"{semi_run / 'semi.json'}: damaged" in message and "Traceback" not in message
    assert not (semi_run / "baseline" / "model.onnx").exists()  # refused before anything is written
