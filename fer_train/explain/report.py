"""``fer-train explain``: every explanation picture of one model in one folder, with an index.

    saliency-classes.png         one validation face per class: face, gradient heat map, masked face
    saliency-methods.png         the same faces: gradient, SmoothGrad and occlusion side by side
    filters-<layer>-<steps>.png  gradient ascent from noise for every filter of the layer
    regularisers-<layer>.png     a few filters of the first layer without and with each regulariser
    outputs-<layer>.png          the layer's feature maps for one face
    onnx/ (with --onnx)          model.onnx and its explanation graphs; onnxruntime timings, and the first
                                 layer's filters again, by onnxruntime (filters-<layer>-<steps>-onnxruntime.png)
    index.md, index.html         all of them together; explain.json: settings, faces and timings
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from fer_runtime import explain as rt
from fer_runtime.contract import CLASS_NAMES
from fer_runtime.io import Split
from . import sheets
from .backward import LayerInfo, conv_layer_infos, resolve_layer
from .filters import layer_outputs, visualise_filters
from .saliency import METHODS, saliency_maps, torch_logits_fn

DEFAULT_LAYERS = ("conv2", "conv3")  # the study's second and third conv layers
DEFAULT_STEPS = (40, 80)


def regulariser_settings(base: rt.AscentConfig) -> list[tuple[str, rt.AscentConfig]]:
    """The comparison rows: none, each regulariser alone, all together."""
    plain = replace(base, jitter=0, blur=0.0, l2=0.0, tv=0.0)
    jitter, blur, l2, tv = dict(jitter=2), dict(blur=0.6, blur_every=4), dict(l2=0.02), dict(tv=0.3)
    return [("none", plain), ("jitter 2px", replace(plain, **jitter)), ("blur σ0.6 / 4 steps", replace(plain, **blur)),
            ("L2 decay 0.02", replace(plain, **l2)), ("TV 0.3", replace(plain, **tv)),
            ("all four", replace(plain, **jitter, **blur, **l2, **tv))]


def pick_faces(images: np.ndarray, labels: np.ndarray, logits_fn, chunk: int = 64) -> np.ndarray:
    """One index per class present: its first correctly predicted image, else its first image.

    Predicts each class's images a chunk at a time and stops at the first correct one.
    """
    chosen = []
    for cls in range(len(CLASS_NAMES)):
        of_class = np.flatnonzero(labels == cls)
        if len(of_class) == 0:
            continue
        pick = int(of_class[0])
        for start in range(0, len(of_class), chunk):
            part = of_class[start:start + chunk]
            right = part[logits_fn(images[part]).argmax(axis=1) == cls]
            if len(right):
                pick = int(right[0])
                break
        chosen.append(pick)
    return np.array(chosen, np.int64)


@dataclass
class Entry:
    title: str
    file: str
    caption: str = ""


@dataclass
class ExplainReport:
    out_dir: Path
    entries: list[Entry] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


@dataclass
class _Job:
    """What every section needs."""

    model: nn.Module
    name: str  # the architecture
    samples: Split
    layers: list[LayerInfo]
    steps: list[int]
    ascent: rt.AscentConfig
    max_filters: int | None
    progress: Progress
    report: ExplainReport

    @property
    def out(self) -> Path:
        return self.report.out_dir

    def filters_of(self, info: LayerInfo) -> np.ndarray:
        return np.arange(min(self.max_filters or info.channels, info.channels))


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=True)


def explain_model(model_path: str | Path, out_dir: str | Path, *, data: str | None = None, split: str = "val",
                  layers=DEFAULT_LAYERS, steps=DEFAULT_STEPS, ascent: rt.AscentConfig | None = None, face_class: str = "Happy",
                  hide: float = 0.5, regularisers: bool = True, methods=METHODS, max_filters: int | None = None,
                  onnx: bool = False, threads: int | None = None, console: Console | None = None) -> ExplainReport:
    """Write the pictures and the index for the checkpoint or run folder ``model_path`` into ``out_dir``.

    ``max_filters``: visualise only the first N filters of each layer (a quick look); default all.
    ``onnx``: also export the model and its explanation graphs under ``out_dir/onnx`` and time them in
    onnxruntime (``threads`` threads).
    """
    from ..checkpoint import load_checkpoint, model_from_checkpoint, resolve_checkpoint
    from ..models import deployable
    from ..config import TrainConfig
    from ..data import load_splits

    console = console or Console(stderr=True)
    report = ExplainReport(Path(out_dir))
    report.out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = resolve_checkpoint(model_path)
    checkpoint = load_checkpoint(ckpt_path)
    model = deployable(model_from_checkpoint(checkpoint))
    config = TrainConfig.from_dict(checkpoint["config"])
    if data:
        config.data = data
    samples = load_splits(config).get(split)
    chosen_layers = [resolve_layer(model, name) for name in layers] if conv_layer_infos(model) else []
    steps = sorted({int(s) for s in steps})
    ascent = ascent or rt.AscentConfig()
    report.info = {"model": str(ckpt_path), "architecture": checkpoint["model_name"], "epoch": checkpoint.get("epoch"),
                   "best_metric": checkpoint.get("best_metric"), "split": split, "layers": [i.to_dict() for i in chosen_layers],
                   "steps": steps, "ascent": asdict(ascent), "hide": hide}
    console.print(f"explaining [bold]{ckpt_path}[/] ({checkpoint['model_name']}, epoch {checkpoint.get('epoch')}) → {report.out_dir}")

    with _progress(console) as progress:
        job = _Job(model, checkpoint["model_name"], samples, chosen_layers, steps, ascent, max_filters, progress, report)
        faces = _saliency_section(job, methods, hide, split)
        for info in chosen_layers:
            _filters_section(job, info)
        if regularisers and chosen_layers:
            _regulariser_section(job, chosen_layers[0])
        face_names = [CLASS_NAMES[int(samples.labels[i])] for i in faces]
        face = faces[face_names.index(face_class)] if face_class in face_names else faces[0]
        for info in chosen_layers:
            _outputs_section(job, info, int(face))
        if onnx:
            _onnx_section(job, checkpoint, threads)
    write_index(report)
    return report


def _saliency_section(job: _Job, methods, hide: float, split: str) -> np.ndarray:
    t0 = time.perf_counter()
    samples = job.samples
    faces = pick_faces(samples.images, samples.labels, torch_logits_fn(job.model))
    task = job.progress.add_task("saliency", total=len(methods))
    maps = saliency_maps(job.model, samples.images[faces], None, methods, progress=lambda m: job.progress.advance(task))
    labels = samples.labels[faces]
    sheets.class_sheet(maps, CLASS_NAMES, job.out / "saliency-classes.png", labels, hide=hide,
                       title=f"{job.name}: where the predicted class's score is sensitive (one {split} face per class)")
    job.report.entries.append(Entry("Saliency, one face per class", "saliency-classes.png",
                                    f"Top: the face (true class → predicted class and probability). Middle: |∂logit/∂pixel| of the "
                                    f"predicted class. Bottom: the face with its {hide:.0%} least salient pixels hidden."))
    if len(methods) > 1:
        sheets.methods_sheet(maps, CLASS_NAMES, job.out / "saliency-methods.png", labels, title=f"{job.name}: saliency methods on the same faces")
        job.report.entries.append(Entry("Saliency methods compared", "saliency-methods.png",
                                        "Gradient; SmoothGrad (25 noisy copies, σ = 15% of the range); occlusion (8×8 patch of the "
                                        "face's mean, stride 4: the drop of the class's probability)."))
    job.report.timings[f"saliency ({', '.join(methods)}; {len(faces)} faces, torch)"] = time.perf_counter() - t0
    job.report.info["faces"] = [{"class": CLASS_NAMES[int(samples.labels[i])], "index": int(i), "origin": str(np.asarray(samples.origin)[i])}
                                for i in faces]
    job.progress.remove_task(task)
    return faces


def _filters_section(job: _Job, info: LayerInfo) -> None:
    """One ascent to the largest step count, pictured at every step count."""
    task = job.progress.add_task(f"filters {info.name}", total=job.steps[-1])
    chosen = job.filters_of(info)
    results = visualise_filters(job.model, info.name, replace(job.ascent, steps=job.steps[-1]), filters=chosen, snapshots=job.steps,
                                progress=lambda s, total: job.progress.update(task, completed=s))
    for result in results:
        file = f"filters-{info.name}-{result.steps}.png"
        sheets.filter_grid(result, job.out / file, f"{job.name} {info.name} ({info.module}, {len(chosen)} of {info.channels} filters): "
                           f"gradient ascent from noise, {result.steps} steps; mean activation under each", cols=8 if len(chosen) <= 64 else 16)
        job.report.entries.append(Entry(f"Filters of {info.name} after {result.steps} steps", file,
                                        f"{replace(job.ascent, steps=result.steps).describe()}; mean activation reached: median "
                                        f"{np.median(result.activation):.3g}, max {result.activation.max():.3g}."))
        job.report.timings[f"filters {info.name}, {result.steps} steps ({len(chosen)} filters, torch)"] = result.seconds
    job.progress.remove_task(task)


def _regulariser_section(job: _Job, info: LayerInfo) -> None:
    """A few filters of one layer from the same noise: none, each regulariser alone, all four."""
    settings = regulariser_settings(replace(job.ascent, steps=job.steps[0]))
    task = job.progress.add_task(f"regularisers {info.name}", total=len(settings) * job.steps[0])
    rows = []
    for k, (label, config) in enumerate(settings):
        result = visualise_filters(job.model, info.name, config, filters=np.arange(min(8, info.channels)),
                                   progress=lambda s, total, k=k: job.progress.update(task, completed=k * total + s))[-1]
        rows.append((label, result))
    file = f"regularisers-{info.name}.png"
    sheets.regulariser_sheet(rows, job.out / file, f"{job.name} {info.name}: the same filters, {job.steps[0]} steps, by regulariser")
    job.report.entries.append(Entry(f"Regularisers on {info.name}", file,
                                    "Each row starts from the same noise. Jitter and blur remove pixel-level checkerboards, L2 decay and "
                                    "total variation keep the image near gray and smooth; the number is the mean activation reached."))
    job.progress.remove_task(task)


def _outputs_section(job: _Job, info: LayerInfo, face: int) -> None:
    image = job.samples.images[face]
    file = f"outputs-{info.name}.png"
    sheets.feature_maps(layer_outputs(job.model, image, info.name), image, job.out / file,
                        f"{job.name} {info.name} ({info.module}): its {info.channels} outputs {info.height}×{info.width} for one "
                        f"{CLASS_NAMES[int(job.samples.labels[face])]} face", cols=16)
    job.report.entries.append(Entry(f"Outputs of {info.name}", file, "Each feature map on its own colour scale (the conv output, before its PReLU)."))


def _timed(fn, repeats: int) -> float:
    """The median seconds of ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _onnx_section(job: _Job, checkpoint: dict, threads: int | None) -> None:
    """The model and its explanation graphs in onnxruntime: written, checked, timed, and one filter grid again."""
    from ..onnx_export import build_metadata, export_onnx
    from .gradient_onnx import export_explain_graphs

    task = job.progress.add_task("onnx export and checks", total=None)
    model_path = job.out / "onnx" / "model.onnx"
    check_images = job.samples.images[:64]
    export_onnx(job.model, model_path, metadata=build_metadata(job.model, checkpoint, {}), check_images=check_images)
    checks = export_explain_graphs(job.model, model_path, check_images)
    job.report.info["onnx_checks"] = [str(c) for c in checks]
    job.progress.remove_task(task)

    explainer = rt.Explainer(model_path, threads=threads)
    images = job.samples.images[:64].astype(np.float32)
    classes = explainer.logits(images).argmax(axis=1)
    job.report.timings["onnxruntime: one saliency map, batch 1"] = _timed(lambda: explainer.saliency(images[:1], classes[:1]), 20)
    batch = _timed(lambda: explainer.saliency(images, classes), 3)
    job.report.timings["onnxruntime: saliency maps, batch 64"] = batch
    job.report.timings["onnxruntime: saliency, per image in a batch of 64"] = batch / 64
    if job.layers:
        info = job.layers[0]
        chosen = job.filters_of(info)
        task = job.progress.add_task(f"filters {info.name} (onnxruntime)", total=job.steps[0])
        result = explainer.visualise_filters(info.name, replace(job.ascent, steps=job.steps[0]), filters=chosen,
                                             progress=lambda s, total: job.progress.update(task, completed=s))[-1]
        job.progress.remove_task(task)
        file = f"filters-{info.name}-{result.steps}-onnxruntime.png"
        sheets.filter_grid(result, job.out / file, f"{job.name} {info.name}: the same ascent in onnxruntime "
                           f"({model_path.name[:-5]}.filters.{info.name}.onnx), {result.steps} steps", cols=8 if len(chosen) <= 64 else 16)
        job.report.entries.append(Entry(f"Filters of {info.name} after {result.steps} steps, onnxruntime", file,
                                        "The ascent the TUI runs: the same numpy loop, the gradient from the exported filter graph."))
        job.report.timings[f"onnxruntime: filters {info.name}, {result.steps} steps ({len(chosen)} filters)"] = result.seconds


