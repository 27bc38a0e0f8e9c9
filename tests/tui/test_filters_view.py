"""The Filters view: gradient ascent and layer outputs from a CNN's companion graphs, in a grid that never scrolls."""

from __future__ import annotations

from contextlib import asynccontextmanager

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from textual.app import App, ComposeResult

import fer_tui
from fer_runtime.explain import AscentConfig
from fer_runtime.synthetic import make_faces
from fer_tui.app import make_app
from fer_tui.render import UPPER_HALF
from fer_tui.tiles import GridLayout, centre, grid_layout, mosaic
from fer_tui.views.filters import FiltersTab, FiltersView
from tui_support import headless, screen_text, settle, wait_until

SIZE = (120, 40)


@pytest.fixture(scope="module")
def cnn_path(tmp_path_factory, random_slope_cnn):
    """An untrained CNN (random PReLU slopes) exported with its gradient and layer-output graphs, and the filter
    graphs of conv1 (64 filters) and conv4 (128)."""
    import torch

    from fer_train.explain.gradient_onnx import export_filter_graph, export_gradient_graph, export_layer_outputs
    from fer_train.export import export_onnx

    model = random_slope_cnn
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    faces, _ = make_faces(8, seed=2)
    path = tmp_path_factory.mktemp("filters") / "cnn.onnx"
    export_onnx(model, path, metadata={"class_names": ["a", "b", "c", "d", "e", "f", "g"], "architecture": "cnn"}, check_images=faces)
    export_gradient_graph(model, path, faces)
    export_layer_outputs(model, path, faces)
    for layer in ("conv1", "conv4"):
        export_filter_graph(model, path, layer, faces)
    torch.set_num_threads(threads)
    return path


class Host(App):
    """The widget alone, styled by the app's stylesheet."""

    CSS_PATH = str(Path(fer_tui.__file__).parent / "app.tcss")

    def __init__(self, view):
        super().__init__()
        self.view = view

    def compose(self) -> ComposeResult:
        yield self.view


def _face() -> np.ndarray:
    return make_faces(4, seed=9)[0][3]


def _status(view) -> str:
    return str(view.query_one("#filters-status").render())


@headless
async def test_it_shows_filters_by_gradient_ascent_and_the_layers_outputs(cnn_path):
    view = FiltersView(threads=1, layer="conv1", ascent=AscentConfig(steps=3))
    async with Host(view).run_test(size=SIZE) as pilot:
        view.set_model(cnn_path)
        view.set_face(_face())
        assert await wait_until(pilot, lambda: view.outputs is not None)
        assert view.outputs["conv1"].shape == (64, 44, 44)
        assert view.layer_names == ["conv1", "conv2", "conv3", "conv4", "conv5"]
        assert "press a to visualise the 64 filters of conv1" in view.grid.message

        view.focus()
        await pilot.pause()
        await pilot.press("a")
        assert await wait_until(pilot, lambda: view.filters)
        result = view.filters[(cnn_path, "conv1", 3)]
        assert result.images.shape == (64, 48, 48) and result.complete
        assert view.grid.tiles.shape == (64, 48, 48, 3) and view.grid.crop
        assert "64 filters in" in _status(view)

        await pilot.press("o")  # the same layer's outputs for the face, in the same grid
        assert view.show_outputs and view.grid.tiles.shape == (64, 44, 44, 3) and not view.grid.crop
        await pilot.press("full_stop")  # conv2: outputs are there, its filter graph is not
        assert view.layer_name == "conv2" and view.grid.tiles.shape == (64, 22, 22, 3)
        await pilot.press("o", "a")
        await pilot.pause(0.1)
        assert "no filter graph for conv2" in _status(view)


@headless
async def test_escape_stops_the_ascent(cnn_path):
    view = FiltersView(threads=1, layer="conv1", ascent=AscentConfig(steps=5000))
    async with Host(view).run_test(size=SIZE) as pilot:
        view.set_model(cnn_path)
        view.focus()
        await pilot.pause()  # focus() takes effect on the next turn of the loop
        await pilot.press("a")
        assert view.running is not None
        await pilot.pause(0.3)
        await pilot.press("escape")
        assert await wait_until(pilot, lambda: view.running is None)
        assert not view.filters
        assert "stopped after" in _status(view)


@headless
async def test_without_companions_it_says_how_to_get_them(tmp_path):
    view = FiltersView(threads=1)
    async with Host(view).run_test(size=SIZE) as pilot:
        view.set_model(tmp_path / "lonely.onnx")
        view.set_face(_face())
        assert await wait_until(pilot, lambda: "no explanation graphs beside lonely.onnx" in _status(view))
        view.set_model(None)
        await pilot.pause(0.1)
        assert "choose a model" in view.grid.message


@headless
async def test_the_tab_forwards_the_apps_model_and_face(cnn_path):
    tab = FiltersTab()
    async with Host(tab).run_test(size=SIZE) as pilot:
        tab.is_active = True
        context = SimpleNamespace(plain=True, model=SimpleNamespace(path=cnn_path, ok=True), image=_face())
        tab.update_context(context, tab.context)
        view = tab.query_one(FiltersView)
        assert view.model_path == cnn_path and view.plain and view.grid.plain
        assert await wait_until(pilot, lambda: view.outputs is not None)
        view.action_toggle_outputs()  # the layer's outputs: tiles to draw without a run of the ascent
        await pilot.pause()
        assert view.grid.tiles is not None and UPPER_HALF not in view.grid.render().plain  # plain: characters only


