"""The int8 speed variant of a test-time-augmentation model: the model's own gate-passing int8 graph under the same
views, ``<stem>.tta.int8.onnx`` beside ``<stem>.tta.onnx``.

    fer-train optimize exported/fer-best.tta.onnx --variants int8

The TTA file computes the mean log-softmax of its model (``<stem>.onnx``) over views of the face, in float32: ten
views cost ten times the model. Its int8 variant runs ``<stem>.int8.onnx`` (which already passed its own gate
against ``<stem>.onnx``) under exactly the views the TTA file records, so it computes the same function, faster,
and is held to the same accuracy gate against the TTA file it stands in for. Tools that open ``<stem>.tta.onnx``
then run it (:func:`fer_runtime.family.fastest_variant`), as they run ``cnn.int8.onnx`` for ``cnn.onnx``.
"""

from __future__ import annotations

from pathlib import Path

from fer_runtime.contract import META_OPTIMIZATION, META_VARIANT
from fer_runtime.family import model_name

from .compose import TTA_CANDIDATES, View, flip_average
from .graph import OptimizeError

TTA_VARIANTS = ("fp32-tta", "fp32-flip-average")  # the ``variant`` metadata of a file made by --variants tta


def is_tta_model(metadata: dict) -> bool:
    return metadata.get(META_VARIANT) in TTA_VARIANTS


def recorded_views(metadata: dict, path: Path) -> tuple[View, ...]:
    """The views a TTA file averages, from its metadata (``optimization.views``), as :class:`View` objects."""
    names = (metadata.get(META_OPTIMIZATION) or {}).get("views")
    known = {view.name: view for views in TTA_CANDIDATES.values() for view in views}
    if not isinstance(names, list) or not names or any(name not in known for name in names):
        raise OptimizeError(f"{path}: its metadata records no views this fer-train knows ({names!r}); re-make it with "
                            f"fer-train optimize {model_name(path).family_path(path.parent)} --variants tta")
    return tuple(known[name] for name in names)


def tta_int8_variant(tta_path: str | Path):
    """Build ``<stem>.tta.int8.onnx``'s graph: ``<stem>.int8.onnx`` under the views of ``tta_path``. Returns
    ``(model, steps, tta_metadata)``; the caller holds it to the accuracy gate against the TTA file and writes it
    with the TTA file's metadata as its model's, as for every variant (``optimize_model``)."""
    import onnx

    from fer_runtime.classifier import load_classifier

    tta_path = Path(tta_path)
    tta_meta = load_classifier(tta_path).metadata
    if not is_tta_model(tta_meta):
        raise OptimizeError(f"{tta_path}: not a test-time-augmentation model (its variant is {tta_meta.get(META_VARIANT)!r})")
    views = recorded_views(tta_meta, tta_path)
    int8_path = model_name(tta_path).family_path(tta_path.parent, speed="int8")
    if not int8_path.is_file():
        raise OptimizeError(f"{int8_path}: missing; make it first with fer-train optimize "
                            f"{model_name(tta_path).family_path(tta_path.parent)} --variants int8")
    model, steps = flip_average(onnx.load(str(int8_path)), views)
    steps = {**steps, "int8_source": int8_path.name,
             "weights": (load_classifier(int8_path).metadata.get(META_OPTIMIZATION) or {}).get("weights", "")}
    return model, steps, tta_meta
