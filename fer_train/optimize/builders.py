"""One builder per variant kind: each makes its graph from the source model and says how (``steps``).

A builder takes the :class:`Build` of one ``optimize_model`` call (the source model, the splits, the options) and
returns ``(model, steps)``, or raises :class:`Refused` when the variant fails its own check before the accuracy gate
(the fp32 rewrite must give the source's logits). :mod:`.variants` gates, saves and shares what they build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .compose import TTA_CANDIDATES, choose_tta, ensemble_average, flip_average
from .gate import accuracy_points, logits_of
from .int8 import quantize_int8
from .rewrite import average_pool_as_depthwise_conv, simplify

FUSED_ATOL = 1e-4  # the rewritten fp32 graph must give the same logits as the original
# weight_bits="auto": the first portable configuration that loses at most this on validation (half the gate)
# ships; 8-bit weights (exact only on CPUs with VNNI, see quantize_int8) only where none does
SEVEN_BITS_MAX_VAL_DROP = 0.25


class Refused(Exception):
    """A variant that failed its own check; ``steps`` say what was measured."""

    def __init__(self, message: str, steps: dict):
        super().__init__(message)
        self.steps = steps


@dataclass
class Build:
    """What every builder of one ``optimize_model`` call shares."""

    source: object  # the fp32 onnx.ModelProto
    val: object  # the validation split: calibration and every choice made before the gate
    log: object = print
    calibration_images: int = 1000
    weight_bits: int | str = "auto"
    calibration: str = "percentile"
    percentile: float = 99.999
    per_channel: bool = True
    keep_float: tuple = ()
    tta: str = "auto"
    ensemble: list = field(default_factory=list)  # the member models of an ensemble (compose.load_members)
    member_files: list = field(default_factory=list)
    member_weights: list | None = None
    ensemble_flip: bool = False

    @cached_property
    def fast(self) -> tuple:
        """The rewritten fp32 graph and its steps, which the int8 variant starts from too."""
        return simplify(self.source)


def build_fast(b: Build) -> tuple:
    """``<stem>.fast.onnx``: the rewritten fp32 graph, refused unless its logits are the source's within FUSED_ATOL."""
    model, steps = b.fast[0], dict(b.fast[1])
    check = b.val.images[:256]
    diff = float(np.abs(logits_of(b.source, check) - logits_of(model, check)).max())
    steps["max_abs_logit_difference"] = float(f"{diff:.3g}")
    if not diff <= FUSED_ATOL:
        raise Refused(f"logits differ by {diff:.2e} > {FUSED_ATOL:g}; not written", steps)
    return model, steps


def build_int8(b: Build) -> tuple:
    """``<stem>.int8.onnx``: static int8 of the rewritten graph (average pools as depthwise convolutions), with the
    weight bits asked for, or (``auto``) chosen on validation by :func:`choose_weight_bits`."""
    fast, fast_steps = b.fast
    depthwise, pools = average_pool_as_depthwise_conv(fast)

    def quantize(bits: int, keep: tuple) -> tuple:
        return quantize_int8(depthwise, b.val.images[:b.calibration_images], weight_bits=bits, calibration=b.calibration,
                             percentile=b.percentile, per_channel=b.per_channel, keep_float=keep)

    if b.weight_bits == "auto":
        model, steps = choose_weight_bits(b, quantize)
    elif b.weight_bits in (7, 8):
        model, steps = quantize(b.weight_bits, tuple(b.keep_float))
    else:
        raise ValueError(f"weight_bits must be 7, 8 or 'auto', got {b.weight_bits!r}")
    return model, {**fast_steps, "average_pool_as_depthwise_conv": pools, **steps}


def _describe_bits(bits: int, keep: tuple) -> str:
    return f"{bits} bits" + (f", {'+'.join(keep)} in fp32" if keep else "")


def choose_weight_bits(b: Build, quantize) -> tuple:
    """The 7/8-bit ladder: portable first (7 bits everywhere), then 7 bits with the first and last layers in fp32,
    then 8 bits; the first that loses at most SEVEN_BITS_MAX_VAL_DROP points of validation accuracy, else the one
    that loses least (the earlier on a tie). Recorded in the steps' ``int8_choice``; PublicTest is never looked at."""
    keep_float = tuple(b.keep_float)
    ladder = [(7, keep_float)] + ([(7, ("first", "last"))] if not keep_float else []) + [(8, keep_float)]
    fp32_val = accuracy_points(logits_of(b.source, b.val.images), b.val.labels)
    tried = {}
    for bits, keep in ladder:
        candidate = quantize(bits, keep)
        tried[(bits, keep)] = (fp32_val - accuracy_points(logits_of(candidate[0], b.val.images), b.val.labels), candidate)
        if tried[(bits, keep)][0] <= SEVEN_BITS_MAX_VAL_DROP:
            break
    choice = min(tried, key=lambda k: (round(tried[k][0], 6), ladder.index(k)))
    model, steps = tried[choice][1]
    said = {_describe_bits(*k): round(lost, 3) for k, (lost, _) in tried.items()}
    steps["int8_choice"] = {"validation_points_lost": said, "chosen": _describe_bits(*choice)}
    b.log(f"  int8: {steps['int8_choice']['chosen']} (validation points lost: {', '.join(f'{k} {d:.2f}' for k, d in said.items())})")
    return model, steps


def build_tta(b: Build) -> tuple:
    """``<stem>.tta.onnx``: the mean log-probabilities over the views ``b.tta`` names, or (``auto``) the views that
    score best on validation (every candidate's score recorded in ``tta_choice``)."""
    from fer_runtime.metrics import log_softmax

    if b.tta != "auto":
        if b.tta not in TTA_CANDIDATES:
            raise ValueError(f"unknown test-time augmentation {b.tta!r}; choose auto or one of {', '.join(TTA_CANDIDATES)}")
        return flip_average(b.source, TTA_CANDIDATES[b.tta])
    choice, scores = choose_tta(lambda view: log_softmax(logits_of(b.source, view.apply(b.val.images))), b.val.labels)
    b.log(f"  tta on validation: {', '.join(f'{k} {v:.2f}%' for k, v in scores.items())} → {choice}")
    model, steps = flip_average(b.source, TTA_CANDIDATES[choice])
    steps["tta_choice"] = {"chosen": choice, "validation_accuracy": scores}
    return model, steps


def build_ensemble(b: Build) -> tuple:
    """``<stem>.ensemble.onnx``: the mean log-probabilities of this model and its members (each also on the mirror
    image with ``ensemble_flip``)."""
    model, steps = ensemble_average(b.ensemble, flip=b.ensemble_flip, weights=b.member_weights)
    steps["member_files"] = b.member_files
    return model, steps


BUILDERS = {"fast": build_fast, "int8": build_int8, "tta": build_tta, "ensemble": build_ensemble}
