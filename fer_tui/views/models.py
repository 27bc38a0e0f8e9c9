"""Models: every model found, its metadata, the active one, and two models side by side."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from fer_runtime.contract import (META_ARCHITECTURE, META_CLASS_NAMES, META_CONFIG, META_EXTRA, META_FP32_TEST_ACCURACY, META_INPUT,
                                  META_METRICS, META_PARAMETERS, META_VARIANT, META_VARIANT_TEST_ACCURACY, META_VERSION, METRIC_ACCURACY,
                                  METRICS_TEST, METRICS_VAL)

from ..catalog import ModelEntry
from ..messages import ActivateModel
from ..predictions import Cancelled, Predictions
from ..state import Context
from .base import View


@dataclass
class CompareReady(Message):
    split_name: str
    first: Predictions
    second: Predictions


@dataclass
class CompareFailed(Message):
    message: str


def _percent(value: float | None) -> str:
    return f"{value:.1%}" if value is not None else "–"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def _display_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _readable(value, depth: int = 0) -> str:
    """A metadata value in words: accuracies as percentages, records as ``key value`` pairs, lists joined."""
    if isinstance(value, dict):
        if METRIC_ACCURACY in value and isinstance(value[METRIC_ACCURACY], (int, float)):
            count = value.get("count")
            return f"{value[METRIC_ACCURACY]:.1%}" + (f" on {count:,} faces" if isinstance(count, int) else "")
        parts = [f"{key} {_readable(item, depth + 1)}" for key, item in value.items() if key != "predictions"]
        return ("; " if depth == 0 else ", ").join(parts) if depth < 2 else "…"
    if isinstance(value, list):
        return ", ".join(_readable(item, depth + 1) for item in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def metadata_table(entry: ModelEntry) -> Table:
    """What the exporter and ``fer-train optimize`` recorded beyond the basics, one row a key, in words (never JSON)."""
    meta = entry.metadata
    table = Table(box=None, show_header=False, padding=(0, 1), expand=True)
    table.add_column("key", style="dim", no_wrap=True)
    table.add_column("value", overflow="fold", ratio=1)
    if META_VARIANT in meta and isinstance(meta.get(META_FP32_TEST_ACCURACY), (int, float)):
        table.add_row("variant", f"{meta[META_VARIANT]}: PublicTest {meta.get(META_VARIANT_TEST_ACCURACY, 0):.1%} against "
                                 f"{meta[META_FP32_TEST_ACCURACY]:.1%} in float32 (the accuracy gate)")
    shown = (META_CLASS_NAMES, META_ARCHITECTURE, META_PARAMETERS, META_METRICS, META_CONFIG, META_EXTRA, META_VERSION, META_INPUT,
             META_VARIANT, META_VARIANT_TEST_ACCURACY, META_FP32_TEST_ACCURACY)
    for key, value in meta.items():
        if key not in shown:
            text = _readable(value)
            table.add_row(key.replace("_", " "), text if len(text) <= 400 else text[:399] + "…")
    return table


def describe_model(entry: ModelEntry) -> Group:
    """The metadata of one model, for people: a summary, then the rest as a table."""
    text = Text()
    text.append(f"{entry.name}\n", "bold")
    text.append(f"{_display_path(entry.path)}  {_size(entry.size_bytes)}\n", "dim")
    if not entry.ok:
        text.append(f"cannot use this file: {entry.error}\n", "bold red")
        return Group(text)
    for warning in entry.warnings:
        text.append(f"⚠ {warning}\n", "yellow")
    meta = entry.metadata
    text.append(f"architecture {entry.architecture}")
    if entry.parameter_count is not None:
        text.append(f", {entry.parameter_count:,} parameters")
    text.append(f"\nclasses {', '.join(entry.class_names)}\n")
    grad = entry.gradient_path
    text.append(f"saliency: {'gradient graph ' + grad.name if grad else 'occlusion (no .grad.onnx beside it)'}\n", "dim")
    metrics = meta.get(META_METRICS) if isinstance(meta.get(META_METRICS), dict) else {}
    for split, values in metrics.items():
        if isinstance(values, dict) and METRIC_ACCURACY in values:
            text.append(f"{split} accuracy at export ")
            text.append(f"{values[METRIC_ACCURACY]:.2%}", "bold")
            text.append(f" on {values.get('count', '?'):,} faces\n" if isinstance(values.get("count"), int) else "\n")
    config = meta.get(META_CONFIG) if isinstance(meta.get(META_CONFIG), dict) else {}
    if config:
        keys = ("model", "epochs", "optimizer", "lr", "batch_size", "schedule", "augment", "seed")
        shown = ", ".join(f"{k} {config[k]}" for k in keys if k in config and config[k] is not None)
        if config.get("semi"):
            shown += f", semi-supervised (threshold {config.get('semi_threshold', '?')})"
        text.append(f"trained with {shown}\n")
    training = meta.get(META_EXTRA) if isinstance(meta.get(META_EXTRA), dict) else {}
    if training:
        parts = [f"{training['epochs']} epochs" if "epochs" in training else "",
                 f"{training['wall_seconds']:.0f} s" if isinstance(training.get("wall_seconds"), (int, float)) else "",
                 str(training.get("hardware", "")), f"best epoch {training['best_epoch']}" if training.get("best_epoch") else ""]
        text.append("training: " + ", ".join(p for p in parts if p) + "\n")
    if META_VERSION in meta:
        text.append(f"fer {meta[META_VERSION]}\n", "dim")
    return Group(text, metadata_table(entry))


def compare_table(first: Predictions, second: Predictions, first_name: str, second_name: str, split: str) -> Table:
    """Accuracy and per-class recall of two models on the same faces."""
    a, b = first.report(), second.report()
    table = Table(title=f"{first_name} vs {second_name} on {split} ({a.count:,} faces)", title_justify="left",
                  box=None, padding=(0, 2), header_style="bold")
    table.add_column("")
    table.add_column(first_name[:16], justify="right")
    table.add_column(second_name[:16], justify="right")
    table.add_column("Δ", justify="right")

    def row(label: str, x: float, y: float, bold: bool = False) -> None:
        delta = y - x
        style = "green" if delta > 0.0005 else "red" if delta < -0.0005 else "dim"
        table.add_row(Text(label, "bold" if bold else ""), f"{x:.1%}", f"{y:.1%}", Text(f"{delta:+.1%}", style))

    row("accuracy", a.accuracy, b.accuracy, bold=True)
    for i, name in enumerate(a.class_names):
        row(f"recall {name}", a.recall[i], b.recall[i])
    return table


class ModelsView(View):
    view_id = "models"
    title = "Models"
    key = "m"
    summary = "every .onnx found with its metadata; switch the active model; compare two"
    keys_help = (("↑ ↓", "highlight a model (its metadata shows on the right)"),
                 ("enter", "make the highlighted model the active one"),
                 ("x", "compare the highlighted model with the active one on the split"))

    BINDINGS = [
        Binding("enter", "activate", "Use model"),
        Binding("x", "compare", "Compare"),
    ]

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.compare_with: Path | None = None
        self._compare_key: tuple | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="models-title")
        with Horizontal(id="models-body"):
            yield DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="models-detail-pane"):
                yield Static(id="models-detail")
        yield Static(id="models-compare")

    @property
    def table(self) -> DataTable:
        return self.query_one(DataTable)

    COLUMNS = (("", 1), ("model", 18), ("arch", 8), ("params", 7), ("val acc", 7), ("test acc", 8), ("size", 7), ("status", 7))

    def on_mount(self) -> None:
        for label, width in self.COLUMNS:  # fixed widths: the table never waits to measure itself
            self.table.add_column(label, width=width)

    def update_context(self, new: Context, old: Context) -> None:
        super().update_context(new, old)
        if new.models != old.models or new.model is not old.model or new.models_loaded != old.models_loaded:
            self.redraw_when_visible()
        if new.split_name != old.split_name or new.model is not old.model or new.dataset is not old.dataset:
            self.start_compare()

    def redraw(self) -> None:
        ctx = self.context
        table = self.table
        keep = table.cursor_row
        table.clear()
        for entry in ctx.models:
            active = ctx.model is not None and entry.path == ctx.model.path
            marked = self.compare_with is not None and entry.path == self.compare_with
            status = Text("error", "bold red") if not entry.ok else Text("warning", "yellow") if entry.warnings else Text("ok", "green")
            params = f"{entry.parameter_count / 1e6:.2f} M" if entry.parameter_count else "–"
            table.add_row(Text("●" if active else "◆" if marked else " ", "bold green" if active else "bold cyan"),
                          Text(entry.name, "bold" if active else "", overflow="ellipsis", no_wrap=True),
                          entry.architecture if entry.ok else "–", params,
                          _percent(entry.metric(METRICS_VAL)), _percent(entry.metric(METRICS_TEST)), _size(entry.size_bytes), status,
                          key=str(entry.path))
        if ctx.models:
            table.move_cursor(row=min(keep, len(ctx.models) - 1))
        title = Text(no_wrap=True, overflow="ellipsis")
        if not ctx.models_loaded:
            title.append("looking for models…", "dim")
        elif not ctx.models:
            title.append("no models found: export one to exported/ (fer-train --export NAME), pass .onnx files to fer-tui, "
                         "or train one here (t)", "yellow")
        else:
            title.append(f"{len(ctx.models)} model{'s' if len(ctx.models) != 1 else ''}; active: ")
            title.append(ctx.model.name if ctx.model else "none", "bold green")
            if ctx.predictions is not None and ctx.predictions.ran:
                title.append(f" (predictions by {ctx.predictions.ran})", "green")
            title.append("   enter: use the highlighted model · x: compare it with the active one", "dim")
        self.query_one("#models-title", Static).update(title)
        self._show_detail()

    def _highlighted(self) -> ModelEntry | None:
        models = self.context.models
        row = self.table.cursor_row
        return models[row] if models and 0 <= row < len(models) else None

    def _show_detail(self) -> None:
        entry = self._highlighted()
        self.query_one("#models-detail", Static).update(describe_model(entry) if entry else "")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_activate()

    def action_activate(self) -> None:
        entry = self._highlighted()
        if entry is None:
            return
        if not entry.ok:
            self.app.notify(entry.error or "this model cannot be used", title="cannot use this model", severity="error")
            return
        self.post_message(ActivateModel(entry.path))

    # -- comparison --------------------------------------------------------------------------------

    def action_compare(self) -> None:
        entry = self._highlighted()
        if entry is None or not entry.ok:
            return
        self.compare_with = entry.path
        self.redraw()
        self.start_compare()

    def start_compare(self) -> None:
        ctx = self.context
        panel = self.query_one("#models-compare", Static)
        second = ctx.model_by_path(self.compare_with) if self.compare_with is not None else None
        if second is None or ctx.model is None or ctx.split is None:
            panel.update(Text("x on a model compares it with the active one: accuracy and per-class recall on the same faces", "dim")
                         if ctx.models else "")
            return
        if not ctx.split.labelled:
            panel.update(Text(f"the {ctx.split_name} split has no labels to compare against", "yellow"))
            return
        self._compare_key = (ctx.model.key, second.key, ctx.split_name)
        panel.update(Text(f"predicting {second.name} and {ctx.model.name} on {ctx.split_name}…", "dim"))
        self.compare(ctx.model, second, ctx.split_name, ctx.split, ctx.cache)

    @work(thread=True, exclusive=True, group="compare")
    def compare(self, first: ModelEntry, second: ModelEntry, split_name: str, split, cache) -> None:
        worker = get_current_worker()
        try:
            results = [cache.compute(entry, split_name, split, cancelled=lambda: worker.is_cancelled) for entry in (first, second)]
        except Cancelled:
            return
        except Exception as exc:  # a model that loads but fails to run (e.g. a bad int8 variant)
            self.post_message(CompareFailed(f"comparison failed: {exc}"))
            return
        self.post_message(CompareReady(split_name, *results))

    def on_compare_ready(self, message: CompareReady) -> None:
        message.stop()
        if (message.first.model_key, message.second.model_key, message.split_name) != self._compare_key:
            return
        ctx = self.context
        second = next(m for m in ctx.models if m.key == message.second.model_key)
        self.query_one("#models-compare", Static).update(
            compare_table(message.first, message.second, ctx.model.name, second.name, message.split_name))

    def on_compare_failed(self, message: CompareFailed) -> None:
        message.stop()
        self.query_one("#models-compare", Static).update(Text(message.message, "bold red"))

    def focus_main(self) -> None:
        self.table.focus()
