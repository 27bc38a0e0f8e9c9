"""fer_runtime.family: the tools run the fastest speed variant of a model that passed the accuracy gate
(int8 > fast > fp32), never a tta/ensemble file, never a variant of another version of the model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fer_runtime.classifier import ModelError, load_classifier
from fer_runtime.contract import CLASS_NAMES
from fer_runtime.io import Split
from fer_runtime.metrics import softmax
from fer_runtime.synthetic import make_faces
from fer_runtime.family import fastest_variant, speed_variants, variant_stem

BASE_META = {"class_names": list(CLASS_NAMES), "architecture": "tiny", "train_config": {"model": "tiny"},
             "training": {"exported": "2026-12-01T00:00:00+00:00"}, "metrics": {"test": {"accuracy": 0.5}}}


def _tiny(path, meta: dict, seed: int = 0) -> None:
    """image [N,1,48,48] → Flatten → Gemm → logits [N,7], with ``meta`` (JSON values) as metadata."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array((rng.standard_normal((48 * 48, 7)) * 1e-3).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(7, np.float32), "b")
    graph = helper.make_graph([helper.make_node("Flatten", ["image"], ["flat"]), helper.make_node("Gemm", ["flat", "w", "b"], ["logits"])],
                              "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 48, 48])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 7])], [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(path))


def _variant_meta(variant: str, fp32: float = 0.66, ours: float = 0.66, **changes) -> dict:
    meta = {**BASE_META, "fp32_metrics": BASE_META["metrics"], "metrics": {"test": {"accuracy": ours}}, "variant": variant,
            "fp32_test_accuracy": fp32, "variant_test_accuracy": ours, "optimization": {"source": "m.onnx"}}
    meta.update(changes)
    return meta


@pytest.fixture
def folder(tmp_path):
    _tiny(tmp_path / "m.onnx", BASE_META)
    return tmp_path


def test_the_model_itself_when_it_has_no_variants(folder):
    assert fastest_variant(folder / "m.onnx") == folder / "m.onnx"
    assert [(name, problem) for name, _, problem in speed_variants(folder / "m.onnx")] == [("fp32", "")]


def test_int8_before_fast_before_fp32(folder):
    _tiny(folder / "m.fast.onnx", _variant_meta("fp32-fast"))
    assert fastest_variant(folder / "m.onnx") == folder / "m.fast.onnx"
    _tiny(folder / "m.int8.onnx", _variant_meta("int8", ours=0.6570))  # 0.3 points lost: within the gate
    assert fastest_variant(folder / "m.onnx") == folder / "m.int8.onnx"
    assert [name for name, _, _ in speed_variants(folder / "m.onnx")] == ["int8", "fast", "fp32"]


def test_other_models_beside_it_are_never_chosen(folder):
    _tiny(folder / "m.tta.onnx", _variant_meta("fp32-flip-average", ours=0.70))
    _tiny(folder / "m.ensemble.onnx", _variant_meta("fp32-ensemble", ours=0.72))
    assert fastest_variant(folder / "m.onnx") == folder / "m.onnx"
    assert fastest_variant(folder / "m.tta.onnx") == folder / "m.tta.onnx"  # asked for by name: that file


@pytest.mark.parametrize("meta, why", [
    (_variant_meta("int8", fp32=0.66, ours=0.6540), "loses 0.60 points"),  # more than the 0.5 allowed
    (_variant_meta("int8", optimization={"source": "m.onnx", "max_drop": 0.2}, ours=0.6570), "more than 0.2"),  # its own, stricter gate
    (_variant_meta("fp32-fast"), "not 'int8'"),  # a file named .int8 that is not one
    ({k: v for k, v in _variant_meta("int8").items() if k != "variant_test_accuracy"}, "no accuracy-gate verdict"),
    (_variant_meta("int8", training={"exported": "2026-11-27T00:00:00+00:00"}), "another version of the model"),  # stale
    (_variant_meta("int8", fp32_metrics={"test": {"accuracy": 0.4}}), "another version of the model"),
])
def test_an_int8_file_that_may_not_stand_in_is_skipped(folder, meta, why):
    _tiny(folder / "m.fast.onnx", _variant_meta("fp32-fast"))
    _tiny(folder / "m.int8.onnx", meta)
    assert fastest_variant(folder / "m.onnx") == folder / "m.fast.onnx"
    problem = {name: problem for name, _, problem in speed_variants(folder / "m.onnx")}["int8"]
    assert why in problem
    with pytest.raises(ValueError, match=why):
        fastest_variant(folder / "m.onnx", "int8")


def test_an_unreadable_variant_is_skipped(folder):
    (folder / "m.int8.onnx").write_bytes(b"not onnx")
    assert fastest_variant(folder / "m.onnx") == folder / "m.onnx"


def test_explicit_choices(folder):
    _tiny(folder / "m.int8.onnx", _variant_meta("int8"))
    assert fastest_variant(folder / "m.onnx", "fp32") == folder / "m.onnx"
    assert fastest_variant(folder / "m.int8.onnx", "fp32") == folder / "m.onnx"
    assert fastest_variant(folder / "m.onnx", "int8") == folder / "m.int8.onnx"
    assert fastest_variant(folder / "m.int8.onnx") == folder / "m.int8.onnx"  # a variant asked for by name
    with pytest.raises(FileNotFoundError, match="fer-train optimize .*m.onnx --variants fast"):
        fastest_variant(folder / "m.onnx", "fast")
    with pytest.raises(ValueError, match="variant must be"):
        fastest_variant(folder / "m.onnx", "tta")
    assert variant_stem("a.b.int8.onnx") == ("a.b", "int8") and variant_stem("fer-best.onnx") == ("fer-best", None)


def test_load_classifier_opens_the_file_it_is_given_unless_asked(folder):
    _tiny(folder / "m.int8.onnx", _variant_meta("int8"))
    exact = load_classifier(folder / "m.onnx")
    assert exact.path == folder / "m.onnx" and "variant" not in exact.metadata and exact.requested == folder / "m.onnx"
    auto = load_classifier(folder / "m.onnx", variant="auto")
    assert auto.path == folder / "m.int8.onnx" and auto.requested == folder / "m.onnx" and auto.metadata["variant"] == "int8"
    assert load_classifier(folder / "m.onnx", variant="fp32").path == folder / "m.onnx"
    with pytest.raises(ModelError, match="no such variant"):
        load_classifier(folder / "m.onnx", variant="fast")


def test_the_variants_optimize_writes_are_chosen(tmp_path):
    """End to end: fer-train optimize's own files, with the gate they passed recorded."""
    from fer_train.optimize import optimize_model

    faces, labels = make_faces(96, seed=4)
    _tiny(tmp_path / "m.onnx", BASE_META)
    splits = SimpleNamespace(val=Split(faces[:48], labels[:48], list(range(48))), test=Split(faces[48:], labels[48:], list(range(48))))
    results = optimize_model(tmp_path / "m.onnx", splits, max_drop=100, log=lambda line: None)
    assert {r.name: r.written for r in results} == {"fast": True, "int8": True}
    assert load_classifier(tmp_path / "m.int8.onnx").metadata["optimization"]["max_drop"] == 100
    assert fastest_variant(tmp_path / "m.onnx") == tmp_path / "m.int8.onnx"


def test_a_tta_model_gets_an_int8_variant_of_its_own_and_tools_run_it(tmp_path):
    """fer-train optimize on <stem>.tta.onnx writes <stem>.tta.int8.onnx: the family's int8 graph under the very
    views the tta file records, gated against the tta file; the tools then run it for the tta model."""
    from fer_train.optimize import optimize_model
    from fer_train.optimize.compose import View

    faces, labels = make_faces(96, seed=4)
    _tiny(tmp_path / "m.onnx", BASE_META)
    splits = SimpleNamespace(val=Split(faces[:48], labels[:48], list(range(48))), test=Split(faces[48:], labels[48:], list(range(48))))
    quiet = dict(max_drop=100, log=lambda line: None)
    with pytest.raises(Exception, match="m.int8.onnx: missing"):
        optimize_model(tmp_path / "m.onnx", splits, variants=["tta"], tta="flip+hshift1", **quiet)
        optimize_model(tmp_path / "m.tta.onnx", splits, **quiet)
    optimize_model(tmp_path / "m.onnx", splits, variants=["int8"], **quiet)
    with pytest.raises(ValueError, match="its one speed variant is int8"):
        optimize_model(tmp_path / "m.tta.onnx", splits, variants=["fast"], **quiet)
    [result] = optimize_model(tmp_path / "m.tta.onnx", splits, **quiet)
    assert result.written and result.path == tmp_path / "m.tta.int8.onnx"
    assert fastest_variant(tmp_path / "m.tta.onnx") == tmp_path / "m.tta.int8.onnx"
    assert fastest_variant(tmp_path / "m.onnx") == tmp_path / "m.int8.onnx"  # the model's own choice is unchanged
    views = (View(), View(mirror=True), View(False, 0, 1), View(False, 0, -1), View(True, 0, 1), View(True, 0, -1))
    int8 = load_classifier(tmp_path / "m.int8.onnx")
    expected = np.mean([np.log(softmax(int8.predict_logits(v.apply(faces[:, None].astype(np.float32))[:, 0]))) for v in views], axis=0)
    got = load_classifier(tmp_path / "m.tta.int8.onnx").predict_logits(faces)
    np.testing.assert_allclose(got, expected, atol=1e-4)  # the mean log-softmax of the int8 graph over the six views


def test_model_names_are_read_in_one_place():
    from fer_runtime.family import model_name
    from fer_train.shared_weights import family_stem

    cases = {"fer-best.tta.int8.onnx": ("fer-best", "fer-best.tta", "int8", None), "cnn.onnx": ("cnn", "cnn", None, None),
             "cnn.fast.onnx": ("cnn", "cnn", "fast", None), "cnn.grad.onnx": ("cnn", "cnn", None, "grad"),
             "cnn-semi.gradcam.onnx": ("cnn-semi", "cnn-semi", None, "gradcam"), "m.ensemble.onnx": ("m", "m.ensemble", None, None),
             "fer-best.filters.conv8.onnx": ("fer-best", "fer-best", None, "filters.conv8"), "my.model.onnx": ("my.model", "my.model", None, None)}
    for name, (stem, model, speed, companion) in cases.items():
        parsed = model_name(name)
        assert (parsed.stem, parsed.model, parsed.speed, parsed.companion) == (stem, model, speed, companion), name
        assert parsed.file_name == name and family_stem(name) == stem
    assert model_name("cnn.int8.tmp.onnx").is_companion and not model_name("cnn.int8.onnx").is_companion


def test_full_8_bit_weights_only_where_they_are_exact(folder, monkeypatch):
    from fer_runtime import family as variants

    _tiny(folder / "m.int8.onnx", _variant_meta("int8", optimization={"source": "m.onnx", "weights": "int8 per channel"}))
    _tiny(folder / "m.fast.onnx", _variant_meta("fp32-fast"))
    monkeypatch.setattr(variants, "full_int8_weights_exact_here", lambda: True)
    assert fastest_variant(folder / "m.onnx") == folder / "m.int8.onnx"
    monkeypatch.setattr(variants, "full_int8_weights_exact_here", lambda: False)  # an x86 CPU without VNNI
    assert fastest_variant(folder / "m.onnx") == folder / "m.fast.onnx"
    _tiny(folder / "m.int8.onnx", _variant_meta("int8", optimization={"source": "m.onnx", "weights": "int7 per channel"}))
    assert fastest_variant(folder / "m.onnx") == folder / "m.int8.onnx"  # 7-bit weights are exact everywhere
