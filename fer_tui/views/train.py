"""Train: start a fer-train job in the background, follow its progress and curves, cancel it.

A thread worker supervises the process and posts each JSON event as a :class:`JobEvent`; the UI stays
usable throughout. When the job exports its model, :class:`~fer_tui.messages.ModelExported` tells the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label, ProgressBar, RichLog, Select

from fer_runtime.contract import EVENT_ERROR, EVENT_KEY, EVENT_MESSAGE

from ..charts import chart_text
from ..messages import ModelExported
from ..state import Context
from ..training import (DEFAULT_EPOCHS, DEFAULT_OPTIMIZER, DEFAULT_THRESHOLD, MODEL_CHOICES, OPTIMIZER_CHOICES, JobState, TrainingProcess, TrainRequest,
                        format_seconds, parse_event)
from .base import View
from .readout import Readout

CURVE_COLORS = ("cyan", "magenta")
KILL_AFTER_S = 15.0  # after SIGTERM, how long a job may take to save and exit before it is killed


@dataclass
class JobEvent(Message):
    event: dict


@dataclass
class JobEnded(Message):
    returncode: int
    stderr_tail: str
    cancelled: bool


class CurveChart(Widget):
    """Training curves (train and validation) of one quantity, drawn to fit the widget."""

    def __init__(self, title: str, *, id: str | None = None):
        super().__init__(id=id)
        self.title = title
        self.series: list[list[tuple[float, float]]] = [[], []]
        self.names = ("train", "val")
        self.y_range: tuple[float, float] | None = None
        self.x_range: tuple[float, float] | None = None

    def plot(self, train: list[tuple[float, float]], val: list[tuple[float, float]], epochs: int,
             y_range: tuple[float, float] | None = None) -> None:
        self.series = [train, val]
        self.x_range = (0.0, float(max(epochs, 1)))
        self.y_range = y_range
        self.refresh()

    def render(self) -> Text:
        size = self.content_size
        if not any(self.series):
            return Text(f"{self.title}: no epochs yet", style="dim")
        return chart_text(self.series, self.names, CURVE_COLORS, size.width, size.height, self.title,
                          x_range=self.x_range, y_range=self.y_range)


def _optional_int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text else None


class TrainView(View):
    view_id = "train"
    title = "Train"
    key = "t"
    summary = "train a model in the background (fer-train), with live progress, curves and ETA; cancel it"
    keys_help = (("tab / shift+tab", "move through the form"),
                 ("ctrl+r", "start the job (or the Start button)"),
                 ("ctrl+t", "cancel the job: SIGTERM, it saves its last epoch and stops"))

    BINDINGS = [
        Binding("ctrl+r", "start", "Start job"),
        Binding("ctrl+t", "cancel", "Cancel job"),
    ]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.job = JobState()
        self.process: TrainingProcess | None = None
        self.request: TrainRequest | None = None
        # While the tab is hidden, events only update the job's state and queue log lines: redrawing hidden
        # widgets (the log and the progress bar ask for a new layout) would cost the visible view its speed.
        self._pending_log: list[tuple[str, str | None]] = []

    def compose(self) -> ComposeResult:
        # Two rows of two groups each; in a narrow terminal the groups stack (app.tcss), four rows of fields.
        with Horizontal(classes="train-form"):
            with Horizontal():
                yield Label("model")
                yield Select([(m, m) for m in MODEL_CHOICES], value=MODEL_CHOICES[0], allow_blank=False, id="train-model")
                yield Label("epochs")
                yield Input(str(DEFAULT_EPOCHS), type="integer", id="train-epochs")
                yield Label("optimizer")
                yield Select([(o, o) for o in OPTIMIZER_CHOICES], value=DEFAULT_OPTIMIZER, allow_blank=False, id="train-optimizer")
            with Horizontal():
                yield Checkbox("semi-supervised", id="train-semi")
                yield Label("threshold")
                yield Input(f"{DEFAULT_THRESHOLD}", type="number", id="train-threshold")
        with Horizontal(classes="train-form"):
            with Horizontal():
                yield Label("limit train")
                yield Input(placeholder="all", type="integer", id="train-limit-train")
                yield Label("limit val")
                yield Input(placeholder="all", type="integer", id="train-limit-val")
            with Horizontal():
                yield Label("export as")
                yield Input(f"{MODEL_CHOICES[0]}-tui", id="train-export")
                yield Button("Start", variant="primary", id="train-start")
                yield Button("Cancel", variant="error", id="train-cancel", disabled=True)
        yield Readout(id="train-status")
        yield ProgressBar(total=1000, show_eta=False, id="train-progress")
        with Horizontal(id="train-charts"):
            yield CurveChart("loss", id="train-loss")
            yield CurveChart("accuracy", id="train-acc")
        yield RichLog(id="train-log", wrap=True, markup=False, max_lines=500)

    def on_mount(self) -> None:
        self._show_status()

    def update_context(self, new: Context, old: Context) -> None:
        super().update_context(new, old)
        if new.dataset is not old.dataset and not self.job.running:
            self._show_status()

    # -- the form ----------------------------------------------------------------------------------

    def read_form(self) -> TrainRequest | str:
        """The request the form describes, or what is wrong with it."""
        try:
            epochs = int(self.query_one("#train-epochs", Input).value or "0")
            threshold = float(self.query_one("#train-threshold", Input).value or DEFAULT_THRESHOLD)
            limit_train = _optional_int(self.query_one("#train-limit-train", Input).value)
            limit_val = _optional_int(self.query_one("#train-limit-val", Input).value)
        except ValueError as exc:
            return f"the form has a value that is not a number ({exc})"
        settings = self.context.settings
        request = TrainRequest(
            model=str(self.query_one("#train-model", Select).value), epochs=epochs,
            optimizer=str(self.query_one("#train-optimizer", Select).value), semi=self.query_one("#train-semi", Checkbox).value,
            threshold=threshold, export_name=self.query_one("#train-export", Input).value.strip() or None,
            export_dir=str(settings.export_dir), runs_root=str(settings.runs_root), limit_train=limit_train,
            limit_val=limit_val, threads=settings.train_threads)
        problems = request.validate()
        if request.export_name and any(c in request.export_name for c in "/\\"):
            problems.append("the export name is a file name, without folders")
        return "; ".join(problems) if problems else request

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        # fer-train --semi trains rounds × epochs-per-round epochs per arm and refuses --epochs
        self.query_one("#train-epochs", Input).disabled = event.value

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.select.id == "train-model":
            export = self.query_one("#train-export", Input)
            if export.value.endswith("-tui") or not export.value:
                export.value = f"{event.value}-tui"

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "train-start":
            self.action_start()
        elif event.button.id == "train-cancel":
            self.action_cancel()

    # -- the job -----------------------------------------------------------------------------------

    def action_start(self) -> None:
        if self.job.running or (self.process is not None and self.process.poll() is None):
            self.app.notify("a training job is already running; cancel it first (ctrl+t)", severity="warning")
            return
        if self.context.dataset is None:
            self.app.notify("the data is still loading", severity="warning")
            return
        request = self.read_form()
        if isinstance(request, str):
            self.app.notify(request, title="cannot start training", severity="error")
            return
        self.request = request
        self.job = JobState(status="running", model=request.model, epochs=request.epochs)
        self.query_one(RichLog).clear()
        self._pending_log.clear()
        self._set_running(True)
        budget = "rounds × epochs per round (fer-train's defaults)" if request.semi else f"{request.epochs} epochs"
        self._log(f"starting {request.model} for {budget} on {self.context.dataset.describe()}")
        self._redraw()
        self.query_one(RichLog).focus()  # out of the form, so the app's letter keys work while it trains
        self.run_job(request, self.context.dataset)

    @work(thread=True, exclusive=True, group="train")
    def run_job(self, request: TrainRequest, dataset) -> None:
        try:
            request.data = str(dataset.training_data())
            process = TrainingProcess(request.argv())
            self.process = process
            process.start()
        except OSError as exc:
            self.post_message(JobEnded(-1, f"cannot start fer-train: {exc}", False))
            return
        if process.cancel_requested:  # cancelled while starting
            process.terminate()
        for line in process.lines():
            event = parse_event(line)
            if event is None and line.strip():
                event = {EVENT_KEY: EVENT_MESSAGE, "text": line.strip()}
            if event is not None:
                self.post_message(JobEvent(event))
        returncode = process.wait()
        self.post_message(JobEnded(returncode, process.stderr_tail(), process.cancel_requested))
        process.close()

    def on_job_event(self, message: JobEvent) -> None:
        message.stop()
        line = self.job.apply(message.event)
        if line:
            self._log(line, "red" if message.event.get(EVENT_KEY) == EVENT_ERROR else None)
        self._redraw()

    def _redraw(self) -> None:
        self.redraw_when_visible()

    def redraw(self) -> None:
        log = self.query_one(RichLog)
        for line, style in self._pending_log:
            log.write(Text(line, style=style or ""))
        self._pending_log.clear()
        self._show_status()
        self._plot()

    def on_job_ended(self, message: JobEnded) -> None:
        message.stop()
        line = self.job.finish(message.returncode, message.stderr_tail, message.cancelled)
        if line:
            self._log(line, "red" if self.job.status == "failed" else None)
        self._set_running(False)
        self._redraw()
        if self.job.status == "done" and self.job.exported:
            self.post_message(ModelExported(Path(self.job.exported)))
            self.app.notify(f"{Path(self.job.exported).name} is ready in Models (m)", title="training done")
        elif self.job.status == "failed":
            self.app.notify(self.job.error or "the training job failed", title="training failed", severity="error", timeout=10)

    def action_cancel(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        self._log("cancelling: SIGTERM sent; the job stops after the batch in progress")
        self._redraw()
        self.query_one("#train-cancel", Button).disabled = True
        process = self.process
        self.set_timer(KILL_AFTER_S, lambda: process.kill())

    def on_unmount(self) -> None:
        """Never leave a job running behind a closed app."""
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except Exception:
                process.kill()

    # -- drawing -----------------------------------------------------------------------------------

    def _set_running(self, running: bool) -> None:
        self.query_one("#train-start", Button).disabled = running
        self.query_one("#train-cancel", Button).disabled = not running

    def _log(self, line: str, style: str | None = None) -> None:
        self._pending_log.append((line, style))

    def _show_status(self) -> None:
        job = self.job
        status = Text(no_wrap=True, overflow="ellipsis")
        colours = {"running": "bold cyan", "done": "bold green", "failed": "bold red", "cancelled": "bold yellow", "idle": "dim"}
        status.append(job.status, colours.get(job.status, ""))
        if job.status == "idle":
            dataset = self.context.dataset
            where = dataset.describe() if dataset is not None else "…"
            status.append(f"  data: {where}  ·  threads: {self.context.settings.train_threads}  ·  "
                          f"exports to {self.context.settings.export_dir}/", "dim")
        else:
            if job.arm:
                status.append(f"  {job.arm} ({job.arm_index}/{job.arms})")
            if job.epochs:
                status.append(f"  {job.model} epoch {min(job.epoch, job.epochs)}/{job.epochs}")
            if job.steps and job.running:
                status.append(f"  step {job.step}/{job.steps}")
            if job.loss is not None:
                status.append(f"  loss {job.loss:.3f}  acc {job.acc:.3f}")
            if job.history:
                status.append(f"  val acc {job.history[-1]['val_acc']:.3f}")
            if job.images_per_s and job.running:
                status.append(f"  {job.images_per_s:.0f} img/s", "dim")
            if job.running:
                status.append(f"  ETA {format_seconds(job.eta_s)}", "bold")
            if job.status == "failed" and job.error:
                status.append(f"  {job.error}", "red")
            if job.status == "done" and job.exported:
                status.append(f"  → {job.exported}", "green")
        self.query_one("#train-status", Readout).update(status)
        self.query_one(ProgressBar).update(progress=round(job.progress * 1000))

    def _plot(self) -> None:
        job = self.job
        epochs = job.epochs or 1
        train_loss = [(x, loss) for x, loss, _ in job.batches]
        train_acc = [(x, acc) for x, _, acc in job.batches]
        val_loss = [(float(h["epoch"]), h["val_loss"]) for h in job.history]
        val_acc = [(float(h["epoch"]), h["val_acc"]) for h in job.history]
        self.query_one("#train-loss", CurveChart).plot(train_loss, val_loss, epochs)
        self.query_one("#train-acc", CurveChart).plot(train_acc, val_acc, epochs, y_range=(0.0, 1.0))

    def focus_main(self) -> None:
        self.query_one("#train-model", Select).focus()
