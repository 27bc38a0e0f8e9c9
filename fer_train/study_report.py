"""``fer-train report``: the study's figures and numbers, made again from the shipped models and the real data.

Everything comes from the ``.onnx`` files in ``exported/`` (their metadata holds the training curves) and
their explanation graphs, run in onnxruntime; nothing is retrained. Pictures that contain no FER2013 face
go to ``<out>/figures`` (committed beside ``REPORT.md``); pictures made of faces (saliency, masked faces,
layer outputs) go to ``<out>/faces``, which is never committed (FER2013's images are not ours to ship).

    figures/curves.png                     loss and accuracy per epoch of every model that carries its history
    figures/curves-cnn-dnn.png             the study's comparison: CNN against DNN of the same size
    figures/confusion-<model>.png          validation confusion matrix, row-normalised
    figures/filters-<model>-<layer>-<n>.png  gradient ascent from white noise after n steps, every filter
    figures/semi-<model>.png, semi-rounds-<model>.png  a self-trained model's comparison with the labeled part alone
    faces/saliency-<model>.png             one validation face per class: face, saliency, masked face
    faces/outputs-<model>-<layer>-<class>.png  a layer's outputs for a happy and a surprised face
    numbers.md, summary.json               every number the report quotes
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console

from fer_runtime import explain as rt
from fer_runtime.contract import CLASS_NAMES, META_CONFIG, META_EXTRA, META_OPTIMIZATION, META_PARAMETERS
from fer_runtime.metrics import classification_report, confusion_matrix, most_confused
from .optimize import held_models

REPORT_MODELS = ("cnn", "dnn", "cnn-semi", "cnn-half", "fer-best")  # the study's four, the semi run's baseline, in the report's order
REPORT_VARIANTS = ("tta", "ensemble")  # <model>.<variant>.onnx beside a reported model: numbers and confusion, no pictures
DEFAULT_LAYERS = ("conv2", "conv4")
DEFAULT_STEPS = (40, 80)
OUTPUT_FACES = ("Happy", "Surprise")


@dataclass
class ModelNumbers:
    name: str
    architecture: str
    parameters: int
    accuracy: dict[str, float] = field(default_factory=dict)  # split → accuracy
    recall: dict[str, list[float]] = field(default_factory=dict)  # split → per-class recall
    confused: list = field(default_factory=list)  # validation: (true, predicted, share, count)
    training: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    variant: dict = field(default_factory=dict)  # a test-time variant: what it computes and its members


def _variant_of(meta: dict) -> dict:
    optimization = meta.get(META_OPTIMIZATION) or {}
    if "ensemble" in optimization:
        return {"what": optimization["ensemble"], "members": [m["file"] for m in held_models(optimization.get("member_files") or [])]}
    if "flip_average" in optimization:
        return {"what": optimization["flip_average"], "members": [optimization.get("source", "")]}
    return {}


def _history(metadata: dict) -> list[dict]:
    """The model's curves; a fine-tuned model's (``--init-from``) start with its parent run's epochs."""
    training = (metadata.get(META_EXTRA) or {}).get("training") or {}
    parent = (training.get("initialized_from") or {}).get("history") or []
    offset = parent[-1]["epoch"] if parent else 0
    return parent + [{**h, "epoch": h["epoch"] + offset} for h in training.get("history") or []]


def evaluate_model(path: Path, splits: dict, figures: Path) -> tuple[ModelNumbers, dict[str, np.ndarray]]:
    """Accuracy and recall on every split, the validation confusion matrix as a picture; also the logits."""
    from .plots import plot_confusion
    from fer_runtime.classifier import load_classifier

    clf = load_classifier(path)
    meta = clf.metadata
    training = {k: v for k, v in ((meta.get(META_EXTRA) or {}).get("training") or {}).items() if k != "history"}  # curves: _history
    if isinstance(training.get("initialized_from"), dict):
        training["initialized_from"] = {k: v for k, v in training["initialized_from"].items() if k != "history"}
    numbers = ModelNumbers(path.stem, clf.architecture, int(meta.get(META_PARAMETERS, 0)), training=training,
                           config=meta.get(META_CONFIG) or {}, variant=_variant_of(meta))
    logits = {}
    for split_name, (images, labels) in splits.items():
        logits[split_name] = clf.predict_logits(images)
        report = classification_report(labels, logits[split_name].argmax(1))
        numbers.accuracy[split_name] = round(report.accuracy, 5)
        numbers.recall[split_name] = [round(float(r), 4) for r in report.recall]
        if split_name == "val":
            cm = confusion_matrix(labels, logits[split_name].argmax(1), len(CLASS_NAMES))
            numbers.confused = [list(c) for c in most_confused(cm, top=5)]
            plot_confusion(cm, CLASS_NAMES, figures / f"confusion-{path.stem}.png",
                           title=f"{path.stem}: validation confusion (accuracy {report.accuracy:.3f})")
    return numbers, logits


