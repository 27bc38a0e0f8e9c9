"""Support for the TUI tests: small hand-built ONNX models (deterministic, torch-free, built in milliseconds)
and helpers that drive the app headless.

``template_model`` is a linear classifier whose weights are the demo faces' class means (so it is right
more often than not on drawn faces); ``template_gradient`` is its exact gradient graph under the
``<model>.grad.onnx`` contract. Others break the contract in one way each.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fer_runtime.contract import CLASS_NAMES, NUM_PIXELS
from fer_runtime.synthetic import make_faces

OPSET = [helper.make_opsetid("", 17)]


def template_weights(n: int = 280, seed: int = 11, temperature: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean pixel values (2304,) and weights (2304, 7): unit-length class templates, scaled."""
    images, labels = make_faces(n, seed)
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    mean = x.mean(axis=0)
    templates = np.stack([(x[labels == c] - mean).mean(axis=0) for c in range(len(CLASS_NAMES))], axis=1)
    templates /= np.linalg.norm(templates, axis=0, keepdims=True)
    return (mean * 255.0).astype(np.float32), (templates * temperature / 255.0).astype(np.float32)


def _save(graph, path: Path, metadata: dict | None) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def template_metadata(name: str = "template") -> dict:
    return {"class_names": list(CLASS_NAMES), "architecture": name, "parameter_count": NUM_PIXELS * len(CLASS_NAMES),
            "metrics": {"val": {"accuracy": 0.5, "count": 70}, "test": {"accuracy": 0.5, "count": 280}},
            "train_config": {"model": name, "epochs": 0, "optimizer": "none"}, "fer_version": "test"}


def _linear_nodes(mean: np.ndarray, weights: np.ndarray):
    inits = [numpy_helper.from_array(np.array([-1, NUM_PIXELS], np.int64), "flat_shape"),
             numpy_helper.from_array(mean, "mean"), numpy_helper.from_array(weights, "weights")]
    nodes = [helper.make_node("Reshape", ["image", "flat_shape"], ["flat"]),
             helper.make_node("Sub", ["flat", "mean"], ["centred"]),
             helper.make_node("MatMul", ["centred", "weights"], ["logits"])]
    return nodes, inits


def template_model(path: Path, metadata: dict | None = None, *, with_metadata: bool = True) -> Path:
    mean, weights = template_weights()
    nodes, inits = _linear_nodes(mean, weights)
    graph = helper.make_graph(nodes, "template", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 48, 48])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 7])], inits)
    return _save(graph, Path(path), (metadata or template_metadata()) if with_metadata else None)


def template_gradient(path: Path) -> Path:
    """The exact gradient graph of ``template_model``: d logit[c] / d image = weights[:, c]."""
    mean, weights = template_weights()
    nodes, inits = _linear_nodes(mean, weights)
    inits += [numpy_helper.from_array(np.ascontiguousarray(weights.T), "weights_t"),
              numpy_helper.from_array(np.array([-1, 1, 48, 48], np.int64), "image_shape")]
    nodes += [helper.make_node("Gather", ["weights_t", "class_index"], ["rows"], axis=0),
              helper.make_node("Reshape", ["rows", "image_shape"], ["gradient"])]
    graph = helper.make_graph(nodes, "template-grad",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 48, 48]),
                               helper.make_tensor_value_info("class_index", TensorProto.INT64, ["N"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 7]),
                               helper.make_tensor_value_info("gradient", TensorProto.FLOAT, ["N", 1, 48, 48])], inits)
    return _save(graph, Path(path), None)


def wrong_output_model(path: Path) -> Path:
    """The right input, but logits for 3 classes instead of 7."""
    mean, weights = template_weights()
    nodes, inits = _linear_nodes(mean, np.ascontiguousarray(weights[:, :3]))
    graph = helper.make_graph(nodes, "three", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 48, 48])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    return _save(graph, Path(path), None)


def wrong_shape_model(path: Path) -> Path:
    """Input [N, 3, 32, 32]: a model, but not a fer model."""
    node = helper.make_node("ReduceMean", ["image"], ["pooled"], axes=[2, 3], keepdims=0)
    graph = helper.make_graph([node, helper.make_node("Identity", ["pooled"], ["logits"])], "wrong",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])])
    return _save(graph, Path(path), None)


# -- driving the app -------------------------------------------------------------------------------


def screen_text(app) -> str:
    """What the app's terminal shows now, as plain text (the same render as a screenshot)."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system="truecolor",
                      record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens, simplify=False))
    return console.export_text(styles=False)


def fully_shown(widget) -> bool:
    """Whether all of ``widget`` is on screen: displayed, of some size, and cut neither by the terminal's edge nor by
    a container (a control half off screen, or a panel squeezed to nothing, is not)."""
    from textual.errors import NoWidget

    try:
        geometry = widget.screen.find_widget(widget)
    except NoWidget:
        return False
    return widget.display and geometry.region.area > 0 and geometry.visible_region == geometry.region


async def settle(pilot, rounds: int = 4) -> None:
    """Let the app's workers finish and their messages land (workers may start other workers)."""
    app = pilot.app
    for _ in range(rounds):
        await app.workers.wait_for_complete()
        await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


async def wait_until(pilot, condition, timeout: float = 60.0, step: float = 0.05) -> bool:
    """Pause until ``condition()`` holds (True) or ``timeout`` seconds pass (False)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await pilot.pause(step)
    return bool(condition())


def headless(test):
    """Run an ``async def`` test in its own event loop (the project has no pytest asyncio plugin)."""
    import asyncio
    import functools

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


class LoopWatch:
    """The longest the app's event loop went without running (how long a key would have waited), while active.

    A task wakes every ``tick`` seconds; any lateness beyond the tick is time the UI could not answer.
    """

    def __init__(self, tick: float = 0.01):
        self.tick = tick
        self.longest = 0.0
        self.longest_cpu = 0.0  # CPU time the UI thread itself used during that longest stall
        self.longest_at = 0.0  # when it ended, in seconds since the watch started
        self._task = None

    async def _watch(self) -> None:
        import asyncio
        import time

        last, last_cpu = time.perf_counter(), time.thread_time()
        start = last
        while True:
            await asyncio.sleep(self.tick)
            now, cpu = time.perf_counter(), time.thread_time()
            if now - last - self.tick > self.longest:
                self.longest, self.longest_cpu, self.longest_at = now - last - self.tick, cpu - last_cpu, now - start
            last, last_cpu = now, cpu

    async def __aenter__(self) -> "LoopWatch":
        import asyncio

        self._task = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()


async def key_latency(pilot, key: str, answered, timeout: float = 10.0, step: float = 0.002) -> float:
    """Send one key as the terminal would and return the seconds until ``answered()`` holds.

    Unlike ``pilot.press`` (which also waits for the whole process, worker threads included, to go
    idle) this times only the UI: the key's arrival to its visible effect.
    """
    import asyncio
    import time

    from textual import events

    app = pilot.app
    event = events.Key(key, key if len(key) == 1 else None)
    event.set_sender(app)
    start = time.perf_counter()
    app.post_message(event)
    while not answered():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"key {key!r} not answered in {timeout} s")
        await asyncio.sleep(step)
    return time.perf_counter() - start
