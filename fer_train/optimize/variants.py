"""``fer-train optimize``: make the variants of one exported model, check each, write those that pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_runtime.contract import (META_CONFIG, META_FP32_METRICS, META_FP32_TEST_ACCURACY, META_METRICS, META_OPTIMIZATION,
                                  META_VARIANT, META_VARIANT_TEST_ACCURACY, METRICS_TEST, METRICS_VAL, MODEL_SUFFIX)
from fer_runtime.family import FAST_VARIANT, model_name
from fer_runtime.metrics import split_metrics, without_predictions

from ..onnx_meta import set_metadata
from ..shared_weights import family_of, share_family
from .builders import BUILDERS, FUSED_ATOL, SEVEN_BITS_MAX_VAL_DROP, Build, Refused
from .compose import FLIP_VIEWS, TTA_CANDIDATES, load_members
from .gate import MAX_ACCURACY_DROP, GateResult, accuracy_gate, accuracy_points, logits_of
from .graph import model_sha256
from .tta_int8 import is_tta_model, tta_int8_variant

__all__ = ["DEFAULT_CALIBRATION", "DEFAULT_PERCENTILE", "FUSED_ATOL", "SEVEN_BITS_MAX_VAL_DROP", "TTA_CANDIDATES", "VARIANTS",
           "VariantResult", "load_optimize_splits", "optimize_model", "variant_metadata"]

# int8 calibration: percentile (clipping the rarest outliers) lost least validation accuracy (docs/optimize.md)
DEFAULT_CALIBRATION = "percentile"
DEFAULT_PERCENTILE = 99.999
VARIANTS = tuple(BUILDERS)  # tta (flip averaging) and ensemble (with --with members) only when asked


@dataclass
class VariantResult:
    name: str  # "fast", "int8", "tta" or "ensemble"
    path: Path
    gate: GateResult | None
    written: bool
    steps: dict = field(default_factory=dict)
    message: str = ""
    removed_stale: bool = False  # a refused variant's older file, made from another version of the model, was removed


def variant_metadata(original: dict, variant: str, gate: GateResult, metrics: dict, steps: dict, source: Path) -> dict:
    """The original's metadata (decoded values) plus what the variant is and how it scores."""
    meta = dict(original)
    meta[META_FP32_METRICS] = without_predictions(original.get(META_METRICS, {}))
    meta[META_METRICS] = metrics
    meta[META_VARIANT] = variant
    meta[META_FP32_TEST_ACCURACY] = round(gate.fp32_accuracy / 100, 5)
    meta[META_VARIANT_TEST_ACCURACY] = round(gate.variant_accuracy / 100, 5)
    meta[META_OPTIMIZATION] = {**steps, "max_drop": gate.max_drop,  # the gate it passed (fer_runtime.family reads it)
                               "source": source.name, "source_sha256": model_sha256(source)[:16]}
    return meta


