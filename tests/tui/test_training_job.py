"""The training job without the UI (fer_tui.training): its command line, its event stream, its process."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from fer_tui.training import JobState, TrainingProcess, TrainRequest, format_seconds, parse_event


def test_argv_runs_fer_train_as_a_module_with_json_progress():
    argv = TrainRequest(model="dnn", epochs=3, optimizer="sgd", export_name="x", export_dir="out", runs_root="r",
                        data="d.csv", limit_train=64, threads=2).argv(python="py")
    assert argv[:3] == ["py", "-m", "fer_train.cli"]
    pairs = dict(zip(argv[3::1], argv[4::1]))
    assert pairs["--model"] == "dnn" and pairs["--epochs"] == "3" and pairs["--optimizer"] == "sgd"
    assert pairs["--progress"] == "json" and pairs["--export"] == "x" and pairs["--export-dir"] == "out"
    assert pairs["--data"] == "d.csv" and pairs["--limit-train"] == "64" and pairs["--threads"] == "2"
    assert "--semi" not in argv and "--limit-val" not in argv


def test_semi_supervised_passes_its_threshold_and_no_epochs():
    argv = TrainRequest(semi=True, threshold=0.6, epochs=9).argv()
    assert argv[argv.index("--semi") + 1:argv.index("--semi") + 3] == ["--threshold", "0.6"]
    assert "--epochs" not in argv  # fer-train --semi trains rounds × epochs-per-round and refuses --epochs


def test_validate_names_every_problem():
    problems = TrainRequest(model="vit", epochs=0, optimizer="lion", semi=True, threshold=1.5, limit_train=0).validate()
    assert len(problems) == 5
    assert TrainRequest().validate() == []


def test_the_form_starts_from_what_fer_train_runs_without_flags_and_accepts_what_it_accepts(tmp_path):
    from fer_train.config import TrainConfig

    from cli_support import planned_config

    request, config = TrainRequest(), TrainConfig()
    assert (request.model, request.epochs, request.optimizer, request.threshold) == (config.model, config.epochs, config.optimizer,
                                                                                   config.semi_threshold)
    assert planned_config(tmp_path / "run", request.argv()[3:]) == config  # the form's command line, unchanged: the same run
    assert TrainRequest(semi=True, threshold=0.0).validate() == []  # 0 admits every face; fer-train accepts it too
    assert planned_config(tmp_path / "semi", ["--semi", "--threshold", "0"]).semi_threshold == 0.0


def test_parse_event_ignores_what_is_not_an_event():
    assert parse_event('{"event": "batch", "step": 1}\n') == {"event": "batch", "step": 1}
    for line in ("", "Epoch 1", "{not json", '{"no_event": 1}', "[1, 2]"):
        assert parse_event(line) is None


STREAM = [
    {"event": "start", "time": 100.0, "run_dir": "runs/x", "model": "cnn", "epochs": 2, "start_epoch": 1, "steps_per_epoch": 10,
     "train_size": 640, "val_size": 64, "device": "cpu"},
    {"event": "batch", "time": 105.0, "epoch": 1, "epochs": 2, "step": 5, "steps": 10, "loss": 1.9, "acc": 0.2, "images_per_s": 64.0},
    {"event": "epoch", "time": 110.0, "epoch": 1, "epochs": 2, "train_loss": 1.8, "train_acc": 0.25, "val_loss": 1.7, "val_acc": 0.3,
     "lr": 0.001, "seconds": 10.0, "eta_s": 10.0, "best": True},
    {"event": "round", "time": 111.0, "arm": "self-training", "round": 1, "admitted": 12},
    {"event": "batch", "time": 112.5, "epoch": 2, "epochs": 2, "step": 5, "steps": 10, "loss": 1.5, "acc": 0.4, "images_per_s": 64.0},
    {"event": "epoch", "time": 115.0, "epoch": 2, "epochs": 2, "train_loss": 1.4, "train_acc": 0.45, "val_loss": 1.6, "val_acc": 0.35,
     "lr": 0.001, "seconds": 5.0, "eta_s": 0.0, "best": True},
    {"event": "exported", "time": 116.0, "path": "exported/x.onnx", "max_abs_diff": 1e-6, "metrics": {}},
    {"event": "done", "time": 116.0, "run_dir": "runs/x", "best_val_acc": 0.35, "best_epoch": 2, "seconds": 16.0, "onnx": "exported/x.onnx"},
]


def test_job_state_follows_the_stream():
    job = JobState()
    lines = [job.apply(event) for event in STREAM[:2]]
    assert job.running and job.model == "cnn" and job.epochs == 2 and job.steps == 10
    assert "640 training / 64 validation" in lines[0] and lines[1] is None
    assert job.progress == pytest.approx(0.25)
    assert job.eta_s == pytest.approx(15.0)  # half an epoch took 5 s: 5 s left of it, 10 s for the next
    assert "epoch 1/2" in job.apply(STREAM[2]) and job.progress == pytest.approx(0.5)
    assert job.apply(STREAM[3]).startswith("round: arm self-training") and len(job.rounds) == 1
    job.apply(STREAM[4])
    assert job.eta_s == pytest.approx(2.5)  # the second epoch started at its predecessor's end (110 s)
    for event in STREAM[5:]:
        job.apply(event)
    assert job.status == "done" and job.exported == "exported/x.onnx" and job.progress == 1.0
    assert [h["epoch"] for h in job.history] == [1, 2] and len(job.batches) == 2
    assert job.finish(0, "") is None and job.status == "done"


def test_semi_supervised_arms_restart_the_curves():
    job = JobState()
    job.apply(STREAM[0])
    job.apply(STREAM[2])
    assert "arm fixmatch (2 of 2)" in job.apply({"event": "arm", "arm": "fixmatch", "index": 2, "arms": 2, "start_epoch": 1, "epochs": 4})
    assert job.history == [] and job.epochs == 4 and job.progress == pytest.approx(0.5)


def test_how_a_job_ends():
    failed = JobState(status="running")
    assert failed.apply({"event": "error", "message": "data.csv, line 3: bad"}) == "error: data.csv, line 3: bad"
    assert failed.finish(2, "") is None and failed.status == "failed" and failed.error == "data.csv, line 3: bad"

    crashed = JobState(status="running")
    line = crashed.finish(1, "Traceback (most recent call last):\nKeyError: 'x'\n")
    assert crashed.status == "failed" and crashed.error == "fer-train exited with code 1: KeyError: 'x'"
    assert "KeyError" in line

    interrupted = JobState(status="running")
    interrupted.apply({"event": "interrupted", "run_dir": "runs/x", "epoch": 3})
    assert interrupted.finish(130, "") is None and interrupted.status == "cancelled"
    early = JobState(status="running")
    assert early.finish(-15, "", cancelled=True) is not None and early.status == "cancelled"


def test_format_seconds():
    assert [format_seconds(s) for s in (None, 4.4, 75, 3700)] == ["–", "4s", "1m15s", "1h01m"]


FAKE_TRAINER = textwrap.dedent("""
    import json, signal, sys, time
    def stop(*_):
        print(json.dumps({"event": "interrupted", "run_dir": "r", "epoch": 1}), flush=True)
        sys.exit(130)
    signal.signal(signal.SIGTERM, stop)
    print(json.dumps({"event": "start", "model": "m", "epochs": 5, "start_epoch": 1, "steps_per_epoch": 2}), flush=True)
    print("stray output", flush=True)
    print("a warning", file=sys.stderr, flush=True)
    if sys.argv[1] == "fail":
        sys.exit(3)
    time.sleep(30)
""")


@pytest.mark.parametrize("mode", ["cancel", "fail"])
def test_training_process_streams_lines_cancels_and_keeps_stderr(tmp_path, mode):
    script = tmp_path / "fake.py"
    script.write_text(FAKE_TRAINER)
    process = TrainingProcess([sys.executable, str(script), mode])
    process.start()
    seen = []
    for line in process.lines():
        seen.append(line.strip())
        if mode == "cancel" and len(seen) == 2:
            process.terminate()
    code = process.wait(timeout=10)
    assert json.loads(seen[0])["event"] == "start" and seen[1] == "stray output"
    if mode == "cancel":
        assert code == 130 and json.loads(seen[-1])["event"] == "interrupted" and process.cancel_requested
    else:
        assert code == 3 and process.stderr_tail() == "a warning"
    process.close()
