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
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import SPLIT_KEYS
from .constants import CLASS_NAMES, IMAGE_SIZE, ONNX_INPUT, ONNX_OUTPUT
from .metrics import split_metrics, without_predictions

VARIANTS = ("fast", "int8", "tta", "ensemble")  # tta (flip averaging) and ensemble (with --with members) only when asked
MAX_ACCURACY_DROP = 0.5  # percentage points of PublicTest accuracy a variant may lose against fp32
FUSED_ATOL = 1e-4  # the rewritten fp32 graph must give the same logits as the original

META_VARIANT = "variant"
META_FP32_TEST_ACCURACY = "fp32_test_accuracy"
META_VARIANT_TEST_ACCURACY = "variant_test_accuracy"
META_OPTIMIZATION = "optimization"


class OptimizeError(RuntimeError):
    """A rewrite or quantisation that could not be done, or a variant that failed its check."""


# ----------------------------------------------------------------------------------------------------
# FLOPs


@dataclass
class FlopCount:
    """Multiply-accumulates of the convolutions and matrix products, per image; FLOPs = 2 × MACs."""

    macs_by_node: dict[str, int] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return sum(self.macs_by_node.values())

    @property
    def flops(self) -> int:
        return 2 * self.macs


def _static_shapes(model, batch: int = 1) -> dict[str, list[int]]:
    """Every tensor's shape for a batch of ``batch`` zero images, found by running the graph.

    onnx's shape inference cannot follow the padding amounts that torch computes in-graph for
    ``ZeroPad2d``; running the unoptimised graph once with every tensor as an output can.
    """
    import onnx
    import onnxruntime as ort

    model = _copy(model)
    inferred = onnx.shape_inference.infer_shapes(model)
    elem_types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    existing = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in existing and elem_types.get(name):
                model.graph.output.append(onnx.helper.make_tensor_value_info(name, elem_types[name], None))
                existing.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros([batch if not isinstance(d, int) else d for d in i.shape], np.float32) for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    for name, value in zip(names, session.run(names, feeds)):
        shapes[name] = list(np.shape(value))
    return shapes


def count_flops(model) -> FlopCount:
    """MACs per image of every Conv, Gemm and MatMul (also inside QDQ graphs, whose Conv nodes remain).

    Conv: output elements × (input channels / groups) × kernel area; Gemm/MatMul: rows × K × columns.
    Elementwise ops, pooling and padding are left out, as is customary: they are memory, not arithmetic.
    """
    model = _as_model(model)
    shapes = _static_shapes(model, batch=1)
    count = FlopCount()
    for i, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            w_index = 3 if node.op_type == "QLinearConv" else 1
            out, weight = shapes.get(node.output[0]), shapes.get(node.input[w_index])
            if out is None or weight is None:
                raise OptimizeError(f"cannot count FLOPs of {name}: unknown shape of {node.output[0] if out is None else node.input[w_index]}")
            # weight (C_out, C_in/groups, kH, kW): each output element takes C_in/groups × kH × kW MACs
            count.macs_by_node[name] = int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a is None or out is None:
                raise OptimizeError(f"cannot count FLOPs of {name}: unknown input or output shape")
            trans_a = next((att.i for att in node.attribute if att.name == "transA"), 0) if node.op_type == "Gemm" else 0
            k = a[-2] if trans_a else a[-1]
            count.macs_by_node[name] = int(np.prod(out)) * int(k)
    return count


# ----------------------------------------------------------------------------------------------------
# graph rewrites


def _as_model(model):
    import onnx

    return onnx.load(str(model)) if isinstance(model, (str, Path)) else model


def _wiring(nodes: list) -> tuple[dict, dict[str, list]]:
    """For a graph's nodes: which node produces each tensor, and which nodes read it (in order)."""
    producer = {out: node for node in nodes for out in node.output}
    readers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return producer, readers


def _copy(model):
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _constant_values(model) -> dict[str, np.ndarray]:
    """Values of initializers and of Constant nodes, by tensor name."""
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for att in node.attribute:
                if att.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(att.t)
    return values


def _is_zero(values: dict[str, np.ndarray], name: str) -> bool:
    value = values.get(name)
    return value is not None and value.size == 1 and float(value.reshape(())) == 0.0


