"""The ``noisy-student`` arm: soft pseudo-labels from a teacher, learned under noise (after Xie et al. 2020, with
the fixes for confirmation bias of Arazo et al. 2019: soft labels, mixup, a labeled half in every batch).

The teacher is this run's ``baseline`` arm (the labeled half alone) at its best epoch. Once, when the arm starts, it
predicts every unlabeled face as the mean log-probabilities of the face and its mirror image; the softmax of that
mean is the face's soft label, kept in the arm's folder (``teacher.npz``) so that a resumed arm reuses it. The
student (the same model, from the same initial weights as every arm) then trains for the same budget and the same
steps per epoch as the baseline; each step takes a batch of labeled faces and as many unlabeled ones:

    loss = soft cross-entropy(student(noise(x)), target)   over the whole batch of 2B faces

where the target is the label smoothed by ``--label-smoothing`` for a labeled face and the teacher's probabilities for
an unlabeled one, and the noise is the run's augmentation (with ``--erase``, ``--crop``), dropout and mixup over the
whole batch (targets mixed alike) with the student's own α, ``--student-mixup`` (0.2; the other arms' is ``--mixup``). Half of every batch is labeled, so the student cannot
drift to the teacher's mistakes alone. The hidden labels never reach the loss: the teacher's labels are graded by
the :class:`~fer_train.semi.selection.PseudoLabelAudit` after they are fixed, for the record.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fer_runtime.contract import NUM_CLASSES

from ..augment import augment_batch, mix_batch
from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..config import TrainConfig
from ..devices import autocast, bf16_supported
from ..epoch import EpochStats, paired_orders, predict_logits, take_step
from ..progress import Reporter
from ..stops import check_stop

TEACHER_FILE = "teacher.npz"


def teacher_probabilities(teacher_run: Path, unlabeled_x: torch.Tensor, config: TrainConfig) -> np.ndarray:
    """Soft labels (N, 7) of the unlabeled faces from ``teacher_run``'s best weights: the softmax of the mean
    log-probabilities of each face and its mirror image. The teacher must have trained all of its epochs."""
    best = teacher_run / "best.pt"
    last = load_checkpoint(teacher_run / "last.pt", remedy=f"train the baseline arm first: --arms baseline,... ({teacher_run})")
    if last["epoch"] < config.epochs:
        raise ValueError(f"the noisy-student arm learns from the baseline arm, which has trained {last['epoch']} of {config.epochs} "
                         f"epochs ({teacher_run}); let it finish first (it runs before, without --parallel-arms)")
    model = model_from_checkpoint(load_checkpoint(best)).to(unlabeled_x.device)
    views = (unlabeled_x, unlabeled_x.flip(-1))
    log_probs = sum(torch.log_softmax(predict_logits(model, v, bf16=config.bf16), 1) for v in views) / len(views)
    return torch.softmax(log_probs, 1).cpu().numpy().astype(np.float32)


def load_or_make_teacher(folder: Path, teacher_run: Path, unlabeled_x: torch.Tensor, config: TrainConfig) -> np.ndarray:
    """The arm's soft labels: read from ``folder/teacher.npz`` when the arm has them, else made by the teacher and
    written there."""
    path = folder / TEACHER_FILE
    if path.exists():
        with np.load(path) as stored:
            probs = stored["probabilities"]
        if probs.shape != (len(unlabeled_x), NUM_CLASSES):
            raise ValueError(f"{path}: holds soft labels for {probs.shape[0]} faces, the run has {len(unlabeled_x)} unlabeled; "
                             "delete the file and the teacher labels them again")
        return probs
    probs = teacher_probabilities(teacher_run, unlabeled_x, config)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, probabilities=probs)
    return probs


def noisy_student_epoch(model: nn.Module, optimizer, scheduler, labeled_x: torch.Tensor, labeled_y: torch.Tensor,
                        unlabeled_x: torch.Tensor, soft_labels: torch.Tensor, config: TrainConfig, epoch: int,
                        reporter: Reporter | None = None, label: str = "noisy-student", total_epochs: int | None = None) -> EpochStats:
    """One pass over the labeled faces in batches of ``config.batch_size``, each with as many unlabeled faces (drawn
    in a seeded order, wrapping around) and their ``soft_labels``. Loss and accuracy returned are the labeled half's."""
    device = labeled_x.device
    generator, order, unlabeled_order = paired_orders(config, epoch, len(labeled_y), len(unlabeled_x), device)  # + mixup
    batch, steps = config.batch_size, math.ceil(len(labeled_y) / config.batch_size)
    use_bf16 = config.bf16 and bf16_supported(device)
    smooth = config.label_smoothing
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    for step in range(steps):
        check_stop()  # SIGTERM / Ctrl-C stop between two batches
        idx = order[step * batch:(step + 1) * batch]
        uidx = unlabeled_order[torch.arange(step * batch, step * batch + len(idx), device=device) % len(unlabeled_x)]
        x = augment_batch(torch.cat([labeled_x[idx], unlabeled_x[uidx]]).float(), generator, config)
        hard = F.one_hot(labeled_y[idx], NUM_CLASSES).float() * (1 - smooth) + smooth / NUM_CLASSES
        target = torch.cat([hard, soft_labels[uidx]])
        if config.student_mixup > 0:
            x, perm, lam = mix_batch(x, generator, config.student_mixup)
            target = lam * target + (1 - lam) * target[perm]
        if config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, use_bf16):
            logits = model(x).float()
        loss = -(target * F.log_softmax(logits, 1)).sum(1).mean()
        take_step(optimizer, scheduler, loss)
        loss_sum += float(loss.detach()) * len(idx)
        # the labeled half's accuracy: against its label, or under mixup the label that dominates each face's mix
        correct += int((logits[:len(idx)].argmax(1) == target[:len(idx)].argmax(1)).sum())
        seen += len(idx)
        if reporter is not None:
            reporter.batch(epoch=epoch, epochs=total_epochs or config.epochs, step=step + 1, steps=steps, loss=loss_sum / seen,
                           acc=correct / seen, images_per_s=2 * seen / max(time.perf_counter() - start, 1e-9), label=label)
    elapsed = time.perf_counter() - start
    if reporter is not None:
        reporter.end_epoch_bar()
    return EpochStats(loss_sum / max(seen, 1), correct / max(seen, 1), 2 * seen / elapsed)
