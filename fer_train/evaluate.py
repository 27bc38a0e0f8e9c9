"""Evaluate a checkpoint, a run folder or an exported ONNX file on a split: tables, JSON and a PNG."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from .config import TrainConfig
from fer_runtime.metrics import Report, classification_report, most_confused, row_normalise


@dataclass
class Evaluation:
    model: str
    split: str
    report: Report
    json_path: Path
    png_path: Path


def predict_any(model_path: Path, images: np.ndarray) -> tuple[np.ndarray, list[str], str]:
    """Logits from an .onnx (onnxruntime) or a checkpoint/run folder (torch), class names and a display name."""
    if model_path.suffix == ".onnx":
        from fer_runtime.classifier import load_classifier

        clf = load_classifier(model_path)
        return clf.predict_logits(images), clf.class_names, clf.name
    import torch

    from .checkpoint import load_checkpoint, model_from_checkpoint
    from fer_runtime.contract import CLASS_NAMES
    from .epoch import predict_logits

    ckpt = load_checkpoint(model_path)
    model = model_from_checkpoint(ckpt)
    logits = predict_logits(model, torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)).numpy()
    name = f"{ckpt['model_name']} ({model_path.name if model_path.is_file() else model_path.name + '/best.pt'})"
    return logits, list(CLASS_NAMES), name


def _config_for(model_path: Path, data: str | None) -> TrainConfig:
    """The data protocol the model was trained with (seed, held-out fraction), on ``data`` if given."""
    if model_path.suffix == ".onnx":
        from fer_runtime.classifier import load_classifier
        from fer_runtime.contract import META_CONFIG

        saved = load_classifier(model_path).metadata.get(META_CONFIG) or {}
    else:
        from .checkpoint import load_checkpoint

        saved = load_checkpoint(model_path).get("config", {})
    config = TrainConfig.from_dict({k: v for k, v in saved.items() if k in ("data", "val_fraction", "seed", "skip_bad")})
    if data is not None:
        config.data = data
    return config


def evaluate(model_path: str | Path, split: str = "val", data: str | None = None, out_dir: str | Path | None = None,
             console: Console | None = None) -> Evaluation:
    from .plots import plot_confusion
    from .data import load_splits

    model_path = Path(model_path)
    console = console or Console(stderr=True)
    splits = load_splits(_config_for(model_path, data))
    chosen = splits.get(split)
    if not chosen.labelled:
        raise ValueError(f"the {split} split of {splits.source.path} has no labels to evaluate against")
    logits, class_names, name = predict_any(model_path, chosen.images)
    report = classification_report(chosen.labels, logits.argmax(1), class_names)

    if out_dir is None:
        out_dir = model_path if model_path.is_dir() else (model_path.parent if model_path.suffix == ".pt" else Path("runs") / "eval" / model_path.stem)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"eval-{split}.json"
    json_path.write_text(json.dumps({"model": name, "split": split, "data": str(splits.source.path), **report.to_dict()}, indent=2))
    png_path = plot_confusion(report.confusion, class_names, out_dir / f"confusion-{split}.png",
                              title=f"{name} on {split} ({report.count:,} images): accuracy {report.accuracy:.4f}")
    print_report(report, f"{name} on {split}", console)
    console.print(f"wrote {json_path} and {png_path}", markup=False)
    return Evaluation(name, split, report, json_path, png_path)


def print_report(report: Report, title: str, console: Console) -> None:
    table = Table(title=f"{title}: accuracy {report.accuracy:.4f} on {report.count:,} images")
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for i, name in enumerate(report.class_names):
        table.add_row(name, f"{report.precision[i]:.3f}", f"{report.recall[i]:.3f}", f"{report.f1[i]:.3f}", str(report.support[i]))
    console.print(table)
    cm = np.array(report.confusion)
    norm = row_normalise(cm)
    matrix = Table(title="confusion (rows: true, columns: predicted; row %, count)")
    matrix.add_column("true \\ pred")
    for name in report.class_names:
        matrix.add_column(name[:8], justify="right")
    for i, name in enumerate(report.class_names):
        cells = [f"[bold]{norm[i, j]:.0%}[/] {cm[i, j]}" if i == j else f"{norm[i, j]:.0%} {cm[i, j]}" for j in range(len(report.class_names))]
        matrix.add_row(name, *cells)
    console.print(matrix)
    pairs = most_confused(cm, report.class_names, top=3)
    if pairs:
        console.print("most confused: " + "; ".join(f"{t} → {p} {share:.0%} ({n})" for t, p, share, n in pairs))
