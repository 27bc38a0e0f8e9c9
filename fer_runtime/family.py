"""A model family's files, by name, and which of them to run: the one module that parses model file names.

A family is everything exported under one stem in one folder, e.g. ``fer-best``::

    fer-best.onnx                the model (float32)
    fer-best.int8.onnx           its speed variants: the same function, faster, each behind the accuracy gate
    fer-best.fast.onnx
    fer-best.tta.onnx            other models built on it: test-time views (more accurate, slower) or an ensemble
    fer-best.tta.int8.onnx       … which have speed variants of their own
    fer-best.grad.onnx           companions: the explanation graphs (also .layers, .gradcam, .filters.<layer>)
    fer-best.weights             the tensors every graph of the family shares (each stored once)

:func:`model_name` reads any of these names; every tool that needs a file's family, model or companion kind asks
it rather than cutting strings itself.

Which file runs: ``fer-train optimize exported/cnn.onnx`` writes ``cnn.fast.onnx`` (fp32, rewritten graph) and
``cnn.int8.onnx`` (static int8) beside the model, each only if it passed the accuracy gate (at most 0.5
points of PublicTest accuracy lost). They compute the same function as the model, faster, so a tool that
is given ``cnn.onnx`` runs the fastest of them unless told otherwise::

    from fer_runtime.classifier import load_classifier
    clf = load_classifier("exported/cnn.onnx", variant="auto")      # cnn.int8.onnx if it is there and valid
    path = fastest_variant("exported/cnn.onnx")                      # the same choice, as a path

``tta`` and ``ensemble`` files are other models (more accurate, slower), never chosen for their base model; their
own speed variants (``fer-best.tta.int8.onnx``) are chosen for them in the same way.

A variant file counts only if its metadata says it is one (``variant``: ``int8`` / ``fp32-fast``), records a
gate verdict within :data:`MAX_ACCURACY_DROP` (``fp32_test_accuracy`` and ``variant_test_accuracy``), and was
made from this very model: its copies of the model's metadata (``training``, ``train_config``, ``metrics`` as
``fp32_metrics``, …) equal the model's own. A variant left over from an earlier export of the model is skipped.
Torch-free and onnx-free: the metadata is read with onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .contract import (FILTERS_INFIX, GRADCAM_SUFFIX, GRADIENT_SUFFIX, LAYERS_SUFFIX, META_ARCHITECTURE, META_CLASS_NAMES,
                       META_CONFIG, META_EXTRA, META_FP32_METRICS, META_FP32_TEST_ACCURACY, META_METRICS, META_OPTIMIZATION,
                       META_PARAMETERS, META_VARIANT, META_VARIANT_TEST_ACCURACY, META_VERSION, MODEL_SUFFIX, TEMP_MODEL_SUFFIX,
                       VARIANT_NAMES, WEIGHTS_SUFFIX)
from .metadata import decode_metadata

MAX_ACCURACY_DROP = 0.5  # points of PublicTest accuracy a variant may lose against fp32 (the gate, fer_train.optimize.gate)
# speed variants, fastest first: name in the file (<model>.<name>.onnx) → the ``variant`` metadata value
SPEED_ORDER = (("int8", "int8"), ("fast", "fp32-fast"))
SPEED_NAMES = tuple(short for short, _ in SPEED_ORDER)
FAST_VARIANT = dict(SPEED_ORDER)["fast"]  # "fp32-fast": the metadata value of <model>.fast.onnx
# other models built on the family's model: <stem>.tta.onnx, <stem>.ensemble.onnx (the contract's other VARIANT_NAMES)
MODEL_KINDS = tuple(name for name in VARIANT_NAMES if name not in SPEED_NAMES)
FP32 = "fp32"  # the model file itself
VARIANT_CHOICES = ("auto", FP32, "fast", "int8")  # what tools accept: auto is the fastest that passed the gate
# companion kind → how its file name ends (filters: <stem>.filters.<layer>.onnx)
COMPANION_SUFFIXES = {"grad": GRADIENT_SUFFIX, "layers": LAYERS_SUFFIX, "gradcam": GRADCAM_SUFFIX}
# metadata a variant copies from its model unchanged (variant_metadata in fer_train/optimize/variants.py)
_COPIED = (META_CONFIG, META_EXTRA, META_ARCHITECTURE, META_PARAMETERS, META_CLASS_NAMES, META_VERSION)


@dataclass(frozen=True)
class ModelName:
    """What a file name says: ``fer-best.tta.int8.onnx`` → stem ``fer-best``, model ``fer-best.tta``, speed ``int8``;
    ``fer-best.filters.conv2.onnx`` → stem ``fer-best``, companion ``filters.conv2``."""

    stem: str  # the family: fer-best
    model: str  # the model the file computes: fer-best, fer-best.tta, fer-best.ensemble
    speed: str | None = None  # int8 or fast for a speed variant, else None
    companion: str | None = None  # grad, layers, gradcam or filters.<layer> for an explanation graph, else None
    temporary: bool = False  # <name>.tmp.onnx: a graph being written, never part of the family

    @property
    def is_companion(self) -> bool:
        return self.companion is not None or self.temporary

    @property
    def file_name(self) -> str:
        """The name back: ``model[.speed].onnx`` or the companion's."""
        if self.companion is not None:
            return self.companion_name(self.companion)
        return f"{self.model}{'.' + self.speed if self.speed else ''}{MODEL_SUFFIX}"

    def base_path(self, folder: str | Path, speed: str | None = None) -> Path:
        """The model's own file in ``folder`` (``fer-best.tta.onnx``), or its speed variant ``speed`` there."""
        return Path(folder) / f"{self.model}{'.' + speed if speed else ''}{MODEL_SUFFIX}"

    def family_path(self, folder: str | Path, speed: str | None = None) -> Path:
        """The family's own model in ``folder`` (``fer-best.onnx`` for ``fer-best.tta.onnx``), or its speed variant."""
        return Path(folder) / f"{self.stem}{'.' + speed if speed else ''}{MODEL_SUFFIX}"

    def companion_name(self, kind: str) -> str:
        """The family's companion file name: ``grad`` → ``fer-best.grad.onnx``, ``filters.conv2`` → ``fer-best.filters.conv2.onnx``."""
        if kind.startswith("filters."):
            return f"{self.stem}{FILTERS_INFIX}{kind[len('filters.'):]}{MODEL_SUFFIX}"
        return self.stem + COMPANION_SUFFIXES[kind]

    @property
    def weights_name(self) -> str:
        return self.stem + WEIGHTS_SUFFIX