@dataclass
class _PReLUMatch:
    x: str  # the PReLU's input
    slope: str  # initializer or Constant with the per-element slopes
    out: str
    nodes: list  # the Clip, Clip, Mul and Add that compute it


def _find_prelus(model, nodes: list) -> list[_PReLUMatch]:
    """``Add(Clip(x, min=0), Mul(w, Clip(x, max=0)))`` groups (either operand order), how torch exports
    ``clamp(x, min=0) + w * clamp(x, max=0)``; ``nodes`` is ``list(model.graph.node)``."""
    values = _constant_values(model)
    producer, readers = _wiring(nodes)
    outputs = {o.name for o in model.graph.output}

    def clip_bound(node, which: int) -> bool:  # which: 1 = min, 2 = max; the other bound absent
        if node is None or node.op_type != "Clip" or len(node.input) < 2:
            return False
        inputs = list(node.input) + [""] * (3 - len(node.input))
        return _is_zero(values, inputs[which]) and inputs[3 - which] == ""

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
    model = _copy(_as_model(model))
    values = _constant_values(model)
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
    _set_nodes(model, kept)
    return model, len(replace)


def fold_input_scale(model):
    """Fold the in-graph pixel scaling (``x / 255``, then ``- mean``, ``/ std``: scalar ops on the input)
    into the first Conv (without padding) or Gemm; returns ``(model, folded?)``.

    ``conv(W, a·x + b) + B = conv(a·W, x) + (B + b·ΣW)`` holds when no zero padding enters the sum. The
    graph then reads raw pixels directly, which also lets int8 quantise its input exactly (scale 1).
    """
    from onnx import numpy_helper

    model = _copy(_as_model(model))
    values = _constant_values(model)
    nodes = list(model.graph.node)
    _, readers = _wiring(nodes)
    a, b = 1.0, 0.0
    chain, tensor = [], ONNX_INPUT
    while True:
        nxt = readers.get(tensor, [])
        if len(nxt) != 1:
            return model, False
        node = nxt[0]
        other = node.input[1] if len(node.input) == 2 and node.input[0] == tensor else None
        c = values.get(other) if other else None
        if node.op_type in ("Div", "Mul", "Sub", "Add") and c is not None and c.size == 1:
            c = float(c.reshape(()))
            a, b = {"Div": (a / c, b / c), "Mul": (a * c, b * c), "Sub": (a, b - c), "Add": (a, b + c)}[node.op_type]
            chain.append(node)
            tensor = node.output[0]
            continue
        break
    if not chain:
        return model, False
    flatten = node if node.op_type == "Flatten" else None
    target = readers.get(node.output[0], [None])[0] if flatten else node
    if flatten is not None and len(readers.get(node.output[0], [])) != 1:
        return model, False
    inits = {init.name: init for init in model.graph.initializer}
    attrs = {att.name: att for att in target.attribute} if target is not None else {}
    if target is None or len(target.input) < 2 or target.input[1] not in inits:
        return model, False
    weight = numpy_helper.to_array(inits[target.input[1]]).astype(np.float64)
    if target.op_type == "Conv" and flatten is None:
        pads = list(attrs["pads"].ints) if "pads" in attrs else []
        auto_pad = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
        if any(pads) or auto_pad not in ("NOTSET", "VALID"):
            return model, False
        shift = b * weight.sum(axis=(1, 2, 3))
    elif target.op_type == "Gemm":
        if ("transA" in attrs and attrs["transA"].i) or ("alpha" in attrs and attrs["alpha"].f != 1.0) or ("beta" in attrs and attrs["beta"].f != 1.0):
            return model, False
        shift = b * weight.sum(axis=1 if ("transB" in attrs and attrs["transB"].i) else 0)
    else:
        return model, False
    if len(target.input) < 3 or target.input[2] not in inits:
        return model, False
    bias = numpy_helper.to_array(inits[target.input[2]]).astype(np.float64)
    new_w, new_b = target.input[1] + "/scaled", target.input[2] + "/scaled"
    model.graph.initializer.extend([numpy_helper.from_array((a * weight).astype(np.float32), new_w),
                                    numpy_helper.from_array((bias + shift).astype(np.float32), new_b)])
    target.input[1], target.input[2] = new_w, new_b
    (flatten or target).input[0] = ONNX_INPUT
    _drop_unused(model)
    return model, True


