"""Write the explanation graphs beside a model and check each one against torch before anyone relies on it.

The graphs are the modules of :mod:`fer_train.explain.backward` (backward passes spelled in forward
operators), exported by the same TorchScript exporter as the model. The file names, inputs, outputs and
metadata are the contract documented in :mod:`fer_runtime.explain`.

Each file is checked on real faces as it is written: onnxruntime against torch autograd on a float64 copy
of the original model (the exact gradient, not torch's own float32 rounding of it), max |difference| at most
``1e-4`` of the gradient's scale (its largest absolute value over the check batch). A failed check removes the file and raises :class:`~fer_train.export.ExportError`.

One allowance: these nets are piecewise linear, so their gradient jumps where a max-pool window holds two
equal maxima or a PReLU input sits at 0. When such a near-tie falls within float32 rounding, onnxruntime's
and torch's last-bit differences may pick different sides, and both gradients are right. So up to 1 image
in 16 (at least one) may differ by more than 1e-4, but by at most 0.1, of the scale; the check reports it.
A wrong graph fails on every image, far beyond that.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fer_runtime.classifier import make_session
from fer_runtime.contract import (
    ACTIVATION,
    CAM_ACTIVATION_PREFIX,
    CAM_GRADIENT_PREFIX,
    CLASS_INDEX,
    CLASS_NAMES,
    EVENT_MESSAGE,
    FILTER_INDEX,
    GRADIENT,
    IMAGE_SIZE,
    META_CAM_LAYERS,
    META_CLASS_NAMES,
    META_KIND,
    META_LAYER,
    META_LAYERS,
    META_OF,
    ONNX_INPUT,
    ONNX_OUTPUT,
)
from fer_runtime.explain import filters_path, gradcam_path, gradient_path, layers_path

from ..onnx_meta import ExportError, write_metadata
from .backward import FilterGradient, GradCam, InputGradient, LayerOutputs, UnsupportedModelError, cam_layers, conv_layer_infos
from .filters import torch_filter_gradient_fn, torch_layer_outputs
from .gradcam import torch_cam_inputs
from .saliency import torch_gradient_fn

RELATIVE_TOLERANCE = 1e-4  # of the gradient's scale, max |autograd gradient| over the check batch
TIE_SHARE = 1 / 16  # images that may sit on a near-tie (at least one) …
TIE_TOLERANCE = 0.1  # … and differ by at most this much of the scale
OPSET = 17


@dataclass
class GraphCheck:
    """One written graph and how closely onnxruntime matched torch on the check images."""

    path: Path
    max_diff: float  # over the images that are not on a near-tie
    scale: float
    images: int
    seconds: float
    tie_images: int = 0  # images on a near-tie, where the two gradients took different sides
    tie_diff: float = 0.0

    @property
    def relative(self) -> float:
        return self.max_diff / self.scale if self.scale else self.max_diff

    def __str__(self) -> str:
        ties = f"; {self.tie_images} on a near-tie differ by {self.tie_diff / self.scale:.1e}" if self.tie_images else ""
        return f"{self.path.name}: max |Δ| {self.max_diff:.2e} = {self.relative:.1e} of scale {self.scale:.2e} on {self.images} images{ties}"


def _export(module: nn.Module, inputs: tuple, path: Path, input_names: list[str], output_names: list[str], metadata: dict) -> None:

    dynamic = {name: {0: "N"} for name in input_names + output_names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its own deprecation
        torch.onnx.export(module.eval(), inputs, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    write_metadata(path, metadata, doc=f"fer explanation graph ({metadata[META_KIND]}) of {metadata[META_OF]}; contract: fer_runtime.explain")


def _check(tmp: Path, target: Path, pairs: list[tuple[str, np.ndarray, np.ndarray]], images: int, t0: float,
           rtol: float = RELATIVE_TOLERANCE) -> GraphCheck:
    """Compare (name, onnxruntime, torch) pairs, arrays (N, ...); keep the file as ``target`` or remove it and raise.

    Gradients (names starting ``gradient``) get the near-tie allowance of the module docstring.
    """

    worst = None
    for name, got, expected in pairs:
        per_image = np.abs(got - expected).reshape(len(got), -1).max(axis=1) if got.size else np.zeros(0)
        scale = max(float(np.abs(expected).max()) if expected.size else 0.0, 1e-30)
        off = per_image > rtol * scale
        ties = name.startswith("gradient") and 0 < off.sum() <= max(1, int(len(off) * TIE_SHARE)) and per_image.max() <= TIE_TOLERANCE * scale
        if off.any() and not ties:
            tmp.unlink(missing_ok=True)
            raise ExportError(f"{target}: onnxruntime's {name} disagrees with torch: max |Δ| = {per_image.max():.3e} > {rtol:.0e} × scale "
                              f"{scale:.3e} on {off.sum()} of {images} images")
        check = GraphCheck(target, float(per_image[~off].max(initial=0.0)), scale, images, 0.0, int(off.sum()),
                           float(per_image[off].max(initial=0.0)))
        if worst is None or (check.tie_images, check.relative) > (worst.tie_images, worst.relative):
            worst = check
    tmp.replace(target)
    worst.seconds = time.perf_counter() - t0
    return worst


def _prepare(model: nn.Module, model_path: Path, check_images: np.ndarray, kind: str, class_names) -> tuple[np.ndarray, dict]:
    images = np.asarray(check_images, np.float32).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    if len(images) == 0:
        raise ValueError("the check needs at least one real image")
    model.eval()
    layers = [info.to_dict() for info in conv_layer_infos(model)]
    metadata = {META_KIND: kind, META_OF: Path(model_path).name, META_LAYERS: layers, META_CLASS_NAMES: list(class_names or CLASS_NAMES)}
    return images, metadata


def _exact(model: nn.Module) -> nn.Module:
    """A float64 copy: the reference gradient. torch's own float32 gradient differs from it at near-ties as much as
    onnxruntime's does (7 of 64 faces of a distilled fernet, by up to 0.9 % of the scale, where onnxruntime's
    differed on 1), so comparing two float32 results would count torch's rounding against the graph."""
    return copy.deepcopy(model).double().eval()