def one_face_per_class(images: np.ndarray, labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """The index of each class's first correctly predicted validation face (its first face if none is right)."""
    right = logits.argmax(1) == labels
    chosen = []
    for cls in range(len(CLASS_NAMES)):
        of_class = np.flatnonzero(labels == cls)
        if len(of_class):
            good = of_class[right[of_class]]
            chosen.append(int(good[0] if len(good) else of_class[0]))
    return np.array(chosen, np.int64)


def saliency_sheet(explainer: rt.Explainer, images: np.ndarray, labels: np.ndarray, path: Path, title: str) -> Path:
    from .explain.saliency import SaliencyMaps
    from .explain.sheets import class_sheet

    result = explainer.saliency(images)  # the predicted class's gradient
    maps = SaliencyMaps(images=images, class_index=result.class_index, logits=result.logits, maps={"gradient": result.map})
    return class_sheet(maps, CLASS_NAMES, path, labels=labels, title=title)


def filter_sheets(explainer: rt.Explainer, name: str, layers, steps, figures: Path, max_filters: int | None, console: Console) -> dict:
    """Gradient ascent from white noise for every filter of each layer; one grid per snapshot step."""
    from .explain.sheets import filter_grid

    out = {}
    if not explainer.layers:  # a model without convolutions (the DNN)
        return out
    for layer in layers:
        if not explainer.has_filters(layer):
            console.print(f"  {name}: no filter graph for {layer}; skipped")
            continue
        info = explainer.layer(layer)
        filters = np.arange(min(max_filters or info["channels"], info["channels"]))
        t0 = time.perf_counter()
        results = explainer.visualise_filters(layer, rt.AscentConfig(steps=max(steps)), filters=filters, snapshots=tuple(steps))
        for result in results:
            path = figures / f"filters-{name}-{layer}-{result.steps}.png"
            filter_grid(result, path, f"{name} {layer}: {len(filters)} filters after {result.steps} ascent steps from white noise "
                                      f"(mean activation {result.activation.mean():.3g})")
            out[f"{layer}-{result.steps}"] = {"file": path.name, "mean_activation": round(float(result.activation.mean()), 5)}
        console.print(f"  {name} {layer}: {len(filters)} filters × {max(steps)} steps in {time.perf_counter() - t0:.1f} s")
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def semi_section(name: str, semi: dict, figures: Path) -> tuple[str, list[str]]:
    """The self-training comparison a semi-supervised model carries in its metadata: the table and two figures."""
    from .semi import report as semi_report
    from .semi.settings import PSEUDO_LABEL_ARMS, arm_kind

    collected = {arm: {"history": semi["histories"].get(arm, []), "rounds": a.get("rounds") or []} for arm, a in semi["arms"].items()}
    files = [semi_report.plot_comparison(collected, semi["settings"], figures / f"semi-{name}.png").name]
    rounds = semi_report.plot_rounds(collected, figures / f"semi-rounds-{name}.png", semi["settings"]["threshold"])
    files += [rounds.name] if rounds else []
    st, data = semi["settings"], semi["data"]
    rule = (f"self-training admits an unlabeled image when p_max > {st['threshold']} (an arm's own threshold where it names one), "
            "reselected after every round; " if any(arm_kind(arm) in PSEUDO_LABEL_ARMS for arm in semi["arms"]) else "")
    lines = [f"Semi-supervised (`{name}`, {st['model']}: the arm {semi['arms'][semi['arm']]['title']}): {data['labeled']:,} labeled and "
             f"{data['unlabeled']:,} unlabeled training images; {rule}{semi_report.rounds_text(st)} for every arm. "
             "Every arm is judged by its final model; Δ is paired, on the same images.",
             "", semi_report.markdown_table(semi)]
    for arm, a in semi["arms"].items():
        if a.get("rounds"):
            lines += ["", f"{a['title']}: images admitted after each round per pseudo-label class (their precision, graded with the "
                      "hidden labels, never used in training):", "", semi_report.rounds_table(a["rounds"])]
    return "\n".join(lines) + "\n", files


def numbers_markdown(models: list[ModelNumbers], semi_sections: list[str] = (), variants: list[ModelNumbers] = ()) -> str:
    lines = ["| model | architecture | parameters | validation | PublicTest | epochs | wall time | hardware |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for m in models:
        t, parent = m.training, m.training.get("initialized_from") or {}
        seconds = (t.get("wall_seconds") or 0) + (parent.get("wall_seconds") or 0)
        wall = f"{seconds / 60:.0f} min" if seconds else "–"
        earlier = [c.get("epochs", "?") for c in parent.get("cycles") or []] or ([parent["epochs"]] if parent.get("epochs") else [])
        epochs = " + ".join(str(e) for e in [*earlier, t.get("epochs", "–")]) if earlier else t.get("epochs", "–")  # fine-tuned: earlier runs' + own
        lines.append(f"| `{m.name}` | {m.architecture} | {m.parameters:,} | {_pct(m.accuracy.get('val'))} | {_pct(m.accuracy.get('test'))} "
                     f"| {epochs} | {wall} | {t.get('hardware', '–')} |")
    if variants:
        lines += ["", "Test-time variants (one ONNX graph each, `fer-train optimize --variants tta|ensemble`), on the same faces:", "",
                  "| model | computes | from | validation | PublicTest |", "|---|---|---|---:|---:|"]
        for m in variants:
            lines.append(f"| `{m.name}` | {m.variant.get('what', '–')} | {', '.join(f'`{f}`' for f in m.variant.get('members', [])) or '–'} "
                         f"| {_pct(m.accuracy.get('val'))} | {_pct(m.accuracy.get('test'))} |")
    for split, title in (("val", "validation"), ("test", "PublicTest")):
        lines += ["", f"Recall per class, {title}:", "", "| model | " + " | ".join(CLASS_NAMES) + " |", "|---|" + "---:|" * len(CLASS_NAMES)]
        for m in [*models, *variants]:
            if split in m.recall:
                lines.append(f"| `{m.name}` | " + " | ".join(f"{r:.2f}" for r in m.recall[split]) + " |")
    lines += ["", "Most confused on validation (true → predicted, share of the true class, count):", ""]
    for m in [*models, *variants]:
        pairs = "; ".join(f"{t} → {p} {s:.0%} ({c})" for t, p, s, c in m.confused)
        lines.append(f"- `{m.name}`: {pairs}")
    for section in semi_sections:
        lines += ["", section]
    return "\n".join(lines) + "\n"


def build_report(models_dir: str | Path = "exported", out_dir: str | Path = "report", *, data: str | None = None, names=REPORT_MODELS,
                 layers=DEFAULT_LAYERS, steps=DEFAULT_STEPS, max_filters: int | None = None, console: Console | None = None) -> dict:
    """Write every figure and ``numbers.md``/``summary.json``; return the summary."""
    from .config import TrainConfig
    from fer_runtime.classifier import load_classifier
    from .data import load_splits

    console = console or Console(stderr=True)
    models_dir, out_dir = Path(models_dir), Path(out_dir)
    figures, faces = out_dir / "figures", out_dir / "faces"
    figures.mkdir(parents=True, exist_ok=True)
    faces.mkdir(parents=True, exist_ok=True)
    paths = [models_dir / f"{n}.onnx" for n in names if (models_dir / f"{n}.onnx").is_file()]
    if not paths:
        raise FileNotFoundError(f"{models_dir}: none of {', '.join(f'{n}.onnx' for n in names)} is there")
    started = time.perf_counter()
    splits_obj = load_splits(TrainConfig(data=data))
    splits = {name: (s.images, s.labels) for name in ("val", "test") if (s := splits_obj.get_or_none(name)) is not None and s.labelled}
    val_labels = splits["val"][1]
    console.print(f"report on {', '.join(p.stem for p in paths)}: {len(val_labels)} validation faces"
                  + (f", {len(splits['test'][1])} PublicTest faces" if "test" in splits else ""))

    models, histories, explained, semi_sections, semi_runs = [], {}, {}, [], {}
    for path in paths:
        numbers, logits = evaluate_model(path, splits, figures)
        models.append(numbers)
        _say_accuracy(console, path, numbers)
        metadata = load_classifier(path).metadata
        if history := _history(metadata):
            histories[path.stem] = history
        entry = {}
        if semi := (metadata.get(META_EXTRA) or {}).get("semi"):
            run = json.dumps(semi["comparison"], sort_keys=True)  # two arms of one run (cnn-semi, cnn-half): its comparison once
            if run not in semi_runs:
                section, semi_runs[run] = semi_section(path.stem, semi, figures)
                semi_sections.append(section)
            entry["semi"] = semi_runs[run]
        entry.update(_explanation_pictures(path, splits["val"], logits["val"], figures, faces, layers, steps, max_filters, console))
        explained[path.stem] = entry
    variants = _variant_numbers(paths, splits, figures, console)
    _plot_histories(histories, figures)

    summary = {"models": [m.__dict__ for m in models], "variants": [m.__dict__ for m in variants], "pictures": explained, "curves": sorted(histories),
               "data": {"val": len(val_labels), "test": len(splits["test"][1]) if "test" in splits else 0},
               "settings": {"layers": list(layers), "steps": list(steps), "max_filters": max_filters},
               "seconds": round(time.perf_counter() - started, 1)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "numbers.md").write_text(numbers_markdown(models, semi_sections, variants))
    console.print(f"report written to {out_dir} in {summary['seconds']:.0f} s (numbers.md, summary.json, figures/, faces/)")
    return summary


def _say_accuracy(console: Console, path: Path, numbers: ModelNumbers) -> None:
    console.print(f"  {path.stem}: validation {_pct(numbers.accuracy.get('val'))}, PublicTest {_pct(numbers.accuracy.get('test'))}")


def _explanation_pictures(path: Path, val: tuple[np.ndarray, np.ndarray], val_logits: np.ndarray, figures: Path, faces: Path,
                          layers, steps, max_filters: int | None, console: Console) -> dict:
    """The pictures that explain the model in ``path``: saliency on one validation face per class, the outputs of
    ``layers`` for a happy and a surprised face, and the layers' filters. Nothing for a model without explanation graphs."""
    explainer = rt.Explainer(path)
    if not explainer.has_gradient:
        return {}
    val_images, val_labels = val
    chosen = one_face_per_class(val_images, val_labels, val_logits)
    sheet = saliency_sheet(explainer, val_images[chosen], val_labels[chosen], faces / f"saliency-{path.stem}.png",
                           f"{path.stem}: saliency of the predicted class, and the face with its least salient half hidden")
    pictures = {"saliency": sheet.name}
    if explainer.has_layers:
        output_faces = [val_images[chosen[CLASS_NAMES.index(c)]] for c in OUTPUT_FACES]
        if outputs := _layer_output_sheets(explainer, path.stem, output_faces, layers, faces):
            pictures["outputs"] = outputs
    pictures["filters"] = filter_sheets(explainer, path.stem, layers, steps, figures, max_filters, console)
    return pictures


def _layer_output_sheets(explainer, name: str, output_faces: list[np.ndarray], layers, faces: Path) -> list[str]:
    """``faces/outputs-<model>-<layer>-<class>.png``: the outputs of each of ``layers`` for each face of :data:`OUTPUT_FACES`."""
    from .explain.sheets import feature_maps

    files = []
    for cls_name, face in zip(OUTPUT_FACES, output_faces):
        outputs = explainer.layer_outputs(face)
        for layer in layers:
            if layer in outputs:
                file = feature_maps(outputs[layer], face, faces / f"outputs-{name}-{layer}-{cls_name.lower()}.png",
                                    f"{name} {layer} outputs for a {cls_name.lower()} face")
                files.append(file.name)
    return files


def _variant_numbers(paths: list[Path], splits: dict, figures: Path, console: Console) -> list[ModelNumbers]:
    """The numbers of the test-time variants beside the reported models (``<model>.tta.onnx``, ``<model>.ensemble.onnx``)."""
    variants = []
    for path in [p.with_name(f"{p.stem}.{v}.onnx") for p in paths for v in REPORT_VARIANTS]:
        if path.is_file():
            numbers, _ = evaluate_model(path, splits, figures)
            variants.append(numbers)
            _say_accuracy(console, path, numbers)
    return variants


def _plot_histories(histories: dict[str, list[dict]], figures: Path) -> None:
    """``curves.png`` of every model that carries its history, and the study's CNN against DNN when both do."""
    from .plots import plot_curves

    if histories:
        plot_curves(histories, figures / "curves.png", title="training curves of the shipped models")
    if {"cnn", "dnn"} <= set(histories):
        plot_curves({k: histories[k] for k in ("cnn", "dnn")}, figures / "curves-cnn-dnn.png", title="the study's CNN against its DNN of the same size")
