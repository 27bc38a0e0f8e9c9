"""Semi-supervised training with part of the labels hidden, measured against the labeled part alone.

The study's protocol (``fer-train --semi --threshold 0.45``): keep the labels of a stratified, seeded share
(``--labeled-fraction``, a half) of the training images and treat the rest as unlabeled. Train in rounds of
``--epochs-per-round`` epochs; after each round the model predicts the unlabeled images, and those whose top
softmax probability is *strictly greater* than the threshold join the next round's training set with their
predicted label. The selection is made afresh every round: an image admitted once may drop out again. One
model and optimizer carry on across rounds. Beside it the run trains, on the same labeled images, from the
same initial weights, with the same epochs and per-epoch seeds (the arms, ``--arms``):

- ``baseline``: the labeled part alone;
- ``self-training``: the study's rule, one threshold for every class;
- ``per-class``: one threshold per predicted class. ``auto`` is class-balanced (after CBST, Zou et al. 2018):
  every predicted class admits the same share of its images, the share the global threshold admits overall;
- ``fixmatch``: consistency training, see :mod:`fer_train.fixmatch`.

Round 1 of the pseudo-label arms sees no pseudo-labels yet, so it is the baseline's first round exactly; it is
computed once and shared (when the learning rate has no schedule whose length depends on the data).
``--parallel-arms`` trains the arms at the same time instead, one process each (:func:`run_arms_in_processes`);
every arm then trains its own round 1, and reaches the same weights as when the arms run one after the other.

The true labels of the unlabeled images never reach the loss, by construction: :func:`prepare` hands the
training loop the unlabeled images as a bare image tensor and their labels only to a :class:`PseudoLabelAudit`,
which grades each round's selection after it is fixed; what it says is logged, never used. The tests poison
those labels and check that training stays bit-identical.

Run folder (``runs/semi-<model>-<time>``): ``config.json``; one ordinary run folder per arm (``best.pt``,
``last.pt``, ``history.json``, ``rounds.json``, ``curves.png``); ``rounds.json`` for all arms; at the end
``semi.json`` (the summary), ``comparison.md``, ``comparison.png`` and ``rounds.png``, and the self-trained model
exported to ``self-training/model.onnx``. ``--resume`` continues at the start of the epoch in progress.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from .config import TrainConfig
from .constants import CLASS_NAMES, NUM_CLASSES
from .fixmatch import fixmatch_epoch
from .io import DataError
from .metrics import softmax
from .models import count_parameters, create_model
from .progress import Reporter
from .splits import Splits, stratified_holdout
from .train import (Interrupted, _write_json, as_tensors, build_optimizer, check_stop, describe_hardware, evaluate_loss_acc,
                    interrupts_as_exception, load_splits, new_run_dir, pick_device, predict_logits, train_one_epoch)

ARMS = ("baseline", "self-training", "per-class", "fixmatch")  # the order they run in
PSEUDO_LABEL_ARMS = ("self-training", "per-class")
LABELED_SEED_OFFSET = 1  # the labeled part is drawn with seed + 1, apart from the validation hold-out (seed)
SHARED_ROUND = "shared-round-1"


# ----------------------------------------------------------------------------------------------------
# settings


def parse_class_thresholds(value) -> str | list[float]:
    """``"auto"``, or seven thresholds in class order given as a list or as comma-separated text."""
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return "auto"
        try:
            value = [float(v) for v in value.split(",")]
        except ValueError:
            raise ValueError(f"--class-thresholds must be 'auto' or {NUM_CLASSES} comma-separated numbers, got {value!r}") from None
    values = [float(v) for v in value]
    if len(values) != NUM_CLASSES or not all(0.0 <= v < 1.0 for v in values):
        raise ValueError(f"--class-thresholds needs {NUM_CLASSES} numbers in [0, 1), one per class ({', '.join(CLASS_NAMES)}); got {values}")
    return values


def semi_config(config: TrainConfig) -> TrainConfig:
    """The config checked, with ``epochs`` = rounds × epochs per round (the budget of every arm)."""
    problems = []
    if not 0.0 <= config.semi_threshold < 1.0:
        problems.append(f"--threshold must lie in [0, 1), got {config.semi_threshold}")
    if not 0.0 < config.semi_labeled_fraction < 1.0:
        problems.append(f"--labeled-fraction must lie strictly between 0 and 1, got {config.semi_labeled_fraction}")
    if config.semi_rounds < 1 or config.semi_epochs_per_round < 1:
        problems.append("--rounds and --epochs-per-round must be at least 1")
    arms = [config.semi_arms] if isinstance(config.semi_arms, str) else list(config.semi_arms)
    arms = [a.strip() for arm in arms for a in arm.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        problems.append(f"--arms takes a comma-separated list of {', '.join(ARMS)}; got {', '.join(unknown) or 'nothing'}")
    if not 0.0 <= config.fixmatch_threshold < 1.0 or config.fixmatch_mu < 1 or config.fixmatch_weight < 0:
        problems.append("--fixmatch-threshold must lie in [0, 1), --fixmatch-mu be at least 1 and --fixmatch-weight at least 0")
    if problems:
        raise ValueError("; ".join(problems))
    return dataclasses.replace(config, semi=True, semi_arms=[a for a in ARMS if a in arms],
                               semi_class_thresholds=parse_class_thresholds(config.semi_class_thresholds),
                               epochs=config.semi_rounds * config.semi_epochs_per_round)


def new_semi_run_dir(config: TrainConfig, root: str | Path = "runs") -> Path:
    return new_run_dir(config, root, prefix="semi-")


# ----------------------------------------------------------------------------------------------------
# the data: labeled images with labels, unlabeled images without, and the hidden labels kept apart


@dataclass
class SemiData:
    """What the training loop sees."""

    labeled_x: torch.Tensor  # uint8 (L, 1, 48, 48)
    labeled_y: torch.Tensor  # int64 (L,)
    unlabeled_x: torch.Tensor  # uint8 (U, 1, 48, 48): images only; their labels live in the audit
    val_x: torch.Tensor
    val_y: torch.Tensor


@dataclass
class Selection:
    """The unlabeled images admitted in one round, with their pseudo-labels."""

    index: np.ndarray  # int64 positions in the unlabeled pool, ascending
    label: np.ndarray  # int64 predicted class of each
    thresholds: list[float] = field(default_factory=list)  # the bar each predicted class had to clear

    @classmethod
    def empty(cls) -> "Selection":
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), [])

    def __len__(self) -> int:
        return len(self.index)

    def per_class(self) -> dict[str, int]:
        return dict(zip(CLASS_NAMES, np.bincount(self.label, minlength=NUM_CLASSES).tolist()))


class PseudoLabelAudit:
    """The true labels of the "unlabeled" images, known only because this is an experiment.

    It grades a selection after the selection is fixed; its answers go to the log and the run folder,
    never back into training.
    """

    def __init__(self, hidden_labels: np.ndarray):
        self._labels = np.asarray(hidden_labels, np.int64).copy()

    def __len__(self) -> int:
        return len(self._labels)

    def class_counts(self) -> dict[str, int]:
        return dict(zip(CLASS_NAMES, np.bincount(self._labels, minlength=NUM_CLASSES).tolist()))

    def grade(self, selection: Selection) -> dict:
        """Precision of the pseudo-labels, overall and per pseudo-label class (None where none was admitted)."""
        correct = self._labels[selection.index] == selection.label
        per_class = {}
        for c, name in enumerate(CLASS_NAMES):
            chosen = selection.label == c
            per_class[name] = round(float(correct[chosen].mean()), 4) if chosen.any() else None
        return {"pseudo_precision": round(float(correct.mean()), 4) if len(correct) else None,
                "pseudo_precision_per_class": per_class,
                "admitted_true_per_class": dict(zip(CLASS_NAMES, np.bincount(self._labels[selection.index], minlength=NUM_CLASSES).tolist()))}


def split_labeled(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (labeled, unlabeled): ``fraction`` of every class keeps its label, chosen by ``seed``."""
    unlabeled, labeled = stratified_holdout(labels, fraction, seed)
    return labeled, unlabeled


