"""Semi-supervised training on generated faces: the selection rule at its boundary, a fresh selection every
round, hidden labels that never reach the loss, resume, and the run folder and JSON stream people and the TUI read."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal

import numpy as np
import pytest
import torch

import fer_train.semi.arm as semi_arm
import fer_train.semi.selection as semi_selection
from fer_train.checkpoint import load_checkpoint, model_from_checkpoint
from fer_train.cli import main as cli_main
from fer_train.config import TrainConfig
from fer_runtime.contract import CLASS_NAMES
from fer_train.models import MODEL_REGISTRY
from fer_train.progress import Reporter
from fer_runtime.classifier import load_classifier
from fer_train.semi import (ArmLoop, PseudoLabelAudit, SemiData, class_balanced_thresholds, prepare, select_confident, semi_config,
                            split_labeled, train_semi)
from fer_train.data import load_splits

from cli_support import act_after_event, child_processes, every_arm_ended_an_epoch, planned_config, sigterm_after_event

CPU = torch.device("cpu")


def _config(demo_csv, **kw) -> TrainConfig:
    base = dict(model="dnn", data=str(demo_csv), batch_size=32, threads=1, augment=False, semi_rounds=3, semi_epochs_per_round=1,
                semi_threshold=0.0, semi_arms=["baseline", "self-training"])
    return TrainConfig.from_recipe("study", **{**base, **kw})


def _quiet() -> Reporter:
    return Reporter("json", stream=io.StringIO())


def _weights(path) -> dict:
    return load_checkpoint(path, prefer="last")["state_dict"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s", "select_seconds")} for r in records]


# ----------------------------------------------------------------------------------------------------
# the selection rule


def test_admission_is_strictly_greater_than_the_threshold():
    t = 0.45
    probs = np.array([
        [t, 0.30, 0.25, 0, 0, 0, 0],  # exactly at the threshold: not admitted
        [np.nextafter(t, 1.0), 0.30, 0.25, 0, 0, 0, 0],  # the next number above it: admitted
        [0.44, 0.40, 0.16, 0, 0, 0, 0],
        [0.10, 0.60, 0.30, 0, 0, 0, 0],
    ])
    chosen = select_confident(probs, t)
    assert chosen.index.tolist() == [1, 3]
    assert chosen.label.tolist() == [0, 1]  # the pseudo-label is the arg-max
    assert chosen.per_class() == {**dict.fromkeys(CLASS_NAMES, 0), "Angry": 1, "Disgust": 1}
    # per class: each image must clear the threshold of its own predicted class
    per_class = select_confident(probs, [0.40, 0.60, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert per_class.index.tolist() == [0, 1, 2]  # 0.60 for Disgust is not cleared by 0.60
    assert select_confident(probs, 0.0).index.tolist() == [0, 1, 2, 3]  # every top probability is above 0


def test_class_balanced_thresholds_admit_the_same_share_of_every_predicted_class():
    rng = np.random.default_rng(0)
    probs = np.full((30, 7), 0.01)
    probs[:20, 3] = rng.uniform(0.8, 0.95, 20)  # 20 confident "Happy" predictions
    probs[20:, 1] = rng.uniform(0.3, 0.4, 10)  # 10 hesitant "Disgust" ones
    assert select_confident(probs, 0.5).per_class()["Disgust"] == 0  # the global rule crowds Disgust out
    thresholds = class_balanced_thresholds(probs, 0.5)  # the global rule admits 20/30 = 2/3 overall
    counts = select_confident(probs, thresholds).per_class()
    assert counts["Happy"] == round(20 * 2 / 3) and counts["Disgust"] == round(10 * 2 / 3)
    assert thresholds[0] == 0.0  # no image predicted Angry: nothing to hold back


def test_the_labeled_part_is_stratified_seeded_and_the_rest_carries_no_labels(demo_csv):
    labels = np.repeat(np.arange(7), [40, 6, 30, 80, 35, 25, 45])
    labeled, unlabeled = split_labeled(labels, 0.5, seed=1)
    assert np.intersect1d(labeled, unlabeled).size == 0 and len(labeled) + len(unlabeled) == len(labels)
    np.testing.assert_array_equal(np.bincount(labels[labeled], minlength=7), [20, 3, 15, 40, 18, 12, 22])
    assert np.array_equal(split_labeled(labels, 0.5, seed=1)[0], labeled)
    assert not np.array_equal(split_labeled(labels, 0.5, seed=2)[0], labeled)

    config = semi_config(_config(demo_csv))
    splits = load_splits(config)
    data, audit = prepare(splits, config, CPU)
    assert {f.name for f in dataclasses.fields(SemiData)} == {"labeled_x", "labeled_y", "unlabeled_x", "val_x", "val_y"}
    assert len(data.labeled_y) + len(data.unlabeled_x) == len(splits.train) and len(audit) == len(data.unlabeled_x)


# ----------------------------------------------------------------------------------------------------
# the loop


def test_hidden_labels_never_reach_the_loss(demo_csv, tmp_path, monkeypatch):
    """Poison every hidden label: training must stay bit-identical, and only the audit's grades change.

    With threshold 0 every unlabeled image is admitted every round, so any leak would change the weights."""
    config = _config(demo_csv, semi_arms=["self-training", "per-class", "fixmatch"], fixmatch_threshold=0.0)
    honest = train_semi(config, tmp_path / "honest", _quiet(), export=False)

    class PoisonedAudit(PseudoLabelAudit):
        def __init__(self, hidden_labels):
            super().__init__(np.zeros_like(hidden_labels))  # every hidden label replaced by Angry

    monkeypatch.setattr(semi_selection, "PseudoLabelAudit", PoisonedAudit)
    poisoned = train_semi(config, tmp_path / "poisoned", _quiet(), export=False)
    for arm in config.semi_arms:
        _assert_same_weights(_weights(honest.run_dir / arm), _weights(poisoned.run_dir / arm))
        a, b = (json.loads((r.run_dir / arm / "history.json").read_text()) for r in (honest, poisoned))
        assert _without_timings(a) == _without_timings(b)
    rounds = [json.loads((r.run_dir / "rounds.json").read_text())["self-training"] for r in (honest, poisoned)]
    assert [r["admitted"] for r in rounds[0]] == [r["admitted"] for r in rounds[1]] == [honest.summary["data"]["unlabeled"]] * 3
    assert [r["pseudo_precision"] for r in rounds[0]] != [r["pseudo_precision"] for r in rounds[1]]  # the audit was consulted


def test_the_selection_is_made_afresh_every_round(demo_csv, tmp_path, monkeypatch):
    config = semi_config(_config(demo_csv, semi_threshold=0.45, semi_arms=["self-training"]))
    data, audit = prepare(load_splits(config), config, CPU)
    n = len(data.unlabeled_x)

    def scripted(confident: dict[int, tuple[int, float]]) -> np.ndarray:
        probs = np.full((n, 7), 1 / 7)
        for i, (c, p) in confident.items():
            probs[i] = (1 - p) / 6
            probs[i, c] = p
        return probs

    script = iter([scripted({0: (2, 0.9), 1: (2, 0.5), 3: (4, 0.45)}),  # after round 1: 0 and 1 (3 sits on the threshold)
                   scripted({2: (5, 0.8)}),  # after round 2: only 2; 0 and 1 drop out again
                   scripted({})])
    monkeypatch.setattr(semi_arm, "unlabeled_probabilities", lambda model, images, config: next(script))
    seen = []
    real_epoch = semi_arm.train_one_epoch

    def spy(model, optimizer, scheduler, x, y, config, epoch, *args, **kwargs):
        seen.append((x.clone(), y.clone()))
        return real_epoch(model, optimizer, scheduler, x, y, config, epoch, *args, **kwargs)

    monkeypatch.setattr(semi_arm, "train_one_epoch", spy)
    ArmLoop("self-training", data, audit, config, tmp_path, _quiet(), share_first_round=False).load().run()

    labeled = len(data.labeled_y)
    assert [len(y) for _, y in seen] == [labeled, labeled + 2, labeled + 1]
    assert torch.equal(seen[1][0][labeled:], data.unlabeled_x[[0, 1]]) and seen[1][1][labeled:].tolist() == [2, 2]
    assert torch.equal(seen[2][0][labeled:], data.unlabeled_x[[2]]) and seen[2][1][labeled:].tolist() == [5]
    rounds = json.loads((tmp_path / "self-training" / "rounds.json").read_text())
    assert [(r["admitted"], r["kept"], r["new"], r["dropped"]) for r in rounds] == [(2, 0, 2, 0), (1, 0, 1, 2), (0, 0, 0, 1)]
    assert [r["used_in_round"] for r in rounds] == [2, 3, None]


def test_a_pseudo_label_arm_follows_the_baselines_learning_rate_epoch_by_epoch(demo_csv, tmp_path):
    # threshold 0: every unlabeled image joins from round 2, doubling the batches of an epoch
    config = _config(demo_csv, schedule="onecycle", optimizer="sgd", lr=0.05, semi_rounds=3)
    train_semi(config, tmp_path / "run", _quiet(), export=False)
    base = json.loads((tmp_path / "run" / "baseline" / "history.json").read_text())
    selftrain = json.loads((tmp_path / "run" / "self-training" / "history.json").read_text())
    assert selftrain[-1]["steps"] > 1.5 * base[-1]["steps"]
    assert [h["lr"] for h in selftrain] == pytest.approx([h["lr"] for h in base], rel=1e-6)
    assert selftrain[-1]["lr"] < 0.05 * config.lr  # the cycle ends with the budget (it stayed near the peak before)


@pytest.mark.parametrize("schedule,first", [("none", None), ("onecycle", 2)])
def test_sharing_the_first_round_changes_nothing(demo_csv, tmp_path, schedule, first):
    config = _config(demo_csv, semi_rounds=2, semi_arms=["baseline", "self-training"], schedule=schedule, semi_first_round_epochs=first,
                     semi_threshold=0.15)
    shared = train_semi(config, tmp_path / "shared", _quiet(), export=False)
    alone = train_semi(config, tmp_path / "alone", _quiet(), export=False, share_first_round=False)
    assert (shared.run_dir / "shared-round-1").exists() and not (alone.run_dir / "shared-round-1").exists()
    _assert_same_weights(_weights(shared.run_dir / "self-training"), _weights(alone.run_dir / "self-training"))
    rounds = [json.loads((d / "self-training" / "rounds.json").read_text()) for d in (shared.run_dir, alone.run_dir)]
    assert _without_timings(rounds[0]) == _without_timings(rounds[1])


def test_a_long_first_round_then_a_selection_after_every_round(demo_csv, tmp_path):
    # round 1 of 3 epochs, then 2 rounds of 2: selections after epochs 3, 5 and 7
    config = _config(demo_csv, semi_first_round_epochs=3, semi_rounds=3, semi_epochs_per_round=2, semi_arms=["self-training"])
    result = train_semi(config, tmp_path / "run", _quiet(), export=False)
    history = json.loads((tmp_path / "run" / "self-training" / "history.json").read_text())
    rounds = json.loads((tmp_path / "run" / "self-training" / "rounds.json").read_text())
    assert result.summary["arms"]["self-training"]["epochs"] == 7 and [h["epoch"] for h in history] == list(range(1, 8))
    assert [h["round"] for h in history] == [1, 1, 1, 2, 2, 3, 3]
    assert [(r["round"], r["epoch"], r["used_in_round"]) for r in rounds] == [(1, 3, 2), (2, 5, 3), (3, 7, None)]
    images = [h["train_images"] for h in history]
    assert len(set(images[:3])) == 1 and min(images[3:]) > images[0]  # threshold 0: every unlabeled image joins after round 1
    assert "round 1 of 3 epochs, then 2 rounds × 2 epochs" in (tmp_path / "run" / "comparison.md").read_text()


def test_resume_adds_an_arm_from_the_shared_first_round_and_refuses_to_drop_one(demo_csv, tmp_path, capsys):
    run = tmp_path / "run"
    train_semi(_config(demo_csv, semi_rounds=2, semi_threshold=0.15), run, _quiet(), export=False)
    first = json.loads((run / "semi.json").read_text())
    assert cli_main(["--resume", str(run), "--arms", "baseline,self-training,per-class", "--progress", "plain", "--no-export"]) == 0
    summary = json.loads((run / "semi.json").read_text())
    assert list(summary["arms"]) == ["baseline", "self-training", "per-class"]
    for arm in ("baseline", "self-training"):  # the arms it had are not trained again
        assert summary["arms"][arm] == first["arms"][arm]
    added = json.loads((run / "per-class" / "history.json").read_text())
    assert [h.get("shared", False) for h in added] == [True, False] and json.loads((run / "config.json").read_text())["semi_arms"][-1] == "per-class"
    assert cli_main(["--resume", str(run), "--arms", "per-class", "--progress", "plain", "--no-export"]) == 2
    assert "arms can be added, not dropped; the run has baseline, self-training, per-class, so also name baseline, self-training" in capsys.readouterr().err


def test_one_run_sweeps_thresholds_against_one_baseline_from_one_shared_first_round(demo_csv, tmp_path, monkeypatch):
    """self-training@T arms: in the order they run whatever the order named, the run's own threshold folded into the
    plain arm; each admits by its own threshold, from the same shared round 1; one more added on --resume."""
    config = semi_config(_config(demo_csv, semi_threshold=0.3, semi_rounds=2,
                                 semi_arms=["self-training@0.6", "baseline", "self-training@0.30", "self-training@0.45"]))
    assert config.semi_arms == ["baseline", "self-training", "self-training@0.45", "self-training@0.6"]
    assert semi_config(dataclasses.replace(config, semi_arms=["per-class@0.5", "baseline"])).semi_arms == ["baseline", "per-class@0.5"]
    run = tmp_path / "run"
    result = train_semi(config, run, _quiet(), export=False)
    summary = result.summary

    # round 1 was trained once: every arm's first selection is the shared model's probabilities cut at its own threshold
    data, _ = prepare(load_splits(config), config, CPU)
    probs = semi_selection.unlabeled_probabilities(model_from_checkpoint(load_checkpoint(run / "shared-round-1" / "last.pt")),
                                                    data.unlabeled_x, config)
    for arm, threshold in (("self-training", 0.3), ("self-training@0.45", 0.45), ("self-training@0.6", 0.6)):
        first = json.loads((run / arm / "rounds.json").read_text())[0]
        assert first["threshold"] == threshold and set(first["thresholds_per_class"].values()) == {threshold}
        assert first["admitted"] == int((probs.max(1) > threshold).sum())
    assert len({json.loads((run / arm / "rounds.json").read_text())[0]["admitted"] for arm in config.semi_arms[1:]}) > 1
    rows = {r["arm"]: r for r in summary["comparison"]}
    assert all("val_vs_baseline" in rows[arm] for arm in config.semi_arms[1:]) and summary["main_arm"] == "self-training"
    assert [summary["arms"][a]["title"] for a in config.semi_arms] == [
        "labeled part only", "self-training (p > 0.3)", "self-training (p > 0.45)", "self-training (p > 0.6)"]
    assert "| self-training (p > 0.6) |" in (run / "comparison.md").read_text()

    # the run's arms named as a user may type them (the run's own threshold, trailing zeros), and one more
    assert cli_main(["--resume", str(run), "--arms", "baseline,self-training@0.30,self-training@0.450,self-training@0.60,self-training@0.9",
                     "--progress", "plain", "--no-export"]) == 0
    added = json.loads((run / "self-training@0.9" / "history.json").read_text())
    assert [h.get("shared", False) for h in added] == [True, False]
    assert json.loads((run / "self-training@0.9" / "rounds.json").read_text())[0]["admitted"] == int((probs.max(1) > 0.9).sum())
    for arm in config.semi_arms:  # the arms it had are not trained again
        assert json.loads((run / "semi.json").read_text())["arms"][arm] == summary["arms"][arm]


def test_parallel_arms_reach_the_same_weights_as_one_after_the_other(demo_csv, tmp_path, capfd):
    config = _config(demo_csv, semi_rounds=2, semi_threshold=0.15)
    serial = train_semi(config, tmp_path / "serial", _quiet(), export=False)
    parallel = train_semi(dataclasses.replace(config, semi_parallel_arms=True), tmp_path / "parallel", Reporter("plain"), export=False)
    for arm in ("baseline", "self-training"):
        _assert_same_weights(_weights(serial.run_dir / arm), _weights(parallel.run_dir / arm))
    rounds = [json.loads((d / "rounds.json").read_text()) for d in (serial.run_dir, parallel.run_dir)]
    assert _without_timings(rounds[0]["self-training"]) == _without_timings(rounds[1]["self-training"])
    assert parallel.summary["comparison"] == serial.summary["comparison"]
    err = capfd.readouterr().err  # the arms' processes write to the same stderr
    assert "arms baseline, self-training in 2 processes, 1 thread each" in err
    assert "baseline epoch   2/2" in err and "self-training epoch   2/2" in err


def test_sigterm_stops_every_parallel_arm_and_resume_finishes(demo_csv, tmp_path):
    run = tmp_path / "run"
    code, last = sigterm_after_event(["--semi", "--recipe", "study", "--data", str(demo_csv), "--model", "dnn", "--rounds", "40", "--epochs-per-round", "1",
                                      "--parallel-arms", "--threads", "1", "--run-dir", str(run), "--no-export"],
                                     every_arm_ended_an_epoch(("baseline", "self-training")))
    assert code == 130 and last["event"] == "interrupted"
    done = {arm: load_checkpoint(run / arm, "last")["epoch"] for arm in ("baseline", "self-training")}
    assert all(1 <= d < 40 for d in done.values()), done  # every arm stopped at an epoch boundary, none ran on
    assert cli_main(["--resume", str(run), "--progress", "plain", "--no-export"]) == 0
    assert {arm: load_checkpoint(run / arm, "last")["epoch"] for arm in done} == {"baseline": 40, "self-training": 40}


def test_a_killed_parallel_arm_is_named_in_a_clean_error_and_resume_finishes_it(demo_csv, tmp_path):
    run = tmp_path / "run"

    def kill_one_arm(proc):
        arms = child_processes(proc.pid, "spawn_main")  # not multiprocessing's resource tracker
        assert len(arms) == 2, arms
        os.kill(arms[0], signal.SIGKILL)  # as the out-of-memory killer would

    code, events, err = act_after_event(["--semi", "--recipe", "study", "--data", str(demo_csv), "--model", "dnn", "--rounds", "12", "--epochs-per-round", "1",
                                         "--parallel-arms", "--threads", "1", "--run-dir", str(run), "--no-export"], "epoch", kill_one_arm)
    assert code == 1 and "Traceback" not in err, err
    done = {arm: load_checkpoint(run / arm, "last")["epoch"] if (run / arm / "last.pt").exists() else 0 for arm in ("baseline", "self-training")}
    dead = [arm for arm, epoch in done.items() if epoch < 12]
    assert len(dead) == 1, done  # the other arm trained on to its end
    assert events[-1]["event"] == "error"
    assert events[-1]["message"] == (f"arm {dead[0]} was killed by SIGKILL (its last epoch is in {run / dead[0]}; "
                                     f"--resume {run} continues)")
    assert {"event": "message", "text": f"arm {dead[0]} was killed by SIGKILL; the other arms go on"} in \
        [{k: e[k] for k in ("event", "text") if k in e} for e in events]
    assert cli_main(["--resume", str(run), "--progress", "plain", "--no-export"]) == 0
    assert {arm: load_checkpoint(run / arm, "last")["epoch"] for arm in done} == {"baseline": 12, "self-training": 12}


def test_an_interrupted_run_resumes_to_the_same_weights(demo_csv, tmp_path, monkeypatch):
    config = _config(demo_csv, semi_threshold=0.15)
    straight = train_semi(config, tmp_path / "straight", _quiet(), export=False)

    calls = {"n": 0}
    real_epoch = semi_arm.train_one_epoch

    def stop_at_the_fifth_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # baseline epochs 1–3, self-training (round 1 shared) epoch 2, then epoch 3
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(semi_arm, "train_one_epoch", stop_at_the_fifth_epoch)
    stopped = train_semi(config, tmp_path / "resumed", _quiet(), export=False)
    assert stopped.interrupted and load_checkpoint(tmp_path / "resumed" / "self-training", "last")["epoch"] == 2
    monkeypatch.setattr(semi_arm, "train_one_epoch", real_epoch)
    assert cli_main(["--resume", str(tmp_path / "resumed"), "--progress", "plain", "--no-export"]) == 0
    for arm in ("baseline", "self-training"):
        _assert_same_weights(_weights(straight.run_dir / arm), _weights(tmp_path / "resumed" / arm))
    rounds = [json.loads((d / "rounds.json").read_text()) for d in (straight.run_dir, tmp_path / "resumed")]
    assert _without_timings(rounds[0]["self-training"]) == _without_timings(rounds[1]["self-training"])
    summary = json.loads((tmp_path / "resumed" / "semi.json").read_text())
    assert [s["interrupted"] for s in summary["sessions"]] == [True, False]
    assert summary["wall_seconds"] == pytest.approx(sum(s["seconds"] for s in summary["sessions"]), abs=0.2)


def test_sigterm_stops_a_semi_run_that_resume_then_finishes(demo_csv, tmp_path):
    run = tmp_path / "run"
    code, last = sigterm_after_event(["--semi", "--recipe", "study", "--data", str(demo_csv), "--model", "dnn", "--rounds", "30", "--epochs-per-round", "1",
                                      "--arms", "self-training,fixmatch", "--threads", "1", "--run-dir", str(run), "--no-export"], "round")
    assert code == 130
    assert last["event"] == "interrupted" and last["arm"] == "self-training"
    assert load_checkpoint(run / "self-training", "last")["epoch"] == last["epoch"] >= 1
    assert cli_main(["--resume", str(run), "--progress", "plain", "--no-export"]) == 0
    assert json.loads((run / "semi.json").read_text())["arms"]["fixmatch"]["epochs"] == 30


def test_a_stop_signal_ends_a_fixmatch_epoch_between_batches(demo_csv, monkeypatch):
    from fer_train import stops
    from fer_train.models import create_model
    from fer_train.semi.fixmatch import fixmatch_epoch
    from fer_train.stops import Interrupted

    config = semi_config(_config(demo_csv))
    data, _ = prepare(load_splits(config), config, CPU)
    model = create_model("dnn")
    optimizer = torch.optim.Adam(model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setattr(stops, "_requested", "SIGTERM")  # what the handler of interrupts_as_exception sets
    with pytest.raises(Interrupted):
        fixmatch_epoch(model, optimizer, None, data.labeled_x, data.labeled_y, data.unlabeled_x, config, epoch=1)
    _assert_same_weights(before, model.state_dict())  # stopped before the first batch


# ----------------------------------------------------------------------------------------------------
# what a user and the TUI get


def test_cli_semi_run_writes_the_comparison_and_streams_rounds(demo_csv, tmp_path, capsys):
    run = tmp_path / "run"
    code = cli_main(["--semi", "--recipe", "study", "--threshold", "0.15", "--data", str(demo_csv), "--model", "dnn", "--rounds", "2", "--epochs-per-round", "1",
                     "--arms", "self-training,baseline,per-class,fixmatch", "--fixmatch-threshold", "0.15", "--batch-size", "32", "--threads", "1",
                     "--run-dir", str(run), "--progress", "json", "--export", "semi-tiny", "--export-dir", str(tmp_path / "exported")])
    assert code == 0
    for name in ("config.json", "semi.json", "rounds.json", "comparison.md", "comparison.png", "rounds.png", "self-training/model.onnx",
                 "baseline/history.json", "fixmatch/last.pt", "per-class/curves.png"):
        assert (run / name).exists(), name

    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("arm") == 4
    rounds = [e for e in events if e["event"] == "round"]
    assert sorted({e["arm"] for e in rounds}) == ["fixmatch", "per-class", "self-training"]
    for e in rounds:
        assert {"round", "rounds", "admitted", "admitted_per_class", "pseudo_precision_per_class", "threshold"} <= set(e)
        assert sum(e["admitted_per_class"].values()) == e["admitted"] and list(e["admitted_per_class"]) == list(CLASS_NAMES)
    assert all("arm" in e for e in events if e["event"] == "epoch")

    summary = json.loads((run / "semi.json").read_text())
    assert summary["main_arm"] == "self-training" and set(summary["arms"]) == {"baseline", "self-training", "per-class", "fixmatch"}
    for arm, s in summary["arms"].items():
        history = json.loads((run / arm / "history.json").read_text())
        assert s["final_val_acc"] == pytest.approx(history[-1]["val_acc"], abs=1e-5)
    baseline = json.loads((run / "baseline" / "history.json").read_text())
    selftrain = json.loads((run / "self-training" / "history.json").read_text())
    assert _without_timings(selftrain[:1]) == [dict(r, shared=True) for r in _without_timings(baseline[:1])]  # like for like
    assert "self-training" in (run / "comparison.md").read_text() and "McNemar" in (run / "comparison.md").read_text()

    metadata = load_classifier(tmp_path / "exported" / "semi-tiny.onnx").metadata
    assert metadata["train_config"]["semi"] is True and metadata["train_config"]["semi_threshold"] == 0.15
    carried = metadata["training"]["semi"]  # the whole comparison travels with the model
    assert carried["arm"] == "self-training" and carried["comparison"] == summary["comparison"]
    assert set(carried["histories"]) == set(summary["arms"])
    assert [h["val_acc"] for h in carried["histories"]["baseline"]] == pytest.approx([h["val_acc"] for h in baseline], abs=1e-5)


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_every_registered_model_self_trains(demo_csv, tmp_path, name):
    result = train_semi(_config(demo_csv, model=name, limit_train=98, semi_rounds=2, semi_arms=["self-training"]), tmp_path / name, _quiet(), export=False)
    assert not result.interrupted and result.summary["arms"]["self-training"]["epochs"] == 2


def test_settings_a_user_can_get_wrong(demo_csv, capsys):
    with pytest.raises(ValueError, match=r"--threshold must lie in \[0, 1\), got 1.0"):
        semi_config(_config(demo_csv, semi_threshold=1.0))
    with pytest.raises(ValueError, match="--arms takes a comma-separated list of baseline, self-training, per-class, fixmatch, noisy-student, "
                                         "and self-training or per-class with a threshold of its own .e.g. self-training@0.9.; got selftrain, fixmatch@0.5"):
        semi_config(_config(demo_csv, semi_arms=["selftrain", "fixmatch@0.5"]))
    with pytest.raises(ValueError, match=r"--arms self-training@1.2: the threshold must lie in \[0, 1\), got 1.2; "
                                         r"--arms per-class@high: the threshold after @ is not a number"):
        semi_config(_config(demo_csv, semi_arms=["baseline", "self-training@1.2", "per-class@high"]))
    with pytest.raises(ValueError, match="--class-thresholds needs 7 numbers"):
        semi_config(_config(demo_csv, semi_class_thresholds="0.5,0.5"))
    assert semi_config(_config(demo_csv, semi_class_thresholds="0.5, 0.2,0.4,0.6,0.5,0.5,0.5")).semi_class_thresholds[1] == 0.2
    assert semi_config(_config(demo_csv, semi_rounds=3, semi_epochs_per_round=2)).epochs == 6
    assert semi_config(_config(demo_csv, semi_rounds=3, semi_epochs_per_round=2, semi_first_round_epochs=5)).epochs == 9
    with pytest.raises(ValueError, match="--first-round-epochs must be at least 1, got 0"):
        semi_config(_config(demo_csv, semi_first_round_epochs=0))
    assert cli_main(["--semi", "--epochs", "3", "--data", str(demo_csv), "--progress", "plain"]) == 2
    assert "drop --epochs" in capsys.readouterr().err
    assert cli_main(["--threshold", "0.5", "--data", str(demo_csv), "--progress", "plain"]) == 2
    assert "--threshold: only for semi-supervised runs; add --semi" in capsys.readouterr().err


def test_noisy_student_is_one_flag_the_baseline_beside_it(tmp_path, capsys):
    config = semi_config(planned_config(tmp_path / "run", ["--noisy-student"]))
    assert config.semi and config.semi_arms == ["baseline", "noisy-student"] and config.epochs == 50 and config.student_mixup == 0.2
    assert semi_config(planned_config(tmp_path / "run", ["--noisy-student", "--student-mixup", "0.5"])).student_mixup == 0.5
    assert cli_main(["--noisy-student", "--arms", "baseline,fixmatch", "--progress", "plain"]) == 2
    assert "--noisy-student trains the arms baseline,noisy-student; for other arms beside it: --semi --arms baseline,noisy-student,..." \
        in capsys.readouterr().err
    assert cli_main(["--resume", str(tmp_path / "run"), "--noisy-student", "--progress", "plain"]) == 2
    assert f"to add the noisy student to a --semi run: --resume {tmp_path / 'run'} --arms <its arms>,noisy-student" in capsys.readouterr().err


def test_the_default_semi_command_has_a_long_first_round_and_the_study_recipe_is_one_flag_away(tmp_path):
    def planned(*argv):
        return semi_config(planned_config(tmp_path / "run", ["--semi", "--threshold", "0.45", *argv]))

    default, study = planned(), planned("--recipe", "study")
    assert (default.semi_first_round_epochs, default.semi_rounds, default.semi_epochs_per_round, default.epochs) == (25, 6, 5, 50)
    assert (default.schedule, default.flip, default.rotation) == ("onecycle", True, 15.0)
    assert (study.semi_first_round_epochs, study.semi_rounds, study.semi_epochs_per_round, study.epochs) == (None, 4, 5, 20)
    assert (study.schedule, study.flip, study.rotation, study.shift) == ("none", False, 40.0, 0.2)
    assert planned("--first-round-epochs", "10", "--rounds", "2").epochs == 15


# ----------------------------------------------------------------------------------------------------
# the noisy-student arm

def test_noisy_student_learns_the_baselines_soft_labels_without_the_hidden_ones(demo_csv, tmp_path, monkeypatch):
    """The teacher is the baseline's best epoch (face and mirror averaged); half of every batch is labeled; the
    hidden labels only grade the teacher's labels. Poisoning them changes the grade, never the weights."""
    import fer_train.semi.noisy as noisy

    config = _config(demo_csv, semi_arms=["baseline", "self-training", "noisy-student"], student_mixup=0.4, erase=0.5)
    stream = io.StringIO()
    honest = train_semi(config, tmp_path / "honest", Reporter("json", stream=stream), export=False)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    # it trains right after its teacher, before the other arms
    assert [e["arm"] for e in events if e["event"] == "arm"] == ["baseline", "noisy-student", "self-training"]
    folder = honest.run_dir / "noisy-student"
    soft = np.load(folder / "teacher.npz")["probabilities"]
    data, _ = prepare(load_splits(semi_config(config)), semi_config(config), CPU)
    expected = noisy.teacher_probabilities(honest.run_dir / "baseline", data.unlabeled_x, semi_config(config))
    assert soft.shape == (len(data.unlabeled_x), len(CLASS_NAMES)) and np.allclose(soft, expected)
    assert np.allclose(soft.sum(1), 1, atol=1e-5)
    history = json.loads((folder / "history.json").read_text())
    assert [h["train_images"] for h in history] == [2 * len(data.labeled_y)] * config.semi_rounds * config.semi_epochs_per_round
    teacher_round = json.loads((folder / "rounds.json").read_text())
    assert len(teacher_round) == 1 and teacher_round[0]["admitted"] == len(data.unlabeled_x)
    rows = {r["arm"]: r for r in honest.summary["comparison"]}
    assert honest.summary["main_arm"] == "noisy-student" and "val_vs_baseline" in rows["noisy-student"]

    class PoisonedAudit(PseudoLabelAudit):
        def __init__(self, hidden_labels):
            super().__init__(np.zeros_like(hidden_labels))

    monkeypatch.setattr(semi_selection, "PseudoLabelAudit", PoisonedAudit)
    poisoned = train_semi(config, tmp_path / "poisoned", _quiet(), export=False)
    _assert_same_weights(_weights(folder), _weights(poisoned.run_dir / "noisy-student"))
    grades = [json.loads((r.run_dir / "noisy-student" / "rounds.json").read_text())[0]["pseudo_precision"] for r in (honest, poisoned)]
    assert grades[0] != grades[1]


