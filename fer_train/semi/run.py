"""The whole semi-supervised run: its arms one after another (or at the same time, :mod:`.processes`), then the
summary, the comparison and the export of the main arm. Its set-up and its events are :mod:`fer_train.run`'s, as
plain training's are."""


from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fer_runtime.contract import CLASS_NAMES, EVENT_ARM, EVENT_MESSAGE, NUM_CLASSES

from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..config import TrainConfig
from ..devices import as_tensors, describe_hardware
from ..models import count_parameters, create_model
from ..progress import Reporter
from ..run import Run, begin_run
from ..run_folder import HISTORY_FILE, SEMI_SUMMARY_FILE, open_run_dir, read_history, record_session, write_json
from ..epoch import predict_logits
from . import report
from .arm import ArmLoop
from .processes import run_arms_in_processes
from .selection import PseudoLabelAudit, SemiData, prepare
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


def _epochs_done(arm_dir: Path) -> int:
    return load_checkpoint(arm_dir / "last.pt")["epoch"] if (arm_dir / "last.pt").exists() else 0


def collect(run_dir: Path, arms: list[str]) -> dict[str, dict]:
    """Each arm's history and rounds as written so far (also after an interrupt)."""
    out = {}
    for arm in arms:
        folder = Path(run_dir) / arm
        if (folder / HISTORY_FILE).exists():
            rounds = read_history(folder / "rounds.json") if (folder / "rounds.json").exists() else []
            out[arm] = {"history": read_history(folder / HISTORY_FILE), "rounds": rounds}
    return out


