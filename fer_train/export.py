"""Export to ONNX under the project's contract, and check the result before anyone relies on it.

After writing the file the exporter runs ``onnx.checker`` and compares onnxruntime with torch on real
images; a difference of logits above 1e-4 is an error, not a warning.
"""

from __future__ import annotations

from pathlib import Path

from fer_runtime.classifier import load_classifier
from fer_runtime.contract import (
    EVENT_EXPORTED,
    EVENT_MESSAGE,
    META_CLASS_NAMES,
    META_METRICS,
    METRICS_TEST,
    METRICS_VAL,
)
from fer_runtime.metrics import split_metrics

from .checkpoint import load_checkpoint, load_parent, model_from_checkpoint, resolve_checkpoint
from .models import deployable
from .onnx_export import OPSET, PARITY_ATOL, build_metadata, export_onnx  # noqa: F401  (the exporter's API)
from .onnx_meta import ExportError, write_metadata  # noqa: F401  (ExportError: what export_run raises)
from .run_folder import SEMI_SUMMARY_FILE, read_arm_history, read_semi_summary

def training_summary(checkpoint: dict, history: list[dict] | None = None) -> dict:
    """How the run was trained: epochs, wall time, hardware and the curves (``history``, else the checkpoint's own)."""
    import platform

    history = history if history is not None else checkpoint.get("history") or []
    config = checkpoint.get("config") or {}
    return {"training": {
        **_span(checkpoint, history),
        "hardware": f"CPU {platform.machine()}, {config.get('threads') or 'all'} threads" if config.get("device", "auto") != "cuda" else "CUDA",
        "history": _slim(history),
        **checkpoint.get("training", {}),  # world_size, backend, devices (fer_train.distributed)
        **({"initialized_from": checkpoint["initialized_from"]} if checkpoint.get("initialized_from")
           else parent_summary(config.get("init_from"))),  # recorded when the run started: the parent file may since be replaced
    }}


def _span(checkpoint: dict, history: list[dict]) -> dict:
    """Epochs done and the wall time they took."""
    return {"epochs": history[-1]["epoch"] if history else checkpoint.get("epoch"),
            "wall_seconds": round(sum(h.get("seconds", 0.0) for h in history), 1)}


def _slim(history: list[dict]) -> list[dict]:
    keep = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
    return [{k: (round(h[k], 5) if isinstance(h.get(k), float) else h.get(k)) for k in keep if k in h} for h in history]


def semi_summary(arm_dir: Path) -> dict:
    """An arm of a semi-supervised run (``fer-train --semi``) carries the run's comparison in its metadata: the
    settings, every arm's accuracies, rounds and curves, and the paired differences from the baseline. Nothing for
    a folder that is not an arm of a summarised run; a damaged ``semi.json`` or arm history is a :class:`DataError`."""
    run_dir = arm_dir.parent
    if not (run_dir / SEMI_SUMMARY_FILE).is_file():
        return {}
    summary = read_semi_summary(run_dir)
    if arm_dir.name not in summary["arms"]:
        return {}
    histories = {arm: _slim(read_arm_history(run_dir, arm)) for arm in summary["arms"]}
    kept = ("settings", "data", "arms", "comparison", "compute_seconds", "wall_seconds", "hardware")
    return {"semi": {"arm": arm_dir.name, **{k: summary[k] for k in kept if k in summary}, "histories": histories}}


def parent_summary(init_from: str | None) -> dict:
    """A fine-tuned run (``--init-from``) also records the runs it started from: their epochs, wall time and
    curves. A chain of fine-tunings (a run started from a run that was itself started from another) is followed
    to its first run: ``epochs``, ``wall_seconds`` and ``history`` then cover every earlier run, one after the
    other, and ``cycles`` lists each (run, epochs, wall seconds), oldest first. An exported ``.onnx`` parent
    brings its own record of the runs before it."""
    if not init_from:
        return {}
    try:
        parent = load_parent(init_from, prefer="last")
    except (FileNotFoundError, ValueError):
        return {"initialized_from": {"run": str(init_from)}}
    own = _span(parent, parent.get("history") or [])
    if "parent_summary" in parent:  # an export: the chain before it is in its metadata
        earlier = parent["parent_summary"]
    else:
        earlier = parent_summary((parent.get("config") or {}).get("init_from")).get("initialized_from") or {}
    offset = earlier.get("epochs") or 0
    history = (earlier.get("history") or []) + [{**h, "epoch": h["epoch"] + offset} for h in _slim(parent.get("history") or [])]
    cycles = (earlier.get("cycles") or ([{k: earlier[k] for k in ("run", "epochs", "wall_seconds") if k in earlier}] if earlier else []))
    cycles = cycles + [{"run": str(init_from), **own}]
    return {"initialized_from": {"run": str(init_from), "epochs": (own["epochs"] or 0) + offset,
                                 "wall_seconds": round(own["wall_seconds"] + (earlier.get("wall_seconds") or 0), 1),
                                 "history": history, "cycles": cycles}}


