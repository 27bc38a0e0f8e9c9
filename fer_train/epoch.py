"""One epoch: the batch loop of plain training (also distillation, and one rank's part under torchrun), the
optimizer and schedule it steps, and the evaluation after it. The loop over epochs is :mod:`fer_train.train`'s."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .augment import augment_batch, mix_batch
from .config import TrainConfig
from .devices import autocast, bf16_supported
from .distill import distillation_loss
from .progress import Reporter
from .stops import check_stop_everywhere


def build_optimizer(config: TrainConfig, model: nn.Module, steps_per_epoch: int):
    lr = config.learning_rate
    params = model.parameters()
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)
    elif config.optimizer == "adadelta":
        optimizer = torch.optim.Adadelta(params, lr=lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=lr, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay)
    total = config.epochs * steps_per_epoch
    if config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    elif config.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total)
    else:
        scheduler = None
    return optimizer, scheduler


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


# ----------------------------------------------------------------------------------------------------
# one epoch


@dataclass
class EpochStats:
    loss: float
    acc: float
    images_per_s: float


def train_one_epoch(model: nn.Module, optimizer, scheduler, x: torch.Tensor, y: torch.Tensor, config: TrainConfig,
                    epoch: int, reporter: Reporter | None = None, label: str = "epoch", total_epochs: int | None = None,
                    epochs_before: int = 0, teacher: torch.Tensor | None = None, after_step=None) -> EpochStats:
    """One pass over (x, y) in shuffled batches with the config's augmentation (and mixup, ``config.mixup``). Its
    order, augmentation and dropout are drawn for epoch ``epochs_before + epoch`` of the seed: a fine-tuning run
    passes the epochs of the runs it starts from, so that it goes on drawing new ones rather than replaying theirs.
    ``teacher``: log-probabilities (N, 7) of a teacher on the un-augmented images, for distillation
    (fer_train.distill). ``after_step()`` is called after every optimizer step (a moving average of the weights).

    Under torchrun ``model`` is DDP-wrapped and every rank runs this together: the order is the same on all, each
    takes its part of every batch, and the returned loss, accuracy and images/s are the whole group's."""
    device = x.device
    seed = epoch_seed(config.weights_seed, epochs_before + epoch)
    generator = torch.Generator().manual_seed(seed)  # the order, the same on every rank
    order = torch.randperm(len(y), generator=generator).to(device)
    own_seed = distributed.rank_seed(seed)  # this rank's augmentation and dropout; rank 0's are one process's
    torch.manual_seed(own_seed)  # dropout
    if own_seed != seed:
        generator = torch.Generator().manual_seed(own_seed)  # augmentation
    steps = distributed.epoch_steps(len(y), config.batch_size)
    use_bf16 = config.bf16 and bf16_supported(device)
    model.train()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0  # images of this rank
    start = time.perf_counter()
    for step in range(steps):
        check_stop_everywhere(step)
        batch = order[step * config.batch_size:(step + 1) * config.batch_size]  # the global batch
        idx = distributed.shard(batch)  # this rank's part of it
        logits, loss, yb = _batch_loss(model, x[idx].float(), y[idx], config, generator, use_bf16,
                                       None if teacher is None else teacher[idx])
        # DDP averages the ranks' gradients in backward: each rank's loss is weighted by its share of the batch
        take_step(optimizer, scheduler, loss * distributed.share_weight(len(idx), len(batch)), after_step)
        total_loss += loss.detach() * len(idx)
        correct += (logits.argmax(1) == yb).sum()
        seen += len(idx)
        if reporter is not None:  # this rank's loss and accuracy so far; the group's images/s
            elapsed = time.perf_counter() - start
            reporter.batch(epoch=epoch, epochs=total_epochs or config.epochs, step=step + 1, steps=steps,
                           loss=float(total_loss) / seen, acc=float(correct) / seen,
                           images_per_s=min((step + 1) * config.batch_size, len(y)) / max(elapsed, 1e-9), label=label)
    elapsed = time.perf_counter() - start
    if reporter is not None:
        reporter.end_epoch_bar()
    loss_sum, correct_sum, count = distributed.sum_over_ranks(total_loss, correct, seen)
    return EpochStats(loss_sum / count, correct_sum / count, count / elapsed)


def take_step(optimizer, scheduler, loss: torch.Tensor, after_step=None) -> None:
    """One optimizer step on ``loss``'s gradient, then the schedule's step and ``after_step()`` (a moving average)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    if after_step is not None:
        after_step()


def paired_orders(config: TrainConfig, epoch: int, labeled: int, unlabeled: int,
                  device) -> tuple[torch.Generator, torch.Tensor, torch.Tensor]:
    """A semi-supervised epoch's draws: torch's global seed (dropout), the generator of its augmentation, and the
    seeded orders of the labeled and the unlabeled faces, drawn from that generator in this order."""
    seed = epoch_seed(config.weights_seed, epoch)
    torch.manual_seed(seed)  # dropout
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(labeled, generator=generator).to(device)
    return generator, order, torch.randperm(unlabeled, generator=generator).to(device)


def _batch_loss(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, config: TrainConfig, generator: torch.Generator, use_bf16: bool,
                teacher: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training batch augmented (and mixed, ``config.mixup``), through the model: its float logits, its loss, and
    the labels its accuracy counts (under mixup, the label that dominates the mix). ``teacher``: the batch's
    log-probabilities from a teacher, for distillation."""
    xb = augment_batch(xb, generator, config)
    mixed = mix_batch(xb, generator, config.mixup) if config.mixup > 0 else None
    if mixed is not None:
        xb = mixed[0]
    if config.channels_last:
        xb = xb.contiguous(memory_format=torch.channels_last)
    with autocast(xb.device, use_bf16):
        logits = model(xb).float()
    if mixed is not None:
        _, perm, lam = mixed
        loss = (lam * F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
                + (1 - lam) * F.cross_entropy(logits, yb[perm], label_smoothing=config.label_smoothing))
        return logits, loss, yb if lam >= 0.5 else yb[perm]
    if teacher is None:
        return logits, F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing), yb
    return logits, distillation_loss(logits, yb, teacher, config.distill_weight, config.distill_temperature, config.label_smoothing), yb


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512, bf16: bool = False) -> torch.Tensor:
    """Logits (N, 7) in eval mode; ``x`` may be uint8 or float pixels 0..255."""
    model.eval()
    device = x.device
    outs = []
    for i in range(0, len(x), batch_size):
        with autocast(device, bf16 and bf16_supported(device)):
            outs.append(model(x[i:i + batch_size].float()).float())
    return torch.cat(outs) if outs else torch.empty(0, 7, device=device)


def evaluate_loss_acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on (x, y). Under torchrun every rank scores its part of the images and the
    sums are added over the ranks, so all of them return the numbers of the whole set. ``model``: not DDP-wrapped."""
    start, end = distributed.shard_bounds(len(y))
    logits, labels = predict_logits(model, x[start:end], bf16=bf16), y[start:end]
    loss_sum, correct, count = distributed.sum_over_ranks(F.cross_entropy(logits, labels, reduction="sum"),
                                                          (logits.argmax(1) == labels).sum(), len(labels))
    return loss_sum / (count or math.nan), correct / (count or math.nan)
