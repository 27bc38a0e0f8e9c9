"""The Filters view: saliency, layer outputs and gradient ascent from a CNN's companion graphs, headless."""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from textual.app import App, ComposeResult

from fer_train.explain_runtime import AscentConfig
from fer_train.synthetic import make_faces
from fer_tui.filters_view import FiltersTab, FiltersView, Mosaic, mosaic
from fer_tui.render import UPPER_HALF

SIZE = (160, 70)


@pytest.fixture(scope="module")
def cnn_path(tmp_path_factory, random_slope_cnn):
    """An untrained CNN (random PReLU slopes) exported with its gradient, layer-output and conv1 filter graphs."""
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
    export_filter_graph(model, path, "conv1", faces)
    torch.set_num_threads(threads)
    return path


def headless(test):
    """Run an ``async def`` test in its own event loop (no pytest asyncio plugin here)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


async def until(pilot, condition, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        await pilot.pause(0.05)
        if condition():
            return True
    return False


class Host(App):
    def __init__(self, view):
        super().__init__()
        self.view = view

    def compose(self) -> ComposeResult:
        yield self.view


def _face() -> np.ndarray:
    return make_faces(4, seed=9)[0][3]


@headless
async def test_it_shows_saliency_layer_outputs_and_filters(cnn_path):
    view = FiltersView(threads=1, layer="conv1", ascent=AscentConfig(steps=3))
    async with Host(view).run_test(size=SIZE) as pilot:
        view.set_model(cnn_path)
        view.set_face(_face())
        assert await until(pilot, lambda: view.saliency is not None and view.outputs is not None)
        assert view.saliency.map.shape == (1, 48, 48) and view.outputs["conv1"].shape == (64, 44, 44)
        saliency = view.query_one("#filters-saliency", Mosaic)
        assert saliency.tiles.shape == (3, 48, 48, 3)
        assert UPPER_HALF in saliency.render().plain
        assert view.query_one("#filters-outputs", Mosaic).tiles.shape == (64, 44, 44, 3)
        assert "press a" in view.query_one("#filters-grid", Mosaic).message

        view.focus()
        await pilot.pause()
        await pilot.press("a")
        assert await until(pilot, lambda: view.filters)
        result = view.filters[(cnn_path, "conv1", 3)]
        assert result.images.shape == (64, 48, 48) and result.complete
        assert view.query_one("#filters-grid", Mosaic).tiles.shape == (64, 48, 48, 3)
        assert "64 filters in" in str(view.query_one("#filters-status").render())

        await pilot.press("full_stop")  # conv2: outputs are there, its filter graph is not
        assert view.layer_name == "conv2"
        await pilot.press("a")
        await pilot.pause(0.1)
        assert "no filter graph for conv2" in str(view.query_one("#filters-status").render())
        assert view.query_one("#filters-outputs", Mosaic).tiles.shape == (64, 22, 22, 3)


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
        assert await until(pilot, lambda: view.running is None)
        assert not view.filters
        assert "stopped after" in str(view.query_one("#filters-status").render())


@headless
async def test_without_companions_it_says_how_to_get_them(tmp_path):
    view = FiltersView(threads=1)
    async with Host(view).run_test(size=SIZE) as pilot:
        view.set_model(tmp_path / "lonely.onnx")
        view.set_face(_face())
        await pilot.pause(0.2)
        assert "no explanation graphs beside lonely.onnx" in str(view.query_one("#filters-status").render())
        view.set_model(None)
        await pilot.pause(0.1)
        assert "choose a model" in view.query_one("#filters-grid", Mosaic).message


@headless
async def test_the_tab_forwards_the_apps_model_and_face(cnn_path):
    tab = FiltersTab()
    async with Host(tab).run_test(size=SIZE) as pilot:
        tab.is_active = True
        context = SimpleNamespace(plain=True, model=SimpleNamespace(path=cnn_path, ok=True), image=_face())
        tab.update_context(context, tab.context)
        view = tab.query_one(FiltersView)
        assert view.model_path == cnn_path and view.plain
        assert await until(pilot, lambda: view.saliency is not None)
        assert UPPER_HALF not in view.query_one("#filters-saliency", Mosaic).render().plain  # plain: characters only


def test_mosaic_fills_the_width_with_tiles():
    tiles = np.zeros((10, 22, 22, 3), np.uint8)
    canvas = mosaic(tiles, tile=16, width=70)  # 4 tiles of 16 and 3 gaps fit in 70
    assert canvas.shape == (3 * 17 - 1, 4 * 17 - 1, 3)
    assert mosaic(tiles, tile=16, width=5).shape[1] == 16  # at least one column


def test_the_widget_imports_without_torch():
    code = "import json, sys, fer_tui.filters_view, fer_train.explain_runtime; print(json.dumps(sorted(sys.modules)))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout))
    assert "textual" in loaded and not {m for m in loaded if m == "torch" or m.startswith("torch.")}
