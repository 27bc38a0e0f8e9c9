"""The training loop: one epoch loop for every mode, seeded, resumable epoch by epoch, with progress.

:class:`EpochLoop` is the loop. It owns a run's state (its history, its best epoch), restores it from a
checkpoint, trains and evaluates epoch after epoch, saves ``best.pt``, ``last.pt`` and ``history.json``, and sends
the ``epoch`` progress events. What differs between modes is a subclass that says how one epoch trains and what
follows it: :class:`SupervisedLoop` here (plain training, also on several processes under torchrun), and each
arm of a semi-supervised run (:class:`fer_train.semi.arm.ArmLoop`); the batches of an epoch are :mod:`fer_train.epoch`.
A checkpoint field is added in one place:
:meth:`EpochLoop.checkpoint_fields` (and its restore in :meth:`EpochLoop.restore`).

Every epoch draws its random numbers (shuffle, augmentation, dropout) from seeds made of the run's seed and the
epoch number, so ``--resume`` after an interrupt reaches the same weights as a run that never stopped.

Under ``torchrun`` the same loop trains one model on several processes (:mod:`fer_train.distributed`): each rank
takes its part of every batch, DDP averages the gradients, validation is shared out and summed, and rank 0
alone writes the run folder, reports and exports. What every run does around its loop (set-up, the ``start``,
``interrupted`` and ``done`` events, curves, export) is :mod:`fer_train.run`'s, shared with the semi-supervised run;
the run folder's files are :mod:`fer_train.run_folder`'s, stopping is :mod:`fer_train.stops`', the devices
:mod:`fer_train.devices`'.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fer_runtime.contract import EVENT_EPOCH

from . import distributed
from .checkpoint import load_parent, load_resume_checkpoint, save_checkpoint
from .config import TrainConfig, check_same_split
from .devices import as_tensors, describe_hardware
from .distill import teacher_log_probs
from .epoch import EpochStats, build_optimizer, evaluate_loss_acc, train_one_epoch
from .models import count_parameters, create_model
from .onnx_import import UNFOLDED_KEY, calibrate_unfolded_batchnorm
from .progress import Reporter
from .run import Run, begin_run
from .run_folder import HISTORY_FILE, open_run_dir, write_json
from .stops import check_stop_everywhere

CALIBRATION_IMAGES = 4096  # training images that calibrate the BatchNorms of a model fine-tuned from an export


# ----------------------------------------------------------------------------------------------------
# the epoch loop


@dataclass
class LoopState:
    """What a run has done so far; saved in ``last.pt`` and restored from it."""

    history: list[dict] = field(default_factory=list)  # one record per epoch
    best_acc: float = -1.0
    best_epoch: int = 0
    epoch: int = 0  # the last epoch completed


class EpochLoop:
    """The one epoch loop: trains ``model`` from the epoch after :attr:`state`'s to ``config.epochs``, keeping its
    run folder ``folder`` (``best.pt``, ``last.pt``, ``history.json``) up to date and reporting each epoch.

    A mode says how one of its epochs trains (:meth:`train_epoch`) and may add work after it (:meth:`end_epoch`),
    fields to its checkpoints (:meth:`checkpoint_fields`, read back by :meth:`restore`), files to its folder
    (:meth:`write_records`) and fields to its ``epoch`` events (:attr:`event_fields`). Only a process that
    ``writes`` (rank 0 under torchrun) writes the folder; every rank runs the loop.
    """

    event_fields: dict = {}

    def __init__(self, folder: Path, model: nn.Module, optimizer, scheduler, config: TrainConfig, reporter: Reporter,
                 extra: dict | None = None, writes: bool = True):
        self.folder, self.model, self.optimizer, self.scheduler = Path(folder), model, optimizer, scheduler
        self.config, self.reporter, self.writes = config, reporter, writes
        self.extra = dict(extra or {})  # fields of every checkpoint of the run (how it was trained, what it started from)
        self.state = LoopState()

    # -- what a mode says --------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> tuple[EpochStats, dict]:
        """Train one epoch; its statistics and any fields of its own for the epoch's record."""
        raise NotImplementedError

    def evaluate(self) -> tuple[float, float]:
        """Validation loss and accuracy of :attr:`model` after an epoch."""
        raise NotImplementedError

    def end_epoch(self, epoch: int, is_best: bool) -> list[tuple[str, dict]]:
        """Work after an epoch's record, before ``last.pt`` is saved; events to send after the epoch's."""
        return []

    def checkpoint_fields(self) -> dict:
        """Fields of ``last.pt`` beyond the weights, optimizer, schedule and :class:`LoopState`."""
        return {}

    def write_records(self) -> None:
        """The run's records beside ``last.pt``, rewritten every epoch."""
        write_json(self.folder / HISTORY_FILE, self.state.history)

    # -- the loop --------------------------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self.state.epoch >= self.config.epochs

    def restore(self, checkpoint: dict) -> dict:
        """Continue from ``checkpoint`` (a ``last.pt``): its weights, optimizer, schedule and state."""
        self.model.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint.get("scheduler"):
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.state = LoopState(list(checkpoint["history"]), checkpoint["best_metric"], checkpoint["best_epoch"], checkpoint["epoch"])
        return checkpoint

    def kept_model(self) -> nn.Module:
        """The model that is evaluated and whose weights ``best.pt`` keeps (a mode may keep an average of them)."""
        return self.model

    def save(self, path: Path, last: bool = True, fields: dict | None = None) -> None:
        """A checkpoint of the state. A ``last`` one holds the trained weights and also the optimizer, the schedule and
        ``fields`` (default: :meth:`checkpoint_fields`), so that the run continues from it; a best one holds
        :meth:`kept_model`'s weights."""
        s, config = self.state, self.config
        own = (self.checkpoint_fields() if fields is None else fields) if last else {}
        save_checkpoint(path, model=self.model if last else self.kept_model(), model_name=config.model, model_kwargs=config.model_kwargs, config=config.to_dict(),
                        epoch=s.epoch, best_metric=s.best_acc, best_epoch=s.best_epoch, history=s.history,
                        optimizer=self.optimizer if last else None, scheduler=self.scheduler if last else None,
                        extra={**self.extra, **own})

    def run(self, epochs_after: int = 0) -> None:
        """The remaining epochs; ``epochs_after`` (of other runs still to come) only feeds the time estimate. Raises
        :class:`fer_train.stops.Interrupted` after the epoch in progress is saved, when a stop was asked for."""
        config, state = self.config, self.state
        for epoch in range(state.epoch + 1, config.epochs + 1):
            t0 = time.perf_counter()
            stats, own = self.train_epoch(epoch)
            val_loss, val_acc = self.evaluate()
            seconds = time.perf_counter() - t0
            is_best = val_acc > state.best_acc
            if is_best:
                state.best_acc, state.best_epoch = val_acc, epoch
            record = {"epoch": epoch, "train_loss": stats.loss, "train_acc": stats.acc, "val_loss": val_loss, "val_acc": val_acc,
                      "lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds, "images_per_s": stats.images_per_s, **own}
            state.history.append(record)
            state.epoch = epoch
            if is_best and self.writes:
                self.save(self.folder / "best.pt", last=False)
            later = self.end_epoch(epoch, is_best)
            if self.writes:
                self.save(self.folder / "last.pt")
                self.write_records()
            eta = (config.epochs - epoch + epochs_after) * seconds
            self.reporter.emit(EVENT_EPOCH, **self.event_fields, epochs=config.epochs, best=is_best, eta_s=round(eta, 1), **record)
            for event, fields in later:
                self.reporter.emit(event, **fields)
            check_stop_everywhere(0)  # a stop asked for during the evaluation: the epoch is saved


class SupervisedLoop(EpochLoop):
    """Plain training on labeled images (also distillation, and one rank of a torchrun group): ``net`` trains (the
    DDP-wrapped model under torchrun), ``model`` is evaluated and saved. With ``config.ema`` an exponential moving
    average of the weights (and BatchNorm statistics) is updated after every step; it is the model evaluated and
    kept in ``best.pt``, and each epoch's record also has the trained weights' own ``val_acc_raw``."""

    def __init__(self, folder: Path, model: nn.Module, config: TrainConfig, reporter: Reporter, train_xy, val_xy,
                 extra: dict | None = None, teacher: torch.Tensor | None = None, epochs_before: int = 0):
        world = distributed.world()
        # the schedule counts the batches of one process, at least as many as any group takes, so a run resumed on
        # another number of processes never steps past its end
        optimizer, scheduler = build_optimizer(config, model, math.ceil(len(train_xy[1]) / config.batch_size))
        super().__init__(folder, model, optimizer, scheduler, config, reporter, extra, writes=world.is_main)
        self.train_xy, self.val_xy, self.teacher, self.epochs_before = train_xy, val_xy, teacher, epochs_before
        self.batch_reporter = reporter if world.is_main else None
        self.net = model  # what trains: wrapped by :meth:`distribute` under torchrun
        self.ema = None
        if config.ema > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)

    def kept_model(self) -> nn.Module:
        return self.model if self.ema is None else self.ema.module

    def checkpoint_fields(self) -> dict:
        return {} if self.ema is None else {"ema": self.ema.state_dict()}

    def restore(self, checkpoint: dict) -> dict:
        super().restore(checkpoint)
        if self.ema is not None:
            if "ema" not in checkpoint:
                raise ValueError(f"{self.folder / 'last.pt'}: has no moving average of the weights, but the run's config.json asks for --ema "
                                 f"{self.config.ema}")
            self.ema.load_state_dict(checkpoint["ema"])
        return checkpoint

    def distribute(self, device: torch.device) -> None:
        """Wrap the model for DDP (after restoring: DDP sends rank 0's weights to the others)."""
        self.net = distributed.wrap(self.model, device)

    def train_epoch(self, epoch: int) -> tuple[EpochStats, dict]:
        x, y = self.train_xy
        after_step = None if self.ema is None else (lambda: self.ema.update_parameters(self.model))
        stats = train_one_epoch(self.net, self.optimizer, self.scheduler, x, y, self.config, epoch, self.batch_reporter,
                                epochs_before=self.epochs_before, teacher=self.teacher, after_step=after_step)
        if self.ema is None:
            return stats, {}
        raw_loss, raw_acc = evaluate_loss_acc(self.model, *self.val_xy, bf16=self.config.bf16)
        return stats, {"val_loss_raw": raw_loss, "val_acc_raw": raw_acc}

    def evaluate(self) -> tuple[float, float]:
        return evaluate_loss_acc(self.kept_model(), *self.val_xy, bf16=self.config.bf16)


