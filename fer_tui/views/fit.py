"""How the views fit the terminal. At 120×40 every view has its full layout. In fewer than 120 columns the app has
the class ``-narrow``, in fewer than 32 rows ``-short``, and with either ``-compact``: under them app.tcss shrinks
and stacks panels, and the form fields turn compact (one row, no border), so that down to the minimum of 80×24
every control stays whole on screen. Below the minimum the app has ``-too-small`` and shows
:class:`~fer_tui.views.context_bar.TooSmall` instead of the tabs.
"""

from __future__ import annotations

from textual.app import App
from textual.widgets import Button, Checkbox, Footer, Input, Select

from .context_bar import TooSmall

NARROW_WIDTH = 120  # below it, Browse's filters and face, and Train's form rows, no longer fit side by side
SHORT_HEIGHT = 32  # below it, three-row fields and Train's fixed chart height leave the log no room

# The widgets with a compact style (Textual's ``compact``: one row, no border), which no CSS rule can switch.
COMPACT_WIDGETS = (Select, Input, Checkbox, Button, Footer)


def size_classes(width: int, height: int) -> dict[str, bool]:
    """The app's classes at a terminal of ``width`` × ``height`` cells, each with whether it applies."""
    narrow, short = width < NARROW_WIDTH, height < SHORT_HEIGHT
    return {"-too-small": TooSmall.too_small(width, height), "-narrow": narrow, "-short": short, "-compact": narrow or short}


def fit(app: App, width: int, height: int) -> None:
    """Give ``app`` the size classes of a ``width`` × ``height`` terminal, and its form fields the matching style.

    The classes go on the app rather than a screen so that they hold under the help screen too; the widgets are
    found screen by screen because the app's own query sees only the active one."""
    classes = size_classes(width, height)
    for name, on in classes.items():
        app.set_class(on, name)
    for screen in app.screen_stack:
        for widget in screen.query(", ".join(cls.__name__ for cls in COMPACT_WIDGETS)):
            widget.compact = classes["-compact"]
        for footer in screen.query(Footer):  # narrow: the view's keys and q Quit before "^p palette" (in the help too)
            if footer.show_command_palette == classes["-narrow"]:
                footer.show_command_palette = not classes["-narrow"]
                footer.refresh(recompose=True)
