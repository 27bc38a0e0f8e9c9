"""Faster variants of exported models: FLOP count, the fp32 rewrite, static int8 and the accuracy gate.

Generated data and freshly initialised models only; no timings are asserted (benchmarks/bench_inference.py
measures speed).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from fer_train import optimize
from fer_runtime.contract import CLASS_NAMES
from fer_train.export import export_onnx
from fer_runtime.io import Split
from fer_runtime.metrics import decode_predictions, log_softmax, without_predictions
from fer_train.models import ElementPReLU, create_model
from fer_train.optimize import (FUSED_ATOL, accuracy_gate, count_flops, fuse_prelu, logits_of, optimize_model, quantize_int8,
                                simplify)
from fer_runtime.classifier import load_classifier
from fer_runtime.synthetic import make_faces

# The study CNN by hand, multiply-accumulates per image: output elements × input channels × kernel area.
CNN_MACS = (
    64 * 44 * 44 * (1 * 5 * 5)  # conv 1→64, 5×5, on 48×48 without padding
    + 2 * 64 * 22 * 22 * (64 * 3 * 3)  # two convs 64→64, 3×3, padded, on 22×22
    + 128 * 10 * 10 * (64 * 3 * 3)  # conv 64→128 on 10×10
    + 128 * 10 * 10 * (128 * 3 * 3)  # conv 128→128 on 10×10
    + 3200 * 512 + 512 * 512 + 512 * 7  # the dense layers
)
DNN_MACS = 48 * 48 * 512 + 5 * 512 * 512 + 512 * 7


def _fit_last_layer(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, ridge: float = 10.0) -> None:
    """Fit the last Linear layer to ``labels`` by ridge regression on the features it receives."""
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    seen = {}
    hook = last.register_forward_hook(lambda module, inputs, output: seen.update(features=inputs[0]))
    with torch.no_grad():
        model(torch.from_numpy(images).float().unsqueeze(1))
    hook.remove()
    h = torch.cat([seen["features"].double(), torch.ones(len(images), 1, dtype=torch.float64)], 1)
    target = torch.nn.functional.one_hot(torch.from_numpy(labels), len(CLASS_NAMES)).double()
    penalty = ridge * h.pow(2).mean() * torch.eye(h.shape[1], dtype=torch.float64)
    solution = torch.linalg.solve(h.T @ h + penalty, h.T @ target)  # (features + 1, classes)
    with torch.no_grad():
        last.weight.copy_(solution[:-1].T.float())
        last.bias.copy_(solution[-1].float())


def _export(name: str, path, slopes=(-0.2, 0.6), fit_last: bool = True) -> None:
    """A freshly initialised model, exported with metadata, that nonetheless tells the drawn expressions apart.

    The PReLU slopes are drawn at random (they start at 0, a plain ReLU) and the last layer is fitted to
    generated faces on the random features: an untrained net calls every face the same class, which
    would leave argmax agreement and the accuracy gate nothing to measure.
    """
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ElementPReLU):
                module.weight.uniform_(*slopes)
    if fit_last:
        _fit_last_layer(model, *make_faces(350, seed=8))
    metadata = {"class_names": list(CLASS_NAMES), "architecture": name, "metrics": {"test": {"accuracy": 0.5}},
                "train_config": {"model": name}, "parameter_count": 1}
    export_onnx(model, path, metadata=metadata, check_images=make_faces(8, seed=9)[0])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    _export("cnn", folder / "cnn.onnx")
    _export("dnn", folder / "dnn.onnx")
    return folder


@pytest.fixture(scope="module")
def splits():
    """Calibration (val) and gate (test) faces, drawn apart from the faces the last layers were fitted to."""
    val, test = make_faces(64, seed=4), make_faces(140, seed=3)
    return SimpleNamespace(val=Split(*val, list(range(64))), test=Split(*test, list(range(140))))


@pytest.fixture(scope="module")
def faces(splits):
    return splits.test.images


def test_flop_count_matches_the_hand_count(exported):
    cnn = count_flops(exported / "cnn.onnx")
    assert cnn.macs == CNN_MACS and cnn.flops == 2 * CNN_MACS == 125_608_960  # about 0.125 GFLOP per image
    assert len(cnn.macs_by_node) == 8  # five convs, three dense layers
    assert count_flops(exported / "dnn.onnx").flops == 2 * DNN_MACS


@pytest.mark.parametrize("name", ["cnn", "dnn"])
def test_simplified_graph_gives_the_same_logits(exported, faces, name):
    source = onnx.load(str(exported / f"{name}.onnx"))
    fast, steps = simplify(source)
    assert steps["prelu_as_max"] == (7 if name == "cnn" else 6) and steps["input_scale_folded"]
    ops = [node.op_type for node in fast.graph.node]
    assert "Clip" not in ops and "Div" not in ops
    assert np.abs(logits_of(source, faces) - logits_of(fast, faces)).max() <= FUSED_ATOL
    assert count_flops(fast).flops == count_flops(source).flops


def test_prelu_forms_and_slopes_on_both_sides_of_one(tmp_path, faces):
    path = tmp_path / "steep.onnx"
    _export("cnn", path, slopes=(0.5, 1.5), fit_last=False)  # Max(x, w·x) would be wrong where w > 1: such PReLUs stay
    source = onnx.load(str(path))
    as_max, n_max = fuse_prelu(source, form="max")
    as_prelu, n_prelu = fuse_prelu(source, form="prelu")
    assert n_max == 0 and n_prelu == 7
    expected = logits_of(source, faces)
    for model in (as_max, as_prelu):
        assert np.abs(logits_of(model, faces) - expected).max() <= FUSED_ATOL


@pytest.mark.parametrize("name", ["cnn", "dnn"])
def test_int8_variant_keeps_the_contract_and_metadata(exported, splits, tmp_path, name):
    source = exported / f"{name}.onnx"
    # the gate is not under test here: on 140 faces one disagreement is 0.7 points
    results = {r.name: r for r in optimize_model(source, splits, out_dir=tmp_path, max_drop=100, log=lambda line: None)}
    assert all(r.written for r in results.values())

    clf = load_classifier(tmp_path / f"{name}.int8.onnx")
    inp, out = clf.session.get_inputs()[0], clf.session.get_outputs()[0]
    assert (inp.name, inp.type, inp.shape[1:]) == ("image", "tensor(float)", [1, 48, 48]) and isinstance(inp.shape[0], str)
    assert (out.name, out.type, out.shape[1]) == ("logits", "tensor(float)", 7)
    original = load_classifier(source).metadata
    meta = clf.metadata
    assert {k: v for k, v in meta.items() if k in original and k != "metrics"} == {k: v for k, v in original.items() if k != "metrics"}
    assert meta["fp32_metrics"] == without_predictions(original["metrics"]) and set(meta["metrics"]) == {"val", "test"}
    fp32 = logits_of(source, splits.test.images).argmax(1)
    assert meta["variant"] == "int8"
    assert meta["fp32_test_accuracy"] == pytest.approx(float((fp32 == splits.test.labels).mean()), abs=1e-5)
    assert meta["variant_test_accuracy"] == pytest.approx(meta["metrics"]["test"]["accuracy"])
    assert meta["optimization"]["source"] == f"{name}.onnx" and meta["optimization"]["prelu_max_on_uint8"] >= 6

    int8 = onnx.load(str(tmp_path / f"{name}.int8.onnx"))
    assert any(n.op_type == "DequantizeLinear" for n in int8.graph.node)
    assert any(init.data_type == onnx.TensorProto.INT8 for init in int8.graph.initializer)
    assert len(np.unique(fp32)) >= 5  # the fp32 model tells the faces apart
    variant = clf.predict_logits(splits.test.images).argmax(1)
    np.testing.assert_array_equal(decode_predictions(meta["metrics"]["test"]["predictions"]), variant)
    agreement = float((variant == fp32).mean())
    assert agreement >= 0.9, agreement
    assert load_classifier(tmp_path / f"{name}.fast.onnx").metadata["variant"] == "fp32-fast"


@pytest.mark.parametrize("name", ["cnn", "dnn"])
def test_flip_average_variant_is_the_mean_of_the_face_and_its_mirror(exported, splits, tmp_path, name):
    source = exported / f"{name}.onnx"
    results = optimize_model(source, splits, out_dir=tmp_path, variants=["tta"], max_drop=100, log=lambda line: None, tta="flip")
    assert [r.name for r in results] == ["tta"] and results[0].written
    clf = load_classifier(tmp_path / f"{name}.tta.onnx")
    faces = splits.test.images[:37]  # an odd batch: the pair is split by shape, not by a fixed size
    expected = (log_softmax(logits_of(source, faces)) + log_softmax(logits_of(source, faces[:, :, ::-1].copy()))) / 2
    np.testing.assert_allclose(clf.predict_logits(faces), expected, atol=1e-4)
    one = clf.predict_logits(faces[:1])
    np.testing.assert_allclose(one, expected[:1], atol=1e-4)
    assert clf.metadata["variant"] == "fp32-flip-average" and clf.metadata["optimization"]["source"] == f"{name}.onnx"
    assert count_flops(tmp_path / f"{name}.tta.onnx").flops == 2 * count_flops(source).flops


def test_shifted_views_graph_computes_the_numpy_views(exported, faces):
    """Every view the graph builds (mirror, edge-filled shifts of either) is the numpy view through the model."""
    from fer_train.optimize.compose import TTA_CANDIDATES, View, flip_average

    source = onnx.load(str(exported / "cnn.onnx"))
    x = faces[:9]
    views = TTA_CANDIDATES["flip+shift2"] + (View(False, 1, -3),)
    composed, steps = flip_average(source, views)
    expected = sum(log_softmax(logits_of(source, v.apply(x))) for v in views) / len(views)
    np.testing.assert_allclose(logits_of(composed, x), expected, atol=1e-4)
    assert len(steps["views"]) == 11 and "mirror shifted -2,+0" in steps["views"]
    assert count_flops(composed).flops == 11 * count_flops(source).flops
    one, _ = flip_average(source, (View(True, -1, 1),))  # a single view: no Concat
    np.testing.assert_allclose(logits_of(one, x), log_softmax(logits_of(source, View(True, -1, 1).apply(x))), atol=1e-4)
    shifted = View(dy=1, dx=-2).apply(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))[0, 0]
    np.testing.assert_array_equal(shifted, [[2, 3, 3, 3], [2, 3, 3, 3], [6, 7, 7, 7], [10, 11, 11, 11]])  # down 1, left 2, edges repeated


def test_tta_is_chosen_on_validation_and_recorded(exported, splits, tmp_path):
    source = exported / "cnn.onnx"
    lines = []
    results = optimize_model(source, splits, out_dir=tmp_path, variants=["tta"], max_drop=100, log=lines.append)
    meta = load_classifier(tmp_path / "cnn.tta.onnx").metadata
    choice = meta["optimization"]["tta_choice"]
    scores = choice["validation_accuracy"]
    assert set(scores) == set(optimize.compose.TTA_CANDIDATES) and results[0].written
    assert scores[choice["chosen"]] == max(scores.values())
    assert any("tta on validation" in line for line in lines)
    chosen_views = optimize.compose.TTA_CANDIDATES[choice["chosen"]]
    assert meta["optimization"]["views"] == [v.name for v in chosen_views]
    val_acc = 100 * meta["metrics"]["val"]["accuracy"]
    assert abs(val_acc - scores[choice["chosen"]]) < 0.01  # the graph scores what the choice measured
    with pytest.raises(ValueError, match="unknown test-time augmentation 'flip\\+zoom'"):
        optimize_model(source, splits, out_dir=tmp_path, variants=["tta"], tta="flip+zoom", log=lambda line: None)


def test_ensemble_variant_averages_every_member_on_the_face_and_its_mirror(exported, splits, tmp_path):
    cnn, dnn = exported / "cnn.onnx", exported / "dnn.onnx"
    faces = splits.test.images[:37]
    for flip in (False, True):
        results = optimize_model(cnn, splits, out_dir=tmp_path, variants=["ensemble"], members=[dnn], max_drop=100, log=lambda line: None,
                                 ensemble_flip=flip)
        assert [r.name for r in results] == ["ensemble"] and results[0].written
        clf = load_classifier(tmp_path / "cnn.ensemble.onnx")
        views = [logits_of(path, f) for path in (cnn, dnn) for f in ((faces, faces[:, :, ::-1].copy()) if flip else (faces,))]
        np.testing.assert_allclose(clf.predict_logits(faces), sum(map(log_softmax, views)) / len(views), atol=1e-4)
        meta = clf.metadata
        assert meta["variant"] == ("fp32-ensemble-flip-average" if flip else "fp32-ensemble")
        assert [m["file"] for m in meta["optimization"]["member_files"]] == [str(cnn), str(dnn)]  # as given
        flops = count_flops(cnn).flops + count_flops(dnn).flops
        assert count_flops(tmp_path / "cnn.ensemble.onnx").flops == (2 if flip else 1) * flops
    from fer_runtime.explain import gradient_path

    assert gradient_path(tmp_path / "cnn.ensemble.onnx") == tmp_path / "cnn.grad.onnx"  # explained through its first member

    with pytest.raises(ValueError, match="needs the other models: --with"):
        optimize_model(cnn, splits, out_dir=tmp_path, variants=["ensemble"], log=lambda line: None)
    other_split = tmp_path / "other.onnx"
    proto = onnx.load(str(dnn))
    next(p for p in proto.metadata_props if p.key == "train_config").value = '{"model": "dnn", "seed": 1}'
    onnx.save(proto, str(other_split))
    with pytest.raises(ValueError, match=r"other.onnx: trained with seed=1, cnn.onnx with None; ensemble members must share"):
        optimize_model(cnn, splits, out_dir=tmp_path, variants=["ensemble"], members=[other_split], log=lambda line: None)


def test_an_ensemble_joins_another_as_the_models_it_holds_and_no_model_twice(exported, splits, tmp_path):
    cnn, dnn, cnn2 = exported / "cnn.onnx", exported / "dnn.onnx", tmp_path / "cnn2.onnx"
    _export("cnn", cnn2, slopes=(-0.5, 0.3))  # a third model
    quiet = {"splits": splits, "variants": ["ensemble"], "max_drop": 100, "log": lambda line: None}
    optimize_model(cnn, out_dir=tmp_path / "pair", members=[dnn], **quiet)
    pair = tmp_path / "pair" / "cnn.ensemble.onnx"
    optimize_model(cnn2, out_dir=tmp_path / "three", members=[pair], **quiet)
    three = load_classifier(tmp_path / "three" / "cnn2.ensemble.onnx")
    faces = splits.test.images[:37]
    flat = sum(log_softmax(logits_of(path, faces)) for path in (cnn, dnn, cnn2)) / 3
    # the same ranking as the flat mean of three, up to a constant per face (the pair's mean is renormalised)
    np.testing.assert_allclose(log_softmax(three.predict_logits(faces)), log_softmax(flat), atol=1e-4)
    optimization = three.metadata["optimization"]
    assert optimization["members"] == 3 and optimization["ensemble"] == "mean log-softmax of 3 models"
    assert [m["file"] for m in optimization["member_files"]] == [str(cnn2), str(pair)]
    assert [m["file"] for m in optimization["member_files"][1]["members"]] == [str(cnn), str(dnn)]

    # the model itself inside a member (a new ensemble from an earlier one) joins once, through that member
    optimize_model(dnn, out_dir=tmp_path / "inside", members=[pair, cnn2], **quiet)
    inside = load_classifier(tmp_path / "inside" / "dnn.ensemble.onnx")
    np.testing.assert_allclose(log_softmax(inside.predict_logits(faces)), log_softmax(flat), atol=1e-4)
    assert inside.metadata["optimization"]["members"] == 3
    assert [m["file"] for m in inside.metadata["optimization"]["member_files"]] == [str(pair), str(cnn2)]
    with pytest.raises(ValueError, match=rf"{dnn} is {dnn} again: an ensemble holds each model once"):
        optimize_model(dnn, out_dir=tmp_path / "again", members=[dnn], **quiet)
    with pytest.raises(ValueError, match=rf"{cnn} \(in {pair}\) is {cnn} again"):
        optimize_model(cnn2, out_dir=tmp_path / "again", members=[cnn, pair], **quiet)
    # two levels deep (dnn is in the pair, which is in three): the model itself still joins once, a duplicate is still named
    three_path = tmp_path / "three" / "cnn2.ensemble.onnx"
    optimize_model(dnn, out_dir=tmp_path / "deep", members=[three_path], **quiet)
    deep = load_classifier(tmp_path / "deep" / "dnn.ensemble.onnx")
    assert deep.metadata["optimization"]["members"] == 3
    np.testing.assert_allclose(log_softmax(deep.predict_logits(faces)), log_softmax(flat), atol=1e-4)
    with pytest.raises(ValueError, match=rf"{cnn} \(in {pair} in {three_path}\) is {cnn} again"):
        optimize_model(dnn, out_dir=tmp_path / "again", members=[cnn, three_path], **quiet)


def test_int8_quantises_raw_pixels_exactly(exported):
    fast, _ = simplify(onnx.load(str(exported / "dnn.onnx")))
    int8, steps = quantize_int8(fast, make_faces(32, seed=6)[0])
    q = next(n for n in int8.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "image")
    values = {init.name: numpy_helper.to_array(init) for init in int8.graph.initializer}
    assert float(values[q.input[1]]) == 1.0 and int(values[q.input[2]]) == 0  # 0..255 → uint8 0..255 unchanged
    assert steps["calibration_images"] == 32


def test_accuracy_gate():
    assert accuracy_gate(61.0, 60.6).passed  # 0.4 points lost
    assert accuracy_gate(61.0, 61.8).passed  # gains are fine
    refused = accuracy_gate(61.0, 60.4)
    assert not refused.passed and "0.60 points lost, more than the 0.5 allowed" in str(refused)
    assert str(accuracy_gate(61.0, 60.6)).endswith("0.40 points lost, within the 0.5 allowed")
    assert str(accuracy_gate(61.0, 61.8)).endswith("0.80 points gained")  # no limit to be within


def test_gate_refuses_a_damaged_variant_and_removes_the_stale_one(exported, splits, tmp_path, monkeypatch):
    source = exported / "cnn.onnx"
    fast, _ = simplify(onnx.load(str(source)))

    def damaged_int8(model, images, weight_bits=7, **options):  # a "quantisation" that pushes every face to class 0
        model = onnx.ModelProto()
        model.CopyFrom(fast)
        last = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
        bias = next(init for init in model.graph.initializer if init.name == last.input[2])
        values = numpy_helper.to_array(bias).copy()
        values[0] += 1e3
        bias.CopyFrom(numpy_helper.from_array(values, bias.name))
        return model, {}

    monkeypatch.setattr(optimize.builders, "quantize_int8", damaged_int8)  # where the int8 builder looks it up
    stale = tmp_path / "cnn.int8.onnx"
    stale.write_bytes(source.read_bytes())  # an int8 file from some earlier model
    [result] = optimize_model(source, splits, out_dir=tmp_path, variants=("int8",), log=lambda line: None)
    assert result.gate is not None and result.gate.fp32_accuracy > 80  # the fixture's CNN reads the drawn faces
    assert not result.written and not result.gate.passed and result.gate.drop > 50
    assert "refused" in result.message and not stale.exists()


def test_int8_calibration_options(exported):
    from fer_train.optimize import float_node_names

    fast, _ = simplify(onnx.load(str(exported / "dnn.onnx")))
    images = make_faces(32, seed=6)[0]
    first, last = float_node_names(fast, ["first", "last"])
    int8, steps = quantize_int8(fast, images, calibration="percentile", percentile=99.99, per_channel=False, keep_float=["first", "last"])
    assert steps["calibration"] == "percentile 99.99" and steps["weights"] == "int7 per tensor" and steps["float_nodes"] == [first, last]
    values = {init.name: numpy_helper.to_array(init) for init in int8.graph.initializer}
    gemms = {n.name: n for n in int8.graph.node if n.op_type == "Gemm"}
    producers = {out: n for n in int8.graph.node for out in n.output}
    for name in (first, last):  # left in fp32: their weights are float tensors, not dequantised int8
        weight = gemms[name].input[1]
        assert weight in values and values[weight].dtype == np.float32 and weight not in producers
    weight_scales = [values[n.input[1]] for n in int8.graph.node if n.op_type == "DequantizeLinear" and values.get(n.input[0]) is not None
                     and values[n.input[0]].dtype == np.int8]
    assert weight_scales and all(scale.size == 1 for scale in weight_scales)  # per tensor
    for method in ("minmax", "entropy"):
        assert quantize_int8(fast, images, calibration=method)[1]["calibration"] == method
    with pytest.raises(ValueError, match="calibration must be"):
        quantize_int8(fast, images, calibration="kl")
    with pytest.raises(ValueError, match="no node 'nope'"):
        float_node_names(fast, ["nope"])


def test_auto_int8_records_its_choice_made_on_validation(exported, splits, tmp_path):
    [result] = optimize_model(exported / "cnn.onnx", splits, out_dir=tmp_path, variants=("int8",), max_drop=100, log=lambda line: None)
    choice = load_classifier(tmp_path / "cnn.int8.onnx").metadata["optimization"]["int8_choice"]
    assert choice["chosen"] in choice["validation_points_lost"] and next(iter(choice["validation_points_lost"])) == "7 bits"
    assert result.steps["calibration"] == "percentile 99.999"
