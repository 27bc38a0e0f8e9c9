"""The training loop: seeded, resumable epoch by epoch, with progress and a run folder.

A run folder holds ``config.json``, ``history.json``, ``best.pt``, ``last.pt``, ``curves.png`` and,
at the end, ``model.onnx``. Every epoch draws its random numbers (shuffle, augmentation, dropout) from
seeds made of the run's seed and the epoch number, so ``--resume`` after an interrupt reaches the same
weights as a run that never stopped.

Under ``torchrun`` the same loop trains one model on several processes (:mod:`fer_train.distributed`): each rank
takes its part of every batch, DDP averages the gradients, validation is shared out and summed, and rank 0
alone writes the run folder, reports and exports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fer_runtime.contract import EVENT_DONE, EVENT_EPOCH, EVENT_INTERRUPTED, EVENT_MESSAGE, EVENT_START
from fer_runtime.io import Split

from . import distributed
from .augment import augment_batch
from .checkpoint import load_checkpoint, load_parent, save_checkpoint
from .config import TrainConfig, check_same_split
from .data import load_splits
from .distill import distillation_loss, teacher_log_probs
from .models import count_parameters, create_model
from .onnx_import import UNFOLDED_KEY, calibrate_unfolded_batchnorm
from .progress import Reporter

CALIBRATION_IMAGES = 4096  # training images that calibrate the BatchNorms of a model fine-tuned from an export


class Interrupted(Exception):
    """Raised in the training thread between two batches after SIGINT or SIGTERM."""


class StopAgreed(Interrupted):
    """Raised on every rank of a torchrun group at the same batch, when a stop was asked for on any of them."""


_stop_signal: str | None = None  # set by the handler; checked between batches


def check_stop() -> None:
    """Raise :class:`Interrupted` if a stop was asked for. Called between batches, never inside a save."""
    if _stop_signal is not None:
        raise Interrupted(_stop_signal)


@contextlib.contextmanager
def interrupts_as_exception():
    """While training, SIGTERM and Ctrl-C ask the loop to stop at the next batch boundary.

    The handler only sets a flag, so a checkpoint being written is always finished (an exception raised
    inside ``torch.save`` would leave a stray temporary file). A second signal stops at once.
    """
    global _stop_signal
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        global _stop_signal
        if _stop_signal is not None:
            raise Interrupted(signal.Signals(signum).name)
        _stop_signal = signal.Signals(signum).name

    _stop_signal = None
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _stop_signal = None


STOP_CHECK_EVERY = 8  # batches between two agreements on a stop under torchrun (each is a small collective)


def check_stop_everywhere(step: int) -> None:
    """:func:`check_stop` for a group of processes: a stop asked for on any rank stops every rank at the same batch
    (they agree every ``STOP_CHECK_EVERY`` batches), so that none is left waiting in a collective for the others."""
    if not distributed.world().distributed:
        check_stop()
    elif step % STOP_CHECK_EVERY == 0 and distributed.any_rank(_stop_signal is not None):
        raise StopAgreed(_stop_signal or "a signal to another rank")


# ----------------------------------------------------------------------------------------------------
# set-up


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def as_tensors(split: Split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 1, 48, 48) and int64 labels, on the device (converted to float per batch)."""
    x = torch.from_numpy(np.ascontiguousarray(split.images)).unsqueeze(1).to(device)
    y = torch.from_numpy(split.labels.astype(np.int64)).to(device)
    return x, y


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
                    epochs_before: int = 0, teacher: torch.Tensor | None = None) -> EpochStats:
    """One pass over (x, y) in shuffled batches with the config's augmentation. Its order, augmentation and dropout
    are drawn for epoch ``epochs_before + epoch`` of the seed: a fine-tuning run passes the epochs of the runs it
    starts from, so that it goes on drawing new ones rather than replaying theirs. ``teacher``: log-probabilities
    (N, 7) of a teacher on the un-augmented images, for distillation (fer_train.distill).

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
        xb, yb = x[idx].float(), y[idx]
        xb = augment_batch(xb, generator, config)
        if config.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, use_bf16):
            logits = model(xb)
        if teacher is None:
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=config.label_smoothing)
        else:
            loss = distillation_loss(logits.float(), yb, teacher[idx], config.distill_weight, config.distill_temperature,
                                     config.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        (loss * distributed.share_weight(len(idx), len(batch))).backward()  # DDP averages the ranks' gradients here
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
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


# ----------------------------------------------------------------------------------------------------
# a whole run


def new_run_dir(config: TrainConfig, root: str | Path = "runs", prefix: str = "") -> Path:
    """``<root>/<prefix><model>-<time>``, with a counter if that folder exists."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{prefix}{config.model}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


