"""Snapshots of the main screens at 120×40 (pytest-textual-snapshot): the layout must not drift unnoticed.

Deterministic on purpose: the built-in demo faces, a hand-built template model (no training), a clock
that always reads zero (no durations), a fixed thread count, and paths relative to a fixed working folder.
Update after an intended change with ``pytest tests/tui/test_snapshots.py --snapshot-update`` and look at
the SVGs in ``__snapshots__``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fer_tui.app import make_app
from fer_tui.state import Settings
from tui_support import settle

SIZE = (120, 40)


@pytest.fixture
def app_in_folder(tmp_path, monkeypatch, template_dir):
    """An app in a working folder that holds exported/template.onnx and its gradient graph."""
    exported = tmp_path / "exported"
    shutil.copytree(template_dir, exported)
    monkeypatch.chdir(tmp_path)
    settings = Settings(export_dir=Path("exported"), runs_root=Path("runs"), train_threads=1)
    return make_app(demo=True, model_dirs=["exported"], settings=settings, clock=lambda: 0.0)


def _after(*keys: str):
    async def run_before(pilot) -> None:
        pilot.app.animation_level = "none"
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)

    return run_before


def test_browse(snap_compare, app_in_folder):
    assert snap_compare(app_in_folder, terminal_size=SIZE, run_before=_after("down", "down"))


def test_saliency(snap_compare, app_in_folder):
    assert snap_compare(app_in_folder, terminal_size=SIZE, run_before=_after("down", "s"))


def test_filters(snap_compare, app_in_folder):
    """The frame of the Filters view (title, grid, status); the template has no conv layers, so no tiles. The grid
    itself at 120×40 is checked by tests/tui/test_filters_view.py with a real CNN."""
    assert snap_compare(app_in_folder, terminal_size=SIZE, run_before=_after("f"))


def test_confusion(snap_compare, app_in_folder):
    assert snap_compare(app_in_folder, terminal_size=SIZE, run_before=_after("c", "down", "right"))


def test_models(snap_compare, app_in_folder):
    assert snap_compare(app_in_folder, terminal_size=SIZE, run_before=_after("m"))


def test_train(snap_compare, app_in_folder):
    assert snap_compare(app_in_folder, terminal_size=SIZE, run_before=_after("t"))


def test_help(snap_compare, app_in_folder):
    assert snap_compare(app_in_folder, terminal_size=SIZE, run_before=_after("question_mark"))
