"""Every view at the documented minimum size (80×24): snapshots of each, and assertions that every control and
every panel is whole on screen (not cut by the terminal's edge nor squeezed by its container), that the pictures
and the probabilities keep a readable size, and that the controls answer the mouse. Same fixtures as
tests/tui/test_snapshots.py; update with ``--snapshot-update`` and look at the SVGs. (The 120×40 snapshots there
prove the full layout unchanged by the small-terminal rules.)"""

from __future__ import annotations

import re

import pytest
from textual.widgets import Checkbox, Input, Select

from fer_runtime.contract import CLASS_NAMES
from fer_tui.app import VIEWS
from fer_tui.views.browse import BrowseView
from fer_tui.views.face import Picture
from fer_tui.views.fit import size_classes
from test_snapshots import _after, app_in_folder  # noqa: F401  (a fixture)

from tui_support import fully_shown, headless, screen_text

SIZE = (80, 24)


def test_confusion_at_80x24(snap_compare, app_in_folder):  # noqa: F811
    assert snap_compare(app_in_folder, terminal_size=SIZE, run_before=_after("c", "down", "right"))


def test_saliency_at_80x24(snap_compare, app_in_folder):  # noqa: F811
    assert snap_compare(app_in_folder, terminal_size=SIZE, run_before=_after("down", "s"))


def test_browse_at_80x24(snap_compare, app_in_folder):  # noqa: F811
    assert snap_compare(app_in_folder, terminal_size=SIZE, run_before=_after("down", "down"))


def test_filters_at_80x24(snap_compare, app_in_folder):  # noqa: F811
    assert snap_compare(app_in_folder, terminal_size=SIZE, run_before=_after("f"))


def test_models_at_80x24(snap_compare, app_in_folder):  # noqa: F811
    assert snap_compare(app_in_folder, terminal_size=SIZE, run_before=_after("m"))


def test_train_at_80x24(snap_compare, app_in_folder):  # noqa: F811
    assert snap_compare(app_in_folder, terminal_size=SIZE, run_before=_after("t"))


def test_help_at_80x24(snap_compare, app_in_folder):  # noqa: F811
    assert snap_compare(app_in_folder, terminal_size=SIZE, run_before=_after("question_mark"))


@headless
async def test_every_confusion_column_and_the_totals_fit_80_columns(app_in_folder):  # noqa: F811
    async with app_in_folder.run_test(size=SIZE) as pilot:
        await _after("c")(pilot)
        text = screen_text(app_in_folder)
    header = next(line for line in text.splitlines() if "Ang" in line and "Neu" in line)
    assert all(name in header for name in ("Ang", "Dis", "Fea", "Hap", "Sad", "Sur", "Neu", "total", "recall", "F1"))
    assert "precision" in text and "most confused:" in text


# What each view must show whole besides its controls (every focusable widget, checked for every view).
PANELS = {
    "browse": ("#browse-count", "#browse-list", "#browse-face", "#browse-bars", "#browse-info"),
    "saliency": ("#saliency-title", "#saliency-face", "#saliency-heat", "#saliency-masked", "#saliency-legend", "#saliency-status"),
    "filters": ("#filters-title", "#filters-grid", "#filters-status"),
    "confusion": ("#confusion-title", "#confusion-table", "#confusion-cell", "#confusion-report"),
    "models": ("#models-title", "#models-table", "#models-detail-pane", "#models-compare"),
    "train": ("#train-status", "#train-progress", "#train-loss", "#train-acc", "#train-log"),
}


def _controls(view) -> list:
    """The view's focusable widgets that are meant to be seen (not inside something hidden on purpose)."""
    def shown(widget) -> bool:
        node = widget
        while node is not view:
            if not node.display:
                return False
            node = node.parent
        return True

    return [widget for widget in view.query("*") if widget.can_focus and shown(widget)]


