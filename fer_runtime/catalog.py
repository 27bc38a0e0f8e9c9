"""The models on offer: every model file in ``exported/`` (or the files and folders given), loaded safely, and
the most accurate of them.

A file that is not a conforming model is kept with the reason, so that a user sees why it is unusable. Companion
files shipped beside a model (its explanation graphs ``*.grad.onnx``, ``*.layers.onnx``, ``*.filters.*.onnx``, and
the exporter's ``*.tmp.onnx`` while it writes) are not models and are left out; variants (``cnn.fast``,
``dnn.int8``, ``fer-best.tta``, ``fer-best.ensemble``) are models. ``fer-predict`` picks its default model here,
and the TUI lists its models from here. Torch-free and textual-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .classifier import ModelError, OnnxClassifier, load_classifier
from .family import fastest_variant, model_name
from .contract import (META_ARCHITECTURE, META_METRICS, META_PARAMETERS, METRIC_ACCURACY, METRICS_VAL, MODEL_SUFFIX,
)

RANKING_SPLIT = METRICS_VAL  # models are ranked by their accuracy on this split, as recorded at export
EXPORTED_DIR = "exported"


BUNDLED_DIR = Path(__file__).resolve().parent / "models"  # the default family inside an installed wheel (setup.py)


def is_companion(path: str | Path) -> bool:
    """Sidecars of a model, never models themselves: its explanation graphs and a ``<model>.tmp.onnx`` being written."""
    return model_name(path).is_companion


def _has_models(folder: Path) -> bool:
    return folder.is_dir() and any(not is_companion(p) for p in folder.glob("*" + MODEL_SUFFIX))


def default_model_dirs() -> list[Path]:
    """``exported/`` in the working folder, and the checkout's own when that is elsewhere; when neither holds a model
    (an installed package run from any folder), the models that ship inside the package (:data:`BUNDLED_DIR`)."""
    here = Path.cwd() / EXPORTED_DIR
    project = Path(__file__).resolve().parent.parent / EXPORTED_DIR
    dirs = [here]
    if project.resolve() != here.resolve() and project.is_dir():
        dirs.append(project)
    if not any(_has_models(d) for d in dirs) and _has_models(BUNDLED_DIR):
        dirs.append(BUNDLED_DIR)
    return dirs


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


@dataclass
class ModelEntry:
    """One model file: its classifier when it loaded, else the reason it did not."""

    path: Path
    classifier: OnnxClassifier | None = None
    error: str | None = None
    size_bytes: int = 0
    mtime_ns: int = 0
    warnings: list[str] = field(default_factory=list)
    threads: int | None = None
    variant: str = "auto"  # which speed variant runs predictions over many faces (fer_runtime.family.fastest_variant)
    _runner: OnnxClassifier | None = field(default=None, repr=False, compare=False)

    @property
    def runner(self) -> OnnxClassifier | None:
        """The classifier that predicts many faces: the fastest variant of this model that passed the accuracy gate
        (``<stem>.int8.onnx``, else ``<stem>.fast.onnx``; :attr:`variant` ``"fp32"`` keeps the model itself). Its
        ``path`` says which file ran. Saliency and the metadata stay with :attr:`classifier`, the file chosen."""
        if self.classifier is None:
            return None
        if self._runner is None:
            if self.variant == "fp32":
                self._runner = self.classifier
            else:
                try:
                    chosen = fastest_variant(self.path, self.variant)
                    same = chosen.resolve() == self.path.resolve()
                    self._runner = self.classifier if same else load_classifier(chosen, threads=self.threads)
                except (ModelError, ValueError, FileNotFoundError) as exc:  # a broken variant: the model itself still works
                    self.warnings.append(f"{exc}; predicting with {self.path.name}")
                    self._runner = self.classifier
        return self._runner

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
        return str(self.metadata.get(META_ARCHITECTURE, "?"))

    @property
    def parameter_count(self) -> int | None:
        value = self.metadata.get(META_PARAMETERS)
        return int(value) if isinstance(value, (int, float)) else None

    def metric(self, split: str, key: str = METRIC_ACCURACY) -> float | None:
        """A metric recorded in the model's metadata at export (``metrics.<split>.<key>``)."""
        metrics = self.metadata.get(META_METRICS)
        record = metrics.get(split) if isinstance(metrics, dict) else None
        value = record.get(key) if isinstance(record, dict) else None
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def gradient_path(self) -> Path | None:
        """The saliency gradient graph beside the model (a variant uses its base model's), when there."""
        companion = self.path.with_name(model_name(self.path).companion_name("grad"))
        return companion if companion.is_file() else None


def load_entry(path: str | Path, threads: int | None = None, variant: str = "auto") -> ModelEntry:
    """Load one model; never raises: problems end up in ``error`` (and ``warnings``). ``variant`` chooses the file
    that predicts many faces (:attr:`ModelEntry.runner`)."""
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
    return ModelEntry(path, classifier, size_bytes=size, mtime_ns=mtime, warnings=list(classifier.warnings), threads=threads,
                      variant=variant)


def most_accurate(models: Iterable[ModelEntry]) -> ModelEntry | None:
    """The usable model with the highest validation accuracy in its metadata (``metrics.val.accuracy``).

    Variants compete like any model, on their own recorded accuracy. Models without one rank after all that
    have one; ties keep the list's order.
    """
    usable = [m for m in models if m.ok]
    if not usable:
        return None
    accuracy = {id(m): m.metric(RANKING_SPLIT) for m in usable}
    return max(usable, key=lambda m: (accuracy[id(m)] is not None, accuracy[id(m)] or 0.0))


def best_model(paths: Iterable[str | Path] | None = None, threads: int | None = None, variant: str = "auto") -> ModelEntry | None:
    """Find the models in ``paths`` (default: :func:`default_model_dirs`) and return the most accurate, loaded;
    None when there is no usable one. ``variant`` is as for :func:`load_entry`."""
    return most_accurate(load_entry(p, threads, variant) for p in find_models(default_model_dirs() if paths is None else paths))


def default_classifier(threads: int | None = None) -> OnnxClassifier:
    """The classifier tools use when none is named: the most accurate model found (``exported/``, else the models
    inside the installed package), run by its fastest variant that passed the accuracy gate. :class:`ModelError`
    when there is none::

        from fer_runtime.catalog import default_classifier
        model = default_classifier()   # fer-best.tta.int8.onnx with the shipped models
    """
    entry = best_model(threads=threads)
    if entry is None:
        where = ", ".join(str(d) for d in default_model_dirs())
        raise ModelError(f"no usable model in {where}: pass a model file (.onnx) or install fer-workbench with its models")
    return entry.runner
