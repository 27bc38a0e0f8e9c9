"""The whole semi-supervised run: the arms one after another or in parallel processes, the summary, the export."""


from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from fer_runtime.contract import CLASS_NAMES, EVENT_ARM, EVENT_DONE, EVENT_INTERRUPTED, EVENT_MESSAGE, EVENT_START, NUM_CLASSES
from fer_runtime.io import DataError

from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..config import TrainConfig
from ..data import load_splits
from ..models import count_parameters, create_model
from ..progress import Reporter
from ..train import (
    Interrupted,
    _write_json,
    as_tensors,
    describe_hardware,
    interrupts_as_exception,
    pick_device,
    predict_logits,
)
from .arm import ArmRun
from .selection import prepare
from .settings import SHARED_ROUND, describe_rounds, first_round, new_semi_run_dir, semi_config


@dataclass
class SemiResult:
    run_dir: Path
    summary: dict | None
    onnx_path: Path | None
    interrupted: bool = False

    @property
    def best_val_acc(self) -> float:
        return self.summary["arms"][self.summary["main_arm"]]["best_val_acc"] if self.summary else float("nan")


class ArmFailed(RuntimeError):
    """An arm of a ``--parallel-arms`` run died (killed, out of memory, a bug): which one, with what exit code,
    and that ``--resume`` continues from its last saved epoch."""


def _arm_process(config: dict, run_dir: str, arm: str, mode: str, threads: int) -> None:
    """One arm of a ``--parallel-arms`` run, in its own process (and process group: a Ctrl-C reaches the parent,
    which passes on one SIGTERM, so a checkpoint being written is always finished)."""
    import sys

    os.setpgrp()
    config = TrainConfig.from_dict(config)
    device = pick_device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(threads)
    reporter = Reporter(mode)  # plain lines name their arm
    with interrupts_as_exception():
        try:
            data, audit = prepare(load_splits(config), config, device)
            ArmRun(arm, data, audit, config, Path(run_dir), reporter, share_first_round=False).load().run()
        except (Interrupted, KeyboardInterrupt):
            sys.exit(130)


def _epochs_done(arm_dir: Path) -> int:
    return load_checkpoint(arm_dir / "last.pt")["epoch"] if (arm_dir / "last.pt").exists() else 0


def _how_it_ended(exitcode: int) -> str:
    if exitcode < 0:  # multiprocessing's code for a process ended by a signal
        return f"was killed by {signal.Signals(-exitcode).name}"
    return f"stopped with exit code {exitcode}"