def model_name(path: str | Path) -> ModelName:
    """Parse a model family's file name (see the module docstring); any name parses (``my.model.onnx`` is the model
    ``my.model``). Companions belong to the family, not to a variant: ``cnn.grad.onnx`` → stem ``cnn``."""
    name = Path(path).name
    if name.lower().endswith(TEMP_MODEL_SUFFIX):
        inner = model_name(name[: -len(TEMP_MODEL_SUFFIX)] + MODEL_SUFFIX)
        return ModelName(inner.stem, inner.model, inner.speed, inner.companion, temporary=True)
    for kind, suffix in COMPANION_SUFFIXES.items():
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            return ModelName(stem, stem, companion=kind)
    if FILTERS_INFIX in name and name.endswith(MODEL_SUFFIX):
        stem, _, layer = name[: -len(MODEL_SUFFIX)].rpartition(FILTERS_INFIX)
        return ModelName(stem, stem, companion=f"filters.{layer}")
    base = name[: -len(MODEL_SUFFIX)] if name.endswith(MODEL_SUFFIX) else Path(name).stem
    model, _, last = base.rpartition(".")
    speed = last if model and last in SPEED_NAMES else None
    model = model if speed else base
    stem, _, kind = model.rpartition(".")
    return ModelName(stem if stem and kind in MODEL_KINDS else model, model, speed)


def variant_stem(model_path: str | Path) -> tuple[str, str | None]:
    """``(model, speed)`` of a file name: ``cnn.onnx`` → ``("cnn", None)``, ``cnn.int8.onnx`` → ``("cnn", "int8")``,
    ``fer-best.tta.int8.onnx`` → ``("fer-best.tta", "int8")``."""
    parsed = model_name(model_path)
    return parsed.model, parsed.speed


def read_metadata(path: str | Path) -> dict:
    """A model file's metadata (JSON values decoded), without optimising the graph; {} if it cannot be opened."""
    from .sessions import make_session

    try:
        session = make_session(path, threads=1, optimization="none")
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