def final_correct(arm_dir: Path, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> np.ndarray:
    """Whether the arm's final model (``last.pt``) gets each image right."""
    model = model_from_checkpoint(load_checkpoint(arm_dir, prefer="last")).to(x.device)
    return (predict_logits(model, x, bf16=bf16).argmax(1) == y).cpu().numpy()


def _announce(run: Run, data: SemiData, audit: PseudoLabelAudit) -> dict:
    """The run's ``start`` event and its one-line description; the labeled images per class."""
    config = run.config
    arms = list(config.semi_arms)
    labeled_counts = dict(zip(CLASS_NAMES, np.bincount(data.labeled_y.cpu().numpy(), minlength=NUM_CLASSES).tolist()))
    run.announce(parameters=count_parameters(create_model(config.model, **config.model_kwargs)), start_epoch=1,
                 train_size=len(data.labeled_y), val_size=len(data.val_y),
                 semi=True, arms=arms, unlabeled_size=len(audit), labeled_per_class=labeled_counts)
    run.reporter.emit(EVENT_MESSAGE, text=f"semi-supervised: {len(data.labeled_y):,} labeled and {len(audit):,} unlabeled training images "
                                          f"(labeled fraction {config.semi_labeled_fraction}); arms {', '.join(arms)}; "
                                          f"{describe_rounds(config)} ({config.epochs} epochs per arm); threshold p_max > {config.semi_threshold}")
    return labeled_counts


def run_order(arms) -> list[str]:
    """The order the arms train in one after the other: the baseline, then the noisy student (which learns from the
    baseline alone, so its answer comes early), then the rest as named."""
    return sorted(arms, key=lambda arm: (arm != "baseline", arm != "noisy-student"))


class _Arms:
    """Trains the arms still to train, in order; remembers the arm in progress (for the ``interrupted`` event)."""

    def __init__(self, config: TrainConfig, run_dir: Path, data: SemiData, audit: PseudoLabelAudit, reporter: Reporter,
                 share_first_round: bool):
        self.config, self.run_dir, self.data, self.audit, self.reporter = config, run_dir, data, audit, reporter
        self.share_first_round, self.current = share_first_round, None

    def __call__(self) -> None:
        config, arms = self.config, run_order(self.config.semi_arms)
        # noisy-student learns from the baseline's best weights: with --parallel-arms it trains after the others, in this process
        pending = [arm for arm in arms if _epochs_done(self.run_dir / arm) < config.epochs and arm != "noisy-student"]
        if config.semi_parallel_arms and len(pending) > 1:
            self.current = pending[0]
            run_arms_in_processes(config, self.run_dir, pending, self.reporter)
        for i, arm in enumerate(arms):
            self.current = arm
            loop = ArmLoop(arm, self.data, self.audit, config, self.run_dir, self.reporter, self.share_first_round)
            if loop.load().complete:
                continue
            self.reporter.emit(EVENT_ARM, arm=arm, index=i + 1, arms=len(arms), start_epoch=loop.state.epoch + 1, epochs=config.epochs,
                               labeled=len(self.data.labeled_y), unlabeled=len(self.audit), run_dir=str(loop.folder))
            loop.run(epochs_after=config.epochs * (len(arms) - i - 1))


def train_semi(config: TrainConfig, run_dir: str | Path | None = None, reporter: Reporter | None = None, resume: bool = False,
               export: bool = True, share_first_round: bool = True) -> SemiResult:
    """Train every arm of a semi-supervised run; with ``resume``, continue the run in ``run_dir``."""
    run = begin_run(semi_config(config), run_dir, reporter, resume, new_folder=new_semi_run_dir)
    config, run_dir = run.config, run.run_dir
    data, audit = prepare(run.splits, config, run.device)
    open_run_dir(run_dir, config, run.resume)
    labeled_counts = _announce(run, data, audit)
    arms = _Arms(config, run_dir, data, audit, run.reporter, share_first_round)
    stop = run.train_until_stopped(arms)
    collected = collect(run_dir, list(config.semi_arms))
    _write_progress(run, collected)
    sessions = record_session(run_dir, time.perf_counter() - run.started, stop is not None)
    if stop is not None:
        done = collected.get(arms.current, {}).get("history", [])
        run.interrupted(stop, arm=arms.current, epoch=done[-1]["epoch"] if done else 0)
        return SemiResult(run_dir, None, None, interrupted=True)
    summary = _summarise(run, data, audit, collected, labeled_counts, sessions)
    run.reporter.emit(EVENT_MESSAGE, text=report.markdown_table(summary))
    onnx_path = _export_main_arm(run, summary) if export else None
    main = summary["arms"][summary["main_arm"]]
    run.done(best_val_acc=main["best_val_acc"], best_epoch=main["best_epoch"], onnx_path=onnx_path, semi=True, main_arm=summary["main_arm"],
             final_val_acc={a: s["final_val_acc"] for a, s in summary["arms"].items()}, comparison=summary["comparison"])
    return SemiResult(run_dir, summary, onnx_path)


def _write_progress(run: Run, collected: dict[str, dict]) -> None:
    """What the arms have done so far, also after an interrupt: ``rounds.json``, each arm's curves, the comparison."""
    write_json(run.run_dir / "rounds.json", {arm: c["rounds"] for arm, c in collected.items()})
    for arm, c in collected.items():
        run.plot_curves(c["history"], run.run_dir / arm, arm=arm)
    if collected:
        report.plot_comparison(collected, report.settings(run.config), run.run_dir / "comparison.png")


def _summarise(run: Run, data: SemiData, audit: PseudoLabelAudit, collected: dict, labeled_counts: dict, sessions: list[dict]) -> dict:
    """Every arm's final model judged on validation (and test), compared with the baseline: ``semi.json``,
    ``comparison.md`` and ``rounds.png``."""
    config, run_dir, splits = run.config, run.run_dir, run.splits
    has_test = splits.test is not None and splits.test.labelled
    test_x, test_y = as_tensors(splits.test, run.device) if has_test else (None, None)
    correct = {}
    for arm in config.semi_arms:
        correct[arm] = {"val": final_correct(run_dir / arm, data.val_x, data.val_y, config.bf16)}
        if has_test:
            correct[arm]["test"] = final_correct(run_dir / arm, test_x, test_y, config.bf16)
    summary = report.summarise(collected, correct, config, labeled_counts=labeled_counts, unlabeled_counts=audit.class_counts(),
                               session_seconds=time.perf_counter() - run.started, hardware=describe_hardware(run.device))
    if (run_dir / SHARED_ROUND).exists():
        summary["shared_first_round"] = f"round 1 ({first_round(config)} epochs) was trained once and shared by the arms"
    summary["sessions"] = sessions
    summary["wall_seconds"] = round(sum(x["seconds"] for x in sessions), 1)
    write_json(run_dir / SEMI_SUMMARY_FILE, summary)  # the results are safe before the export runs
    (run_dir / "comparison.md").write_text(report.markdown_report(summary))
    report.plot_rounds(collected, run_dir / "rounds.png", config.semi_threshold)
    return summary


def _export_main_arm(run: Run, summary: dict) -> Path:
    main = summary["main_arm"]
    onnx_path = run.export(run.run_dir / main, training={"epochs": run.config.epochs, "wall_seconds": summary["arms"][main]["wall_seconds"],
                                                        "hardware": summary["hardware"]},
                           semi={"arm": main, "final_val_acc": {a: s["final_val_acc"] for a, s in summary["arms"].items()}})
    summary["onnx"] = str(onnx_path)
    write_json(run.run_dir / SEMI_SUMMARY_FILE, summary)
    return onnx_path