@pytest.mark.parametrize("view", VIEWS, ids=[view.view_id for view in VIEWS])
@headless
async def test_every_control_and_panel_of_every_view_is_whole_at_80x24(app_in_folder, view):  # noqa: F811
    async with app_in_folder.run_test(size=SIZE) as pilot:
        await _after(view.key)(pilot)
        shown = app_in_folder.view(view.view_id)
        controls = _controls(shown)
        assert controls
        cut = [f"{widget!r} at {widget.region}" for widget in controls if not fully_shown(widget)]
        assert not cut, f"cut at 80×24 in {view.title}: {cut}"
        for selector in PANELS[view.view_id]:
            assert fully_shown(shown.query_one(selector)), f"{selector} cut at 80×24"
        assert "q Quit" in screen_text(app_in_folder).splitlines()[-1]


@headless
async def test_browse_at_80x24_shows_the_filters_a_face_and_every_probability(app_in_folder):  # noqa: F811
    app = app_in_folder
    async with app.run_test(size=SIZE) as pilot:
        await _after("down", "down")(pilot)
        text = screen_text(app)
        for selector in ("#filter-true", "#filter-predicted", "#filter-outcome", "#filter-sort"):
            assert fully_shown(app.query_one(selector, Select)), selector
        assert re.search(r"true any\s+▼\s+predicted any\s+▼\s+show all\s+▼\s+order file order\s+▼", text)
        assert app.query_one("#browse-face", Picture).pixels >= 20  # smaller than at 120×40 (48), still a face
        for name in CLASS_NAMES:  # each class with a bar's room and its percentage
            assert re.search(rf"{name}\s.*\d+\.\d%", text), name
        assert "face 2 of val" in text and "predicted  Sad" in text

        await pilot.click("#filter-sort")  # the order, by the mouse: its list opens on screen
        await pilot.press("down", "enter")
        await pilot.pause()
        assert app.query_one(BrowseView).filters.sort == "confidence-down"


@headless
async def test_train_form_at_80x24_is_whole_and_answers_the_mouse(app_in_folder):  # noqa: F811
    app = app_in_folder
    async with app.run_test(size=SIZE) as pilot:
        await _after("t")(pilot)
        for selector in ("#train-model", "#train-epochs", "#train-optimizer", "#train-semi", "#train-threshold",
                         "#train-limit-train", "#train-limit-val", "#train-export", "#train-start", "#train-cancel"):
            assert fully_shown(app.query_one(selector)), selector
        text = screen_text(app)
        assert "semi-supervised" in text and "threshold" in text and "Start" in text and "Cancel" in text
        assert app.query_one("#train-loss").size.height >= 6 and app.query_one("#train-log").content_size.height >= 2

        await pilot.click("#train-semi")
        assert app.query_one("#train-semi", Checkbox).value
        assert app.query_one("#train-epochs", Input).disabled


def test_the_size_classes():
    assert not any(size_classes(120, 40).values())  # the full layout
    assert size_classes(119, 40) == {"-too-small": False, "-narrow": True, "-short": False, "-compact": True}
    assert size_classes(120, 31) == {"-too-small": False, "-narrow": False, "-short": True, "-compact": True}
    assert size_classes(80, 24) == {"-too-small": False, "-narrow": True, "-short": True, "-compact": True}
    assert size_classes(79, 24)["-too-small"] and size_classes(80, 23)["-too-small"]


@headless
async def test_the_layout_follows_the_terminal_also_under_the_help_screen(app_in_folder):  # noqa: F811
    app = app_in_folder
    async with app.run_test(size=(120, 40)) as pilot:
        await _after("t")(pilot)
        semi = app.query_one("#train-semi", Checkbox)
        assert not semi.compact and semi.region.height == 3 and semi.region.y == app.query_one("#train-model").region.y
        await pilot.press("question_mark")
        await pilot.resize_terminal(*SIZE)
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert app.has_class("-narrow") and semi.compact and semi.region.height == 1 and fully_shown(semi)
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        assert not app.has_class("-compact") and not semi.compact and semi.region.height == 3
