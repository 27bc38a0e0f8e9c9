"""What every training run does around its epochs, written once for plain training (:func:`fer_train.train.train`)
and semi-supervised runs (:func:`fer_train.semi.train_semi`).

:func:`begin_run` sets a run up: the device, the reporter (rank 0 speaks for a torchrun group), the config with its
``world_size``, the run folder (a resumed one checked), the data (with the rows it skipped). The :class:`Run` it
returns then sends the ``start`` event (:meth:`Run.announce`), trains until done or stopped
(:meth:`Run.train_until_stopped`), draws the curves, exports, and ends with the ``interrupted`` or ``done`` event.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from fer_runtime.contract import EVENT_DONE, EVENT_INTERRUPTED, EVENT_MESSAGE, EVENT_START
from fer_runtime.splits import Splits

from . import distributed
from .config import TrainConfig
from .data import load_splits
from .devices import bf16_supported, describe_devices, run_device
from .progress import Reporter
from .run_folder import new_run_dir, read_config
from .stops import Stop, run_until_stopped


@dataclass
class Run:
    """One process's part of a training run: what :func:`begin_run` set up, and when its training started."""

    config: TrainConfig
    run_dir: Path
    device: torch.device
    reporter: Reporter
    splits: Splits
    resume: bool  # continues the run in run_dir
    started: float = 0.0  # time.perf_counter() when the training began (:meth:`train_until_stopped`)

    def announce(self, *, parameters: int, start_epoch: int, train_size: int, val_size: int, **more) -> None:
        """The run's ``start`` event; ``more``: the fields of its mode."""
        config = self.config
        self.reporter.emit(EVENT_START, run_dir=str(self.run_dir), model=config.model, parameters=parameters, epochs=config.epochs,
                           start_epoch=start_epoch, steps_per_epoch=distributed.epoch_steps(train_size, config.batch_size),
                           train_size=train_size, val_size=val_size, device=describe_devices(self.device), config=config.to_dict(), **more)

    def train_until_stopped(self, train: Callable[[], None]) -> Stop | None:
        """``train()`` until it ends or a signal stops it (:func:`fer_train.stops.run_until_stopped`); the progress bar closed."""
        self.started = time.perf_counter()
        stop = run_until_stopped(train)
        self.reporter.close()
        return stop

    def plot_curves(self, history: list[dict], folder: Path, arm: str | None = None) -> None:
        """``folder/curves.png``: the epochs of ``history`` (of the arm ``arm`` of a semi-supervised run), by rank 0."""
        if not history or not distributed.world().is_main:
            return
        from .plots import plot_curves

        label = arm or self.config.model
        title = f"{self.config.model}{' ' + arm if arm else ''}: {self.run_dir.name}"
        plot_curves({label: history}, folder / "curves.png", title=title)

    def export(self, folder: Path, **metadata) -> Path:
        """Export the run (or arm) in ``folder`` (:func:`fer_train.export.export_run`), ``metadata`` added to the model's."""
        from .export import export_run

        config = self.config
        return export_run(folder, splits=self.splits, reporter=self.reporter, export_name=config.export_name,
                          export_dir=config.export_dir, extra_metadata=metadata)

    def interrupted(self, stop: Stop, *, epoch: int, **where) -> None:
        """The ``interrupted`` event: the last epoch saved (``where``: of which arm)."""
        self.reporter.emit(EVENT_INTERRUPTED, run_dir=str(self.run_dir), epoch=epoch, **where)
        if stop.agreed:
            distributed.barrier()  # torchrun stops the group when one rank exits: none leaves before rank 0 has written

    def done(self, *, best_val_acc: float, best_epoch: int, onnx_path: Path | None, **more) -> None:
        """The ``done`` event; ``more``: the fields of its mode."""
        self.reporter.emit(EVENT_DONE, run_dir=str(self.run_dir), best_val_acc=best_val_acc, best_epoch=best_epoch,
                           seconds=time.perf_counter() - self.started, onnx=str(onnx_path) if onnx_path else None, **more)


def begin_run(config: TrainConfig, run_dir: str | Path | None, reporter: Reporter | None, resume: bool,
              new_folder: Callable[[TrainConfig], Path] = new_run_dir) -> Run:
    """Set a run up: check the batch divides among the ranks, pick the device, say how the run trains, record the
    number of processes in the config, name the folder (``new_folder(config)`` for a new run without one; a resumed
    one must hold a readable ``config.json``) and load the data, saying which rows were skipped. Under torchrun rank
    0 alone reads the run folder and names a new one, and sends the others what they need of it."""
    world = distributed.world()
    distributed.check_global_batch(config.batch_size)
    reporter = distributed.rank_reporter(reporter or Reporter("auto"))
    device = run_device(config.device, config.threads)
    _say_how_it_runs(config, device, resume, reporter)
    config = dataclasses.replace(config, world_size=world.size)
    run_dir = Path(run_dir) if run_dir is not None else distributed.from_rank0(lambda: new_folder(config))
    if resume:
        distributed.from_rank0(lambda: read_config(run_dir))  # a run folder, with a readable config: said before the data loads
    splits = load_splits(config)  # every rank reads the data (on every machine)
    if splits.source.skipped:
        reporter.emit(EVENT_MESSAGE, text=f"skipped {len(splits.source.skipped)} bad rows: " + "; ".join(map(str, splits.source.skipped[:10])))
    return Run(config, run_dir, device, reporter, splits, resume)


def _say_how_it_runs(config: TrainConfig, device: torch.device, resume: bool, reporter: Reporter) -> None:
    world = distributed.world()
    if config.bf16 and not bf16_supported(device):
        reporter.emit(EVENT_MESSAGE, text="bf16 is not supported on this device; training in float32")
    if resume and config.world_size != world.size:
        reporter.emit(EVENT_MESSAGE, text=f"this run trained on {config.world_size} process(es) so far and continues on {world.size}: "
                                          "the same batches, but the augmentation and dropout of ranks other than 0 are drawn differently")
