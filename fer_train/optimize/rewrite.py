"""The fp32 rewrite behind ``<stem>.fast.onnx``: the same logits from fewer passes over the activations.

The per-element PReLU ``clamp(x, 0) + w * clamp(x, max=0)`` is exported as four elementwise nodes, each a
pass over the activations, and since onnxruntime's blocked (NCHWc) conv layout has no kernel for them, each
conv PReLU also costs a reorder out of that layout and back. :func:`simplify` halves the elementwise passes.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_runtime.contract import ONNX_INPUT

from .flops import _static_shapes
from .graph import as_model, constant_values, copy_model, drop_unused, is_zero, set_nodes, wiring


@dataclass
class _PReLUMatch:
    x: str  # the PReLU's input
    slope: str  # initializer or Constant with the per-element slopes
    out: str
    nodes: list  # the Clip, Clip, Mul and Add that compute it


def _find_prelus(model, nodes: list) -> list[_PReLUMatch]:
    """``Add(Clip(x, min=0), Mul(w, Clip(x, max=0)))`` groups (either operand order), how torch exports
    ``clamp(x, min=0) + w * clamp(x, max=0)``; ``nodes`` is ``list(model.graph.node)``."""
    values = constant_values(model)
    producer, readers = wiring(nodes)
    outputs = {o.name for o in model.graph.output}

    def clip_bound(node, which: int) -> bool:  # which: 1 = min, 2 = max; the other bound absent
        if node is None or node.op_type != "Clip" or len(node.input) < 2:
            return False
        inputs = list(node.input) + [""] * (3 - len(node.input))
        return is_zero(values, inputs[which]) and inputs[3 - which] == ""

    matches = []
    for add in nodes:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        for pos_name, neg_name in ((add.input[0], add.input[1]), (add.input[1], add.input[0])):
            pos, mul = producer.get(pos_name), producer.get(neg_name)
            if not clip_bound(pos, 1) or mul is None or mul.op_type != "Mul":
                continue
            found = [(a, producer[b]) for a, b in ((mul.input[0], mul.input[1]), (mul.input[1], mul.input[0]))
                     if a in values and clip_bound(producer.get(b), 2)]
            if not found or found[0][1].input[0] != pos.input[0]:
                continue
            slope, neg = found[0]
            inner = (pos.output[0], mul.output[0], neg.output[0])
            if any(name in outputs or len(readers.get(name, [])) != 1 for name in inner):
                continue
            matches.append(_PReLUMatch(pos.input[0], slope, add.output[0], [pos, neg, mul, add]))
            break
    return matches


def fuse_prelu(model, form: str = "max"):
    """Rewrite the exported per-element PReLU (two Clip, a Mul and an Add: four passes over the activations);
    returns ``(model, number rewritten)``.

    ``form="max"``: ``Max(x, Mul(x, w))`` — two passes, and exactly the same numbers when every slope is at
    most 1 (then ``w·x ≥ x`` for ``x < 0`` and ``w·x ≤ x`` for ``x ≥ 0``); ``Min`` when every slope is at
    least 1. A PReLU with slopes on both sides of 1 is left as it is. Both new ops stay elementwise, and
    int8 keeps them in uint8 (see :func:`quantize_int8`).
    ``form="prelu"``: ONNX's ``PRelu(x, w)``, whose slope broadcasts from (C, H, W). One node, but
    onnxruntime 1.32 runs a slope of that shape through a generic loop whose speed depends on the data:
    from no faster than the four nodes (a trained checkpoint) to 20 % slower (random weights). It is
    here only to be measured (benchmarks/bench_inference.py).
    """
    import onnx

    if form not in ("max", "prelu"):
        raise ValueError(f"unknown PReLU form {form!r}; expected 'max' or 'prelu'")
    model = copy_model(as_model(model))
    values = constant_values(model)
    replace: dict[int, list] = {}  # id of the Add → the nodes that take the group's place
    drop: set[int] = set()
    nodes = list(model.graph.node)  # protobuf hands out new wrappers on each access: keep one list
    for m in _find_prelus(model, nodes):
        if form == "prelu":
            new = [onnx.helper.make_node("PRelu", [m.x, m.slope], [m.out], name=m.out + "/PRelu")]
        else:
            slope = values[m.slope]
            if slope.max() <= 1.0:
                pick = "Max"
            elif slope.min() >= 1.0:
                pick = "Min"
            else:
                continue
            scaled = m.out + "/scaled"
            new = [onnx.helper.make_node("Mul", [m.x, m.slope], [scaled], name=m.out + "/Mul"),
                   onnx.helper.make_node(pick, [m.x, scaled], [m.out], name=m.out + "/" + pick)]
        replace[id(m.nodes[-1])] = new
        drop |= {id(n) for n in m.nodes[:-1]}
    kept = []
    for node in nodes:
        if id(node) in replace:
            kept += replace[id(node)]
        elif id(node) not in drop:
            kept.append(node)
    set_nodes(model, kept)
    return model, len(replace)


def fold_input_scale(model):
    """Fold the in-graph pixel scaling (``x / 255``, then ``- mean``, ``/ std``: scalar ops on the input)
    into the first Conv (without padding) or Gemm; returns ``(model, folded?)``.

    ``conv(W, a·x + b) + B = conv(a·W, x) + (B + b·ΣW)`` holds when no zero padding enters the sum. The
    graph then reads raw pixels directly, which also lets int8 quantise its input exactly (scale 1).
    """
    from onnx import numpy_helper

    model = copy_model(as_model(model))
    _, readers = wiring(list(model.graph.node))
    scaling = _input_scaling(readers, constant_values(model))
    if scaling is None:
        return model, False
    a, b, node = scaling
    flatten = node if node.op_type == "Flatten" else None
    target = readers.get(node.output[0], [None])[0] if flatten else node
    if flatten is not None and len(readers.get(node.output[0], [])) != 1:
        return model, False
    inits = {init.name: init for init in model.graph.initializer}
    if target is None or len(target.input) < 3 or target.input[1] not in inits or target.input[2] not in inits:
        return model, False
    weight = numpy_helper.to_array(inits[target.input[1]]).astype(np.float64)
    shift = _bias_shift(target, weight, b, after_flatten=flatten is not None)
    if shift is None:
        return model, False
    bias = numpy_helper.to_array(inits[target.input[2]]).astype(np.float64)
    new_w, new_b = target.input[1] + "/scaled", target.input[2] + "/scaled"
    model.graph.initializer.extend([numpy_helper.from_array((a * weight).astype(np.float32), new_w),
                                    numpy_helper.from_array((bias + shift).astype(np.float32), new_b)])
    target.input[1], target.input[2] = new_w, new_b
    (flatten or target).input[0] = ONNX_INPUT
    drop_unused(model)
    return model, True


def _input_scaling(readers: dict, values: dict) -> tuple[float, float, object] | None:
    """``(a, b, node)``: the chain of scalar ``Div``, ``Mul``, ``Sub`` and ``Add`` that reads the graph's input computes
    ``a·x + b``, and ``node`` reads its result. None without such a chain, or where a tensor on the way has several readers."""
    a, b = 1.0, 0.0
    steps, tensor = 0, ONNX_INPUT
    while True:
        nxt = readers.get(tensor, [])
        if len(nxt) != 1:
            return None
        node = nxt[0]
        other = node.input[1] if len(node.input) == 2 and node.input[0] == tensor else None
        c = values.get(other) if other else None
        if node.op_type not in ("Div", "Mul", "Sub", "Add") or c is None or c.size != 1:
            return (a, b, node) if steps else None
        c = float(c.reshape(()))
        a, b = {"Div": (a / c, b / c), "Mul": (a * c, b * c), "Sub": (a, b - c), "Add": (a, b + c)}[node.op_type]
        steps += 1
        tensor = node.output[0]


def _bias_shift(target, weight: np.ndarray, b: float, after_flatten: bool) -> np.ndarray | None:
    """``b·ΣW``, what the bias of ``target`` (a Conv or Gemm of weights ``weight``) gains per output when the input's
    offset ``b`` moves into it. None where it cannot: a Conv with zero padding or after a Flatten, a Gemm with
    ``transA``, ``alpha`` or ``beta``, any other op."""
    attrs = {att.name: att for att in target.attribute}
    if target.op_type == "Conv" and not after_flatten:
        pads = list(attrs["pads"].ints) if "pads" in attrs else []
        auto_pad = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
        if any(pads) or auto_pad not in ("NOTSET", "VALID"):
            return None
        return b * weight.sum(axis=(1, 2, 3))
    if target.op_type == "Gemm":
        if ("transA" in attrs and attrs["transA"].i) or ("alpha" in attrs and attrs["alpha"].f != 1.0) or ("beta" in attrs and attrs["beta"].f != 1.0):
            return None
        return b * weight.sum(axis=1 if ("transB" in attrs and attrs["transB"].i) else 0)
    return None


def basic_optimizations(model):
    """onnxruntime's level-1 rewrites: constant folding, identity and redundant-node elimination, and
    ``Pad`` of zeros folded into the ``AveragePool`` after it (the CNN's last ``ZeroPad2d``).

    Portable, unlike the saved output of the higher levels: these run on the ONNX graph before it is
    assigned to any hardware, and they turn the padding amounts torch computes in-graph into constants.
    """
    import onnx
    from fer_runtime.sessions import make_session

    with tempfile.TemporaryDirectory() as tmp:
        written = Path(tmp) / "basic.onnx"
        make_session(model.SerializeToString(), optimization="basic", optimized_model_path=written)
        optimized = onnx.load(str(written))
    used = {node.domain for node in optimized.graph.node}
    keep = [op for op in optimized.opset_import if op.domain in used or op.domain in ("", "ai.onnx")]
    del optimized.opset_import[:]
    optimized.opset_import.extend(keep)
    return optimized


def drop_zero_pad_values(model):
    """Remove ``Pad``'s explicit ``constant_value`` of 0 (the default). Same function; but the quantizer
    turns an explicit float 0 into a dequantised constant that keeps the Pad in float, while without it
    the Pad runs on uint8 (padding with the zero point). Returns ``(model, number changed)``."""
    model = copy_model(as_model(model))
    values = constant_values(model)
    changed = 0
    for node in model.graph.node:
        mode = next((att.s for att in node.attribute if att.name == "mode"), b"constant")
        if node.op_type == "Pad" and mode == b"constant" and len(node.input) == 3 and is_zero(values, node.input[2]):
            del node.input[2]
            changed += 1
    drop_unused(model)
    return model, changed


def average_pool_as_depthwise_conv(model):
    """``AveragePool`` (2-D, counting padded zeros) as the depthwise ``Conv`` with weights 1/k² it equals;
    returns ``(model, number replaced)``. For int8 only: onnxruntime's uint8 depthwise conv is much
    faster than its QLinearAveragePool, and 1/k² quantises exactly (to the largest code, scale 1/(k² · code))."""
    import onnx
    from onnx import numpy_helper

    model = copy_model(as_model(model))
    shapes = _static_shapes(model)
    nodes = list(model.graph.node)
    replace = {}
    for node in nodes:
        if node.op_type != "AveragePool":
            continue
        attrs = {att.name: onnx.helper.get_attribute_value(att) for att in node.attribute}
        kernel = list(attrs.get("kernel_shape", []))
        pads = list(attrs.get("pads", [0] * 2 * len(kernel)))
        shape = shapes.get(node.input[0])
        if (len(kernel) != 2 or shape is None or len(shape) != 4 or attrs.get("ceil_mode", 0) or attrs.get("auto_pad", b"NOTSET") != b"NOTSET"
                or (any(pads) and not attrs.get("count_include_pad", 0)) or any(d != 1 for d in attrs.get("dilations", [1, 1]))):
            continue
        channels = shape[1]
        weight = node.output[0] + "/depthwise_weight"
        model.graph.initializer.append(numpy_helper.from_array(np.full([channels, 1] + kernel, 1.0 / np.prod(kernel), np.float32), weight))
        replace[id(node)] = onnx.helper.make_node("Conv", [node.input[0], weight], list(node.output), name=node.name + "/depthwise",
                                                  group=channels, kernel_shape=kernel, pads=pads,
                                                  strides=list(attrs.get("strides", [1, 1])))
    set_nodes(model, [replace.get(id(n), n) for n in nodes])
    return model, len(replace)


def simplify(model):
    """The fast fp32 graph: the same function, fewer passes over memory. Returns ``(model, steps)``,
    ``steps`` saying what was done (it goes into the variant's metadata)."""
    import onnx

    source = as_model(model)
    model = basic_optimizations(source)
    model, scale_folded = fold_input_scale(model)
    model, prelus = fuse_prelu(model, form="max")
    model, _ = drop_zero_pad_values(model)
    del model.metadata_props[:]
    model.metadata_props.extend(source.metadata_props)
    model.doc_string = source.doc_string
    onnx.checker.check_model(model, full_check=True)
    steps = {"constant_folding": True, "input_scale_folded": scale_folded, "prelu_as_max": prelus}
    return model, steps
