"""Faster variants of an exported model — a rewritten fp32 graph and static int8 — each behind an accuracy gate.

    fer-train optimize exported/cnn.onnx      → exported/cnn.fast.onnx, exported/cnn.int8.onnx
    fer-train optimize exported/fer-best.onnx --variants tta   → exported/fer-best.tta.onnx (flip averaging)
    fer-train optimize exported/fer-best.onnx --variants ensemble --with other.onnx → exported/fer-best.ensemble.onnx

Torch-free (onnx, onnxruntime, numpy). Every variant keeps the export contract — input ``image``
float32 ``[N, 1, 48, 48]`` of raw pixels 0..255, output ``logits`` ``[N, 7]`` — and all of the original
metadata, plus ``variant``, ``fp32_test_accuracy``, ``variant_test_accuracy`` and ``optimization``; its
``metrics`` are measured on the variant file itself (the original's move to ``fp32_metrics``). A variant
whose PublicTest accuracy falls more than :data:`MAX_ACCURACY_DROP` points below the fp32 model's is
not written.

Where the time goes (onnxruntime's profiler on the study CNN; benchmarks/bench_inference.py): the
convolutions take only about half of it. The per-element PReLU ``clamp(x, 0) + w * clamp(x, max=0)`` is
exported as four elementwise nodes, each a pass over the activations, and since onnxruntime's blocked
(NCHWc) conv layout has no kernel for them, each conv PReLU also costs a reorder out of that layout and
back. The fp32 rewrite (:func:`simplify`) halves the elementwise passes; int8 (:func:`quantize_int8`)
does the convolutions with VNNI and keeps the PReLU, padding and pooling on uint8 values.

The modules: :mod:`.builders` (one builder per variant kind: fast, int8 with its 7/8-bit ladder, tta, ensemble),
:mod:`.variants` (``optimize_model``: build, gate, write, share weights), :mod:`.tta_int8` (a TTA model's int8),
:mod:`.rewrite` and :mod:`.int8` (the graph rewrites), :mod:`.compose` (views and ensembles), :mod:`.gate`,
:mod:`.flops` and :mod:`.graph` (the graph helpers they share).
"""
from __future__ import annotations

from .compose import ensemble_average, flip_average, held_models
from .flops import FlopCount, count_flops
from .gate import MAX_ACCURACY_DROP, GateResult, accuracy_gate, accuracy_points, logits_of
from .graph import OptimizeError
from .int8 import CALIBRATION_METHODS, CalibrationReader, float_node_names, quantize_int8
from .rewrite import average_pool_as_depthwise_conv, basic_optimizations, drop_zero_pad_values, fold_input_scale, fuse_prelu, simplify
from .variants import FUSED_ATOL, VARIANTS, VariantResult, load_optimize_splits, optimize_model, variant_metadata

__all__ = ["CALIBRATION_METHODS", "CalibrationReader", "FUSED_ATOL", "MAX_ACCURACY_DROP", "VARIANTS", "FlopCount", "GateResult", "OptimizeError", "VariantResult", "accuracy_gate",
           "accuracy_points", "average_pool_as_depthwise_conv", "basic_optimizations", "count_flops", "drop_zero_pad_values",
           "ensemble_average", "flip_average", "float_node_names", "fold_input_scale", "fuse_prelu", "held_models", "load_optimize_splits", "logits_of",
           "optimize_model", "quantize_int8", "simplify", "variant_metadata"]