def prepare(splits: Splits, config: TrainConfig, device: torch.device) -> tuple[SemiData, PseudoLabelAudit]:
    """Hide the labels of all but ``semi_labeled_fraction`` of the training images."""
    train = splits.train
    labeled, unlabeled = split_labeled(train.labels, config.semi_labeled_fraction, config.seed + LABELED_SEED_OFFSET)
    if len(unlabeled) == 0:
        raise DataError(splits.source.path, f"too few training images ({len(train)}) to hide any labels")
    labeled_x, labeled_y = as_tensors(train.subset(labeled), device)
    unlabeled_x = torch.from_numpy(np.ascontiguousarray(train.images[unlabeled])).unsqueeze(1).to(device)
    val_x, val_y = as_tensors(splits.val, device)
    return SemiData(labeled_x, labeled_y, unlabeled_x, val_x, val_y), PseudoLabelAudit(train.labels[unlabeled])


# ----------------------------------------------------------------------------------------------------
# the selection rule


def select_confident(probs: np.ndarray, thresholds) -> Selection:
    """Admit image i when its top probability is strictly greater than the threshold of its predicted class.

    ``thresholds`` is one number or one per class; the pseudo-label is the arg-max (the first on ties).
    """
    probs = np.asarray(probs)
    bar = np.broadcast_to(np.asarray(thresholds, np.float64), (probs.shape[1],))
    label = probs.argmax(axis=1)
    index = np.flatnonzero(probs.max(axis=1) > bar[label])
    return Selection(index.astype(np.int64), label[index].astype(np.int64), [float(b) for b in bar])


