"""Confusion: the active model's confusion matrix on the split, accuracy, per-class precision, recall and F1.

Rows are the true classes, columns the predicted ones; each cell shows the share of its row and, when the
view is wide enough, the count (the highlighted cell's count is always said below the table). Each row ends
with its total, the class's recall and F1; the last row is each predicted class's precision. At the
documented minimum size (80×24) the class names are abbreviated and the cells hold the share alone, so that
every column and the totals stay on screen. Selecting a cell (Enter, or a second click) opens Browse filtered
to exactly those faces.
"""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from fer_runtime.metrics import most_confused, row_normalise

from ..messages import BrowseCell
from ..state import Context
from .base import View
from .readout import Readout


def abbreviations(names, width: int) -> list[str]:
    """The shortest prefixes of ``names``, at least three characters and at most ``width``, that tell them apart
    (FER2013's: Ang, Dis, Fea, Hap, Sad, Sur, Neu); where ``width`` is too short for that, ``width`` characters."""
    for size in range(min(3, width), width + 1):
        short = [name[:size] for name in names]
        if len(set(short)) == len(short):
            return short
    return [name[:width] for name in names]


# (name width, cell width, with counts) from the widest layout down; the first that fits the view is used
LAYOUTS = ((10, 10, True), (8, 9, True), (3, 4, False))
EXTRA_COLUMNS = (("total", 6), ("recall", 6), ("F1", 5))
CELL_PADDING = 1  # DataTable's, each side


def table_width(layout: tuple[int, int, bool], classes: int) -> int:
    """Columns a layout takes: the row labels, the class cells and the extra columns, each with its padding."""
    name, cell, _ = layout
    label = max(name, len("precision"))
    return label + 2 * CELL_PADDING + classes * (cell + 2 * CELL_PADDING) + sum(w + 2 * CELL_PADDING for _, w in EXTRA_COLUMNS)


def choose_layout(width: int, classes: int) -> tuple[int, int, bool]:
    return next((layout for layout in LAYOUTS if table_width(layout, classes) <= width), LAYOUTS[-1])


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
        heading.append(f" on {ctx.split_name} ({report.count:,} {'demo ' if ctx.dataset and ctx.dataset.demo else ''}faces): ")
        heading.append(f"accuracy {report.accuracy:.2%}", "bold")
        heading.append(f" ({correct:,}/{report.count:,})  macro F1 {np.mean(report.f1):.3f}")
        title.update(heading)

        confusion = np.array(report.confusion)
        shares = row_normalise(confusion)
        name_width, cell_width, counts = choose_layout((self.size.width or self.app.size.width) - 4, len(names))  # the table's border and scroll bar
        short = [name[:name_width] for name in names] if counts else abbreviations(names, name_width)
        for name in short:  # fixed widths: the table never waits to measure itself
            table.add_column(Text(name, justify="right"), width=cell_width)
        for column, width in EXTRA_COLUMNS:
            table.add_column(Text(column, justify="right"), width=width)
        def cell(i: int, j: int) -> Text:
            text = f"{shares[i, j]:>4.0%} {confusion[i, j]:>{cell_width - 5},}" if counts else f"{shares[i, j]:>4.0%}"
            return Text(text, style=cell_style(shares[i, j], i == j), justify="right")

        for i, name in enumerate(short):
            cells = [cell(i, j) for j in range(len(names))]
            cells += [Text(f"{confusion[i].sum():,}", style="dim", justify="right"),
                      Text(f"{report.recall[i]:.3f}", justify="right"), Text(f"{report.f1[i]:.3f}", justify="right")]
            table.add_row(*cells, label=Text(name, style="bold"), key=str(i))
        table.add_row(*[Text(f"{p:.2f}", style="dim", justify="right") for p in report.precision], Text(""), Text(""), Text(""),
                      label=Text("precision", style="bold"), key="precision")

        confused = most_confused(confusion, names, top=3)
        lines = Text("most confused: ", style="bold")
        lines.append(",  ".join(f"{t} → {p} {share:.0%} ({count:,})" for t, p, share, count in confused) or "none")
        report_view.update(lines)

    def on_data_table_cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        event.stop()
        predictions = self.context.predictions
        if predictions is None or not predictions.labelled:
            return
        i, j = event.coordinate.row, event.coordinate.column
        names = predictions.class_names
        if i >= len(names) or j >= len(names):
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
        names = [] if predictions is None else predictions.class_names
        if predictions is None or not predictions.labelled or row >= len(names) or column >= len(names):
            return
        self.post_message(BrowseCell(row, column))

    def focus_main(self) -> None:
        self.table.focus()