def _tmp(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.with_name(target.name[:-5] + ".tmp.onnx")


def export_gradient_graph(model: nn.Module, model_path: str | Path, check_images: np.ndarray, class_names=None) -> GraphCheck:
    """Write ``<stem>.grad.onnx``: (image, class_index) → (logits, gradient), checked against autograd."""
    t0 = time.perf_counter()
    images, metadata = _prepare(model, model_path, check_images, "gradient", class_names)
    target = gradient_path(model_path)
    tmp = _tmp(target)
    dummy = (torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE), torch.zeros(2, dtype=torch.int64))
    _export(InputGradient(model), dummy, tmp, [ONNX_INPUT, CLASS_INDEX], [ONNX_OUTPUT, GRADIENT], metadata)

    with torch.no_grad():
        logits = model(torch.from_numpy(images[:, None])).numpy()
    classes = np.arange(len(images)) % logits.shape[1]  # every class, not only the predicted one
    _, expected = torch_gradient_fn(_exact(model))(images, classes)
    got_logits, got = make_session(tmp).run([ONNX_OUTPUT, GRADIENT], {ONNX_INPUT: images[:, None], CLASS_INDEX: classes})
    return _check(tmp, target, [("logits", got_logits, logits), ("gradient", got[:, 0], expected)], len(images), t0)


def export_layer_outputs(model: nn.Module, model_path: str | Path, check_images: np.ndarray, class_names=None) -> GraphCheck:
    """Write ``<stem>.layers.onnx``: image → (conv1, …, convL), checked against the model's own layers."""
    t0 = time.perf_counter()
    images, metadata = _prepare(model, model_path, check_images, "layers", class_names)
    module = LayerOutputs(model)
    names = [info.name for info in module.infos]
    target = layers_path(model_path)
    tmp = _tmp(target)
    _export(module, (torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE),), tmp, [ONNX_INPUT], names, metadata)

    expected = torch_layer_outputs(model, images)
    got = make_session(tmp).run(names, {ONNX_INPUT: images[:, None]})
    return _check(tmp, target, [(name, g, expected[name]) for name, g in zip(names, got)], len(images), t0)


def export_filter_graph(model: nn.Module, model_path: str | Path, layer: str, check_images: np.ndarray, class_names=None) -> GraphCheck:
    """Write ``<stem>.filters.<layer>.onnx``: (image, filter_index) → (activation, gradient), checked against autograd."""
    t0 = time.perf_counter()
    images, metadata = _prepare(model, model_path, check_images, "filters", class_names)
    module = FilterGradient(model, layer)
    info = module.info
    metadata[META_LAYER] = info.to_dict()
    target = filters_path(model_path, info.name)
    tmp = _tmp(target)
    dummy = (torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE), torch.zeros(2, dtype=torch.int64))
    _export(module, dummy, tmp, [ONNX_INPUT, FILTER_INDEX], [ACTIVATION, GRADIENT], metadata)

    index = np.arange(len(images)) % info.channels
    activation, expected = torch_filter_gradient_fn(_exact(model), info.name)(images, index)
    got_activation, got = make_session(tmp).run([ACTIVATION, GRADIENT], {ONNX_INPUT: images[:, None], FILTER_INDEX: index})
    return _check(tmp, target, [("activation", got_activation, activation), ("gradient", got[:, 0], expected)], len(images), t0)