def test_noisy_student_resumes_to_the_same_weights_and_needs_the_baseline(demo_csv, tmp_path, monkeypatch):
    import fer_train.semi.noisy as noisy

    config = _config(demo_csv, semi_arms=["baseline", "noisy-student"])
    straight = train_semi(config, tmp_path / "straight", _quiet(), export=False)
    calls = {"n": 0}
    real_epoch = semi_arm.noisy_student_epoch

    def stop_at_the_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(semi_arm, "noisy_student_epoch", stop_at_the_second_epoch)
    assert train_semi(config, tmp_path / "resumed", _quiet(), export=False).interrupted
    monkeypatch.setattr(semi_arm, "noisy_student_epoch", real_epoch)
    assert cli_main(["--resume", str(tmp_path / "resumed"), "--progress", "plain", "--no-export"]) == 0
    _assert_same_weights(_weights(straight.run_dir / "noisy-student"), _weights(tmp_path / "resumed" / "noisy-student"))
    rounds = [json.loads((d / "noisy-student" / "rounds.json").read_text()) for d in (straight.run_dir, tmp_path / "resumed")]
    assert _without_timings(rounds[0]) == _without_timings(rounds[1])

    with pytest.raises(ValueError, match="add baseline"):
        semi_config(_config(demo_csv, semi_arms=["noisy-student"]))
    half = tmp_path / "half"
    train_semi(_config(demo_csv, semi_arms=["baseline"], semi_rounds=1), half, _quiet(), export=False)  # 1 of 3 epochs
    with pytest.raises(ValueError, match="has trained 1 of 3 epochs"):
        noisy.teacher_probabilities(half / "baseline", torch.zeros(4, 1, 48, 48, dtype=torch.uint8), semi_config(config))
