"""The models on offer: every ``.onnx`` in ``exported/`` (or given on the command line), loaded safely.

A file that is not a conforming model stays in the list with the reason, so the user sees why it is
unusable instead of the app failing. Companion files that other tools ship beside a model (the saliency
gradient graph ``*.grad.onnx``, filter and layer graphs) are not models and are left out; quantised
variants such as ``*.int8.onnx`` are models. Torch-free and textual-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from fer_train import explain_runtime
from fer_train.runtime import ModelError, OnnxClassifier, load_classifier

MODEL_SUFFIX = ".onnx"


def is_companion(path: Path) -> bool:
    """Sidecars of a model, never models themselves: its explanation graphs (``<model>.grad.onnx``,
    ``.layers.onnx``, ``.filters.<layer>.onnx``) and the exporter's ``<model>.tmp.onnx`` while it writes."""
    return explain_runtime.is_companion(path) or path.name.lower().endswith(".tmp.onnx")


def find_models(paths: Iterable[str | Path]) -> list[Path]:
    """The model files among ``paths`` (files, or folders searched one level deep), in order, no repeats.

    A missing ``.onnx`` file stays in the list (loading it says so); a missing folder is skipped.
    """
    found: dict[Path, None] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(MODEL_SUFFIX))
        elif not path.exists() and not path.name.lower().endswith(MODEL_SUFFIX):
            continue  # a folder that does not exist (yet): exported/ before the first export
        else:
            candidates = [path]
        for candidate in candidates:
            if not is_companion(candidate):
                found.setdefault(candidate.resolve() if candidate.exists() else candidate, None)
    return list(found)


def gradient_companion(model_path: Path) -> Path:
    """Where the saliency gradient graph of a model lives: ``<model>.grad.onnx`` beside it (a ``.fast`` or
    ``.int8`` variant uses its base model's)."""
    return explain_runtime.gradient_path(model_path)


@dataclass
class ModelEntry:
    """One model file: its classifier when it loaded, else the reason it did not."""

    path: Path
    classifier: OnnxClassifier | None = None
    error: str | None = None
    size_bytes: int = 0
    mtime_ns: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name[: -len(MODEL_SUFFIX)] if self.path.name.lower().endswith(MODEL_SUFFIX) else self.path.name

    @property
    def ok(self) -> bool:
        return self.classifier is not None

    @property
    def key(self) -> tuple[str, int, int]:
        """Identity for caches: a re-exported file (new size or time) gets new predictions."""
        return (str(self.path), self.size_bytes, self.mtime_ns)

    @property
    def metadata(self) -> dict:
        return self.classifier.metadata if self.classifier is not None else {}

    @property
    def class_names(self) -> list[str]:
        return list(self.classifier.class_names) if self.classifier is not None else []

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("architecture", "?"))

    @property
    def parameter_count(self) -> int | None:
        value = self.metadata.get("parameter_count")
        return int(value) if isinstance(value, (int, float)) else None

    def metric(self, split: str, key: str = "accuracy") -> float | None:
        """A metric recorded in the model's metadata at export (``metrics.<split>.<key>``)."""
        metrics = self.metadata.get("metrics")
        value = metrics.get(split, {}).get(key) if isinstance(metrics, dict) and isinstance(metrics.get(split), dict) else None
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def gradient_path(self) -> Path | None:
        companion = gradient_companion(self.path)
        return companion if companion.is_file() else None


def load_entry(path: str | Path, threads: int | None = None) -> ModelEntry:
    """Load one model; never raises: problems end up in ``error`` (and ``warnings``) for the UI."""
    path = Path(path)
    try:
        stat = path.stat()
        size, mtime = stat.st_size, stat.st_mtime_ns
    except OSError:
        size, mtime = 0, 0
    try:
        classifier = load_classifier(path, threads=threads)
    except ModelError as exc:
        return ModelEntry(path, error=str(exc), size_bytes=size, mtime_ns=mtime)
    except Exception as exc:  # onnxruntime may fail in ways load_classifier does not foresee
        return ModelEntry(path, error=f"{path}: cannot load ({exc.__class__.__name__}: {str(exc)[:200]})", size_bytes=size, mtime_ns=mtime)
    return ModelEntry(path, classifier, size_bytes=size, mtime_ns=mtime, warnings=list(classifier.warnings))


def default_model_dirs() -> list[Path]:
    """``exported/`` in the working folder, and the project's own when that is elsewhere."""
    here = Path.cwd() / "exported"
    project = Path(__file__).resolve().parent.parent / "exported"
    dirs = [here]
    if project.resolve() != here.resolve() and project.is_dir():
        dirs.append(project)
    return dirs