def _set_nodes(model, nodes: list, prune: bool = True) -> None:
    """Replace the graph's nodes (copies first: clearing the field invalidates the old wrappers)."""
    import onnx

    copies = []
    for node in nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copies.append(copy)
    del model.graph.node[:]
    model.graph.node.extend(copies)
    if prune:
        _drop_unused(model)


def _drop_unused(model) -> None:
    """Remove nodes whose outputs nobody reads and initializers no node reads."""
    needed = {o.name for o in model.graph.output}
    kept = []
    for node in reversed(list(model.graph.node)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(node.input)
    _set_nodes(model, list(reversed(kept)), prune=False)
    inits = [init for init in model.graph.initializer if init.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)


def basic_optimizations(model):
    """onnxruntime's level-1 rewrites: constant folding, identity and redundant-node elimination, and
    ``Pad`` of zeros folded into the ``AveragePool`` after it (the CNN's last ``ZeroPad2d``).

    Portable, unlike the saved output of the higher levels: these run on the ONNX graph before it is
    assigned to any hardware, and they turn the padding amounts torch computes in-graph into constants.
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(tmp) / "basic.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
    used = {node.domain for node in optimized.graph.node}
    keep = [op for op in optimized.opset_import if op.domain in used or op.domain in ("", "ai.onnx")]
    del optimized.opset_import[:]
    optimized.opset_import.extend(keep)
    return optimized


def drop_zero_pad_values(model):
    """Remove ``Pad``'s explicit ``constant_value`` of 0 (the default). Same function; but the quantizer
    turns an explicit float 0 into a dequantised constant that keeps the Pad in float, while without it
    the Pad runs on uint8 (padding with the zero point). Returns ``(model, number changed)``."""
    model = _copy(_as_model(model))
    values = _constant_values(model)
    changed = 0
    for node in model.graph.node:
        mode = next((att.s for att in node.attribute if att.name == "mode"), b"constant")
        if node.op_type == "Pad" and mode == b"constant" and len(node.input) == 3 and _is_zero(values, node.input[2]):
            del node.input[2]
            changed += 1
    _drop_unused(model)
    return model, changed


def average_pool_as_depthwise_conv(model):
    """``AveragePool`` (2-D, counting padded zeros) as the depthwise ``Conv`` with weights 1/k² it equals;
    returns ``(model, number replaced)``. For int8 only: onnxruntime's uint8 depthwise conv is much
    faster than its QLinearAveragePool, and 1/k² quantises exactly (to the largest code, scale 1/(k² · code))."""
    import onnx
    from onnx import numpy_helper

    model = _copy(_as_model(model))
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
    _set_nodes(model, [replace.get(id(n), n) for n in nodes])
    return model, len(replace)


def simplify(model):
    """The fast fp32 graph: the same function, fewer passes over memory. Returns ``(model, steps)``,
    ``steps`` saying what was done (it goes into the variant's metadata)."""
    import onnx

    source = _as_model(model)
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


# ----------------------------------------------------------------------------------------------------
# static int8


def flip_average(model):
    """Test-time flip augmentation inside the graph: every face and its mirror image go through the model as one
    batch of 2N, and the output is the mean of the two log-softmax vectors (log of the geometric mean of the two
    probability vectors, so still valid logits: their softmax is a probability vector). Costs 2× the compute.
    The one-model case of :func:`ensemble_average`. Returns ``(model, steps)``."""
    flipped, _ = ensemble_average([model], flip=True)
    return flipped, {"flip_average": "mean log-softmax of the face and its mirror image"}


def ensemble_average(models: list, flip: bool = True, weights: list[int] | None = None):
    """One graph that runs every model (and, with ``flip``, on the face and its mirror image too) and outputs
    the mean of their log-softmax vectors, as :func:`flip_average` does for one model. Each member's tensors
    are renamed ``m<k>_…``; the first model's graph input, output and opset are kept. A member of weight ``w``
    (an ensemble of ``w`` models itself) counts ``w`` times, so nesting gives the flat ensemble's predictions.
    Returns ``(model, steps)``."""
    import onnx
    from onnx import compose, helper, numpy_helper

    base = models[0]
    opsets = {next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None) for m in models}
    if len(opsets) != 1:
        raise OptimizeError(f"the members use different ONNX opsets {sorted(opsets)}; export them with the same fer-train")
    opset = opsets.pop()
    classes = base.graph.output[0].type.tensor_type.shape.dim[-1].dim_value or len(CLASS_NAMES)
    views = 2 if flip else 1
    constants = {**({"ens_starts": [-1], "ens_ends": [np.iinfo(np.int64).min], "ens_axes": [3], "ens_steps": [-1]} if flip else {}),
                 "ens_shape": [views, -1, classes], **({"ens_mean_axes": [0]} if opset >= 18 else {})}  # only what the graph reads
    initializers = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in constants.items()]
    views_input = "ens_views" if flip else ONNX_INPUT
    nodes = [helper.make_node("Slice", [ONNX_INPUT, "ens_starts", "ens_ends", "ens_axes", "ens_steps"], ["ens_mirror"]),  # x[..., ::-1]
             helper.make_node("Concat", [ONNX_INPUT, "ens_mirror"], [views_input], axis=0)] if flip else []
    member_outputs = []
    for k, member in enumerate(models):
        prefix = f"m{k}_"
        renamed = compose.add_prefix(_copy(member), prefix)
        for node in renamed.graph.node:
            node.input[:] = [views_input if name == prefix + ONNX_INPUT else name for name in node.input]
        nodes += list(renamed.graph.node)
        initializers += list(renamed.graph.initializer)
        nodes += [helper.make_node("Reshape", [prefix + ONNX_OUTPUT, "ens_shape"], [prefix + "views"]),  # (views, N, classes)
                  helper.make_node("LogSoftmax", [prefix + "views"], [prefix + "log_probs"], axis=-1)]
        member_outputs += [prefix + "log_probs"] * (weights[k] if weights else 1)
    nodes.append(helper.make_node("Concat", member_outputs, ["ens_all"], axis=0))  # (members × views, N, classes)
    nodes.append(helper.make_node("ReduceMean", ["ens_all", "ens_mean_axes"], [ONNX_OUTPUT], keepdims=0) if opset >= 18
                 else helper.make_node("ReduceMean", ["ens_all"], [ONNX_OUTPUT], axes=[0], keepdims=0))
    graph = helper.make_graph(nodes, base.graph.name or "fer-ensemble", list(base.graph.input), list(base.graph.output), initializers)
    combined = helper.make_model(graph, opset_imports=list(base.opset_import), ir_version=base.ir_version)
    onnx.checker.check_model(combined)
    count = sum(weights) if weights else len(models)
    return combined, {"ensemble": f"mean log-softmax of {count} models" + (" on the face and its mirror image" if flip else ""),
                      "members": count}