# ----------------------------------------------------------------------------------------------------
# a whole run


@dataclass
class TrainResult:
    run_dir: Path
    best_val_acc: float
    best_epoch: int
    history: list[dict]
    onnx_path: Path | None
    interrupted: bool = False


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


def _new_model(config: TrainConfig, device: torch.device) -> nn.Module:
    torch.manual_seed(config.weights_seed)  # the initial weights
    model = create_model(config.model, **config.model_kwargs).to(device)
    return model.to(memory_format=torch.channels_last) if config.channels_last else model


def _prepare_loop(run: Run) -> SupervisedLoop:
    """The run's loop, restored from ``last.pt`` when it resumes or started from its parent's weights; its folder
    written. Under torchrun rank 0 reads and writes the folder and sends the others what they need of it."""
    config, run_dir, splits, device, reporter, resume = run.config, run.run_dir, run.splits, run.device, run.reporter, run.resume
    world = distributed.world()
    train_x, train_y = as_tensors(splits.train, device)
    model = _new_model(config, device)
    parent_record = None  # the runs this one starts from, as they were when it started
    if config.init_from and not resume:  # rank 0 loads the weights; DDP sends them to the others
        parent_record = distributed.from_rank0(lambda: start_from_parent(config, model, train_x))
    checkpoint = distributed.from_rank0(lambda: load_resume_checkpoint(run_dir)) if resume else None
    if checkpoint is not None:
        parent_record = checkpoint.get("initialized_from")
    distributed.from_rank0(lambda: open_run_dir(run_dir, config, resume))
    teacher = None
    if config.distill_from:  # run once, by rank 0
        log_probs = distributed.from_rank0(lambda: teacher_log_probs(config, splits.train.images, splits.train.labels, run_dir, reporter))
        teacher = torch.from_numpy(log_probs).to(device)
    trained_on = {"world_size": world.size, "devices": distributed.gather_devices(device), **({"backend": world.backend} if world.backend else {})}
    extra = {"training": trained_on, **({"initialized_from": parent_record} if parent_record else {})}
    loop = SupervisedLoop(run_dir, model, config, reporter, (train_x, train_y), as_tensors(splits.val, device), extra, teacher,
                          epochs_before=(parent_record or {}).get("epochs") or 0)  # a fine-tuning run draws on after its parents' epochs
    if checkpoint is not None:
        loop.restore(checkpoint)
    loop.distribute(device)
    return loop