def write_index(report: ExplainReport) -> None:
    """``index.md`` and ``index.html`` showing every picture, and ``explain.json`` with settings and timings."""
    info = report.info
    head = f"{info.get('architecture', '')} — {info.get('model', '')}, epoch {info.get('epoch')}"
    md = [f"# Explanations: {head}", ""]
    for entry in report.entries:
        md += [f"## {entry.title}", "", entry.caption, "", f"![{entry.title}]({entry.file})", ""]
    if report.timings:
        md += ["## Timings", "", "| step | seconds |", "|---|---:|"] + [f"| {k} | {v:.3g} |" for k, v in report.timings.items()] + [""]
    if info.get("onnx_checks"):
        md += ["## onnxruntime against torch autograd", ""] + [f"- {line}" for line in info["onnx_checks"]] + [""]
    (report.out_dir / "index.md").write_text("\n".join(md))
    body = "".join(f"<h2>{html.escape(e.title)}</h2><p>{html.escape(e.caption)}</p><img src=\"{html.escape(e.file)}\" style=\"max-width:100%\">"
                   for e in report.entries)
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td style=\"text-align:right\">{v:.3g}</td></tr>" for k, v in report.timings.items())
    timings = f"<h2>Timings (seconds)</h2><table>{rows}</table>" if rows else ""
    (report.out_dir / "index.html").write_text(f"<!doctype html><meta charset=\"utf-8\"><title>{html.escape(head)}</title>"
                                               f"<body style=\"font-family:sans-serif;max-width:1400px;margin:auto\"><h1>{html.escape(head)}</h1>"
                                               f"{body}{timings}</body>\n")
    (report.out_dir / "explain.json").write_text(json.dumps({**info, "timings_s": {k: round(v, 4) for k, v in report.timings.items()},
                                                             "files": [e.file for e in report.entries]}, indent=2))