def _tensor_ranges(model, names: list[str], images: np.ndarray, batch_size: int = 256) -> dict[str, tuple[float, float]]:
    """(min, max) of the named tensors over ``images`` (uint8 (N, 48, 48)), running the fp32 graph."""
    import onnx
    import onnxruntime as ort

    model = _copy(model)
    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    low = {n: np.inf for n in names}
    high = {n: -np.inf for n in names}
    for i in range(0, len(images), batch_size):
        batch = np.asarray(images[i:i + batch_size], np.float32).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
        for name, value in zip(names, session.run(names, {ONNX_INPUT: batch})):
            low[name], high[name] = min(low[name], float(value.min())), max(high[name], float(value.max()))
    return {n: (low[n], high[n]) for n in names}


class _Calibration:
    """onnxruntime's CalibrationDataReader over uint8 images, in batches."""

    def __init__(self, images: np.ndarray, batch_size: int = 64):
        self.batches = [np.asarray(images[i:i + batch_size], np.float32).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
                        for i in range(0, len(images), batch_size)]
        self.position = 0

    def get_next(self):
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {ONNX_INPUT: self.batches[self.position - 1]}

    def rewind(self):
        self.position = 0


def quantize_int8(model, calibration_images: np.ndarray, weight_bits: int = 7, on_uint8: bool = True):
    """Static int8 (QDQ, per-channel int8 weights, uint8 activations: the u8×s8 product that AVX512-VNNI
    and AVX-VNNI compute) of a :func:`simplify`-ed graph, calibrated on ``calibration_images``; returns
    ``(model, steps)``.

    ``weight_bits=7`` (the default) keeps every weight within ±64: x86 CPUs without VNNI add u8×s8 products
    in pairs into a saturating 16-bit sum, which full 8-bit weights can overflow (2 × 255 × 127 > 2¹⁵)
    and 7-bit ones cannot (2 × 255 × 64 < 2¹⁵), so 7 bits give the same numbers — and the accuracy the
    gate measured — on every x86 CPU; 8 bits are a little finer where VNNI is present.

    Beyond ``quantize_static``:
    - the input is raw pixels 0..255, quantised with scale 1 and zero point 0, i.e. exactly;
    - each PReLU ``Max(x, w·x)`` keeps ``x``, ``w·x`` and its output on one shared scale, so that the
      ``Max`` runs on the uint8 values themselves (the same order as the real values) instead of a
      dequantise → Max → quantise round trip, which cost a third of the int8 model's time.
    """
    import logging

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if weight_bits not in (7, 8):
        raise ValueError(f"weight_bits must be 7 or 8, got {weight_bits}")
    model = _copy(_as_model(model))
    nodes = list(model.graph.node)
    producer = {out: node for node in nodes for out in node.output}
    groups = []  # (x, w·x, output) of each PReLU in Max/Min form
    for node in nodes:
        if node.op_type in ("Max", "Min") and len(node.input) == 2:
            mul = producer.get(node.input[1])
            if mul is not None and mul.op_type == "Mul" and node.input[0] in mul.input:
                groups.append((node.input[0], node.input[1], node.output[0]))
    ranges = _tensor_ranges(model, [name for group in groups for name in group[:2]], calibration_images)
    overrides = {ONNX_INPUT: [{"rmin": np.float32(0), "rmax": np.float32(255)}]}  # scale (255 - 0) / 255 = 1: pixels exactly
    for x, scaled, out in groups:
        low = min(ranges[x][0], ranges[scaled][0], 0.0)
        high = max(ranges[x][1], ranges[scaled][1], 0.0)
        for name in (x, scaled, out):
            overrides[name] = [{"rmin": np.float32(low), "rmax": np.float32(high)}]

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs advice for every run
    try:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            onnx.save(onnx.shape_inference.infer_shapes(model), str(src))
            quantize_static(str(src), str(dst), _Calibration(calibration_images), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=weight_bits == 7, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"TensorQuantOverrides": overrides, "ActivationSymmetric": False, "WeightSymmetric": True,
                                           "ForceQuantizeNoInputCheck": True})
            quantized = onnx.load(str(dst))
    finally:
        logging.getLogger().setLevel(quiet)
    max_in_uint8 = pad_in_uint8 = 0
    if on_uint8:  # False only to measure what it gains (benchmarks/bench_inference.py)
        quantized, max_in_uint8, pad_in_uint8 = _on_quantized_values(quantized)
    quantized = _float_outputs(quantized)
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(model.metadata_props)
    quantized.doc_string = model.doc_string
    onnx.checker.check_model(quantized, full_check=True)
    steps = {"format": "QDQ", "weights": f"int{weight_bits} per channel", "activations": "uint8 per tensor", "calibration": "min-max",
             "calibration_images": int(len(calibration_images)), "prelu_max_on_uint8": max_in_uint8,
             "pad_on_uint8": pad_in_uint8}
    return quantized, steps