@dataclass
class TrainResult:
    run_dir: Path
    best_val_acc: float
    best_epoch: int
    history: list[dict]
    onnx_path: Path | None
    interrupted: bool = False


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def start_from_parent(config: TrainConfig, model: nn.Module, images: torch.Tensor) -> dict | None:
    """Load the weights a fine-tuning run (``--init-from``) starts from into ``model``: the named run's best
    checkpoint or an exported ``.onnx`` of the same model. An export with folded BatchNorm is unfolded and
    its BatchNorms calibrated on ``images`` (training images). Returns the record of the runs it starts from."""
    from .export import parent_summary

    ckpt = load_parent(config.init_from, prefer="best")
    if ckpt["model_name"] != config.model or ckpt.get("model_kwargs", {}) != config.model_kwargs:
        raise ValueError(f"--init-from {config.init_from}: holds a {ckpt['model_name']!r} model{' ' + str(ckpt['model_kwargs']) if ckpt.get('model_kwargs') else ''}, "
                         f"not the {config.model!r} this run trains")
    check_same_split(config, ckpt.get("config") or {}, f"--init-from {config.init_from}")
    model.load_state_dict(ckpt["state_dict"])
    if ckpt.get(UNFOLDED_KEY):
        calibrate_unfolded_batchnorm(model, images[:CALIBRATION_IMAGES])
    return parent_summary(config.init_from).get("initialized_from")


