"""Knowledge distillation (``--distill-from``): the loss, the teacher's cached targets, the split check, the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fer_train.cli import main as cli_main
from fer_train.distill import TEACHER_FILE, TEACHER_RECORD, distillation_loss
from fer_train.models import create_model
from fer_train.progress import Reporter
from fer_runtime.classifier import load_classifier
from fer_train.data import load_splits
from fer_train.train import as_tensors, build_optimizer, train, train_one_epoch

from test_train_export import _config


def test_loss_is_the_labels_at_weight_zero_and_the_teachers_kl_at_weight_one():
    g = torch.Generator().manual_seed(0)
    logits, teacher_logits = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 6])
    teacher = F.log_softmax(teacher_logits, 1)
    assert torch.allclose(distillation_loss(logits, labels, teacher, 0.0, 2.0, 0.1), F.cross_entropy(logits, labels, label_smoothing=0.1))
    t = 3.0  # by hand: T² · mean over the batch of Σ p_teacher (log p_teacher − log p_student), both at temperature T
    p = F.softmax(teacher_logits / t, 1)
    by_hand = (p * (p.log() - F.log_softmax(logits / t, 1))).sum(1).mean() * t * t
    assert torch.allclose(distillation_loss(logits, labels, teacher, 1.0, t), by_hand, atol=1e-6)
    assert float(distillation_loss(teacher_logits, labels, teacher, 1.0, t)) == pytest.approx(0.0, abs=1e-6)  # the student is the teacher
    mixed = distillation_loss(logits, labels, teacher, 0.25, t)
    assert torch.allclose(mixed, 0.75 * F.cross_entropy(logits, labels) + 0.25 * by_hand, atol=1e-6)


def _one_epoch(demo_csv, teacher, labels=None, **kw) -> dict:
    config = _config(demo_csv, model="dnn", epochs=1, erase=0.5, **kw)
    splits = load_splits(config)
    x, y = as_tensors(splits.train, torch.device("cpu"))
    torch.manual_seed(0)
    model = create_model("dnn")
    optimizer, scheduler = build_optimizer(config, model, 3)
    train_one_epoch(model, optimizer, scheduler, x, y if labels is None else labels, config, 1, teacher=teacher)
    return model.state_dict()


def test_the_weight_decides_what_the_student_learns_from(demo_csv, one_torch_thread):
    """At weight 1 the labels play no part (scrambled labels train the same weights), at weight 0 the teacher none
    (the same weights as no teacher); in between both do."""
    n = 96
    teacher = F.log_softmax(torch.randn(n, 7, generator=torch.Generator().manual_seed(1)), 1)
    scrambled = torch.randint(0, 7, (n,), generator=torch.Generator().manual_seed(2))
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731

    assert same(_one_epoch(demo_csv, teacher, distill_weight=1.0), _one_epoch(demo_csv, teacher, scrambled, distill_weight=1.0))
    assert same(_one_epoch(demo_csv, teacher, distill_weight=0.0), _one_epoch(demo_csv, None))
    assert not same(_one_epoch(demo_csv, teacher, distill_weight=0.5), _one_epoch(demo_csv, teacher, scrambled, distill_weight=0.5))
    assert not same(_one_epoch(demo_csv, teacher, distill_weight=0.5), _one_epoch(demo_csv, None))


def test_a_run_distills_an_exported_teacher_and_keeps_its_targets(demo_csv, tmp_path, monkeypatch):
    teacher_run = train(_config(demo_csv, model="dnn", epochs=1, export_name="teacher", export_dir=str(tmp_path / "x")),
                        tmp_path / "teacher", Reporter("plain"))
    teacher = tmp_path / "x" / "teacher.onnx"
    config = _config(demo_csv, epochs=1, distill_from=str(teacher))
    student = train(config, tmp_path / "student", Reporter("plain"), export=False)
    assert student.history and teacher_run.history

    # the targets are the teacher's log-probabilities on the un-augmented training faces, in training order
    splits = load_splits(config)
    expected = torch.log_softmax(torch.from_numpy(load_classifier(teacher).predict_logits(splits.train.images)).double(), 1).numpy()
    kept = np.load(student.run_dir / TEACHER_FILE)
    assert kept.shape == (96, 7)
    np.testing.assert_allclose(kept, expected, atol=1e-5)
    record = json.loads((student.run_dir / TEACHER_RECORD).read_text())
    assert record["teacher"] == str(teacher) and record["train_accuracy"] == pytest.approx(float((expected.argmax(1) == splits.train.labels).mean()))

    # --resume reads them back instead of running the teacher again
    stamp = os.stat(student.run_dir / TEACHER_FILE).st_mtime_ns
    config.epochs = 2
    resumed = train(config, student.run_dir, Reporter("plain"), resume=True, export=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert os.stat(student.run_dir / TEACHER_FILE).st_mtime_ns == stamp

    # another run distilling the same teacher on the same faces takes the targets from the user's cache
    import fer_train.distill as distill

    monkeypatch.setattr(distill, "_run_teacher", lambda *a, **kw: pytest.fail("the teacher ran again"))
    again = train(_config(demo_csv, epochs=1, train_seed=3, distill_from=str(teacher)), tmp_path / "again", Reporter("plain"), export=False)
    np.testing.assert_array_equal(np.load(again.run_dir / TEACHER_FILE), kept)

    # a teacher that saw other validation faces is refused, naming the file and the setting
    with pytest.raises(ValueError, match=r"teacher\.onnx.*limit_val=48"):
        train(_config(demo_csv, limit_val=40, distill_from=str(teacher)), tmp_path / "other-split", Reporter("plain"), export=False)


@pytest.mark.parametrize("argv, message", [
    (["--distill-weight", "0.5"], "only with --distill-from"),
    (["--distill-from", "t.onnx", "--semi"], "not --semi"),
    (["--distill-from", "t.onnx", "--distill-weight", "1.5"], "from 0 to 1"),
])
def test_cli_refuses_distillation_flags_that_cannot_apply(demo_csv, tmp_path, capsys, argv, message):
    code = cli_main(["--data", str(demo_csv), "--runs-root", str(tmp_path), "--progress", "plain", *argv])
    assert code != 0
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before a run folder was made
