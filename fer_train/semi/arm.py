"""One arm of a semi-supervised run: its rounds of epochs, checkpoints and resume, as a small state machine."""


from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fer_runtime.contract import CLASS_NAMES, EVENT_EPOCH, EVENT_ROUND

from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import TrainConfig
from ..fixmatch import fixmatch_epoch
from ..models import create_model
from ..progress import Reporter
from ..train import (
    _write_json,
    build_optimizer,
    check_stop,
    evaluate_loss_acc,
    train_one_epoch,
)
from .selection import PseudoLabelAudit, Selection, SemiData, select_confident, thresholds_for, training_set, unlabeled_probabilities
from .settings import PSEUDO_LABEL_ARMS, SHARED_ROUND, ends_round, first_round, round_of


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
        # round 1 has no pseudo-labels: the same in every arm but FixMatch, whose steps differ (a learning-rate
        # schedule too: EpochPaced gives the pseudo-label arms the baseline's, step by step while none is admitted)
        self.share = share_first_round and arm != "fixmatch"
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
        total = config.epochs
        if self._unreported_round:
            self.reporter.emit(EVENT_ROUND, **state.rounds[-1])
            self._unreported_round = False
        for epoch in range(state.epoch + 1, total + 1):
            round_no = round_of(epoch, config)
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
            if self.share and epoch == first_round(config) and not (self.shared / "last.pt").exists():
                self._share_first_round()
            ended = ends_round(epoch, config) and self.arm != "baseline"
            if ended:
                self._end_round(epoch)
            self._save_last()
            eta = (total - epoch + epochs_after) * seconds
            self.reporter.emit(EVENT_EPOCH, arm=self.arm, epochs=total, rounds=config.semi_rounds, best=is_best, eta_s=round(eta, 1), **record)
            if ended:
                self.reporter.emit(EVENT_ROUND, **state.rounds[-1])
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
        round_no = round_of(epoch, config)
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