def measure(onnx_path: Path, splits, names=(METRICS_VAL, METRICS_TEST)) -> dict:
    """Accuracy, per-class recall and predictions of the exported file itself, on the splits that exist."""
    classifier = load_classifier(onnx_path)
    out = {}
    for name in names:
        split = splits.get_or_none(name)
        if split is None or not split.labelled:
            continue
        out[name] = split_metrics(split.labels, classifier.predict_logits(split.images).argmax(1))
    return out


def export_run(run: str | Path, *, splits=None, reporter=None, export_name: str | None = None, export_dir: str | Path = "exported",
               extra_metadata: dict | None = None, prefer: str = "best") -> Path:
    """Export a run's best checkpoint to ``<run>/model.onnx`` (and ``<export_dir>/<export_name>.onnx``).

    The metrics in the metadata are measured on the exported file with onnxruntime. The model and its
    explanation graphs (and any variants beside it) keep their tensors in one ``<stem>.weights`` file beside
    them (:func:`fer_train.shared_weights.share_family`): deploy ``<stem>.onnx`` together with ``<stem>.weights``.
    """
    from .config import TrainConfig
    from .data import load_splits

    ckpt_path = resolve_checkpoint(run, prefer)
    checkpoint = load_checkpoint(ckpt_path)
    trained = model_from_checkpoint(checkpoint)
    model = deployable(trained)  # BatchNorm folded: a plain chain for ONNX and the explanation graphs
    if splits is None:
        splits = load_splits(TrainConfig.from_dict(checkpoint["config"]))
    run_dir = ckpt_path.parent
    out = run_dir / "model.onnx"
    last = run_dir / "last.pt"  # the whole run's history, when the best epoch was not the last one
    history = load_checkpoint(last)["history"] if ckpt_path.name == "best.pt" and last.exists() else None
    extra = {**training_summary(checkpoint, history), **semi_summary(run_dir)}
    for key, value in (extra_metadata or {}).items():
        extra[key] = {**extra[key], **value} if isinstance(value, dict) and isinstance(extra.get(key), dict) else value
    metadata = build_metadata(trained, checkpoint, {}, extra)
    diff = export_onnx(model, out, metadata=metadata, check_images=splits.val.images[:256])
    metadata[META_METRICS] = measure(out, splits)
    write_metadata(out, metadata)
    if reporter is not None:
        reporter.emit(EVENT_EXPORTED, path=str(out), max_abs_diff=diff, metrics=metadata[META_METRICS])
    from .explain.gradient_onnx import copy_companions, write_companions
    from .shared_weights import copy_graph, share_family

    def tell(text: str) -> None:
        if reporter is not None:
            reporter.emit(EVENT_MESSAGE, text=text)

    # model.grad.onnx (+ layers, filters) beside model.onnx, each checked against torch autograd
    write_companions(model, out, splits.val.images[:64], reporter, metadata[META_CLASS_NAMES])
    # then the family's tensors go to one file, model.weights, each once (outputs checked bit for bit)
    share_family(out, log=tell)
    if export_name:
        target = Path(export_dir) / f"{export_name}.onnx"
        copy_graph(out, target)  # self-contained copies, shared again under the target's stem
        copy_companions(out, target)
        share_family(target, log=tell)
        if reporter is not None:
            reporter.emit(EVENT_EXPORTED, path=str(target), max_abs_diff=diff, metrics=metadata[META_METRICS])
        return target
    return out
