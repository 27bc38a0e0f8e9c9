"""Progress for people (a rich progress bar and one line per epoch) and for programs (JSON lines).

The JSON stream is the TUI's view of a training job: one object per line on stdout, each with an
``event`` key: ``start``, ``batch``, ``epoch``, ``message``, ``exported``, ``done``, ``interrupted``,
``error`` (and ``round`` for semi-supervised runs).

A semi-supervised run (``--semi``) sends one ``start``, then per arm (``baseline``, ``self-training``,
``per-class``, ``fixmatch``) an ``arm`` event and its ``batch`` and ``epoch`` events (the ``epoch`` events carry ``arm`` and
``round``); at the end of every round of an arm other than the baseline, a ``round`` event::

    {"event": "round", "arm": "self-training", "round": 2, "rounds": 4, "epoch": 4, "val_acc": 0.41,
     "threshold": 0.45, "thresholds_per_class": {"Angry": 0.45, ...}, "unlabeled": 12920, "admitted": 5321,
     "admitted_per_class": {"Angry": 402, ...}, "pseudo_precision": 0.71,
     "pseudo_precision_per_class": {"Angry": 0.55, "Disgust": null, ...}, "kept": 4100, "new": 1221,
     "dropped": 380, "used_in_round": 3, "trained_on": {"labeled": 12917, "pseudo": 4480}, ...}

``admitted`` is the selection made with the model at the end of that round (used in round
``used_in_round``; null after the last); the precision is graded afterwards with the hidden labels and is
never used in training (null for a class with nothing admitted). ``done`` adds ``final_val_acc`` per arm.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fer_runtime.contract import (
    EVENT_ARM,
    EVENT_BATCH,
    EVENT_DONE,
    EVENT_EPOCH,
    EVENT_ERROR,
    EVENT_EXPORTED,
    EVENT_INTERRUPTED,
    EVENT_KEY,
    EVENT_MESSAGE,
    EVENT_ROUND,
    EVENT_START,
    EVENT_TIME,
)

MODES = ("auto", "rich", "plain", "json")


class Reporter:
    """Writes training events in one of three modes: ``rich`` (stderr, bars), ``plain``, ``json`` (stdout)."""

    def __init__(self, mode: str = "auto", stream: IO[str] | None = None, batch_interval: float = 0.5):
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {', '.join(MODES)}")
        if mode == "auto":
            mode = "rich" if sys.stderr.isatty() else "plain"
        self.mode = mode
        self.stream = stream or (sys.stdout if mode == "json" else sys.stderr)
        self.console = Console(file=self.stream, highlight=False, soft_wrap=True)
        self.batch_interval = batch_interval
        self._last_batch = 0.0
        self._progress: Progress | None = None
        self._task = None

    # -- events ------------------------------------------------------------------------------------

    def emit(self, event: str, **fields) -> None:
        if self.mode == "json":
            self.stream.write(json.dumps({EVENT_KEY: event, EVENT_TIME: round(time.time(), 3), **fields}) + "\n")
            self.stream.flush()
            return
        # the descriptions use markup; values from outside (run folders, arm names) are shown as they are
        text = _describe(event, {k: escape(v) if isinstance(v, str) else v for k, v in fields.items()})
        if text is not None:
            (self._progress.console if self._progress else self.console).print(text)

    def batch(self, *, epoch: int, epochs: int, step: int, steps: int, loss: float, acc: float, images_per_s: float, label: str = "epoch") -> None:
        if self.mode == "rich":
            if self._progress is None:
                self._progress = Progress(
                    TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.3f} {task.fields[ips]:.0f} img/s"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True,
                )
                self._progress.start()
            description = f"{label} {epoch}/{epochs}"
            if self._task is None:
                self._task = self._progress.add_task(description, total=steps, loss=loss, acc=acc, ips=images_per_s)
            self._progress.update(self._task, description=description, completed=step, total=steps, loss=loss, acc=acc, ips=images_per_s)
            return
        now = time.monotonic()
        if step < steps and now - self._last_batch < self.batch_interval:
            return
        self._last_batch = now
        if self.mode == "json":
            self.emit(EVENT_BATCH, epoch=epoch, epochs=epochs, step=step, steps=steps, loss=round(loss, 5), acc=round(acc, 5), images_per_s=round(images_per_s, 1))

    def end_epoch_bar(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None


def _describe(event: str, f: dict) -> str | None:
    if event == EVENT_START:
        return (f"[bold]{f['model']}[/] on {f['train_size']:,} training / {f['val_size']:,} validation images, "
                f"{f['device']}, epochs {f['start_epoch']}–{f['epochs']} → {f['run_dir']}")
    if event == EVENT_EPOCH:
        best = " [green]best[/]" if f.get("best") else ""
        return (f"{f['arm'] + ' ' if f.get('arm') else ''}epoch {f['epoch']:>3}/{f['epochs']}  train loss {f['train_loss']:.4f} acc {f['train_acc']:.4f}  "
                f"val loss {f['val_loss']:.4f} acc {f['val_acc']:.4f}  {f['seconds']:.0f}s ({f['images_per_s']:.0f} img/s){best}")
    if event == EVENT_ARM:
        return (f"[bold]{f['arm']}[/] (arm {f['index']} of {f['arms']}): epochs {f['start_epoch']}–{f['epochs']} on {f['labeled']:,} labeled "
                f"and {f['unlabeled']:,} unlabeled images → {f['run_dir']}")
    if event == EVENT_ROUND:
        precision = "–" if f["pseudo_precision"] is None else f"{f['pseudo_precision']:.3f}"
        use = f"for round {f['used_in_round']}" if f.get("used_in_round") else "(not trained on)"
        per_class = "  ".join(f"{name} {n:,}" + ("" if p is None else f" ({p:.2f})")
                              for (name, n), p in zip(f["admitted_per_class"].items(), f["pseudo_precision_per_class"].values()))
        return (f"{f['arm']} round {f['round']}/{f['rounds']}: val acc {f['val_acc']:.4f}; admitted {f['admitted']:,} of {f['unlabeled']:,} "
                f"unlabeled {use} (kept {f['kept']:,}, new {f['new']:,}, dropped {f['dropped']:,}); pseudo-label precision {precision}\n"
                f"    per class (precision): {per_class}")
    if event in (EVENT_MESSAGE, EVENT_ERROR):
        return f"[red]error:[/] {f['message']}" if event == EVENT_ERROR else f["text"]
    if event == EVENT_EXPORTED:
        return f"exported {f['path']} (onnxruntime matches torch: max |Δlogit| = {f['max_abs_diff']:.2e})"
    if event == EVENT_DONE:
        return f"[bold green]done[/] best val acc {f['best_val_acc']:.4f} at epoch {f['best_epoch']} in {f['seconds']:.0f}s → {f['run_dir']}"
    if event == EVENT_INTERRUPTED:
        return f"[yellow]interrupted[/] after epoch {f['epoch']}; continue with: fer-train --resume {f['run_dir']}"
    return None
