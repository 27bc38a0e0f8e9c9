"""``fer-train optimize``: make the variants of one exported model, check each, write those that pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_runtime.contract import (META_CONFIG, META_FP32_METRICS, META_FP32_TEST_ACCURACY, META_METRICS, META_OPTIMIZATION,
                                  META_VARIANT, META_VARIANT_TEST_ACCURACY, METRICS_TEST, METRICS_VAL, MODEL_SUFFIX)
from fer_runtime.metrics import split_metrics, without_predictions

from ..onnx_meta import set_metadata
from ..shared_weights import family_of, share_family
from .compose import FLIP_VIEWS, TTA_CANDIDATES, _members, choose_tta, ensemble_average, flip_average
from .gate import MAX_ACCURACY_DROP, GateResult, accuracy_gate, accuracy_points, logits_of
from .graph import model_sha256
from .int8 import quantize_int8
from .rewrite import average_pool_as_depthwise_conv, simplify

# int8 calibration: percentile (clipping the rarest outliers) lost least validation accuracy (docs/optimize.md)
DEFAULT_CALIBRATION = "percentile"
DEFAULT_PERCENTILE = 99.999
# weight_bits="auto": the first portable configuration that loses at most this on validation (half the gate)
# ships; 8-bit weights (exact only on CPUs with VNNI, see quantize_int8) only where none does
SEVEN_BITS_MAX_VAL_DROP = 0.25
VARIANTS = ("fast", "int8", "tta", "ensemble")  # tta (flip averaging) and ensemble (with --with members) only when asked
FUSED_ATOL = 1e-4  # the rewritten fp32 graph must give the same logits as the original


@dataclass
class VariantResult:
    name: str  # "fast", "int8", "tta" or "ensemble"
    path: Path
    gate: GateResult | None
    written: bool
    steps: dict = field(default_factory=dict)
    message: str = ""


def variant_metadata(original: dict, variant: str, gate: GateResult, metrics: dict, steps: dict, source: Path) -> dict:
    """The original's metadata (decoded values) plus what the variant is and how it scores."""
    meta = dict(original)
    meta[META_FP32_METRICS] = without_predictions(original.get(META_METRICS, {}))
    meta[META_METRICS] = metrics
    meta[META_VARIANT] = variant
    meta[META_FP32_TEST_ACCURACY] = round(gate.fp32_accuracy / 100, 5)
    meta[META_VARIANT_TEST_ACCURACY] = round(gate.variant_accuracy / 100, 5)
    meta[META_OPTIMIZATION] = {**steps, "max_drop": gate.max_drop,  # the gate it passed (fer_runtime.variants reads it)
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


def _tta_views(source, val, tta: str, log) -> tuple[str, dict[str, float]]:
    """The test-time views to use: ``tta`` itself when it names a candidate, else (``auto``) the one chosen on
    validation, with every candidate's validation accuracy."""
    from fer_runtime.metrics import log_softmax

    if tta != "auto":
        if tta not in TTA_CANDIDATES:
            raise ValueError(f"unknown test-time augmentation {tta!r}; choose auto or one of {', '.join(TTA_CANDIDATES)}")
        return tta, {}
    choice, scores = choose_tta(lambda view: log_softmax(logits_of(source, view.apply(val.images))), val.labels)
    log(f"  tta on validation: {', '.join(f'{k} {v:.2f}%' for k, v in scores.items())} → {choice}")
    return choice, scores


def optimize_model(model_path: str | Path, splits, *, out_dir: str | Path | None = None, variants=("fast", "int8"),
                   calibration_images: int = 1000, weight_bits: int | str = "auto", max_drop: float = MAX_ACCURACY_DROP, log=print,
                   members: list | None = None, ensemble_flip: bool = False, calibration: str = DEFAULT_CALIBRATION,
                   percentile: float = DEFAULT_PERCENTILE, per_channel: bool = True, keep_float=(), tta: str = "auto") -> list[VariantResult]:
    """Write ``<stem>.fast.onnx`` and ``<stem>.int8.onnx`` beside the model (or in ``out_dir``), each only if
    it passes its checks: logits within :data:`FUSED_ATOL` for the fp32 rewrite, the accuracy gate for both.
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
    stem = model_path.name[: -len(".onnx")] if model_path.name.endswith(".onnx") else model_path.stem
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    original_meta = load_classifier(model_path).metadata
    source = onnx.load(str(model_path))
    test, val = splits.test, splits.val
    fp32_test = logits_of(source, test.images)
    fp32_accuracy = accuracy_points(fp32_test, test.labels)
    log(f"{model_path}: fp32 PublicTest accuracy {fp32_accuracy:.2f}% on {len(test):,} faces")

    ensemble, member_files, weights = _members(model_path, source, members, original_meta) if "ensemble" in variants else ([], [], [])
    fast, fast_steps = simplify(source)
    results, changed = [], False  # changed: a stale variant removed
    for name in variants:
        path = out_dir / f"{stem}.{name}.onnx"
        if name == "fast":
            model, steps = fast, dict(fast_steps)
            check = val.images[:256]
            diff = float(np.abs(logits_of(source, check) - logits_of(model, check)).max())
            steps["max_abs_logit_difference"] = float(f"{diff:.3g}")
            if not diff <= FUSED_ATOL:
                results.append(VariantResult(name, path, None, False, steps, f"logits differ by {diff:.2e} > {FUSED_ATOL:g}; not written"))
                log(f"  {path.name}: {results[-1].message}")
                continue
        elif name == "tta":
            choice, scores = _tta_views(source, val, tta, log)
            model, steps = flip_average(source, TTA_CANDIDATES[choice])
            if scores:
                steps["tta_choice"] = {"chosen": choice, "validation_accuracy": scores}
        elif name == "ensemble":
            model, steps = ensemble_average(ensemble, flip=ensemble_flip, weights=weights)
            steps["member_files"] = member_files
        else:
            depthwise, pools = average_pool_as_depthwise_conv(fast)
            def quantize(bits, keep, depthwise=depthwise):
                return quantize_int8(depthwise, val.images[:calibration_images], weight_bits=bits, calibration=calibration,
                                     percentile=percentile, per_channel=per_channel, keep_float=keep)

            if weight_bits == "auto":
                # portable first: 7 bits everywhere; then 7 bits with the first and last layers in fp32; then 8 bits
                ladder = [(7, tuple(keep_float))] + ([(7, ("first", "last"))] if not keep_float else []) + [(8, tuple(keep_float))]
                fp32_val = accuracy_points(logits_of(source, val.images), val.labels)
                tried = {}
                for bits, keep in ladder:
                    candidate = quantize(bits, keep)
                    tried[(bits, keep)] = (fp32_val - accuracy_points(logits_of(candidate[0], val.images), val.labels), candidate)
                    if tried[(bits, keep)][0] <= SEVEN_BITS_MAX_VAL_DROP:
                        break
                choice = min(tried, key=lambda k: (round(tried[k][0], 6), ladder.index(k)))  # the smallest validation loss; earlier on a tie
                model, steps = tried[choice][1]
                said = {f"{b} bits" + (f", {'+'.join(k)} in fp32" if k else ""): round(d, 3) for (b, k), (d, _) in tried.items()}
                steps["int8_choice"] = {"validation_points_lost": said, "chosen": f"{choice[0]} bits" + (f", {'+'.join(choice[1])} in fp32" if choice[1] else "")}
                log(f"  int8: {steps['int8_choice']['chosen']} (validation points lost: {', '.join(f'{k} {d:.2f}' for k, d in said.items())})")
            elif weight_bits in (7, 8):
                model, steps = quantize(weight_bits, keep_float)
            else:
                raise ValueError(f"weight_bits must be 7, 8 or 'auto', got {weight_bits!r}")
            steps = {**fast_steps, "average_pool_as_depthwise_conv": pools, **steps}
        test_logits = logits_of(model, test.images)
        gate = accuracy_gate(fp32_accuracy, accuracy_points(test_logits, test.labels), max_drop)
        if not gate.passed:
            removed = _remove_stale(path, model_path)
            changed = changed or bool(removed)
            results.append(VariantResult(name, path, gate, False, steps, f"refused: {gate}{removed}"))
            log(f"  {path.name}: {results[-1].message}")
            continue
        metrics = {METRICS_VAL: split_metrics(val.labels, logits_of(model, val.images).argmax(1)),
                   METRICS_TEST: split_metrics(test.labels, test_logits.argmax(1))}
        label = {"fast": "fp32-fast", "tta": "fp32-flip-average" if steps.get("views") == [v.name for v in FLIP_VIEWS] else "fp32-tta",
                 "ensemble": "fp32-ensemble-flip-average" if ensemble_flip else "fp32-ensemble"}.get(name, name)
        _save(model, path, variant_metadata(original_meta, label, gate, metrics, steps, model_path))
        results.append(VariantResult(name, path, gate, True, steps, f"written: {gate}"))
        log(f"  {path.name}: {results[-1].message}")
    anchor = out_dir / f"{stem}.{VARIANTS[0]}{MODEL_SUFFIX}"  # a variant's name: its family is the one they join
    if (changed or any(r.written for r in results)) and family_of(anchor):
        # the variants join the model's family: its tensors in one <stem>.weights, each once (outputs checked bit for bit)
        share_family(anchor, log=lambda text: log(f"  {text}"))
    return results
