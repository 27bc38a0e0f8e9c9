"""Static int8 (QDQ) of a rewritten graph, calibrated on validation faces: convolutions with VNNI, and the
PReLU, padding and pooling kept on uint8 values."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np

from fer_runtime.contract import IMAGE_SIZE, ONNX_INPUT

from .graph import as_model, constant_values, copy_model, is_zero, set_nodes, wiring


def _tensor_ranges(model, names: list[str], images: np.ndarray, batch_size: int = 256) -> dict[str, tuple[float, float]]:
    """(min, max) of the named tensors over ``images`` (uint8 (N, 48, 48)), running the fp32 graph."""
    import onnx
    from fer_runtime.sessions import make_session

    model = copy_model(model)
    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = make_session(model.SerializeToString())
    low = {n: np.inf for n in names}
    high = {n: -np.inf for n in names}
    for i in range(0, len(images), batch_size):
        batch = np.asarray(images[i:i + batch_size], np.float32).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
        for name, value in zip(names, session.run(names, {ONNX_INPUT: batch})):
            low[name], high[name] = min(low[name], float(value.min())), max(high[name], float(value.max()))
    return {n: (low[n], high[n]) for n in names}


class CalibrationReader:
    """onnxruntime's CalibrationDataReader over uint8 images, in batches."""

    def __init__(self, images: np.ndarray, batch_size: int = 64, equal: bool = False):
        if equal:  # the histogram calibrators stack the batches' outputs: all batches the same size
            batch_size = max(d for d in range(1, batch_size + 1) if len(images) % d == 0)
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


CALIBRATION_METHODS = ("minmax", "percentile", "entropy")  # onnxruntime's CalibrationMethod MinMax, Percentile, Entropy
FLOAT_NODE_KEYS = ("first", "last")  # in ``keep_float``: the first Conv/Gemm/MatMul of the graph, and the last one