def class_balanced_thresholds(probs: np.ndarray, threshold: float) -> list[float]:
    """One threshold per predicted class so that every class admits the same share of the images predicted
    as it: the share that ``threshold`` admits overall (CBST, Zou et al., ECCV 2018). Rare classes are no
    longer crowded out by confident common ones; the total stays about what the global rule admits."""
    confidence, label = probs.max(axis=1), probs.argmax(axis=1)
    rate = float((confidence > threshold).mean()) if len(probs) else 0.0
    out = []
    for c in range(probs.shape[1]):
        ranked = np.sort(confidence[label == c])[::-1]
        k = int(round(rate * len(ranked)))
        out.append(float(ranked[k]) if k < len(ranked) else 0.0)  # the best k clear it (fewer on exact ties)
    return out


def thresholds_for(arm: str, probs: np.ndarray, config: TrainConfig) -> list[float]:
    if arm == "per-class":
        given = config.semi_class_thresholds
        return class_balanced_thresholds(probs, config.semi_threshold) if given == "auto" else list(given)
    bar = config.fixmatch_threshold if arm == "fixmatch" else config.semi_threshold
    return [bar] * probs.shape[1]


def unlabeled_probabilities(model: torch.nn.Module, images: torch.Tensor, config: TrainConfig) -> np.ndarray:
    """Softmax (U, 7) in float64 of the model in eval mode on the unaugmented images."""
    return softmax(predict_logits(model, images, bf16=config.bf16).cpu().numpy().astype(np.float64))


def training_set(data: SemiData, selection: Selection) -> tuple[torch.Tensor, torch.Tensor]:
    """The labeled images with their labels, then the admitted unlabeled images with their pseudo-labels."""
    if not len(selection):
        return data.labeled_x, data.labeled_y
    device = data.labeled_x.device
    index = torch.from_numpy(selection.index).to(device)
    return (torch.cat([data.labeled_x, data.unlabeled_x[index]]),
            torch.cat([data.labeled_y, torch.from_numpy(selection.label).to(device)]))


# ----------------------------------------------------------------------------------------------------
# one arm


@dataclass
class ArmState:
    history: list[dict] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)
    selection: Selection = field(default_factory=Selection.empty)
    best_acc: float = -1.0
    best_epoch: int = 0
    epoch: int = 0