def _float_outputs(model):
    """Drop the ``QuantizeLinear → DequantizeLinear`` pair that the quantizer puts on the graph's outputs:
    the last Gemm then writes float logits itself (onnxruntime's QGemm does), which keeps the logits'
    precision and spares a pass."""
    model = _copy(model)
    nodes = list(model.graph.node)
    producer, readers = _wiring(nodes)
    drop = set()
    for output in model.graph.output:
        dq = producer.get(output.name)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or len(readers.get(q.output[0], [])) != 1 or len(readers.get(q.input[0], [])) != 1:
            continue
        last = producer.get(q.input[0])
        if last is None:
            continue
        last.output[list(last.output).index(q.input[0])] = output.name
        drop |= {id(q), id(dq)}
    _set_nodes(model, [n for n in nodes if id(n) not in drop])
    return model


def _on_quantized_values(model):
    """Run order-preserving ops on the quantised values themselves.

    ``DQ(a), DQ(b) → Max → Q`` with one scale and zero point throughout becomes ``Max(a, b)`` (uint8
    order is real order), and ``DQ(a) → Pad → Q`` becomes a uint8 ``Pad`` with the zero point as its
    value (the real 0). onnxruntime fuses neither itself, and each round trip through float costs two
    passes over the tensor. Returns ``(model, number of Max/Min rewritten, number of Pad rewritten)``.
    """
    import onnx
    from onnx import numpy_helper

    model = _copy(model)
    values = _constant_values(model)
    nodes = list(model.graph.node)
    producer, readers = _wiring(nodes)

    def params(node):
        scale = values.get(node.input[1])
        zero = values.get(node.input[2]) if len(node.input) > 2 else None
        return None if scale is None or zero is None or scale.size != 1 else (float(scale), int(zero), str(zero.dtype))

    counts = {"Max": 0, "Pad": 0}
    replace, drop = {}, set()
    for node in nodes:
        if node.op_type in ("Max", "Min"):
            data = list(node.input)
        elif node.op_type == "Pad" and len(node.input) in (2, 3) and not any(
                att.name == "mode" and att.s != b"constant" for att in node.attribute):
            data = [node.input[0]]
        else:
            continue
        dqs = [producer.get(name) for name in data]
        qs = readers.get(node.output[0], [])
        if len(qs) != 1 or qs[0].op_type != "QuantizeLinear" or any(d is None or d.op_type != "DequantizeLinear" for d in dqs):
            continue
        found = {params(n) for n in dqs + qs}
        if len(found) != 1 or None in found:
            continue
        inputs = [d.input[0] for d in dqs]
        if node.op_type == "Pad":
            if len(node.input) == 3 and not _is_zero(values, node.input[2]):
                continue
            zero_point = values[qs[0].input[2]].reshape(())
            pad_value = qs[0].output[0] + "/pad_value"
            model.graph.initializer.append(numpy_helper.from_array(np.array(zero_point), pad_value))
            inputs += [node.input[1], pad_value]
        replace[id(node)] = onnx.helper.make_node(node.op_type, inputs, [qs[0].output[0]], name=node.name + "/quantized",
                                                  **{att.name: onnx.helper.get_attribute_value(att) for att in node.attribute})
        drop.add(id(qs[0]))
        counts["Pad" if node.op_type == "Pad" else "Max"] += 1
    _set_nodes(model, [replace.get(id(n), n) for n in nodes if id(n) not in drop])
    return model, counts["Max"], counts["Pad"]


