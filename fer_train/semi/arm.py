"""One arm of a semi-supervised run: the epoch loop (:class:`fer_train.train.EpochLoop`) with this arm's epochs, its
rounds of pseudo-labels and what they add to its checkpoints."""


from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from fer_runtime.contract import CLASS_NAMES, EVENT_MESSAGE, EVENT_ROUND

from ..checkpoint import load_checkpoint
from ..config import TrainConfig
from ..models import create_model
from ..progress import Reporter
from ..run_folder import write_json
from ..epoch import EpochStats, build_optimizer, evaluate_loss_acc, train_one_epoch
from ..train import EpochLoop
from .fixmatch import fixmatch_epoch
from .noisy import load_or_make_teacher, noisy_student_epoch
from .selection import PseudoLabelAudit, Selection, SemiData, select_confident, thresholds_for, training_set, unlabeled_probabilities
from .settings import PSEUDO_LABEL_ARMS, SHARED_ROUND, arm_kind, arm_threshold, ends_round, first_round, round_of


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


class ArmLoop(EpochLoop):
    """Trains one arm for ``config.epochs`` epochs, checkpointing every epoch into ``run_dir/<arm>``; after each round
    (but the baseline's) it selects the unlabeled images the next round trains on."""

    def __init__(self, arm: str, data: SemiData, audit: PseudoLabelAudit, config: TrainConfig, run_dir: Path,
                 reporter: Reporter, share_first_round: bool = True):
        torch.manual_seed(config.weights_seed)  # the initial weights, the same for every arm
        model = create_model(config.model, **config.model_kwargs).to(data.labeled_x.device)
        labeled_steps = math.ceil(len(data.labeled_y) / config.batch_size)
        optimizer, scheduler = build_optimizer(config, model, labeled_steps)
        self.kind = arm_kind(arm)  # "self-training" for "self-training@0.9"
        if scheduler is not None and self.kind in PSEUDO_LABEL_ARMS:  # the baseline's learning rate, epoch by epoch
            scheduler = EpochPaced(scheduler, labeled_steps)
        super().__init__(run_dir / arm, model, optimizer, scheduler, config, reporter)
        self.arm, self.data, self.audit = arm, data, audit
        self.event_fields = {"arm": arm, "rounds": config.semi_rounds}
        self.shared = run_dir / SHARED_ROUND
        # round 1 has no pseudo-labels: the same in every arm but FixMatch, whose steps differ (a learning-rate
        # schedule too: EpochPaced gives the pseudo-label arms the baseline's, step by step while none is admitted)
        self.share = share_first_round and arm not in ("fixmatch", "noisy-student")
        self.soft_labels = None  # noisy-student: the teacher's probabilities of the unlabeled faces (:meth:`load`)
        self.rounds: list[dict] = []
        self.selection = Selection.empty()
        self._unreported_round = False

    # -- the arm's part of the loop -------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> tuple[EpochStats, dict]:
        config, data = self.config, self.data
        label = f"{self.arm} round {round_of(epoch, config)}"
        if self.arm == "fixmatch":
            stats = fixmatch_epoch(self.model, self.optimizer, self.scheduler, data.labeled_x, data.labeled_y, data.unlabeled_x,
                                   config, epoch, self.reporter, label=label, total_epochs=config.epochs)
            own = {"train_images": len(data.labeled_y), "steps": stats.steps, "unlabeled_loss": stats.unlabeled_loss,
                   "mask_rate": stats.mask_rate}
        elif self.arm == "noisy-student":
            stats = noisy_student_epoch(self.model, self.optimizer, self.scheduler, data.labeled_x, data.labeled_y, data.unlabeled_x,
                                        self.soft_labels, config, epoch, self.reporter, label=label, total_epochs=config.epochs)
            steps = math.ceil(len(data.labeled_y) / config.batch_size)
            own = {"train_images": 2 * len(data.labeled_y), "steps": steps}
        else:
            x, y = training_set(data, self.selection)
            steps = math.ceil(len(y) / config.batch_size)
            if isinstance(self.scheduler, EpochPaced):
                self.scheduler.begin_epoch(steps)
            stats = train_one_epoch(self.model, self.optimizer, self.scheduler, x, y, config, epoch, self.reporter, label=label,
                                    total_epochs=config.epochs)
            own = {"train_images": len(y), "steps": steps}
        pseudo = len(self.selection) if self.kind in PSEUDO_LABEL_ARMS else 0
        return stats, {"round": round_of(epoch, config), "pseudo_labeled": pseudo, **own}

    def evaluate(self) -> tuple[float, float]:
        return evaluate_loss_acc(self.model, self.data.val_x, self.data.val_y, bf16=self.config.bf16)

    def end_epoch(self, epoch: int, is_best: bool) -> list[tuple[str, dict]]:
        if self.share and epoch == first_round(self.config) and not (self.shared / "last.pt").exists():
            self._share_first_round()
        if not ends_round(epoch, self.config) or self.arm in ("baseline", "noisy-student"):
            return []
        self._end_round(epoch)
        return [(EVENT_ROUND, self.rounds[-1])]

    def checkpoint_fields(self) -> dict:
        s = self.selection
        return {"semi_arm": self.arm, "rounds": self.rounds, "selection_index": torch.from_numpy(s.index),
                "selection_label": torch.from_numpy(s.label), "selection_thresholds": list(s.thresholds)}

    def restore(self, checkpoint: dict) -> dict:
        super().restore(checkpoint)
        self.rounds = list(checkpoint.get("rounds", []))
        self.selection = Selection.empty()
        if "selection_index" in checkpoint:
            self.selection = Selection(checkpoint["selection_index"].numpy(), checkpoint["selection_label"].numpy(),
                                       list(checkpoint["selection_thresholds"]))
        return checkpoint

    def write_records(self) -> None:
        super().write_records()
        write_json(self.folder / "rounds.json", self.rounds)

    # -- resuming and sharing the first round -------------------------------------------------------------

    def load(self) -> "ArmLoop":
        """Continue from this arm's ``last.pt``, or from the shared first round, or start afresh."""
        if (self.folder / "last.pt").exists():
            self.restore(load_checkpoint(self.folder / "last.pt"))
        elif self.share and self.kind in PSEUDO_LABEL_ARMS and (self.shared / "last.pt").exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            self.restore(load_checkpoint(self.shared / "last.pt"))
            self.state.history = [dict(h, shared=True) for h in self.state.history]
            shutil.copyfile(self.shared / "best.pt", self.folder / "best.pt")
            self._end_round(self.state.epoch)  # the first round's selection, with this arm's rule
            self.save(self.folder / "last.pt")
            self.write_records()
            self._unreported_round = True
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
        if self.arm == "noisy-student" and not self.complete:
            self._take_teacher_labels()
        return self

    def run(self, epochs_after: int = 0) -> None:
        if self._unreported_round:
            self.reporter.emit(EVENT_ROUND, **self.rounds[-1])
            self._unreported_round = False
        super().run(epochs_after)

    def _take_teacher_labels(self) -> None:
        """The baseline's soft labels of the unlabeled faces (made once, kept in the arm's folder); the first time,
        their argmax is graded (logged, never used) and recorded as the arm's one round of pseudo-labels."""
        teacher_run = self.folder.parent / "baseline"
        probs = load_or_make_teacher(self.folder, teacher_run, self.data.unlabeled_x, self.config)
        self.soft_labels = torch.from_numpy(probs).to(self.data.unlabeled_x.device)
        if self.rounds:  # recorded already (a resumed arm's last.pt carries it)
            return
        labels = probs.argmax(1).astype(np.int64)
        teacher = Selection(np.arange(len(labels), dtype=np.int64), labels, [0.0] * len(CLASS_NAMES))
        best = load_checkpoint(teacher_run / "best.pt")
        self.rounds = [{
            "arm": self.arm, "round": 1, "rounds": self.config.semi_rounds, "epoch": 0, "val_acc": best["best_metric"],
            "rule": f"soft labels: the baseline's best epoch ({best['best_epoch']}), face and mirror image averaged",
            "thresholds_per_class": dict(zip(CLASS_NAMES, [0.0] * len(CLASS_NAMES))), "unlabeled": len(labels),
            "admitted": len(labels), "admitted_per_class": teacher.per_class(), **self.audit.grade(teacher),
            "mean_confidence_per_class": {name: round(float(probs[labels == c, c].mean()), 4) if (labels == c).any() else None
                                          for c, name in enumerate(CLASS_NAMES)},
            "kept": None, "new": None, "dropped": None, "used_in_round": "every", "select_seconds": 0.0,
        }]
        self.write_records()
        r = self.rounds[-1]
        per_class = "  ".join(f"{name} {n:,}" + ("" if p is None else f" ({p:.2f})")
                              for (name, n), p in zip(r["admitted_per_class"].items(), r["pseudo_precision_per_class"].values()))
        self.reporter.emit(EVENT_MESSAGE, text=f"noisy-student: soft labels of {len(labels):,} unlabeled faces from the baseline (val acc "
                                               f"{r['val_acc']:.4f}); their argmax is right for {r['pseudo_precision']:.3f}\n"
                                               f"    per class (precision): {per_class}")

    def _share_first_round(self) -> None:
        """Keep the end of round 1 (no pseudo-labels yet: the same in every pseudo-label arm) for the others."""
        self.shared.mkdir(exist_ok=True)
        shutil.copyfile(self.folder / "best.pt", self.shared / "best.pt")
        self.save(self.shared / "last.pt", fields={"shared_by": self.arm})  # no selection of this arm's

    def _end_round(self, epoch: int) -> None:
        """Predict the unlabeled images, select afresh, then (only then) grade the selection."""
        config = self.config
        t0 = time.perf_counter()
        probs = unlabeled_probabilities(self.model, self.data.unlabeled_x, config)
        new = select_confident(probs, thresholds_for(self.arm, probs, config))
        seconds = time.perf_counter() - t0
        grade = self.audit.grade(new)  # after the selection is fixed: logged, never fed back
        previous = self.selection.index
        round_no = round_of(epoch, config)
        last = self.state.history[-1]
        record = {
            "arm": self.arm, "round": round_no, "rounds": config.semi_rounds, "epoch": epoch,
            "val_loss": last["val_loss"], "val_acc": last["val_acc"],
            "trained_on": {"labeled": len(self.data.labeled_y), "pseudo": last["pseudo_labeled"]},
            "rule": "p_max > threshold of the predicted class (strictly greater)",
            "threshold": config.fixmatch_threshold if self.arm == "fixmatch" else arm_threshold(self.arm, config),
            "thresholds_per_class": dict(zip(CLASS_NAMES, (round(t, 6) for t in new.thresholds))),
            "unlabeled": len(self.data.unlabeled_x), "admitted": len(new), "admitted_per_class": new.per_class(),
            **grade,
            "kept": int(np.intersect1d(previous, new.index).size), "new": int(np.setdiff1d(new.index, previous).size),
            "dropped": int(np.setdiff1d(previous, new.index).size),
            "used_in_round": round_no + 1 if self.kind in PSEUDO_LABEL_ARMS and round_no < config.semi_rounds else None,
            "select_seconds": round(seconds, 2),
        }
        if self.arm == "fixmatch":
            record["note"] = "FixMatch selects per batch on the weak view; these counts are for the unaugmented images"
        self.selection = new
        self.rounds.append(record)