class EpochPaced:
    """A per-batch learning-rate schedule paced by epochs, not batches: however many batches an epoch has (a
    pseudo-label arm's grow as images are admitted), the wrapped schedule takes exactly ``ticks`` steps over it,
    spread evenly. A pseudo-label arm then follows the baseline's learning rate epoch by epoch, and its schedule
    ends with the budget. (Sized for every unlabeled image instead, a one-cycle schedule of an arm that admits
    few ran only half its cycle and never annealed.)"""

    def __init__(self, inner, ticks: int):
        self.inner, self.ticks = inner, ticks
        self.batches, self.seen, self.done = ticks, 0, 0

    def begin_epoch(self, batches: int) -> None:
        self.batches, self.seen, self.done = max(1, batches), 0, 0

    def step(self) -> None:
        self.seen += 1
        target = min(self.ticks, self.seen * self.ticks // self.batches)
        while self.done < target:
            self.inner.step()
            self.done += 1

    def state_dict(self) -> dict:  # checkpoints are taken between epochs, where the pacing starts afresh
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


def _restore(path: Path, model, optimizer, scheduler) -> ArmState:
    ckpt = load_checkpoint(path)
    model.load_state_dict(ckpt["state_dict"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler"):
        scheduler.load_state_dict(ckpt["scheduler"])
    selection = Selection.empty()
    if "selection_index" in ckpt:
        selection = Selection(ckpt["selection_index"].numpy(), ckpt["selection_label"].numpy(), list(ckpt["selection_thresholds"]))
    return ArmState(list(ckpt["history"]), list(ckpt.get("rounds", [])), selection, ckpt["best_metric"], ckpt["best_epoch"], ckpt["epoch"])


class ArmRun:
    """Trains one arm for ``config.epochs`` epochs, checkpointing every epoch into ``run_dir/<arm>``."""

    def __init__(self, arm: str, data: SemiData, audit: PseudoLabelAudit, config: TrainConfig, run_dir: Path,
                 reporter: Reporter, share_first_round: bool = True):
        self.arm, self.data, self.audit, self.config, self.reporter = arm, data, audit, config, reporter
        self.dir = run_dir / arm
        self.shared = run_dir / SHARED_ROUND
        self.share = share_first_round and arm != "fixmatch" and config.schedule == "none"
        torch.manual_seed(config.weights_seed)  # the initial weights, the same for every arm
        self.model = create_model(config.model, **config.model_kwargs).to(data.labeled_x.device)
        labeled_steps = math.ceil(len(data.labeled_y) / config.batch_size)
        self.optimizer, self.scheduler = build_optimizer(config, self.model, labeled_steps)
        if self.scheduler is not None and arm in PSEUDO_LABEL_ARMS:  # the baseline's learning rate, epoch by epoch
            self.scheduler = EpochPaced(self.scheduler, labeled_steps)
        self.common = dict(model_name=config.model, model_kwargs=config.model_kwargs, config=config.to_dict())
        self.state = ArmState()
        self._unreported_round = False

    @property
    def complete(self) -> bool:
        return self.state.epoch >= self.config.epochs

    def load(self) -> "ArmRun":
        """Continue from this arm's ``last.pt``, or from the shared first round, or start afresh."""
        if (self.dir / "last.pt").exists():
            self.state = _restore(self.dir / "last.pt", self.model, self.optimizer, self.scheduler)
        elif self.share and self.arm in PSEUDO_LABEL_ARMS and (self.shared / "last.pt").exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            self.state = _restore(self.shared / "last.pt", self.model, self.optimizer, self.scheduler)
            self.state.history = [dict(h, shared=True) for h in self.state.history]
            shutil.copyfile(self.shared / "best.pt", self.dir / "best.pt")
            self._end_round(self.state.epoch)  # the first round's selection, with this arm's rule
            self._save_last()
            self._unreported_round = True
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
        return self

    def run(self, epochs_after: int = 0) -> None:
        """The remaining epochs; ``epochs_after`` (of arms still to come) only feeds the time estimate."""
        config, data, state = self.config, self.data, self.state
        per_round, total = config.semi_epochs_per_round, config.epochs
        if self._unreported_round:
            self.reporter.emit("round", **state.rounds[-1])
            self._unreported_round = False
        for epoch in range(state.epoch + 1, total + 1):
            round_no = (epoch - 1) // per_round + 1
            t0 = time.perf_counter()
            extra = {}
            if self.arm == "fixmatch":
                stats = fixmatch_epoch(self.model, self.optimizer, self.scheduler, data.labeled_x, data.labeled_y, data.unlabeled_x,
                                       config, epoch, self.reporter, label=f"{self.arm} round {round_no}", total_epochs=total)
                images, steps = len(data.labeled_y), stats.steps
                extra = {"unlabeled_loss": stats.unlabeled_loss, "mask_rate": stats.mask_rate}
            else:
                x, y = training_set(data, state.selection)
                if isinstance(self.scheduler, EpochPaced):
                    self.scheduler.begin_epoch(math.ceil(len(y) / config.batch_size))
                stats = train_one_epoch(self.model, self.optimizer, self.scheduler, x, y, config, epoch, self.reporter,
                                        label=f"{self.arm} round {round_no}", total_epochs=total)
                images, steps = len(y), math.ceil(len(y) / config.batch_size)
            val_loss, val_acc = evaluate_loss_acc(self.model, data.val_x, data.val_y, bf16=config.bf16)
            seconds = time.perf_counter() - t0
            is_best = val_acc > state.best_acc
            if is_best:
                state.best_acc, state.best_epoch = val_acc, epoch
            record = {"epoch": epoch, "round": round_no, "train_loss": stats.loss, "train_acc": stats.acc, "val_loss": val_loss,
                      "val_acc": val_acc, "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds, "images_per_s": stats.images_per_s,
                      "train_images": images, "pseudo_labeled": len(state.selection) if self.arm in PSEUDO_LABEL_ARMS else 0, "steps": steps, **extra}
            state.history.append(record)
            state.epoch = epoch
            if is_best:
                save_checkpoint(self.dir / "best.pt", **self._state_fields())
            if self.share and epoch == per_round and not (self.shared / "last.pt").exists():
                self._share_first_round()
            ended = epoch % per_round == 0 and self.arm != "baseline"
            if ended:
                self._end_round(epoch)
            self._save_last()
            eta = (total - epoch + epochs_after) * seconds
            self.reporter.emit("epoch", arm=self.arm, epochs=total, rounds=config.semi_rounds, best=is_best, eta_s=round(eta, 1), **record)
            if ended:
                self.reporter.emit("round", **state.rounds[-1])
            check_stop()  # a stop asked for during the evaluation or the selection: the epoch is saved

    def _state_fields(self) -> dict:
        s = self.state
        return dict(self.common, model=self.model, epoch=s.epoch, best_metric=s.best_acc, best_epoch=s.best_epoch, history=s.history)

    def _save_last(self) -> None:
        s = self.state
        extra = {"semi_arm": self.arm, "rounds": s.rounds, "selection_index": torch.from_numpy(s.selection.index),
                 "selection_label": torch.from_numpy(s.selection.label), "selection_thresholds": list(s.selection.thresholds)}
        save_checkpoint(self.dir / "last.pt", optimizer=self.optimizer, scheduler=self.scheduler, extra=extra, **self._state_fields())
        _write_json(self.dir / "history.json", s.history)
        _write_json(self.dir / "rounds.json", s.rounds)

    def _share_first_round(self) -> None:
        """Keep the end of round 1 (no pseudo-labels yet: the same in every pseudo-label arm) for the others."""
        self.shared.mkdir(exist_ok=True)
        shutil.copyfile(self.dir / "best.pt", self.shared / "best.pt")
        save_checkpoint(self.shared / "last.pt", optimizer=self.optimizer, scheduler=self.scheduler, extra={"shared_by": self.arm},
                        **self._state_fields())

    def _end_round(self, epoch: int) -> None:
        """Predict the unlabeled images, select afresh, then (only then) grade the selection."""
        config, state = self.config, self.state
        t0 = time.perf_counter()
        probs = unlabeled_probabilities(self.model, self.data.unlabeled_x, config)
        new = select_confident(probs, thresholds_for(self.arm, probs, config))
        seconds = time.perf_counter() - t0
        grade = self.audit.grade(new)  # after the selection is fixed: logged, never fed back
        previous = state.selection.index
        round_no = epoch // config.semi_epochs_per_round
        last = state.history[-1]
        record = {
            "arm": self.arm, "round": round_no, "rounds": config.semi_rounds, "epoch": epoch,
            "val_loss": last["val_loss"], "val_acc": last["val_acc"],
            "trained_on": {"labeled": len(self.data.labeled_y), "pseudo": last["pseudo_labeled"]},
            "rule": "p_max > threshold of the predicted class (strictly greater)",
            "threshold": config.fixmatch_threshold if self.arm == "fixmatch" else config.semi_threshold,
            "thresholds_per_class": dict(zip(CLASS_NAMES, (round(t, 6) for t in new.thresholds))),
            "unlabeled": len(self.data.unlabeled_x), "admitted": len(new), "admitted_per_class": new.per_class(),
            **grade,
            "kept": int(np.intersect1d(previous, new.index).size), "new": int(np.setdiff1d(new.index, previous).size),
            "dropped": int(np.setdiff1d(previous, new.index).size),
            "used_in_round": round_no + 1 if self.arm in PSEUDO_LABEL_ARMS and round_no < config.semi_rounds else None,
            "select_seconds": round(seconds, 2),
        }
        if self.arm == "fixmatch":
            record["note"] = "FixMatch selects per batch on the weak view; these counts are for the unaugmented images"
        state.selection = new
        state.rounds.append(record)


# ----------------------------------------------------------------------------------------------------
# the whole run


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

    from . import train as train_module

    threads = config.threads or max(1, (os.cpu_count() or 1) // len(arms))
    mode = "json" if reporter.mode == "json" else "plain"
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch thread pools inherited
    processes = {arm: context.Process(target=_arm_process, args=(config.to_dict(), str(run_dir), arm, mode, threads), name=f"fer-{arm}")
                 for arm in arms}
    reporter.emit("message", text=f"arms {', '.join(arms)} in {len(arms)} processes, {threads} thread{'s' if threads > 1 else ''} each")
    for process in processes.values():
        process.start()
    forwarded, told = False, set()
    while any(p.is_alive() for p in processes.values()):
        for p in processes.values():
            p.join(timeout=0.5)
        for arm, p in processes.items():  # say at once that an arm died, not after the others' hours
            if p.exitcode not in (None, 0, 130) and arm not in told:
                told.add(arm)
                reporter.emit("message", text=f"arm {arm} {_how_it_ended(p.exitcode)}; the other arms go on")
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
    from . import semi_report

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
    reporter.emit("start", run_dir=str(run_dir), model=config.model, parameters=count_parameters(create_model(config.model, **config.model_kwargs)),
                  epochs=config.epochs, start_epoch=1, steps_per_epoch=math.ceil(len(data.labeled_y) / config.batch_size),
                  train_size=len(data.labeled_y), val_size=len(data.val_y), device=str(device), config=config.to_dict(),
                  semi=True, arms=arms, unlabeled_size=len(audit), labeled_per_class=labeled_counts)
    reporter.emit("message", text=f"semi-supervised: {len(data.labeled_y):,} labeled and {len(audit):,} unlabeled training images "
                                  f"(labeled fraction {config.semi_labeled_fraction}); arms {', '.join(arms)}; "
                                  f"{config.semi_rounds} rounds × {config.semi_epochs_per_round} epochs; threshold p_max > {config.semi_threshold}")
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
                reporter.emit("arm", arm=arm, index=i + 1, arms=len(arms), start_epoch=run.state.epoch + 1, epochs=config.epochs,
                              labeled=len(data.labeled_y), unlabeled=len(audit), run_dir=str(run.dir))
                run.run(epochs_after=config.epochs * (len(arms) - i - 1))
    except (Interrupted, KeyboardInterrupt):
        interrupted = True
    finally:
        reporter.close()
    collected = collect(run_dir, arms)
    _write_json(run_dir / "rounds.json", {arm: c["rounds"] for arm, c in collected.items()})
    for arm, c in collected.items():
        from .plots import plot_curves

        plot_curves({arm: c["history"]}, run_dir / arm / "curves.png", title=f"{config.model} {arm}: {run_dir.name}")
    if collected:
        semi_report.plot_comparison(collected, semi_report.settings(config), run_dir / "comparison.png")
    sessions = _record_session(run_dir, started, interrupted)
    if interrupted:
        done = collected.get(current, {}).get("history", [])
        reporter.emit("interrupted", run_dir=str(run_dir), arm=current, epoch=done[-1]["epoch"] if done else 0)
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
        summary["shared_first_round"] = f"round 1 ({config.semi_epochs_per_round} epochs) was trained once and shared by the pseudo-label arms"
    summary["sessions"] = sessions
    summary["wall_seconds"] = round(sum(x["seconds"] for x in sessions), 1)
    table = semi_report.markdown_table(summary)
    _write_json(run_dir / "semi.json", summary)  # the results are safe before the export runs
    (run_dir / "comparison.md").write_text(semi_report.markdown_report(summary))
    semi_report.plot_rounds(collected, run_dir / "rounds.png")
    reporter.emit("message", text=table)
    onnx_path = None
    if export:
        from .export import export_run

        main = summary["main_arm"]
        onnx_path = export_run(run_dir / main, splits=splits, reporter=reporter, export_name=config.export_name, export_dir=config.export_dir,
                               extra_metadata={"training": {"epochs": config.epochs, "wall_seconds": summary["arms"][main]["wall_seconds"],
                                                            "hardware": summary["hardware"]},
                                               "semi": {"arm": main, "final_val_acc": {a: s["final_val_acc"] for a, s in summary["arms"].items()}}})
        summary["onnx"] = str(onnx_path)
        _write_json(run_dir / "semi.json", summary)
    main = summary["arms"][summary["main_arm"]]
    reporter.emit("done", run_dir=str(run_dir), best_val_acc=main["best_val_acc"], best_epoch=main["best_epoch"], seconds=time.perf_counter() - started,
                  onnx=str(onnx_path) if onnx_path else None, semi=True, main_arm=summary["main_arm"],
                  final_val_acc={a: s["final_val_acc"] for a, s in summary["arms"].items()}, comparison=summary["comparison"])
    return SemiResult(run_dir, summary, onnx_path)
