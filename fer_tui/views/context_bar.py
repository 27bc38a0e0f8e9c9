"""The lines around the tabs: the context bar, the data's notes under it, and the too-small notice."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..data import DataSet
from ..state import Context
from .readout import Readout

MIN_WIDTH, MIN_HEIGHT = 80, 24


class ContextBar(Readout):
    """One line: the active model, the data, the split, and what is being computed."""

    def show(self, ctx: Context, activity: str = "") -> None:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" fer-tui ", "bold reverse")
        text.append("  model ")
        if ctx.model is not None:
            text.append(ctx.model.name, "bold green")
            if ctx.model.warnings:
                text.append(" ⚠", "yellow")
        else:
            text.append("none", "bold yellow")
        text.append("  data ")
        if ctx.dataset is None:
            text.append("loading…", "dim")
        else:
            text.append(ctx.dataset.name, "bold yellow" if ctx.dataset.demo else "bold")
            split = ctx.split
            text.append("  split ")
            text.append(f"{ctx.split_name}", "bold")
            text.append(f" ({len(split):,} faces)" if split is not None else "")
        if activity:
            text.append(f"   {activity}", "italic cyan")
        self.update(text)


class DataNotes(Static):
    """A line under the bar for demo faces and data problems; hidden when the data has none."""

    def show(self, dataset: DataSet | None) -> None:
        notes = dataset.notes if dataset is not None else []
        self.update(Text(" · ".join(notes), style="yellow", no_wrap=True, overflow="ellipsis") if notes else "")
        self.display = bool(notes)


class TooSmall(Static):
    """What replaces the tabs while the terminal is smaller than the views need."""

    @staticmethod
    def too_small(width: int, height: int) -> bool:
        return width < MIN_WIDTH or height < MIN_HEIGHT

    def show(self, width: int, height: int) -> None:
        self.update(f"The terminal is {width}×{height}; fer-tui needs at least {MIN_WIDTH}×{MIN_HEIGHT}. Make it larger (q quits).")
