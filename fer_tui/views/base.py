"""The base of every view (tab): its title and key, and the hook through which it sees the app's state."""

from __future__ import annotations

from typing import ClassVar

from textual.containers import Container

from ..state import Context


class View(Container):
    """A tab of the app. Subclasses set ``view_id``, ``title``, ``key`` and ``summary`` (for the help screen),
    and override :meth:`update_context` (and, for lazy work, :meth:`shown`)."""

    view_id: ClassVar[str] = ""
    title: ClassVar[str] = ""
    key: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    keys_help: ClassVar[tuple[tuple[str, str], ...]] = ()  # (keys, what they do) for the help screen

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id or f"{self.view_id}-view", classes=classes)
        self.context = Context()
        self.is_active = False
        self._stale = False

    def update_context(self, new: Context, old: Context) -> None:
        """The app's state changed (``old`` → ``new``); redraw what depends on what changed."""
        self.context = new

    def shown(self) -> None:
        """The tab became the visible one (start work that only matters when visible)."""
        if self._stale:
            self._stale = False
            self.call_after_refresh(self.redraw)  # after the layout, so widgets know their size

    def redraw_when_visible(self) -> None:
        """Redraw now if the tab is visible, else when it is next shown (hidden views cost nothing)."""
        if self.is_active:
            self._stale = False
            self.redraw()
        else:
            self._stale = True

    def redraw(self) -> None:
        """Draw everything from ``self.context`` (views that use :meth:`redraw_when_visible` override this)."""

    def focus_main(self) -> None:
        """Put the keyboard focus on the view's main widget (the first focusable one by default)."""
        for widget in self.query("*"):
            if widget.focusable:
                widget.focus()
                return
