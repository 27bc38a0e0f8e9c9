"""A training job: a ``fer-train`` process and the state read from its JSON progress stream.

The process is ``[sys.executable, "-m", "fer_train.cli", ..., "--progress", "json"]`` so it works without
the console script on PATH; torch is imported there, never in the UI. :class:`JobState` folds the events
(``start``, ``batch``, ``epoch``, ``round``, ``message``, ``exported``, ``done``, ``interrupted``,
``error``) into what the Train view shows. No textual, no torch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from fer_runtime.contract import (EVENT_ARM, EVENT_BATCH, EVENT_DONE, EVENT_EPOCH, EVENT_ERROR, EVENT_EXPORTED, EVENT_INTERRUPTED, EVENT_KEY,
                                  EVENT_MESSAGE, EVENT_ROUND, EVENT_START, EVENT_TIME)
from fer_runtime.contract import MODEL_NAMES as MODEL_CHOICES
from fer_runtime.recipes import DEFAULTS, MAX_EPOCHS, OPTIMIZERS, SEMI_THRESHOLD, threshold_problem

# the form starts from what `fer-train` runs without flags, and accepts what it accepts (fer_runtime.recipes)
OPTIMIZER_CHOICES = OPTIMIZERS
DEFAULT_EPOCHS = DEFAULTS["epochs"]
DEFAULT_OPTIMIZER = DEFAULTS["optimizer"]
DEFAULT_THRESHOLD = SEMI_THRESHOLD


@dataclass
class TrainRequest:
    """What the Train form asks for; :meth:`argv` turns it into the fer-train command line."""

    model: str = "cnn"
    epochs: int = DEFAULT_EPOCHS
    optimizer: str = DEFAULT_OPTIMIZER
    semi: bool = False
    threshold: float = DEFAULT_THRESHOLD
    data: str | None = None
    export_name: str | None = None
    export_dir: str = "exported"
    runs_root: str = "runs"
    limit_train: int | None = None
    limit_val: int | None = None
    threads: int | None = None

    def validate(self) -> list[str]:
        problems = []
        if self.model not in MODEL_CHOICES:
            problems.append(f"model must be one of {', '.join(MODEL_CHOICES)}")
        if self.optimizer not in OPTIMIZER_CHOICES:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZER_CHOICES)}")
        if not 1 <= self.epochs <= MAX_EPOCHS:
            problems.append(f"epochs must be a whole number from 1 to {MAX_EPOCHS}")
        if self.semi and threshold_problem(self.threshold, "the semi-supervised threshold"):
            problems.append(threshold_problem(self.threshold, "the semi-supervised threshold"))
        for name in ("limit_train", "limit_val", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name.replace('_', ' ')} must be at least 1 when given")
        return problems

    def argv(self, python: str | None = None) -> list[str]:
        """The command line; a semi-supervised run gets no --epochs (its budget is fer-train's rounds × epochs per round)."""
        cmd = [python or sys.executable, "-m", "fer_train.cli", "--model", self.model, "--optimizer", self.optimizer,
               "--progress", "json", "--export-dir", self.export_dir, "--runs-root", self.runs_root]
        if not self.semi:
            cmd += ["--epochs", str(self.epochs)]
        if self.export_name:
            cmd += ["--export", self.export_name]
        if self.data:
            cmd += ["--data", str(self.data)]
        if self.semi:
            cmd += ["--semi", "--threshold", f"{self.threshold:g}"]
        if self.limit_train:
            cmd += ["--limit-train", str(self.limit_train)]
        if self.limit_val:
            cmd += ["--limit-val", str(self.limit_val)]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        return cmd


def parse_event(line: str) -> dict | None:
    """One JSON progress line as a dict with an ``event`` key; None for anything else (stray output)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get(EVENT_KEY), str) else None


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class JobState:
    """Everything the Train view shows about one job, updated event by event."""

    status: str = "idle"  # idle, running, done, failed, cancelled
    model: str = ""
    epochs: int = 0
    epoch: int = 0  # the epoch in progress (or last finished)
    step: int = 0
    steps: int = 0
    loss: float | None = None
    acc: float | None = None
    images_per_s: float | None = None
    eta_s: float | None = None
    run_dir: str | None = None
    train_size: int | None = None
    val_size: int | None = None
    history: list[dict] = field(default_factory=list)  # the epoch events
    batches: list[tuple[float, float, float]] = field(default_factory=list)  # (fractional epoch, running loss, acc)
    rounds: list[dict] = field(default_factory=list)
    arm: str | None = None  # semi-supervised runs train several arms in turn, each with its own epochs
    arm_index: int = 1
    arms: int = 1
    best_val_acc: float | None = None
    best_epoch: int | None = None
    exported: str | None = None  # the exported model (the done event's onnx)
    error: str | None = None
    _epoch_started: float | None = None  # event time when the epoch in progress began
    _last_epoch_end: float | None = None

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def progress(self) -> float:
        """0..1 over the whole job."""
        if not self.epochs:
            return 0.0
        if self.status == "done":
            return 1.0
        done_epochs = len(self.history)
        inside = self.step / self.steps if self.steps and self.epoch > done_epochs else 0.0
        within_arm = min(1.0, (done_epochs + inside) / self.epochs)
        return (self.arm_index - 1 + within_arm) / max(self.arms, 1)

    def apply(self, event: dict) -> str | None:
        """Fold in one event; returns a line for the job's log, or None for events not worth a line."""
        kind = event.get(EVENT_KEY)
        handler = self._HANDLERS.get(kind)
        if handler is None:
            return f"{kind}: {json.dumps({k: v for k, v in event.items() if k not in ('event', 'time')})[:200]}"
        return handler(self, event, event.get(EVENT_TIME))

    def _on_start(self, event: dict, when: float | None) -> str | None:
        self.status = "running"
        self.model = str(event.get("model", ""))
        self.epochs = int(event.get("epochs", 0))
        self.epoch = int(event.get("start_epoch", 1))
        self.steps = int(event.get("steps_per_epoch", 0))
        self.run_dir = event.get("run_dir")
        self.train_size, self.val_size = event.get("train_size"), event.get("val_size")
        self._epoch_started = self._last_epoch_end = when
        return (f"started {self.model} on {self.train_size:,} training / {self.val_size:,} validation images, "
                f"{event.get('device', '?')}, epochs {self.epoch}–{self.epochs} → {self.run_dir}") if self.train_size is not None else f"started {self.model}"

    def _on_batch(self, event: dict, when: float | None) -> str | None:
        self.epoch, self.step, self.steps = int(event["epoch"]), int(event["step"]), int(event["steps"])
        self.epochs = int(event.get("epochs", self.epochs))
        self.loss, self.acc = float(event["loss"]), float(event["acc"])
        self.images_per_s = event.get("images_per_s")
        self.batches.append((self.epoch - 1 + self.step / max(self.steps, 1), self.loss, self.acc))
        self._update_eta(when)
        return None

    def _on_epoch(self, event: dict, when: float | None) -> str | None:
        self.history.append(event)
        self.epoch = int(event["epoch"])
        self.epochs = int(event.get("epochs", self.epochs))
        self.step = self.steps
        self.eta_s = event.get("eta_s")
        self._last_epoch_end = when
        best = "  best" if event.get("best") else ""
        return (f"epoch {self.epoch}/{self.epochs}  train loss {event['train_loss']:.4f} acc {event['train_acc']:.4f}  "
                f"val loss {event['val_loss']:.4f} acc {event['val_acc']:.4f}  {event.get('seconds', 0):.0f}s{best}")

    def _on_arm(self, event: dict, when: float | None) -> str | None:
        # a new arm starts its own epochs: the curves show the arm in progress
        self.arm = str(event.get("arm", ""))
        self.arm_index, self.arms = int(event.get("index", 1)), int(event.get("arms", 1))
        self.epochs = int(event.get("epochs", self.epochs))
        self.history, self.batches, self.step = [], [], 0
        self.epoch = int(event.get("start_epoch", 1))
        self._epoch_started = self._last_epoch_end = when
        return f"arm {self.arm} ({self.arm_index} of {self.arms}): epochs {self.epoch}–{self.epochs}"

    def _on_round(self, event: dict, when: float | None) -> str | None:
        self.rounds.append(event)
        details = "  ".join(f"{k} {_short(v)}" for k, v in event.items() if k not in (EVENT_KEY, EVENT_TIME))
        return f"round: {details}"

    def _on_message(self, event: dict, when: float | None) -> str | None:
        return str(event.get("text", ""))

    def _on_exported(self, event: dict, when: float | None) -> str | None:
        return f"exported {event.get('path')}"

    def _on_done(self, event: dict, when: float | None) -> str | None:
        self.status = "done"
        self.best_val_acc, self.best_epoch = event.get("best_val_acc"), event.get("best_epoch")
        self.exported = event.get("onnx")
        self.eta_s = 0.0
        acc = f"{self.best_val_acc:.4f}" if isinstance(self.best_val_acc, (int, float)) else "?"
        return f"done: best val acc {acc} at epoch {self.best_epoch}; model {self.exported or '(not exported)'}"

    def _on_interrupted(self, event: dict, when: float | None) -> str | None:
        self.status = "cancelled"
        return f"cancelled after epoch {event.get('epoch')}; continue with: fer-train --resume {event.get('run_dir')}"

    def _on_error(self, event: dict, when: float | None) -> str | None:
        self.status = "failed"
        self.error = str(event.get("message", "unknown error"))
        return f"error: {self.error}"

    def _update_eta(self, when: float | None) -> None:
        if when is None or not self.steps:
            return
        if self._last_epoch_end is not None and self.epoch > len(self.history):
            self._epoch_started = self._last_epoch_end
        if self._epoch_started is None or self.step <= 0:
            return
        per_epoch = (when - self._epoch_started) / (self.step / self.steps)
        self.eta_s = per_epoch * (self.epochs - self.epoch) + per_epoch * (1 - self.step / self.steps)

    def finish(self, returncode: int, stderr_tail: str, cancelled: bool = False) -> str | None:
        """The process ended: settle the status; returns a log line when the end needs explaining."""
        if returncode == 0 and self.status == "done":
            return None
        if self.status == "failed" and self.error is not None:  # the error event said why
            return None
        if cancelled or returncode in (130, -signal.SIGTERM, -signal.SIGINT):
            reported = self.status == "cancelled"  # the interrupted event came
            self.status = "cancelled"
            return None if reported else "cancelled before the first epoch finished"
        if returncode == 0:
            self.status = "done"
            return None
        self.status = "failed"
        tail = stderr_tail.strip()
        self.error = f"fer-train exited with code {returncode}" + (f": {tail.splitlines()[-1]}" if tail else "")
        return f"fer-train exited with code {returncode}" + (f"; the end of its output:\n{stderr_tail.rstrip()}" if tail else "")


# event name → the method that folds it in
JobState._HANDLERS = {
    EVENT_START: JobState._on_start,
    EVENT_BATCH: JobState._on_batch,
    EVENT_EPOCH: JobState._on_epoch,
    EVENT_ARM: JobState._on_arm,
    EVENT_ROUND: JobState._on_round,
    EVENT_MESSAGE: JobState._on_message,
    EVENT_EXPORTED: JobState._on_exported,
    EVENT_DONE: JobState._on_done,
    EVENT_INTERRUPTED: JobState._on_interrupted,
    EVENT_ERROR: JobState._on_error,
}


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."


class TrainingProcess:
    """A running fer-train: its stdout lines as they come, SIGTERM to cancel, the tail of its stderr.

    stderr goes to a temporary file (a pipe nobody reads could fill up and stall the job).
    """

    def __init__(self, argv: list[str], cwd: str | Path | None = None, env: dict | None = None):
        self.argv = argv
        self.cwd = cwd
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self._stderr = tempfile.TemporaryFile(mode="w+b")
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.cancel_requested = False

    def start(self) -> None:
        self._proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=self._stderr,
                                      stdin=subprocess.DEVNULL, text=True, bufsize=1, start_new_session=True)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def lines(self) -> Iterator[str]:
        assert self._proc is not None and self._proc.stdout is not None, "start() the process first"
        for line in self._proc.stdout:
            yield line

    def terminate(self) -> None:
        """Ask the job to stop (SIGTERM): fer-train finishes the batch, saves, reports and exits 130."""
        with self._lock:
            self.cancel_requested = True
            if self._proc is not None and self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def wait(self, timeout: float | None = None) -> int:
        assert self._proc is not None
        return self._proc.wait(timeout)

    def poll(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def stderr_tail(self, lines: int = 15) -> str:
        self._stderr.flush()
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - 8192))
        text = self._stderr.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()