def float_node_names(model, keep_float) -> list[str]:
    """The node names that ``keep_float`` means: ``"first"`` / ``"last"`` (the first / last Conv, Gemm or
    MatMul in graph order, i.e. the input layer and the classifier's output layer) or node names."""
    model = as_model(model)
    layers = [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    names = [n.name for n in model.graph.node]
    out = []
    for key in keep_float or ():
        if key == "first" and layers:
            out.append(layers[0])
        elif key == "last" and layers:
            out.append(layers[-1])
        elif key in names:
            out.append(key)
        else:
            raise ValueError(f"keep_float: no node {key!r} in the graph (use 'first', 'last' or one of {layers})")
    return list(dict.fromkeys(out))


def _calibrated_ranges(path: Path, images: np.ndarray, method: str, percentile: float, tmp: Path):
    """onnxruntime's calibrator (``method``) on the fp32 model file: its TensorsData (a range per tensor)."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    kind = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile, "entropy": CalibrationMethod.Entropy}[method]
    # asymmetric ranges: the activations are uint8 with a zero point, and most are ReLU/PReLU outputs (≥ 0 or nearly)
    options = {"symmetric": False}
    if method == "percentile":
        options["percentile"] = percentile
    if method == "entropy":  # onnxruntime's default 128 bins leave the KL search one candidate, the min-max range itself
        options.update(num_bins=2048, num_quantized_bins=256)
    calibrator = create_calibrator(path, None, augmented_model_path=str(tmp / "augmented.onnx"), calibrate_method=kind,
                                   providers=["CPUExecutionProvider"], extra_options=options)
    calibrator.collect_data(CalibrationReader(images, equal=method != "minmax"))
    ranges = calibrator.compute_data()
    del calibrator
    return kind, ranges


def quantize_int8(model, calibration_images: np.ndarray, weight_bits: int = 7, on_uint8: bool = True, *,
                  calibration: str = "percentile", percentile: float = 99.999, per_channel: bool = True, keep_float=()):
    """Static int8 (QDQ, per-channel int8 weights, uint8 activations: the u8×s8 product that AVX512-VNNI
    and AVX-VNNI compute) of a :func:`simplify`-ed graph, calibrated on ``calibration_images``; returns
    ``(model, steps)``.

    ``weight_bits=7`` (the default) keeps every weight within ±64: x86 CPUs without VNNI add u8×s8 products
    in pairs into a saturating 16-bit sum, which full 8-bit weights can overflow (2 × 255 × 127 > 2¹⁵)
    and 7-bit ones cannot (2 × 255 × 64 < 2¹⁵), so 7 bits give the same numbers — and the accuracy the
    gate measured — on every x86 CPU; 8 bits are a little finer where VNNI is present.

    ``calibration`` is how activation ranges come from the calibration faces (onnxruntime's calibrators):
    ``"minmax"`` (the extremes), ``"percentile"`` (the default: clip each tensor's ``100 - percentile`` % outliers, both
    tails) or ``"entropy"`` (the clip with the least KL divergence between the float and the quantised
    histograms). ``per_channel``: one weight scale per output channel (else one per tensor). ``keep_float``:
    nodes left in fp32 (``"first"``, ``"last"`` or node names, see :func:`float_node_names`).

    Beyond ``quantize_static``:
    - the input is raw pixels 0..255, quantised with scale 1 and zero point 0, i.e. exactly;
    - each PReLU ``Max(x, w·x)`` keeps ``x``, ``w·x`` and its output on one shared scale, so that the
      ``Max`` runs on the uint8 values themselves (the same order as the real values) instead of a
      dequantise → Max → quantise round trip, which cost a third of the int8 model's time.
    """
    import onnx

    if weight_bits not in (7, 8):
        raise ValueError(f"weight_bits must be 7 or 8, got {weight_bits}")
    if calibration not in CALIBRATION_METHODS:
        raise ValueError(f"calibration must be one of {', '.join(CALIBRATION_METHODS)}, got {calibration!r}")
    model = copy_model(as_model(model))
    groups = _prelu_groups(model)
    excluded = float_node_names(model, keep_float)
    with _quiet_root_logger():  # the quantizer logs advice for every run
        quantized = _quantize_static(model, calibration_images, groups, excluded, weight_bits=weight_bits, calibration=calibration,
                                     percentile=percentile, per_channel=per_channel)
    max_in_uint8 = pad_in_uint8 = 0
    if on_uint8:  # False only to measure what it gains (benchmarks/bench_inference.py)
        quantized, max_in_uint8, pad_in_uint8 = _on_quantized_values(quantized)
    quantized = _float_outputs(quantized)
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(model.metadata_props)
    quantized.doc_string = model.doc_string
    onnx.checker.check_model(quantized, full_check=True)
    steps = {"format": "QDQ", "weights": f"int{weight_bits} per {'channel' if per_channel else 'tensor'}", "activations": "uint8 per tensor",
             "calibration": calibration if calibration != "percentile" else f"percentile {percentile:g}",
             "calibration_images": int(len(calibration_images)), "float_nodes": excluded, "prelu_max_on_uint8": max_in_uint8,
             "pad_on_uint8": pad_in_uint8}
    return quantized, steps


@contextlib.contextmanager
def _quiet_root_logger():
    """The root logger at ERROR for the block."""
    import logging

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        yield
    finally:
        logging.getLogger().setLevel(level)


def _quantize_static(model, images: np.ndarray, groups: list[tuple[str, str, str]], excluded: list[str], *, weight_bits: int,
                     calibration: str, percentile: float, per_channel: bool):
    """onnxruntime's ``quantize_static`` (QDQ) of ``model``: activation ranges calibrated on ``images`` by ``calibration``,
    one shared range for each PReLU group's tensors, the ``excluded`` nodes left in fp32."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src, dst, cache = tmp / "fp32.onnx", tmp / "int8.onnx", tmp / "ranges.json"
        onnx.save(onnx.shape_inference.infer_shapes(model), str(src))
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print
            method, calibrated = _calibrated_ranges(src, images, calibration, percentile, tmp)
        save_tensors_data(calibrated, cache)  # quantize_static reads the ranges back instead of calibrating again
        known = {name: (float(np.min(calibrated[name].range_value[0])), float(np.max(calibrated[name].range_value[1])))
                 for name in calibrated.keys()}  # noqa: SIM118  (TensorsData is no dict)
        missing = [name for group in groups for name in group[:2] if name not in known]
        if missing:
            known.update(_tensor_ranges(model, missing, images))
        quantize_static(str(src), str(dst), None, quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, reduce_range=weight_bits == 7, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=method, calibration_cache_path=str(cache), nodes_to_exclude=excluded,
                        extra_options={"TensorQuantOverrides": _range_overrides(groups, known), "ActivationSymmetric": False,
                                       "WeightSymmetric": True, "ForceQuantizeNoInputCheck": True})
        return onnx.load(str(dst))


def _prelu_groups(model) -> list[tuple[str, str, str]]:
    """``(x, w·x, output)`` of each PReLU in ``Max``/``Min`` form (:func:`fer_train.optimize.rewrite.fuse_prelu`)."""
    nodes = list(model.graph.node)
    producer = {out: node for node in nodes for out in node.output}
    groups = []
    for node in nodes:
        if node.op_type in ("Max", "Min") and len(node.input) == 2:
            mul = producer.get(node.input[1])
            if mul is not None and mul.op_type == "Mul" and node.input[0] in mul.input:
                groups.append((node.input[0], node.input[1], node.output[0]))
    return groups


def _range_overrides(groups: list[tuple[str, str, str]], known: dict[str, tuple[float, float]]) -> dict:
    """The quantizer's ``TensorQuantOverrides``: the input's pixels exactly (scale 1), and one shared range for the
    three tensors of each PReLU group, so that its ``Max`` runs on the uint8 values."""
    overrides = {ONNX_INPUT: [{"rmin": np.float32(0), "rmax": np.float32(255)}]}  # scale (255 - 0) / 255 = 1: pixels exactly
    for x, scaled, out in groups:
        low = min(known[x][0], known[scaled][0], 0.0)
        high = max(known[x][1], known[scaled][1], 0.0)
        for name in (x, scaled, out):
            overrides[name] = [{"rmin": np.float32(low), "rmax": np.float32(high)}]
    return overrides


def _float_outputs(model):
    """Drop the ``QuantizeLinear → DequantizeLinear`` pair that the quantizer puts on the graph's outputs:
    the last Gemm then writes float logits itself (onnxruntime's QGemm does), which keeps the logits'
    precision and spares a pass."""
    model = copy_model(model)
    nodes = list(model.graph.node)
    producer, readers = wiring(nodes)
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
    set_nodes(model, [n for n in nodes if id(n) not in drop])
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

    model = copy_model(model)
    values = constant_values(model)
    nodes = list(model.graph.node)
    producer, readers = wiring(nodes)

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
            if len(node.input) == 3 and not is_zero(values, node.input[2]):
                continue
            zero_point = values[qs[0].input[2]].reshape(())
            pad_value = qs[0].output[0] + "/pad_value"
            model.graph.initializer.append(numpy_helper.from_array(np.array(zero_point), pad_value))
            inputs += [node.input[1], pad_value]
        replace[id(node)] = onnx.helper.make_node(node.op_type, inputs, [qs[0].output[0]], name=node.name + "/quantized",
                                                  **{att.name: onnx.helper.get_attribute_value(att) for att in node.attribute})
        drop.add(id(qs[0]))
        counts["Pad" if node.op_type == "Pad" else "Max"] += 1
    set_nodes(model, [replace.get(id(n), n) for n in nodes if id(n) not in drop])
    return model, counts["Max"], counts["Pad"]
