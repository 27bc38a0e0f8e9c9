"""Confusion: the active model's confusion matrix on the split, accuracy, per-class precision, recall and F1.

Rows are the true classes, columns the predicted ones; each cell shows the share of its row and the count.
Selecting a cell (Enter, or a second click) opens Browse filtered to exactly those faces.
"""

from __future__ import annotations

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from fer_runtime.metrics import most_confused, row_normalise

from ..messages import BrowseCell
from ..state import Context
from .base import View
from .readout import Readout


def cell_style(share: float, diagonal: bool) -> str:
    """Background deepening with the row share: green on the diagonal, red off it."""
    level = int(round(min(max(share, 0.0), 1.0) * 150))
    if diagonal:
        return f"on rgb(0,{40 + level},{20 + level // 3})" if share > 0 else ""
    return f"on rgb({40 + level},0,{level // 4})" if share > 0 else ""


class ConfusionView(View):
    view_id = "confusion"
    title = "Confusion"
    key = "c"
    summary = "confusion matrix (row-normalised % and counts), accuracy, per-class precision/recall/F1"
    keys_help = (("arrows", "move between cells (or click one)"),
                 ("enter", "open Browse filtered to the cell's faces (or click it again)"))

    BINDINGS = [Binding("enter", "open_cell", "Browse cell")]

    def compose(self) -> ComposeResult:
        yield Readout(id="confusion-title")
        table = DataTable(id="confusion-table", cursor_type="cell", zebra_stripes=False)
        table.border_title = "true ↓  predicted →"
        yield table
        yield Readout(id="confusion-cell")
        yield Static(id="confusion-report")

    @property
    def table(self) -> DataTable:
        return self.query_one(DataTable)

    def update_context(self, new: Context, old: Context) -> None:
        super().update_context(new, old)
        if new.predictions is not old.predictions or new.model is not old.model or new.split_name != old.split_name:
            self.redraw_when_visible()

    def redraw(self) -> None:
        ctx = self.context
        title = self.query_one("#confusion-title", Readout)
        report_view = self.query_one("#confusion-report", Static)
        table = self.table
        table.clear(columns=True)
        self.query_one("#confusion-cell", Readout).update("")
        if ctx.model is None:
            title.update(Text("no model: load one in Models (m) or train one (t)", style="dim"))
            report_view.update("")
            return
        predictions = ctx.predictions
        if predictions is None:
            title.update(Text(f"predicting {ctx.model.name} on {ctx.split_name}…", style="dim"))
            report_view.update("")
            return
        report = predictions.report()
        if report is None:
            title.update(Text(f"the {ctx.split_name} split has no labels: nothing to compare the predictions with", style="yellow"))
            report_view.update("")
            return
        names = report.class_names
        correct = int(np.trace(np.array(report.confusion)))
        heading = Text(no_wrap=True, overflow="ellipsis")
        heading.append(f"{ctx.model.name}", "bold")
        heading.append(f" on {ctx.split_name} ({report.count:,} faces{', demo faces' if ctx.dataset and ctx.dataset.demo else ''}): ")
        heading.append(f"accuracy {report.accuracy:.2%}", "bold")
        heading.append(f" ({correct:,}/{report.count:,})  macro F1 {np.mean(report.f1):.3f}")
        title.update(heading)

        confusion = np.array(report.confusion)
        shares = row_normalise(confusion)
        for name in names:  # fixed widths: the table never waits to measure itself
            table.add_column(Text(name[:10], justify="right"), width=10)
        table.add_column(Text("total", justify="right"), width=6)
        for i, name in enumerate(names):
            cells = [Text(f"{shares[i, j]:>4.0%} {confusion[i, j]:>5,}", style=cell_style(shares[i, j], i == j), justify="right")
                     for j in range(len(names))]
            cells.append(Text(f"{confusion[i].sum():>6,}", style="dim", justify="right"))
            table.add_row(*cells, label=Text(name[:10], style="bold"), key=str(i))

        summary = Table(box=None, pad_edge=False, padding=(0, 2), header_style="bold")
        for column in ("class", "precision", "recall", "F1", "support"):
            summary.add_column(column, justify="left" if column == "class" else "right")
        for i, name in enumerate(names):
            summary.add_row(name, f"{report.precision[i]:.3f}", f"{report.recall[i]:.3f}", f"{report.f1[i]:.3f}", f"{report.support[i]:,}")
        confused = most_confused(confusion, names, top=3)
        lines = Text("most confused: ", style="bold")
        lines.append(",  ".join(f"{t} → {p} {share:.0%} ({count:,})" for t, p, share, count in confused) or "none")
        report_view.update(Group(summary, Text(""), lines))

    def on_data_table_cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        event.stop()
        predictions = self.context.predictions
        if predictions is None or not predictions.labelled:
            return
        i, j = event.coordinate.row, event.coordinate.column
        names = predictions.class_names
        if j >= len(names):
            self.query_one("#confusion-cell", Readout).update("")
            return
        count = int(((predictions.labels == i) & (predictions.predicted == j)).sum())
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"true {names[i]}, predicted {names[j]}: {count:,} faces", "bold")
        text.append("  — enter (or click again) to browse them", "dim")
        self.query_one("#confusion-cell", Readout).update(text)

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        event.stop()
        self._open(event.coordinate.row, event.coordinate.column)

    def action_open_cell(self) -> None:
        coordinate = self.table.cursor_coordinate
        self._open(coordinate.row, coordinate.column)

    def _open(self, row: int, column: int) -> None:
        predictions = self.context.predictions
        if predictions is None or not predictions.labelled or column >= len(predictions.class_names):
            return
        self.post_message(BrowseCell(row, column))

    def focus_main(self) -> None:
        self.table.focus()
