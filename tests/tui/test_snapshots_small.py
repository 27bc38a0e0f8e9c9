"""Snapshots of the views this size matters most for, at the documented minimum size (80×24): the confusion matrix
with every column and its totals, the Saliency view with its pictures, legend and faithfulness line. Same fixtures
as tests/tui/test_snapshots.py; update with ``--snapshot-update`` and look at the SVGs."""

from __future__ import annotations

from test_snapshots import _after, app_in_folder  # noqa: F401  (a fixture)

from tui_support import headless, screen_text

SIZE = (80, 24)


def test_confusion_at_80x24(snap_compare, app_in_folder):  # noqa: F811
    assert snap_compare(app_in_folder, terminal_size=SIZE, run_before=_after("c", "down", "right"))


def test_saliency_at_80x24(snap_compare, app_in_folder):  # noqa: F811
    assert snap_compare(app_in_folder, terminal_size=SIZE, run_before=_after("down", "s"))


@headless
async def test_every_confusion_column_and_the_totals_fit_80_columns(app_in_folder):  # noqa: F811
    async with app_in_folder.run_test(size=SIZE) as pilot:
        await _after("c")(pilot)
        text = screen_text(app_in_folder)
    header = next(line for line in text.splitlines() if "Ang" in line and "Neu" in line)
    assert all(name in header for name in ("Ang", "Dis", "Fea", "Hap", "Sad", "Sur", "Neu", "total", "recall", "F1"))
    assert "precision" in text and "most confused:" in text