def run_arms_in_processes(config: TrainConfig, run_dir: Path, arms: list[str], reporter: Reporter) -> None:
    """Train ``arms`` at the same time, one process each, into ``run_dir/<arm>``. Raises ``Interrupted`` once
    every process has saved its epoch when a stop was asked for, :class:`ArmFailed` naming each arm that failed."""
    import multiprocessing

    from .. import train as train_module

    threads = config.threads or max(1, (os.cpu_count() or 1) // len(arms))
    mode = "json" if reporter.mode == "json" else "plain"
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch thread pools inherited
    processes = {arm: context.Process(target=_arm_process, args=(config.to_dict(), str(run_dir), arm, mode, threads), name=f"fer-{arm}")
                 for arm in arms}
    reporter.emit(EVENT_MESSAGE, text=f"arms {', '.join(arms)} in {len(arms)} processes, {threads} thread{'s' if threads > 1 else ''} each")
    for process in processes.values():
        process.start()
    forwarded, told = False, set()
    while any(p.is_alive() for p in processes.values()):
        for p in processes.values():
            p.join(timeout=0.5)
        for arm, p in processes.items():  # say at once that an arm died, not after the others' hours
            if p.exitcode not in (None, 0, 130) and arm not in told:
                told.add(arm)
                reporter.emit(EVENT_MESSAGE, text=f"arm {arm} {_how_it_ended(p.exitcode)}; the other arms go on")
        if train_module._stop_signal is not None and not forwarded:  # Ctrl-C or SIGTERM to this process: stop every arm
            for p in processes.values():
                if p.is_alive():
                    os.kill(p.pid, signal.SIGTERM)
            forwarded = True
    if forwarded or any(p.exitcode == 130 for p in processes.values()):
        raise Interrupted("stopped")
    failed = {arm: p.exitcode for arm, p in processes.items() if p.exitcode != 0}
    if failed:
        raise ArmFailed("; ".join(f"arm {arm} {_how_it_ended(code)} (its last epoch is in {run_dir / arm}; "
                                     f"--resume {run_dir} continues)" for arm, code in failed.items()))


def collect(run_dir: Path, arms: list[str]) -> dict[str, dict]:
    """Each arm's history and rounds as written so far (also after an interrupt)."""
    out = {}
    for arm in arms:
        folder = Path(run_dir) / arm
        if (folder / "history.json").exists():
            rounds = json.loads((folder / "rounds.json").read_text()) if (folder / "rounds.json").exists() else []
            out[arm] = {"history": json.loads((folder / "history.json").read_text()), "rounds": rounds}
    return out


def final_correct(arm_dir: Path, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> np.ndarray:
    """Whether the arm's final model (``last.pt``) gets each image right."""
    model = model_from_checkpoint(load_checkpoint(arm_dir, prefer="last")).to(x.device)
    return (predict_logits(model, x, bf16=bf16).argmax(1) == y).cpu().numpy()


def _record_session(run_dir: Path, started: float, interrupted: bool) -> list[dict]:
    """Append this process's training time to ``sessions.json``: a resumed run's wall time is their sum."""
    path = run_dir / "sessions.json"
    sessions = json.loads(path.read_text()) if path.exists() else []
    sessions.append({"ended": datetime.now().isoformat(timespec="seconds"), "seconds": round(time.perf_counter() - started, 1),
                     "interrupted": interrupted})
    _write_json(path, sessions)
    return sessions


def train_semi(config: TrainConfig, run_dir: str | Path | None = None, reporter: Reporter | None = None, resume: bool = False,
               export: bool = True, share_first_round: bool = True) -> SemiResult:
    """Train every arm of a semi-supervised run; with ``resume``, continue the run in ``run_dir``."""
    from .. import semi_report

    reporter = reporter or Reporter("auto")
    config = semi_config(config)
    device = pick_device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(config.threads or os.cpu_count() or 1)
    run_dir = Path(run_dir) if run_dir is not None else new_semi_run_dir(config)
    if resume and not (run_dir / "config.json").exists():
        raise DataError(run_dir / "config.json", "not a run folder (no config.json)")
    splits = load_splits(config)
    data, audit = prepare(splits, config, device)
    run_dir.mkdir(parents=True, exist_ok=resume)
    _write_json(run_dir / "config.json", config.to_dict())

    arms = list(config.semi_arms)
    labeled_counts = dict(zip(CLASS_NAMES, np.bincount(data.labeled_y.cpu().numpy(), minlength=NUM_CLASSES).tolist()))
    reporter.emit(EVENT_START, run_dir=str(run_dir), model=config.model, parameters=count_parameters(create_model(config.model, **config.model_kwargs)),
                  epochs=config.epochs, start_epoch=1, steps_per_epoch=math.ceil(len(data.labeled_y) / config.batch_size),
                  train_size=len(data.labeled_y), val_size=len(data.val_y), device=str(device), config=config.to_dict(),
                  semi=True, arms=arms, unlabeled_size=len(audit), labeled_per_class=labeled_counts)
    reporter.emit(EVENT_MESSAGE, text=f"semi-supervised: {len(data.labeled_y):,} labeled and {len(audit):,} unlabeled training images "
                                  f"(labeled fraction {config.semi_labeled_fraction}); arms {', '.join(arms)}; "
                                  f"{describe_rounds(config)} ({config.epochs} epochs per arm); threshold p_max > {config.semi_threshold}")
    started = time.perf_counter()
    interrupted, current = False, None
    try:
        with interrupts_as_exception():
            pending = [arm for arm in arms if _epochs_done(run_dir / arm) < config.epochs]
            if config.semi_parallel_arms and len(pending) > 1:
                current = pending[0]
                run_arms_in_processes(config, run_dir, pending, reporter)
            for i, arm in enumerate(arms):
                current = arm
                run = ArmRun(arm, data, audit, config, run_dir, reporter, share_first_round)
                if run.load().complete:
                    continue
                reporter.emit(EVENT_ARM, arm=arm, index=i + 1, arms=len(arms), start_epoch=run.state.epoch + 1, epochs=config.epochs,
                              labeled=len(data.labeled_y), unlabeled=len(audit), run_dir=str(run.dir))
                run.run(epochs_after=config.epochs * (len(arms) - i - 1))
    except (Interrupted, KeyboardInterrupt):
        interrupted = True
    finally:
        reporter.close()
    collected = collect(run_dir, arms)
    _write_json(run_dir / "rounds.json", {arm: c["rounds"] for arm, c in collected.items()})
    for arm, c in collected.items():
        from ..plots import plot_curves

        plot_curves({arm: c["history"]}, run_dir / arm / "curves.png", title=f"{config.model} {arm}: {run_dir.name}")
    if collected:
        semi_report.plot_comparison(collected, semi_report.settings(config), run_dir / "comparison.png")
    sessions = _record_session(run_dir, started, interrupted)
    if interrupted:
        done = collected.get(current, {}).get("history", [])
        reporter.emit(EVENT_INTERRUPTED, run_dir=str(run_dir), arm=current, epoch=done[-1]["epoch"] if done else 0)
        return SemiResult(run_dir, None, None, interrupted=True)

    has_test = splits.test is not None and splits.test.labelled
    test_x, test_y = as_tensors(splits.test, device) if has_test else (None, None)
    correct = {}
    for arm in arms:
        correct[arm] = {"val": final_correct(run_dir / arm, data.val_x, data.val_y, config.bf16)}
        if has_test:
            correct[arm]["test"] = final_correct(run_dir / arm, test_x, test_y, config.bf16)
    summary = semi_report.summarise(collected, correct, config, labeled_counts=labeled_counts, unlabeled_counts=audit.class_counts(),
                                    session_seconds=time.perf_counter() - started, hardware=describe_hardware(device))
    if (run_dir / SHARED_ROUND).exists():
        summary["shared_first_round"] = f"round 1 ({first_round(config)} epochs) was trained once and shared by the arms"
    summary["sessions"] = sessions
    summary["wall_seconds"] = round(sum(x["seconds"] for x in sessions), 1)
    table = semi_report.markdown_table(summary)
    _write_json(run_dir / "semi.json", summary)  # the results are safe before the export runs
    (run_dir / "comparison.md").write_text(semi_report.markdown_report(summary))
    semi_report.plot_rounds(collected, run_dir / "rounds.png")
    reporter.emit(EVENT_MESSAGE, text=table)
    onnx_path = None
    if export:
        from ..export import export_run

        main = summary["main_arm"]
        onnx_path = export_run(run_dir / main, splits=splits, reporter=reporter, export_name=config.export_name, export_dir=config.export_dir,
                               extra_metadata={"training": {"epochs": config.epochs, "wall_seconds": summary["arms"][main]["wall_seconds"],
                                                            "hardware": summary["hardware"]},
                                               "semi": {"arm": main, "final_val_acc": {a: s["final_val_acc"] for a, s in summary["arms"].items()}}})
        summary["onnx"] = str(onnx_path)
        _write_json(run_dir / "semi.json", summary)
    main = summary["arms"][summary["main_arm"]]
    reporter.emit(EVENT_DONE, run_dir=str(run_dir), best_val_acc=main["best_val_acc"], best_epoch=main["best_epoch"], seconds=time.perf_counter() - started,
                  onnx=str(onnx_path) if onnx_path else None, semi=True, main_arm=summary["main_arm"],
                  final_val_acc={a: s["final_val_acc"] for a, s in summary["arms"].items()}, comparison=summary["comparison"])
    return SemiResult(run_dir, summary, onnx_path)