# ----------------------------------------------------------------------------------------------------
# checks, the accuracy gate and writing variants


def logits_of(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of an ONNX model (path or proto) for uint8 images (N, 48, 48), with onnxruntime."""
    import onnxruntime as ort

    model = _as_model(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    out = []
    for i in range(0, len(images), batch_size):
        batch = np.asarray(images[i:i + batch_size], np.float32).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
        out.append(session.run([ONNX_OUTPUT], {ONNX_INPUT: batch})[0])
    return np.concatenate(out)


def accuracy_points(logits: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy in percentage points (0–100)."""
    return 100.0 * float((np.asarray(logits).argmax(1) == np.asarray(labels)).mean())


@dataclass
class GateResult:
    fp32_accuracy: float  # points
    variant_accuracy: float  # points
    max_drop: float

    @property
    def drop(self) -> float:
        return self.fp32_accuracy - self.variant_accuracy

    @property
    def passed(self) -> bool:
        return self.drop <= self.max_drop + 1e-9

    def __str__(self) -> str:
        if self.drop <= -0.005:
            change = f"{-self.drop:.2f} points gained"
        else:
            lost = f"{self.drop:.2f} points lost" if self.drop >= 0.005 else "no change"
            change = f"{lost}, {'within' if self.passed else 'more than'} the {self.max_drop:g} allowed"
        return f"PublicTest accuracy {self.variant_accuracy:.2f}% against {self.fp32_accuracy:.2f}% for fp32: {change}"


def accuracy_gate(fp32_accuracy: float, variant_accuracy: float, max_drop: float = MAX_ACCURACY_DROP) -> GateResult:
    """Whether a variant may ship: it loses at most ``max_drop`` points of accuracy (gains are fine)."""
    return GateResult(float(fp32_accuracy), float(variant_accuracy), float(max_drop))


@dataclass
class VariantResult:
    name: str  # "fast", "int8", "tta" or "ensemble"
    path: Path
    gate: GateResult | None
    written: bool
    steps: dict = field(default_factory=dict)
    message: str = ""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def variant_metadata(original: dict, variant: str, gate: GateResult, metrics: dict, steps: dict, source: Path) -> dict:
    """The original's metadata (decoded values) plus what the variant is and how it scores."""
    from .runtime import META_METRICS

    meta = dict(original)
    meta["fp32_metrics"] = without_predictions(original.get(META_METRICS, {}))
    meta[META_METRICS] = metrics
    meta[META_VARIANT] = variant
    meta[META_FP32_TEST_ACCURACY] = round(gate.fp32_accuracy / 100, 5)
    meta[META_VARIANT_TEST_ACCURACY] = round(gate.variant_accuracy / 100, 5)
    meta[META_OPTIMIZATION] = {**steps, "source": source.name, "source_sha256": _sha256(source)[:16]}
    return meta


def _save(model, path: Path, metadata: dict) -> None:
    """Write ``model`` with ``metadata`` (JSON-encoded values) atomically, then check it loads as a fer model."""
    import onnx

    from .runtime import load_classifier

    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    load_classifier(tmp)  # the contract: raises ModelError naming the problem
    tmp.replace(path)


def load_optimize_splits(model_path: Path, data: str | Path | None = None):
    """The validation (calibration) and PublicTest (gate) splits the model was trained with (torch-free)."""
    from .io import DataError, default_data_path, load_source
    from .runtime import META_CONFIG, load_classifier
    from .splits import make_splits

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
    from .runtime import ModelError, load_classifier

    if not path.exists():
        return ""
    try:
        made_from = load_classifier(path).metadata.get(META_OPTIMIZATION, {}).get("source_sha256")
    except ModelError:
        made_from = None
    if made_from == _sha256(source)[:16]:
        return ""
    path.unlink()
    return f"; removed the old {path.name}, made from another version of {source.name}"


def _members(model_path: Path, source, paths, original_meta: dict) -> tuple[list, list[dict], list[int]]:
    """Every model of an ensemble, this one (``source``) first, with a record and a weight each, loaded and
    checked: the fer contract, the same validation split (else the ensemble's validation accuracy would count
    faces a member trained on), and no model twice. A member that is an ensemble itself weighs as many models
    as it holds (its record lists them); when one of them is this model, this model joins only through it."""
    import onnx

    from .runtime import META_CONFIG, load_classifier

    if not paths:
        raise ValueError("--variants ensemble needs the other models: --with OTHER.onnx (one or more)")
    mine = original_meta.get(META_CONFIG) or {}
    mine_hash = _sha256(model_path)[:16]
    inner, weight = _ensemble_members(original_meta)
    models, records, weights = [source], [{"file": str(model_path), "sha256": mine_hash, "metrics": without_predictions(original_meta.get("metrics", {}))}], [weight]
    seen, inside = {}, False
    for m in held_models(inner, str(model_path)):
        seen.setdefault(m["sha256"], m["file"])
    for path in map(Path, paths):
        meta = load_classifier(path).metadata  # raises ModelError naming the file
        theirs = meta.get(META_CONFIG) or {}
        for key in SPLIT_KEYS:
            if theirs.get(key) != mine.get(key):
                raise ValueError(f"{path}: trained with {key}={theirs.get(key)!r}, {model_path.name} with {mine.get(key)!r}; "
                                 "ensemble members must share the validation split")
        record = {"file": str(path), "sha256": _sha256(path)[:16], "metrics": without_predictions(meta.get("metrics", {}))}
        inner, weight = _ensemble_members(meta)
        for m in [record] + held_models(inner, str(path)):
            if m is not record and m["sha256"] == mine_hash and not inside:
                inside = True  # e.g. fer-best.onnx with an earlier fer-best.ensemble.onnx: it is in there already
                continue
            if m["sha256"] in seen or m["sha256"] == mine_hash:
                raise ValueError(f"{m['file']} is {seen.get(m['sha256'], model_path)} again: an ensemble holds each model once")
            seen[m["sha256"]] = m["file"]
        if inner:
            record["members"] = inner
        models.append(onnx.load(str(path)))
        records.append(record)
        weights.append(weight)
    if inside:
        return models[1:], records[1:], weights[1:]
    return models, records, weights


def held_models(records: list[dict], within: str = "") -> list[dict]:
    """The single models in ensemble member records, at any depth, each as its record with ``file`` saying where
    it is: "X (in Y)" for a model in ``within`` = Y, "X (in Y in Z)" when Y is itself in Z."""
    models = []
    for m in records:
        if m.get("members"):
            models += held_models(m["members"], f"{m['file']} in {within}" if within else m["file"])
        else:
            models.append(dict(m, file=f"{m['file']} (in {within})") if within else m)
    return models


def _ensemble_members(meta: dict) -> tuple[list[dict], int]:
    """An ensemble file's member records and how many models it averages; ``([], 1)`` for one model."""
    optimization = meta.get("optimization") or {}
    if "ensemble" not in optimization:
        return [], 1
    return optimization.get("member_files") or [], int(optimization.get("members", 1))


def optimize_model(model_path: str | Path, splits, *, out_dir: str | Path | None = None, variants=("fast", "int8"),
                   calibration_images: int = 1000, weight_bits: int = 7, max_drop: float = MAX_ACCURACY_DROP, log=print,
                   members: list | None = None, ensemble_flip: bool = False) -> list[VariantResult]:
    """Write ``<stem>.fast.onnx`` and ``<stem>.int8.onnx`` beside the model (or in ``out_dir``), each only if
    it passes its checks: logits within :data:`FUSED_ATOL` for the fp32 rewrite, the accuracy gate for both.
    ``tta`` and ``ensemble`` (this model with the ``members`` files; with ``ensemble_flip`` each also on the
    mirror image) pass the accuracy gate too.

    ``splits`` needs ``.val`` (calibration: its first ``calibration_images`` faces) and ``.test`` (the gate).
    """
    import onnx

    from .runtime import load_classifier

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
    results = []
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
            model, steps = flip_average(source)
        elif name == "ensemble":
            model, steps = ensemble_average(ensemble, flip=ensemble_flip, weights=weights)
            steps["member_files"] = member_files
        else:
            depthwise, pools = average_pool_as_depthwise_conv(fast)
            model, steps = quantize_int8(depthwise, val.images[:calibration_images], weight_bits=weight_bits)
            steps = {**fast_steps, "average_pool_as_depthwise_conv": pools, **steps}
        test_logits = logits_of(model, test.images)
        gate = accuracy_gate(fp32_accuracy, accuracy_points(test_logits, test.labels), max_drop)
        if not gate.passed:
            results.append(VariantResult(name, path, gate, False, steps, f"refused: {gate}{_remove_stale(path, model_path)}"))
            log(f"  {path.name}: {results[-1].message}")
            continue
        metrics = {"val": split_metrics(val.labels, logits_of(model, val.images).argmax(1)),
                   "test": split_metrics(test.labels, test_logits.argmax(1))}
        label = {"fast": "fp32-fast", "tta": "fp32-flip-average",
                 "ensemble": "fp32-ensemble-flip-average" if ensemble_flip else "fp32-ensemble"}.get(name, name)
        _save(model, path, variant_metadata(original_meta, label, gate, metrics, steps, model_path))
        results.append(VariantResult(name, path, gate, True, steps, f"written: {gate}"))
        log(f"  {path.name}: {results[-1].message}")
    return results