def export_gradcam_graph(model: nn.Module, model_path: str | Path, check_images: np.ndarray, class_names=None) -> GraphCheck:
    """Write ``<stem>.gradcam.onnx``: (image, class_index) → (logits, activation_<layer>, gradient_<layer> for the
    middle and the last conv layer), checked against autograd."""
    t0 = time.perf_counter()
    images, metadata = _prepare(model, model_path, check_images, "gradcam", class_names)
    layers = cam_layers(model)
    roles = ["middle", "last"][-len(layers):]
    metadata[META_CAM_LAYERS] = [{**info.to_dict(), "role": role} for info, role in zip(layers, roles)]
    outputs = [ONNX_OUTPUT] + [prefix + info.name for info in layers for prefix in (CAM_ACTIVATION_PREFIX, CAM_GRADIENT_PREFIX)]
    target = gradcam_path(model_path)
    tmp = _tmp(target)
    dummy = (torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE), torch.zeros(2, dtype=torch.int64))
    _export(GradCam(model, layers), dummy, tmp, [ONNX_INPUT, CLASS_INDEX], outputs, metadata)

    with torch.no_grad():
        logits = model(torch.from_numpy(images[:, None])).numpy()
    classes = np.arange(len(images)) % logits.shape[1]
    _, exact = torch_cam_inputs(_exact(model), images, classes, layers)
    got = make_session(tmp).run(outputs, {ONNX_INPUT: images[:, None], CLASS_INDEX: classes})
    expected = [logits] + [array for info in layers for array in exact[info.name]]
    return _check(tmp, target, list(zip(outputs, got, expected)), len(images), t0)


def export_explain_graphs(model: nn.Module, model_path: str | Path, check_images: np.ndarray, class_names=None,
                          progress=None) -> list[GraphCheck]:
    """All the companions of ``model_path``: the gradient graph, and for conv models the layer outputs and one
    filter graph per conv layer. ``progress(check)`` after each file.

    Raises :class:`UnsupportedModelError` (before writing anything) when the model is not a chain of
    supported layers.
    """
    infos = conv_layer_infos(model)  # fails early, with the layer's name, for unsupported models
    checks = [export_gradient_graph(model, model_path, check_images, class_names)]
    if progress:
        progress(checks[-1])
    if infos:
        for export in (export_gradcam_graph, export_layer_outputs):
            checks.append(export(model, model_path, check_images, class_names))
            if progress:
                progress(checks[-1])
        for info in infos:
            checks.append(export_filter_graph(model, model_path, info.name, check_images, class_names))
            if progress:
                progress(checks[-1])
    return checks


def companions_of(model_path: str | Path) -> list[Path]:
    """The explanation graphs that exist beside ``model_path``."""
    stem = Path(model_path).name[:-5]
    found = [gradient_path(model_path), gradcam_path(model_path), layers_path(model_path)] + sorted(Path(model_path).parent.glob(f"{glob_escape(stem)}.filters.*.onnx"))
    return [p for p in found if p.is_file()]


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def write_companions(model: nn.Module, model_path: str | Path, check_images: np.ndarray, reporter=None, class_names=None) -> list[Path]:
    """The exporter's step: all the explanation graphs of ``model_path``, reported as they are written.

    A model that is not a chain of supported layers gets none (and a message why); a graph that
    disagrees with torch raises :class:`~fer_train.export.ExportError`. Stale companions are removed first.
    """
    for stale in companions_of(model_path):
        stale.unlink()

    def tell(text: str) -> None:
        if reporter is not None:
            reporter.emit(EVENT_MESSAGE, text=text)

    try:
        checks = export_explain_graphs(model, model_path, check_images, class_names, progress=lambda c: tell(f"explanation graph {c}"))
    except UnsupportedModelError as exc:
        tell(f"no explanation graphs for {Path(model_path).name}: {exc}")
        return []
    return [c.path for c in checks]


def copy_companions(source_model: str | Path, target_model: str | Path) -> list[Path]:
    """Copy the companions of ``source_model`` beside ``target_model`` under its stem (stale ones there removed).

    Each copy is self-contained (a shared source's tensors come along from its weights file), so it loads
    wherever it lands; :func:`fer_train.shared_weights.share_family` on the target then shares them again under
    the target's own ``<stem>.weights``, as :func:`fer_train.export.export_run` does."""
    from ..shared_weights import copy_graph

    source_model, target_model = Path(source_model), Path(target_model)
    if source_model.resolve() == target_model.resolve():
        return companions_of(source_model)  # they are there already (and removing the stale ones would remove them)
    for stale in companions_of(target_model):
        stale.unlink()
    source_stem, target_stem = source_model.name[:-5], target_model.name[:-5]
    copied = []
    for path in companions_of(source_model):
        target = target_model.with_name(target_stem + path.name[len(source_stem):])
        copy_graph(path, target)
        copied.append(target)
    return copied