def _visible(app, widget) -> bool:
    """Whether the whole widget lies inside the screen, and nothing of it could be scrolled away."""
    region = widget.region
    cannot_scroll = not (widget.allow_vertical_scroll or widget.allow_horizontal_scroll) or widget.max_scroll_y == widget.max_scroll_x == 0
    return region.area > 0 and app.screen.region.contains_region(region) and cannot_scroll


@asynccontextmanager
async def ascended(cnn_path, layer: str, steps: int):
    """The app at 120×40 on the Filters view, with ``layer``'s filters drawn after ``steps`` of ascent."""
    app = make_app(demo=True, models=[cnn_path], model_dirs=[])
    app.animation_level = "none"
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("f")
        await settle(pilot)
        view = app.query_one(FiltersView)
        view.steps = steps
        view.select_layer(layer)
        await pilot.press("a")
        assert await wait_until(pilot, lambda: (cnn_path, layer, steps) in view.filters)
        await settle(pilot)
        yield app, pilot, view


@headless
async def test_at_120x40_a_layers_whole_grid_shows_without_scrolling(cnn_path):
    async with ascended(cnn_path, "conv1", 2) as (app, pilot, view):
        grid = view.grid
        layout = grid.arrangement
        assert layout.pages == 1 and list(grid.shown) == list(range(64))  # every filter on one page
        assert layout.tile >= 8
        # the tiles' rows fit the grid's region: no scrolling, no clipping
        rows = (mosaic(grid.tiles, layout, 0, crop=True).shape[0] + 1) // 2
        assert rows <= grid.content_region.height
        for widget in (grid, view, app.query_one(FiltersTab)):
            assert _visible(app, widget), widget
            assert not widget.show_vertical_scrollbar and not widget.show_horizontal_scrollbar
        text = screen_text(app)
        assert f"all 64 · centres {layout.tile}×{layout.tile} px" in text and "showing filters" in text
        lines = text.splitlines()[grid.content_region.y:grid.content_region.bottom]
        drawn = [line for line in lines if UPPER_HALF * (layout.columns * (layout.tile + 1) - 1) in line]
        assert len(drawn) == rows  # each row of tiles is on screen, as wide as the page's columns


@headless
async def test_a_layer_too_big_for_one_page_has_pages(cnn_path):
    async with ascended(cnn_path, "conv4", 1) as (app, pilot, view):
        grid = view.grid
        layout = grid.arrangement
        assert layout.tile == 8 and layout.pages == 2  # 128 filters do not fit at 8 px: two pages, not smaller tiles
        first = grid.shown
        assert first.start == 0 and len(first) == layout.per_page
        assert f"#0–{first.stop - 1} of 128 · centres 8×8 px · page 1/2 (← →)" in screen_text(app)
        await pilot.press("right")
        assert grid.shown == range(first.stop, 128)
        assert f"#{first.stop}–127 of 128 · centres 8×8 px · page 2/2 (← →)" in screen_text(app)
        assert _visible(app, grid) and not grid.show_vertical_scrollbar
        await pilot.press("right")  # wraps around
        assert grid.shown == first
        await pilot.press("plus")  # bigger tiles: more pages
        assert grid.arrangement.tile == 12 and grid.arrangement.pages > 2


def test_the_grid_picks_the_largest_tile_that_shows_a_whole_layer():
    width, height = 116, 62  # the grid's pixels at 120×40
    assert grid_layout(32, width, height).tile == 13
    assert grid_layout(64, width, height) == GridLayout(64, 9, 11, 6)
    for count in (128, 256):  # too many for 8 px: pages of 8-px tiles
        layout = grid_layout(count, width, height)
        assert layout.tile == 8 and layout.per_page == 13 * 7 and layout.pages == -(-count // 91)
    assert grid_layout(5, width, height) == GridLayout(5, 30, 3, 2)  # few tiles: big ones
    layout = grid_layout(10, 70, 100, tile=16)  # 4 tiles of 16 and 3 gaps fit in 70
    assert (layout.columns, layout.rows, layout.pages) == (4, 3, 1)
    assert grid_layout(10, 5, 5, tile=16).per_page == 1  # always at least one tile a page
    assert list(GridLayout(10, 8, 2, 2).page_range(2)) == [8, 9] and list(GridLayout(10, 8, 2, 2).page_range(9)) == [8, 9]


def test_mosaic_lays_out_one_page_resizing_or_cropping():
    tiles = np.zeros((10, 48, 48, 3), np.uint8)
    for k in range(10):
        tiles[k, :, :] = k * 20
    tiles[0, 20:28, 20:28] = 255  # a bright centre
    layout = GridLayout(10, 8, 3, 2)
    canvas = mosaic(tiles, layout, page=1)  # tiles 6..9: two rows of 3 columns
    assert canvas.shape == (2 * 9 - 1, 3 * 9 - 1, 3)
    assert canvas[0, 0, 0] == 120 and canvas[9, 0, 0] == 180 and canvas[9, 9, 0] == 24  # the rest is background
    cropped, resized = mosaic(tiles, layout, crop=True), mosaic(tiles, layout)
    assert (cropped[:8, :8] == 255).all()  # the centre at full resolution
    assert 0 < resized[:8, :8].max() < 255 and resized[0, 0, 0] == 0  # the whole, shrunk: the centre averaged away
    assert centre(np.zeros((5, 5, 3), np.uint8), 8).shape == (8, 8, 3)  # smaller than the tile: resized up


def test_the_widget_imports_without_torch():
    code = "import json, sys, fer_tui.views.filters, fer_runtime.explain; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout))
    assert "textual" in loaded and not {m for m in loaded if m == "torch" or m.startswith("torch.")}
