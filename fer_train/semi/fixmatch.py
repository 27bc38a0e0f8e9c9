"""Consistency training in the manner of FixMatch (Sohn et al., 2020) for 48×48 grayscale faces.

Each step takes a labeled batch and ``fixmatch_mu`` times as many unlabeled images. The model's prediction
on a weakly augmented view (the study's rotation and shifts) becomes the target for a strongly augmented
view of the same image, but only where its top probability is strictly greater than ``fixmatch_threshold``:

    loss = CE(labeled) + λ · mean over the unlabeled batch of 1[max p_weak > τ] · CE(strong, argmax p_weak)

As in the paper, the labeled, weak and strong views go through the model as one batch (so dropout and any
batch statistics see them together), and the weak view's prediction is not differentiated. The function
receives the unlabeled images without labels: there are none to leak.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fer_runtime.contract import IMAGE_SIZE

from ..augment import random_affine
from ..config import TrainConfig
from ..devices import autocast, bf16_supported
from ..progress import Reporter
from ..stops import check_stop
from ..epoch import paired_orders, take_step

CUTOUT = 16  # side of the grey square the strong view hides (a third of the face, as FixMatch's cutout)


def strong_augment(x: torch.Tensor, generator: torch.Generator, rotation: float = 40.0, shift: float = 0.2) -> torch.Tensor:
    """A RandAugment-like view for grayscale faces: flip, rotation and shift, contrast and brightness,
    noise, and a cut-out square. ``x`` is float (N, 1, 48, 48) in 0..255; random numbers from ``generator``."""
    n, device = x.shape[0], x.device
    x = random_affine(x, generator, rotation, shift, flip=True)
    u = torch.rand(n, 4, generator=generator).to(device)  # (N, 4) in [0, 1)
    contrast = (0.5 + u[:, 0]).view(n, 1, 1, 1)  # 0.5 .. 1.5 around the image mean
    brightness = ((u[:, 1] * 2 - 1) * 40).view(n, 1, 1, 1)  # ± 40 grey levels
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + brightness
    x = x + torch.randn(x.shape, generator=generator).to(device) * 8
    centre_y, centre_x = (u[:, 2] * IMAGE_SIZE).view(n, 1, 1), (u[:, 3] * IMAGE_SIZE).view(n, 1, 1)
    pos = torch.arange(IMAGE_SIZE, device=device, dtype=x.dtype)
    inside = ((pos.view(1, -1, 1) - centre_y).abs() < CUTOUT / 2) & ((pos.view(1, 1, -1) - centre_x).abs() < CUTOUT / 2)  # (N, 48, 48)
    x = torch.where(inside.unsqueeze(1), torch.full_like(x, 127.5), x)
    return x.clamp(0, 255)


@dataclass
class FixMatchStats:
    loss: float  # the supervised part, comparable with a supervised run's training loss
    acc: float  # on the labeled batches
    images_per_s: float
    unlabeled_loss: float  # the masked consistency term, averaged over all unlabeled images seen
    mask_rate: float  # share of unlabeled images whose weak view passed the threshold
    steps: int


def fixmatch_epoch(model: nn.Module, optimizer, scheduler, labeled_x: torch.Tensor, labeled_y: torch.Tensor, unlabeled_x: torch.Tensor,
                   config: TrainConfig, epoch: int, reporter: Reporter | None = None, label: str = "fixmatch",
                   total_epochs: int | None = None) -> FixMatchStats:
    """One pass over the labeled images; the unlabeled images are drawn in a seeded order, wrapping around."""
    device = labeled_x.device
    generator, order, unlabeled_order = paired_orders(config, epoch, len(labeled_y), len(unlabeled_x), device)
    batch, per_step = config.batch_size, config.batch_size * config.fixmatch_mu
    steps = math.ceil(len(labeled_y) / batch)
    use_bf16 = config.bf16 and bf16_supported(device)
    model.train()
    sums = {"loss": 0.0, "unlabeled_loss": 0.0, "masked": 0.0}
    correct, seen_unlabeled = 0, 0
    start = time.perf_counter()
    for step in range(steps):
        check_stop()  # SIGTERM / Ctrl-C stop between two batches
        idx = order[step * batch:(step + 1) * batch]
        uidx = unlabeled_order[torch.arange(step * per_step, (step + 1) * per_step, device=device) % len(unlabeled_x)]
        xl, yl, xu = labeled_x[idx].float(), labeled_y[idx], unlabeled_x[uidx].float()
        if config.augment:
            xl = random_affine(xl, generator, config.rotation, config.shift, config.flip, config.scale)
            weak = random_affine(xu, generator, config.rotation, config.shift, config.flip, config.scale)
        else:
            weak = xu
        strong = strong_augment(xu, generator, config.rotation, config.shift)
        with autocast(device, use_bf16):
            logits = model(torch.cat([xl, weak, strong])).float()  # (B + 2 μB, 7)
        logits_l, logits_w, logits_s = logits.split([len(idx), len(uidx), len(uidx)])
        confidence, pseudo = F.softmax(logits_w.detach(), dim=1).max(dim=1)
        mask = (confidence > config.fixmatch_threshold).float()
        loss_l = F.cross_entropy(logits_l, yl, label_smoothing=config.label_smoothing)
        loss_u = (F.cross_entropy(logits_s, pseudo, reduction="none") * mask).mean()
        loss = loss_l + config.fixmatch_weight * loss_u
        take_step(optimizer, scheduler, loss)
        sums["loss"] += float(loss_l.detach()) * len(idx)
        sums["unlabeled_loss"] += float(loss_u.detach()) * len(uidx)
        sums["masked"] += float(mask.sum())
        correct += int((logits_l.argmax(1) == yl).sum())
        seen_unlabeled += len(uidx)
        if reporter is not None:
            seen = min((step + 1) * batch, len(labeled_y))
            reporter.batch(epoch=epoch, epochs=total_epochs or config.epochs, step=step + 1, steps=steps, loss=sums["loss"] / seen,
                           acc=correct / seen, images_per_s=(seen + 2 * seen_unlabeled) / max(time.perf_counter() - start, 1e-9), label=label)
    elapsed = time.perf_counter() - start
    if reporter is not None:
        reporter.end_epoch_bar()
    n = len(labeled_y)
    return FixMatchStats(sums["loss"] / n, correct / n, (n + 2 * seen_unlabeled) / elapsed, sums["unlabeled_loss"] / max(seen_unlabeled, 1),
                         sums["masked"] / max(seen_unlabeled, 1), steps)
