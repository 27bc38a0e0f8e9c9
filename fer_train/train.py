"""The training loop: seeded, resumable epoch by epoch, with progress and a run folder.

A run folder holds ``config.json``, ``history.json``, ``best.pt``, ``last.pt``, ``curves.png`` and,
at the end, ``model.onnx``. Every epoch draws its random numbers (shuffle, augmentation, dropout) from
seeds made of the run's seed and the epoch number, so ``--resume`` after an interrupt reaches the same
weights as a run that never stopped.
"""

from __future__ import annotations

import contextlib
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

from .augment import random_affine, random_erase
from .checkpoint import load_checkpoint, load_parent, save_checkpoint
from .config import TrainConfig, check_same_split
from .distill import distillation_loss, teacher_log_probs
from .io import DataError, Split, default_data_path, load_source
from .models import count_parameters, create_model
from .onnx_import import UNFOLDED_KEY, calibrate_unfolded_batchnorm
from .progress import Reporter
from .splits import Splits, make_splits

CALIBRATION_IMAGES = 4096  # training images that calibrate the BatchNorms of a model fine-tuned from an export


class Interrupted(Exception):
    """Raised in the training thread between two batches after SIGINT or SIGTERM."""


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


def load_splits(config: TrainConfig) -> Splits:
    """The run's data, by the study's protocol, cut to ``limit_train``/``limit_val`` for smoke runs."""
    path = config.data or default_data_path()
    if path is None:
        raise DataError("<no data>", "no data given and none found; pass --data PATH (FER2013 CSV or image folder) or set FER_DATA")
    source = load_source(path, skip_bad=config.skip_bad)
    splits = make_splits(source, val_fraction=config.val_fraction, seed=config.seed)
    if config.limit_train:
        splits.train = splits.train.subset(np.arange(min(config.limit_train, len(splits.train))))
    if config.limit_val:
        splits.val = splits.val.subset(np.arange(min(config.limit_val, len(splits.val))))
        if splits.test is not None:
            splits.test = splits.test.subset(np.arange(min(config.limit_val, len(splits.test))))
    return splits


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
    (N, 7) of a teacher on the un-augmented images, for distillation (fer_train.distill)."""
    device = x.device
    seed = epoch_seed(config.weights_seed, epochs_before + epoch)
    torch.manual_seed(seed)  # dropout
    generator = torch.Generator().manual_seed(seed)  # order and augmentation
    order = torch.randperm(len(y), generator=generator).to(device)
    steps = math.ceil(len(y) / config.batch_size)
    use_bf16 = config.bf16 and bf16_supported(device)
    model.train()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    start = time.perf_counter()
    for step in range(steps):
        check_stop()
        idx = order[step * config.batch_size:(step + 1) * config.batch_size]
        xb, yb = x[idx].float(), y[idx]
        if config.augment:
            xb = random_affine(xb, generator, config.rotation, config.shift, config.flip)
        if config.erase > 0:
            xb = random_erase(xb, generator, config.erase)
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
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.detach() * len(idx)
        correct += (logits.argmax(1) == yb).sum()
        if reporter is not None:
            seen = min((step + 1) * config.batch_size, len(y))
            elapsed = time.perf_counter() - start
            reporter.batch(epoch=epoch, epochs=total_epochs or config.epochs, step=step + 1, steps=steps,
                           loss=float(total_loss) / seen, acc=float(correct) / seen, images_per_s=seen / max(elapsed, 1e-9), label=label)
    elapsed = time.perf_counter() - start
    if reporter is not None:
        reporter.end_epoch_bar()
    return EpochStats(float(total_loss) / len(y), float(correct) / len(y), len(y) / elapsed)


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
    logits = predict_logits(model, x, bf16=bf16)
    return float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())


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


def start_from_parent(config: TrainConfig, model: nn.Module, images: torch.Tensor) -> None:
    """Load the weights a fine-tuning run (``--init-from``) starts from into ``model``: the named run's best
    checkpoint or an exported ``.onnx`` of the same model. An export with folded BatchNorm is unfolded and
    its BatchNorms calibrated on ``images`` (training images)."""
    ckpt = load_parent(config.init_from, prefer="best")
    if ckpt["model_name"] != config.model or ckpt.get("model_kwargs", {}) != config.model_kwargs:
        raise ValueError(f"--init-from {config.init_from}: holds a {ckpt['model_name']!r} model{' ' + str(ckpt['model_kwargs']) if ckpt.get('model_kwargs') else ''}, "
                         f"not the {config.model!r} this run trains")
    check_same_split(config, ckpt.get("config") or {}, f"--init-from {config.init_from}")
    model.load_state_dict(ckpt["state_dict"])
    if ckpt.get(UNFOLDED_KEY):
        calibrate_unfolded_batchnorm(model, images[:CALIBRATION_IMAGES])


def train(config: TrainConfig, run_dir: str | Path | None = None, reporter: Reporter | None = None,
          resume: bool = False, export: bool = True) -> TrainResult:
    """Train ``config.model``; with ``resume``, continue the run in ``run_dir`` from its ``last.pt``."""
    reporter = reporter or Reporter("auto")
    device = pick_device(config.device)
    if device.type == "cpu":
        torch.set_num_threads(config.threads or os.cpu_count() or 1)
    if config.bf16 and not bf16_supported(device):
        reporter.emit("message", text="bf16 is not supported on this device; training in float32")

    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(config)
    splits = load_splits(config)
    if splits.source.skipped:
        reporter.emit("message", text=f"skipped {len(splits.source.skipped)} bad rows: " + "; ".join(map(str, splits.source.skipped[:10])))
    train_x, train_y = as_tensors(splits.train, device)
    val_x, val_y = as_tensors(splits.val, device)

    torch.manual_seed(config.weights_seed)  # the initial weights
    model = create_model(config.model, **config.model_kwargs).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    parent_record = None  # the runs this one starts from, as they were when it started
    if config.init_from and not resume:
        from .export import parent_summary

        start_from_parent(config, model, train_x)
        parent_record = parent_summary(config.init_from).get("initialized_from")
    steps_per_epoch = math.ceil(len(train_y) / config.batch_size)
    optimizer, scheduler = build_optimizer(config, model, steps_per_epoch)
    history: list[dict] = []
    best_acc, best_epoch, start_epoch = -1.0, 0, 1
    if resume:
        ckpt = load_checkpoint(run_dir, prefer="last")
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler"):
            scheduler.load_state_dict(ckpt["scheduler"])
        history = list(ckpt["history"])
        best_acc, best_epoch, start_epoch = ckpt["best_metric"], ckpt["best_epoch"], ckpt["epoch"] + 1
        parent_record = ckpt.get("initialized_from")
    else:
        run_dir.mkdir(parents=True, exist_ok=False)
    _write_json(run_dir / "config.json", config.to_dict())
    teacher = None
    if config.distill_from:
        teacher = torch.from_numpy(teacher_log_probs(config, splits.train.images, splits.train.labels, run_dir, reporter)).to(device)

    reporter.emit("start", run_dir=str(run_dir), model=config.model, parameters=count_parameters(model),
                  epochs=config.epochs, start_epoch=start_epoch, steps_per_epoch=steps_per_epoch,
                  train_size=len(train_y), val_size=len(val_y), device=str(device), config=config.to_dict())
    started = time.perf_counter()
    common = dict(model_name=config.model, model_kwargs=config.model_kwargs, config=config.to_dict(),
                  extra={"initialized_from": parent_record} if parent_record else None)
    epochs_before = (parent_record or {}).get("epochs") or 0  # a fine-tuning run draws on after its parents' epochs
    interrupted = False
    epoch = start_epoch - 1
    try:
        with interrupts_as_exception():
            for epoch in range(start_epoch, config.epochs + 1):
                t0 = time.perf_counter()
                stats = train_one_epoch(model, optimizer, scheduler, train_x, train_y, config, epoch, reporter, epochs_before=epochs_before,
                                        teacher=teacher)
                val_loss, val_acc = evaluate_loss_acc(model, val_x, val_y, bf16=config.bf16)
                seconds = time.perf_counter() - t0
                is_best = val_acc > best_acc
                if is_best:
                    best_acc, best_epoch = val_acc, epoch
                record = {"epoch": epoch, "train_loss": stats.loss, "train_acc": stats.acc, "val_loss": val_loss,
                          "val_acc": val_acc, "lr": optimizer.param_groups[0]["lr"], "seconds": seconds,
                          "images_per_s": stats.images_per_s}
                history.append(record)
                state = dict(common, model=model, epoch=epoch, best_metric=best_acc, best_epoch=best_epoch, history=history)
                if is_best:
                    save_checkpoint(run_dir / "best.pt", **state)
                save_checkpoint(run_dir / "last.pt", optimizer=optimizer, scheduler=scheduler, **state)
                _write_json(run_dir / "history.json", history)
                remaining = (config.epochs - epoch) * seconds
                reporter.emit("epoch", epochs=config.epochs, best=is_best, eta_s=round(remaining, 1), **record)
    except (Interrupted, KeyboardInterrupt):
        interrupted = True
    finally:
        reporter.close()
    if history:
        from .plots import plot_curves

        plot_curves({config.model: history}, run_dir / "curves.png", title=f"{config.model}: {run_dir.name}")
    if interrupted:
        done_epoch = history[-1]["epoch"] if history else start_epoch - 1
        reporter.emit("interrupted", run_dir=str(run_dir), epoch=done_epoch)
        return TrainResult(run_dir, best_acc, best_epoch, history, None, interrupted=True)

    onnx_path = None
    if export:
        from .export import export_run

        onnx_path = export_run(run_dir, splits=splits, reporter=reporter, export_name=config.export_name, export_dir=config.export_dir,
                               extra_metadata={"training": {"epochs": epoch, "wall_seconds": round(sum(h["seconds"] for h in history), 1),
                                                            "hardware": describe_hardware(device)}})
    reporter.emit("done", run_dir=str(run_dir), best_val_acc=best_acc, best_epoch=best_epoch,
                  seconds=time.perf_counter() - started, onnx=str(onnx_path) if onnx_path else None)
    return TrainResult(run_dir, best_acc, best_epoch, history, onnx_path)


def describe_hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