def _save(model, path: Path, metadata: dict) -> None:
    """Write ``model`` with ``metadata`` (JSON-encoded values) atomically, then check it loads as a fer model."""
    import onnx

    from fer_runtime.classifier import load_classifier

    set_metadata(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    load_classifier(tmp)  # the contract: raises ModelError naming the problem
    tmp.replace(path)


def load_optimize_splits(model_path: Path, data: str | Path | None = None):
    """The validation (calibration) and PublicTest (gate) splits the model was trained with (torch-free)."""
    from fer_runtime.classifier import load_classifier
    from fer_runtime.io import DataError, default_data_path, load_source
    from fer_runtime.splits import make_splits

    config = load_classifier(model_path).metadata.get(META_CONFIG) or {}
    path = data or config.get("data") or default_data_path()
    if path is None:
        raise DataError("<no data>", "no data given and none found; pass --data PATH (FER2013 CSV) or set FER_DATA")
    splits = make_splits(load_source(path), val_fraction=config.get("val_fraction", 0.1), seed=config.get("seed", 0))
    if splits.test is None or not splits.test.labelled:
        raise DataError(path, "has no labelled PublicTest split, which the accuracy gate needs")
    return splits


def _remove_stale(path: Path, source: Path) -> str:
    """A variant of an earlier version of the model must not stay beside the new one once it is refused."""
    from fer_runtime.classifier import ModelError, load_classifier

    if not path.exists():
        return ""
    try:
        made_from = load_classifier(path).metadata.get(META_OPTIMIZATION, {}).get("source_sha256")
    except ModelError:
        made_from = None
    if made_from == model_sha256(source)[:16]:
        return ""
    path.unlink()
    return f"; removed the old {path.name}, made from another version of {source.name}"


def _tta_int8(model_path: Path, out_dir: Path, splits, max_drop: float, log) -> VariantResult:
    """``<stem>.tta.int8.onnx``: the model's int8 graph under the TTA file's views (:mod:`.tta_int8`), gated against
    the TTA file, written and joined to the family's weights like every other variant."""
    model, steps, tta_meta = tta_int8_variant(model_path)
    path = model_name(model_path).base_path(out_dir, speed="int8")
    result = _gate_and_write("int8", model, steps, path, model_path, tta_meta, splits.val, splits.test,
                             logits_of(model_path, splits.test.images), max_drop)
    log(f"  {path.name}: {result.message}")
    if (result.written or result.removed_stale) and family_of(path):
        share_family(path, log=lambda text: log(f"  {text}"))
    return result


def optimize_model(model_path: str | Path, splits, *, out_dir: str | Path | None = None, variants=None,
                   calibration_images: int = 1000, weight_bits: int | str = "auto", max_drop: float = MAX_ACCURACY_DROP, log=print,
                   members: list | None = None, ensemble_flip: bool = False, calibration: str = DEFAULT_CALIBRATION,
                   percentile: float = DEFAULT_PERCENTILE, per_channel: bool = True, keep_float=(), tta: str = "auto") -> list[VariantResult]:
    """Write ``<stem>.fast.onnx`` and ``<stem>.int8.onnx`` beside the model (or in ``out_dir``), each only if
    it passes its checks: logits within :data:`FUSED_ATOL` for the fp32 rewrite, the accuracy gate for both.
    ``variants=None``: those two; for a test-time-augmentation model (``<stem>.tta.onnx``) its one speed variant,
    ``<stem>.tta.int8.onnx`` (its model's int8 graph under the same views, :mod:`.tta_int8`).
    ``tta`` and ``ensemble`` (this model with the ``members`` files; with ``ensemble_flip`` each also on the
    mirror image) pass the accuracy gate too. The variants written then share the family's ``<stem>.weights``
    (:func:`fer_train.shared_weights.share_family`): a tensor they hold unchanged is stored once.

    ``tta``: the views of the ``tta`` variant, a name of :data:`TTA_CANDIDATES` (``flip``: the face and its mirror
    image; ``flip+shift2``: both also shifted 2 pixels four ways, …) or ``auto``: the candidate most accurate on
    validation, the cheaper on a tie (every candidate's score is recorded in the variant's ``tta_choice``).

    ``splits`` needs ``.val`` (calibration: its first ``calibration_images`` faces) and ``.test`` (the gate).
    int8: ``calibration`` (``minmax``, ``percentile`` with ``percentile``, ``entropy``), ``weight_bits``,
    ``per_channel`` and ``keep_float`` (nodes left in fp32) as in :func:`quantize_int8`; the defaults are
    the configuration that lost least validation accuracy on the shipped models (docs/optimize.md).
    ``weight_bits="auto"``: the first of 7 bits (the same numbers on every x86 CPU), 7 bits with the first and
    last layers in fp32 (unless ``keep_float`` is given) and 8 bits (exact only with VNNI) that loses at most
    :data:`SEVEN_BITS_MAX_VAL_DROP` points of validation accuracy, else the one that loses least; the choice is
    made on validation, never on PublicTest, and recorded in the variant's ``optimization`` (``int8_choice``).
    """
    import onnx

    from fer_runtime.classifier import load_classifier

    model_path = Path(model_path)
    out_dir = Path(out_dir) if out_dir is not None else model_path.parent
    stem = model_name(model_path).model  # fer-best.onnx → fer-best; its variants are <stem>.<variant>.onnx
    original_meta = load_classifier(model_path).metadata
    if is_tta_model(original_meta):
        if variants is not None and list(variants) != ["int8"]:
            raise ValueError(f"{model_path.name} averages test-time views: its one speed variant is int8 (its model's int8 graph "
                             f"under the same views); run fer-train optimize {model_path} --variants int8")
        return [_tta_int8(model_path, out_dir, splits, max_drop, log)]
    variants = ("fast", "int8") if variants is None else variants
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    source = onnx.load(str(model_path))
    test, val = splits.test, splits.val
    fp32_test = logits_of(source, test.images)
    fp32_accuracy = accuracy_points(fp32_test, test.labels)
    log(f"{model_path}: fp32 PublicTest accuracy {fp32_accuracy:.2f}% on {len(test):,} faces")

    ensemble, member_files, weights = load_members(model_path, source, members, original_meta) if "ensemble" in variants else ([], [], [])
    build = Build(source, val, log, calibration_images, weight_bits, calibration, percentile, per_channel, tuple(keep_float), tta,
                  ensemble, member_files, weights, ensemble_flip)
    results = []
    for name in variants:
        results.append(_make_variant(name, out_dir / f"{stem}.{name}.onnx", build, model_path, original_meta, test, fp32_test, max_drop))
        log(f"  {results[-1].path.name}: {results[-1].message}")
    anchor = out_dir / f"{stem}.{VARIANTS[0]}{MODEL_SUFFIX}"  # a variant's name: its family is the one they join
    if any(r.written or r.removed_stale for r in results) and family_of(anchor):
        # the variants join the model's family: its tensors in one <stem>.weights, each once (outputs checked bit for bit)
        share_family(anchor, log=lambda text: log(f"  {text}"))
    return results


def _make_variant(name: str, path: Path, build: Build, model_path: Path, original_meta: dict, test, fp32_test: np.ndarray,
                  max_drop: float) -> VariantResult:
    """Build one variant, hold it to the accuracy gate on PublicTest, and write it with its metadata if it passes."""
    try:
        model, steps = BUILDERS[name](build)
    except Refused as refusal:
        return VariantResult(name, path, None, False, refusal.steps, str(refusal))
    return _gate_and_write(name, model, steps, path, model_path, original_meta, build.val, test, fp32_test, max_drop,
                           ensemble_flip=build.ensemble_flip)


def _gate_and_write(name: str, model, steps: dict, path: Path, model_path: Path, original_meta: dict, val, test,
                    fp32_test: np.ndarray, max_drop: float, ensemble_flip: bool = False) -> VariantResult:
    """Hold a built variant to the accuracy gate on PublicTest against ``fp32_test`` (its model's logits) and write it
    with its metadata if it passes; a refused variant's older file, made from another version, is removed."""
    test_logits = logits_of(model, test.images)
    gate = accuracy_gate(accuracy_points(fp32_test, test.labels), accuracy_points(test_logits, test.labels), max_drop)
    if not gate.passed:
        removed = _remove_stale(path, model_path)
        return VariantResult(name, path, gate, False, steps, f"refused: {gate}{removed}", removed_stale=bool(removed))
    metrics = {METRICS_VAL: split_metrics(val.labels, logits_of(model, val.images).argmax(1)),
               METRICS_TEST: split_metrics(test.labels, test_logits.argmax(1))}
    label = {"fast": FAST_VARIANT, "tta": "fp32-flip-average" if steps.get("views") == [v.name for v in FLIP_VIEWS] else "fp32-tta",
             "ensemble": "fp32-ensemble-flip-average" if ensemble_flip else "fp32-ensemble"}.get(name, name)
    _save(model, path, variant_metadata(original_meta, label, gate, metrics, steps, model_path))
    return VariantResult(name, path, gate, True, steps, f"written: {gate}")
