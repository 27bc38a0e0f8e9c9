"""Small tools for reading and editing ONNX graphs in place, shared by the rewrites, int8 and composition."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def model_sha256(model) -> str:
    """The hex digest of a model's content: how variants, ensembles and distillation name the model they were made
    from. ``model`` is a path or a ``ModelProto`` with its tensors inside.

    The same whether the tensors are inside the ``.onnx`` file or in a weights file beside it
    (:mod:`fer_train.shared_weights`), and whichever file they share: it covers the model with its initializers
    removed (graph, metadata, opsets) and, one by one, each initializer's name, type, dims and values."""
    import json

    import onnx
    from onnx import numpy_helper

    from ..shared_weights import load_inline

    proto = load_inline(model) if isinstance(model, (str, Path)) else model
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(proto)
    del skeleton.graph.initializer[:]
    digest = hashlib.sha256(skeleton.SerializeToString(deterministic=True))
    for tensor in proto.graph.initializer:
        values = np.ascontiguousarray(numpy_helper.to_array(tensor))
        head = json.dumps([tensor.name, int(tensor.data_type), [int(d) for d in tensor.dims], values.nbytes]).encode()
        digest.update(len(head).to_bytes(8, "little") + head)
        digest.update(values.tobytes())
    return digest.hexdigest()


class OptimizeError(RuntimeError):
    """A rewrite or quantisation that could not be done, or a variant that failed its check."""


def as_model(model):
    """An ONNX model: ``model`` itself, or the file it names, loaded."""
    import onnx

    return onnx.load(str(model)) if isinstance(model, (str, Path)) else model


def wiring(nodes: list) -> tuple[dict, dict[str, list]]:
    """For a graph's nodes: which node produces each tensor, and which nodes read it (in order)."""
    producer = {out: node for node in nodes for out in node.output}
    readers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return producer, readers


def copy_model(model):
    """A deep copy of an ONNX model, for a rewrite that must leave its input as it was."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def constant_values(model) -> dict[str, np.ndarray]:
    """Values of initializers and of Constant nodes, by tensor name."""
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for att in node.attribute:
                if att.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(att.t)
    return values


def is_zero(values: dict[str, np.ndarray], name: str) -> bool:
    """Whether the tensor ``name`` is a constant single zero (``values``: :func:`constant_values`)."""
    value = values.get(name)
    return value is not None and value.size == 1 and float(value.reshape(())) == 0.0


def set_nodes(model, nodes: list, prune: bool = True) -> None:
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
        drop_unused(model)


def drop_unused(model) -> None:
    """Remove nodes whose outputs nobody reads and initializers no node reads."""
    needed = {o.name for o in model.graph.output}
    kept = []
    for node in reversed(list(model.graph.node)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(node.input)
    set_nodes(model, list(reversed(kept)), prune=False)
    inits = [init for init in model.graph.initializer if init.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
