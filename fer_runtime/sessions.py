"""The one place that opens onnxruntime sessions, so every tool runs a model with the same, deliberate options.

    session = make_session("exported/cnn.onnx")                       # what predictions use: every core, all graph optimisations
    session = make_session(model.SerializeToString(), threads=1)       # a graph in memory, one thread (bit-for-bit repeatable)
    session = make_session(path, optimization="none")                  # read metadata without optimising the graph

Idle worker threads sleep instead of spin-waiting unless asked (``spinning=True``): spinning keeps every core
busy, starving the TUI's own thread and a training job beside it (3,589 faces: 7.3 s → 6.4 s under load,
benchmarks/bench_inference.py). onnxruntime's warnings are off (severity 3) unless ``log_severity`` says
otherwise. Torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path

OPTIMIZATION_LEVELS = ("none", "basic", "extended", "all")


def make_session(model: str | Path | bytes, threads: int | None = None, *, optimization: str = "all", spinning: bool = False,
                 log_severity: int = 3, optimized_model_path: str | Path | None = None, profile_prefix: str | None = None):
    """An onnxruntime CPU session for ``model`` (a file, or a serialised ``ModelProto``).

    ``threads``: intra-op threads (default: every core). ``optimization``: one of :data:`OPTIMIZATION_LEVELS`.
    ``optimized_model_path``: where onnxruntime writes the graph it optimised (the fp32 rewrites read it back).
    ``profile_prefix``: turn on onnxruntime's profiler, its file named with this prefix (benchmarks).
    """
    import onnxruntime as ort

    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(f"optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}, got {optimization!r}")
    level = {"none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
             "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[optimization]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.graph_optimization_level = level
    options.log_severity_level = log_severity
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=options,
                                providers=["CPUExecutionProvider"])
