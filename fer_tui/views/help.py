"""The help screen: what each view is for and every key, built from the views' own declarations."""

from __future__ import annotations

from typing import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from .base import View

GLOBAL_KEYS = (
    ("v", "next split: val → test → train (the study's protocol)"),
    ("[ ]", "previous / next model"),
    ("p", "plain pictures: characters instead of colour (automatic with NO_COLOR)"),
    ("tab / shift+tab", "move the focus; the mouse works everywhere"),
    ("? f1", "this help"),
    ("q ctrl+q", "quit (a running training job is cancelled)"),
)


def help_text(views: Sequence[type[View]]) -> Group:
    intro = Text.assemble(("fer-tui: look inside facial-expression models. ", "bold"),
                          ("Models: the .onnx files in exported/ or given on the command line. Faces: --data, $FER_DATA, "
                           "../shared/data/fer2013, else built-in demo faces.", "dim"))
    table = Table(box=None, padding=(0, 2), show_header=False, expand=True)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(ratio=1)
    switch = (" ".join(v.key for v in views), f"switch view: {', '.join(v.title for v in views)} (or click a tab)")
    sections = [("Everywhere", "", (switch, *GLOBAL_KEYS))] + [(f"{v.title} ({v.key})", v.summary, v.keys_help) for v in views]
    for title, summary, rows in sections:
        table.add_row(Text(title, style="bold cyan"), Text(summary, style="italic"))
        for keys, what in rows:
            table.add_row(f"  {keys}", what)
    return Group(intro, Text(""), table)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close help")]

    def __init__(self, views: Sequence[type[View]]):
        super().__init__()
        self.views = views

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body") as body:
            body.border_title = "Help — escape to close"
            yield Static(help_text(self.views))