def train(config: TrainConfig, run_dir: str | Path | None = None, reporter: Reporter | None = None,
          resume: bool = False, export: bool = True) -> TrainResult:
    """Train ``config.model``; with ``resume``, continue the run in ``run_dir`` from its ``last.pt``.

    Under torchrun every rank calls this with the same arguments and they train one model together
    (:mod:`fer_train.distributed`); rank 0 alone reads and writes the run folder, reports and exports, and sends
    the others what they need of it (a resumed checkpoint, a teacher's predictions)."""
    world = distributed.world()
    distributed.check_global_batch(config.batch_size)
    reporter = distributed.rank_reporter(reporter or Reporter("auto"))
    device = distributed.device_for(pick_device(config.device))
    if device.type == "cpu":
        torch.set_num_threads(config.threads or distributed.default_threads())
    if config.bf16 and not bf16_supported(device):
        reporter.emit(EVENT_MESSAGE, text="bf16 is not supported on this device; training in float32")
    if resume and config.world_size != world.size:
        reporter.emit(EVENT_MESSAGE, text=f"this run trained on {config.world_size} process(es) so far and continues on {world.size}: "
                                          "the same batches, but the augmentation and dropout of ranks other than 0 are drawn differently")
    config = dataclasses.replace(config, world_size=world.size)
    devices = distributed.gather_devices(device)

    run_dir = Path(run_dir) if run_dir is not None else distributed.from_rank0(lambda: new_run_dir(config))
    splits = load_splits(config)  # every rank reads the data (on every machine)
    if splits.source.skipped:
        reporter.emit(EVENT_MESSAGE, text=f"skipped {len(splits.source.skipped)} bad rows: " + "; ".join(map(str, splits.source.skipped[:10])))
    train_x, train_y = as_tensors(splits.train, device)
    val_x, val_y = as_tensors(splits.val, device)

    torch.manual_seed(config.weights_seed)  # the initial weights
    model = create_model(config.model, **config.model_kwargs).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    parent_record = None  # the runs this one starts from, as they were when it started
    if config.init_from and not resume:  # rank 0 loads the weights; DDP sends them to the others
        parent_record = distributed.from_rank0(lambda: start_from_parent(config, model, train_x))
    steps_per_epoch = distributed.epoch_steps(len(train_y), config.batch_size)
    # the schedule counts the batches of one process, at least as many as any group takes, so a run resumed on
    # another number of processes never steps past its end
    optimizer, scheduler = build_optimizer(config, model, math.ceil(len(train_y) / config.batch_size))
    history: list[dict] = []
    best_acc, best_epoch, start_epoch = -1.0, 0, 1
    if resume:
        ckpt = distributed.from_rank0(lambda: load_checkpoint(run_dir, prefer="last"))
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler"):
            scheduler.load_state_dict(ckpt["scheduler"])
        history = list(ckpt["history"])
        best_acc, best_epoch, start_epoch = ckpt["best_metric"], ckpt["best_epoch"], ckpt["epoch"] + 1
        parent_record = ckpt.get("initialized_from")
    distributed.from_rank0(lambda: _open_run_dir(run_dir, config, resume))
    teacher = None
    if config.distill_from:  # run once, by rank 0
        log_probs = distributed.from_rank0(lambda: teacher_log_probs(config, splits.train.images, splits.train.labels, run_dir, reporter))
        teacher = torch.from_numpy(log_probs).to(device)
    net = distributed.wrap(model, device)  # what trains; ``model`` is what is evaluated and saved

    trained_on = {"world_size": world.size, "devices": devices, **({"backend": world.backend} if world.backend else {})}
    reporter.emit(EVENT_START, run_dir=str(run_dir), model=config.model, parameters=count_parameters(model),
                  epochs=config.epochs, start_epoch=start_epoch, steps_per_epoch=steps_per_epoch,
                  train_size=len(train_y), val_size=len(val_y), device=describe_devices(device), config=config.to_dict(), **trained_on)
    started = time.perf_counter()
    extra = {"training": trained_on, **({"initialized_from": parent_record} if parent_record else {})}
    common = dict(model_name=config.model, model_kwargs=config.model_kwargs, config=config.to_dict(), extra=extra)
    epochs_before = (parent_record or {}).get("epochs") or 0  # a fine-tuning run draws on after its parents' epochs
    interrupted, agreed = False, True
    epoch = start_epoch - 1
    try:
        with interrupts_as_exception():
            for epoch in range(start_epoch, config.epochs + 1):
                t0 = time.perf_counter()
                stats = train_one_epoch(net, optimizer, scheduler, train_x, train_y, config, epoch, reporter if world.is_main else None,
                                        epochs_before=epochs_before, teacher=teacher)
                val_loss, val_acc = evaluate_loss_acc(model, val_x, val_y, bf16=config.bf16)
                seconds = time.perf_counter() - t0
                is_best = val_acc > best_acc
                if is_best:
                    best_acc, best_epoch = val_acc, epoch
                record = {"epoch": epoch, "train_loss": stats.loss, "train_acc": stats.acc, "val_loss": val_loss,
                          "val_acc": val_acc, "lr": optimizer.param_groups[0]["lr"], "seconds": seconds,
                          "images_per_s": stats.images_per_s}
                history.append(record)
                if world.is_main:
                    state = dict(common, model=model, epoch=epoch, best_metric=best_acc, best_epoch=best_epoch, history=history)
                    if is_best:
                        save_checkpoint(run_dir / "best.pt", **state)
                    save_checkpoint(run_dir / "last.pt", optimizer=optimizer, scheduler=scheduler, **state)
                    _write_json(run_dir / "history.json", history)
                remaining = (config.epochs - epoch) * seconds
                reporter.emit(EVENT_EPOCH, epochs=config.epochs, best=is_best, eta_s=round(remaining, 1), **record)
    except (Interrupted, KeyboardInterrupt) as exc:
        # a stop the ranks agreed on; a second signal (or Ctrl-C outside torchrun) stops this process at once
        interrupted, agreed = True, isinstance(exc, StopAgreed) or not world.distributed
    finally:
        reporter.close()
    if history and world.is_main:
        from .plots import plot_curves

        plot_curves({config.model: history}, run_dir / "curves.png", title=f"{config.model}: {run_dir.name}")
    if interrupted:
        done_epoch = history[-1]["epoch"] if history else start_epoch - 1
        reporter.emit(EVENT_INTERRUPTED, run_dir=str(run_dir), epoch=done_epoch)
        if agreed:
            distributed.barrier()  # torchrun stops the group when one rank exits: none leaves before rank 0 has written
        return TrainResult(run_dir, best_acc, best_epoch, history, None, interrupted=True)

    onnx_path = None
    if export and world.is_main:
        from .export import export_run

        hardware = describe_hardware(device) if not world.distributed else f"{world.size} processes, each {describe_hardware(device)}"
        onnx_path = export_run(run_dir, splits=splits, reporter=reporter, export_name=config.export_name, export_dir=config.export_dir,
                               extra_metadata={"training": {"epochs": epoch, "wall_seconds": round(sum(h["seconds"] for h in history), 1),
                                                            "hardware": hardware, **trained_on}})
    reporter.emit(EVENT_DONE, run_dir=str(run_dir), best_val_acc=best_acc, best_epoch=best_epoch,
                  seconds=time.perf_counter() - started, onnx=str(onnx_path) if onnx_path else None)
    return TrainResult(run_dir, best_acc, best_epoch, history, onnx_path)


def _open_run_dir(run_dir: Path, config: TrainConfig, resume: bool) -> None:
    """Make the run folder (a resumed run has one) and write the run's config into it."""
    if not resume:
        run_dir.mkdir(parents=True, exist_ok=False)
    _write_json(run_dir / "config.json", config.to_dict())


def describe_devices(device: torch.device) -> str:
    world = distributed.world()
    return str(device) if not world.distributed else f"{world.size} processes on {device} ({world.backend})"


def describe_hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
