"""Multiply-accumulates per image of a graph, found by running it: what the benchmark sets against the CPU's peak."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .graph import OptimizeError, as_model, copy_model


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
    from fer_runtime.sessions import make_session

    model = copy_model(model)
    inferred = onnx.shape_inference.infer_shapes(model)
    elem_types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    existing = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in existing and elem_types.get(name):
                model.graph.output.append(onnx.helper.make_tensor_value_info(name, elem_types[name], None))
                existing.add(name)
    session = make_session(model.SerializeToString(), optimization="none")
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
    model = as_model(model)
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