def train(config: TrainConfig, run_dir: str | Path | None = None, reporter: Reporter | None = None,
          resume: bool = False, export: bool = True) -> TrainResult:
    """Train ``config.model``; with ``resume``, continue the run in ``run_dir`` from its ``last.pt``.

    Under torchrun every rank calls this with the same arguments and they train one model together
    (:mod:`fer_train.distributed`); rank 0 alone reads and writes the run folder, reports and exports, and sends
    the others what they need of it (a resumed checkpoint, a teacher's predictions)."""
    run = begin_run(config, run_dir, reporter, resume)
    loop = _prepare_loop(run)
    state = loop.state
    run.announce(parameters=count_parameters(loop.model), start_epoch=state.epoch + 1, train_size=len(loop.train_xy[1]),
                 val_size=len(loop.val_xy[1]), **loop.extra["training"])
    stop = run.train_until_stopped(loop.run)
    run.plot_curves(state.history, run.run_dir)
    if stop is not None:
        run.interrupted(stop, epoch=state.epoch)
        return TrainResult(run.run_dir, state.best_acc, state.best_epoch, state.history, None, interrupted=True)
    # rank 0 exports while the others wait for it: the ranks leave together, and an export that fails stops them all
    onnx_path = distributed.from_rank0(lambda: _export(run, loop)) if export else None
    run.done(best_val_acc=state.best_acc, best_epoch=state.best_epoch, onnx_path=onnx_path)
    return TrainResult(run.run_dir, state.best_acc, state.best_epoch, state.history, onnx_path)


def _export(run: Run, loop: SupervisedLoop) -> Path:
    history = loop.state.history
    return run.export(loop.folder, training={"epochs": loop.state.epoch, "wall_seconds": round(sum(h["seconds"] for h in history), 1),
                                             "hardware": describe_hardware(run.device), **loop.extra["training"]})
