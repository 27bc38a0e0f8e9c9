"""Which file of a model to run: the fastest of its speed variants that passed the accuracy gate.

``fer-train optimize exported/cnn.onnx`` writes ``cnn.fast.onnx`` (fp32, rewritten graph) and
``cnn.int8.onnx`` (static int8) beside the model, each only if it passed the accuracy gate (at most 0.5
points of PublicTest accuracy lost). They compute the same function as the model, faster, so a tool that
is given ``cnn.onnx`` runs the fastest of them unless told otherwise::

    from fer_runtime.classifier import load_classifier
    clf = load_classifier("exported/cnn.onnx", variant="auto")      # cnn.int8.onnx if it is there and valid
    path = fastest_variant("exported/cnn.onnx")                      # the same choice, as a path

``tta`` and ``ensemble`` files are other models (more accurate, slower), never chosen here.

A variant file counts only if its metadata says it is one (``variant``: ``int8`` / ``fp32-fast``), records a
gate verdict within :data:`MAX_ACCURACY_DROP` (``fp32_test_accuracy`` and ``variant_test_accuracy``), and was
made from this very model: its copies of the model's metadata (``training``, ``train_config``, ``metrics`` as
``fp32_metrics``, …) equal the model's own. A variant left over from an earlier export of the model is skipped.
Torch-free and onnx-free: the metadata is read with onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

from .contract import (META_ARCHITECTURE, META_CLASS_NAMES, META_CONFIG, META_EXTRA, META_FP32_METRICS, META_FP32_TEST_ACCURACY,
                       META_METRICS, META_OPTIMIZATION, META_PARAMETERS, META_VARIANT, META_VARIANT_TEST_ACCURACY, META_VERSION,
                       MODEL_SUFFIX)
from .metadata import decode_metadata

MAX_ACCURACY_DROP = 0.5  # points of PublicTest accuracy a variant may lose against fp32 (the gate, fer_train.optimize.gate)
# speed variants, fastest first: name in the file (<stem>.<name>.onnx) → the ``variant`` metadata value
SPEED_ORDER = (("int8", "int8"), ("fast", "fp32-fast"))
FP32 = "fp32"  # the model file itself
VARIANT_CHOICES = ("auto", FP32, "fast", "int8")  # what tools accept: auto is the fastest that passed the gate
# metadata a variant copies from its model unchanged (variant_metadata in fer_train/optimize/variants.py)
_COPIED = (META_CONFIG, META_EXTRA, META_ARCHITECTURE, META_PARAMETERS, META_CLASS_NAMES, META_VERSION)


def variant_stem(model_path: str | Path) -> tuple[str, str | None]:
    """``(stem, variant)`` of a file name: ``cnn.onnx`` → ``("cnn", None)``, ``cnn.int8.onnx`` → ``("cnn", "int8")``."""
    name = Path(model_path).name
    base = name[: -len(MODEL_SUFFIX)] if name.endswith(MODEL_SUFFIX) else Path(name).stem
    for short, _ in SPEED_ORDER:
        if base.endswith("." + short):
            return base[: -len(short) - 1], short
    return base, None


def read_metadata(path: str | Path) -> dict:
    """A model file's metadata (JSON values decoded), without optimising the graph; {} if it cannot be opened."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001  (onnxruntime raises its own exception types)
        return {}
    return decode_metadata(session)


def _strip(metrics) -> dict:
    return {split: {k: v for k, v in record.items() if k != "predictions"} if isinstance(record, dict) else record
            for split, record in (metrics or {}).items()} if isinstance(metrics, dict) else {}


def full_int8_weights_exact_here() -> bool:
    """Whether int8 files with full 8-bit weights give here the numbers the gate measured: on x86, only with
    VNNI (AVX512-VNNI, AVX-VNNI or AMX); without it, onnxruntime adds u8×s8 products in pairs into a saturating
    16-bit sum that 8-bit weights can overflow (7-bit weights cannot: the default unless 8 are needed).
    Other architectures (ARM's dot products) do not saturate."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return False  # an x86 CPU whose flags cannot be read here: assume the worst
    return any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def variant_problem(model_meta: dict, variant_meta: dict, expected: str, max_drop: float | None = None) -> str:
    """Why a variant file may not stand in for its model ("" when it may). ``max_drop`` (points): the gate to
    hold it to; ``None``: the one it was written under (``optimization.max_drop``, else :data:`MAX_ACCURACY_DROP`)."""
    if variant_meta.get(META_VARIANT) != expected:
        return f"its metadata says variant {variant_meta.get(META_VARIANT)!r}, not {expected!r}"
    fp32, ours = variant_meta.get(META_FP32_TEST_ACCURACY), variant_meta.get(META_VARIANT_TEST_ACCURACY)
    if not isinstance(fp32, (int, float)) or not isinstance(ours, (int, float)) or not isinstance(variant_meta.get(META_OPTIMIZATION), dict):
        return "no accuracy-gate verdict in its metadata"
    if max_drop is None:  # the gate the variant was written under (files from before it was recorded: the default)
        max_drop = variant_meta[META_OPTIMIZATION].get("max_drop", MAX_ACCURACY_DROP)
    if 100 * (fp32 - ours) > max_drop + 1e-6:
        return f"loses {100 * (fp32 - ours):.2f} points of PublicTest accuracy, more than {max_drop:g}"
    weights = str(variant_meta[META_OPTIMIZATION].get("weights", ""))
    if expected == "int8" and weights.startswith("int8") and not full_int8_weights_exact_here():
        return "its 8-bit weights can saturate on this CPU (no VNNI): its accuracy would not be the one the gate measured"
    for key in _COPIED:
        if key in model_meta and variant_meta.get(key) != model_meta[key]:
            return f"made from another version of the model ({key} differs)"
    if META_METRICS in model_meta and _strip(variant_meta.get(META_FP32_METRICS)) != _strip(model_meta[META_METRICS]):
        return "made from another version of the model (its fp32 metrics differ)"
    return ""


def speed_variants(model_path: str | Path, max_drop: float | None = None) -> list[tuple[str, Path, str]]:
    """Every speed variant beside ``model_path``, fastest first, then the model itself:
    ``(name, path, problem)`` with ``problem`` "" for the usable ones (``name``: int8, fast, fp32)."""
    model_path = Path(model_path)
    stem, _ = variant_stem(model_path)
    base = model_path.with_name(stem + MODEL_SUFFIX)
    model_meta = read_metadata(base)
    out = []
    for short, expected in SPEED_ORDER:
        path = base.with_name(f"{stem}.{short}{MODEL_SUFFIX}")
        if path.is_file():
            out.append((short, path, variant_problem(model_meta, read_metadata(path), expected, max_drop)))
    out.append((FP32, base, "" if base.is_file() else "no such file"))
    return out


def fastest_variant(model_path: str | Path, variant: str = "auto", max_drop: float | None = None) -> Path:
    """The file to run for the model ``model_path`` (``<stem>.onnx``).

    ``variant="auto"``: the fastest usable speed variant beside it — ``<stem>.int8.onnx``, else
    ``<stem>.fast.onnx``, else the model itself. ``"fp32"``: the model file itself. ``"int8"`` / ``"fast"``:
    that variant, or :class:`FileNotFoundError` / :class:`ValueError` saying why it cannot be used.
    A path that already names a variant (``cnn.int8.onnx``) or another model (``fer-best.tta.onnx``)
    is an explicit choice: ``"auto"`` returns it unchanged.
    """
    model_path = Path(model_path)
    _, named = variant_stem(model_path)
    if variant == "auto":
        if named is not None:
            return model_path
        return next(path for name, path, problem in speed_variants(model_path, max_drop) if not problem or name == FP32)
    if variant == FP32:
        if named is not None:
            stem, _ = variant_stem(model_path)
            return model_path.with_name(stem + MODEL_SUFFIX)
        return model_path
    known = [short for short, _ in SPEED_ORDER]
    if variant not in known:
        raise ValueError(f"variant must be auto, {FP32} or one of {', '.join(known)}; got {variant!r}")
    for name, path, problem in speed_variants(model_path, max_drop):
        if name == variant:
            if problem:
                raise ValueError(f"{path}: {problem}")
            return path
    stem, _ = variant_stem(model_path)
    raise FileNotFoundError(f"{model_path.with_name(f'{stem}.{variant}{MODEL_SUFFIX}')}: no such variant "
                            f"(make it with: fer-train optimize {model_path.with_name(stem + MODEL_SUFFIX)} --variants {variant})")
