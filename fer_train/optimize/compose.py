"""Composed graphs: test-time augmentation (``tta``: the face, its mirror image and, where validation says so, shifted
copies of both) and ensembles of several exported models (``ensemble``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_runtime.contract import CLASS_NAMES, IMAGE_SIZE, META_CONFIG, META_METRICS, META_OPTIMIZATION, ONNX_INPUT, ONNX_OUTPUT
from fer_runtime.metrics import without_predictions

from ..config import SPLIT_KEYS
from .graph import OptimizeError, copy_model, model_sha256


@dataclass(frozen=True)
class View:
    """One test-time view of a face: mirrored or not, then shifted by ``dy``, ``dx`` pixels (the picture moves
    down and right for positive values; the edge pixels fill what comes in, as the training shifts do)."""

    mirror: bool = False
    dy: int = 0
    dx: int = 0

    @property
    def name(self) -> str:
        shift = f"{self.dy:+d},{self.dx:+d}" if (self.dy, self.dx) != (0, 0) else ""
        return ("mirror" if self.mirror else "face") + (f" shifted {shift}" if shift else "")

    def apply(self, images: np.ndarray) -> np.ndarray:
        """This view of ``images`` (N, 1, H, W), in numpy: what the graph of :func:`ensemble_average` computes."""
        x = images[..., ::-1] if self.mirror else images
        p = max(abs(self.dy), abs(self.dx))
        if p:
            h, w = x.shape[-2:]
            padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)], mode="edge")
            x = padded[..., p - self.dy:p - self.dy + h, p - self.dx:p - self.dx + w]
        return np.ascontiguousarray(x)


FLIP_VIEWS = (View(), View(mirror=True))


def shifted_views(pixels: int, vertical: bool = True) -> tuple[View, ...]:
    """The face and its mirror image, each also shifted by ``pixels`` left and right (and, with ``vertical``, up
    and down): 6 or 10 views."""
    moves = [(0, pixels), (0, -pixels)] + ([(pixels, 0), (-pixels, 0)] if vertical else [])
    return FLIP_VIEWS + tuple(View(m, dy, dx) for m in (False, True) for dy, dx in moves)


def corner_views(pixels: int) -> tuple[View, ...]:
    """The face and its mirror image, each also shifted by ``pixels`` diagonally to the four corners: 10 views. For a
    model trained on random 40-pixel crops (which sees the centre 40 of a 48-pixel face) a shift of 4 is the
    ten-crop testing of the crop recipes: the four corner crops and the centre, and their mirror images."""
    return FLIP_VIEWS + tuple(View(m, dy, dx) for m in (False, True) for dy in (pixels, -pixels) for dx in (pixels, -pixels))


# the test-time augmentations `--variants tta` chooses from on validation, cheapest first (a tie goes to the cheaper)
TTA_CANDIDATES: dict[str, tuple[View, ...]] = {
    "flip": FLIP_VIEWS,
    **{f"flip+hshift{k}": shifted_views(k, vertical=False) for k in (1, 2, 3)},
    **{f"flip+shift{k}": shifted_views(k) for k in (1, 2, 3, 4)},
    **{f"flip+corners{k}": corner_views(k) for k in (3, 4)},
}


def choose_tta(view_log_probs, labels: np.ndarray, candidates: dict[str, tuple[View, ...]] = TTA_CANDIDATES) -> tuple[str, dict[str, float]]:
    """The candidate whose mean log-probabilities are most accurate on ``labels`` (validation), and every
    candidate's accuracy in percent. ``view_log_probs(view)`` gives the model's log-softmax (N, 7) on that view;
    each view is asked for once. A tie goes to the candidate listed first (the cheaper)."""
    cache: dict[View, np.ndarray] = {}
    scores = {}
    for name, views in candidates.items():
        for view in views:
            if view not in cache:
                cache[view] = view_log_probs(view)
        mean = sum(cache[v] for v in views) / len(views)
        scores[name] = round(float((mean.argmax(1) == labels).mean()) * 100, 3)
    best = max(scores, key=lambda k: (scores[k], -list(candidates).index(k)))
    return best, scores


def flip_average(model, views: tuple[View, ...] = FLIP_VIEWS):
    """Test-time augmentation inside the graph: every face's ``views`` (by default the face and its mirror image)
    go through the model as one batch, and the output is the mean of their log-softmax vectors (log of the
    geometric mean of the probability vectors, so still valid logits: their softmax is a probability vector).
    Costs ``len(views)``× the compute. The one-model case of :func:`ensemble_average`. Returns ``(model, steps)``."""
    flipped, _ = ensemble_average([model], views=views)
    what = ("mean log-softmax of the face and its mirror image" if tuple(views) == FLIP_VIEWS
            else f"mean log-softmax of {len(views)} views: " + "; ".join(v.name for v in views))
    return flipped, {"flip_average": what, "views": [v.name for v in views]}


def _view_nodes(views: tuple[View, ...], output: str) -> tuple[list, list]:
    """Nodes and initializers that stack ``views`` of the graph input along the batch axis into ``output``: the
    mirror image is one Slice with step −1; shifted views are Slices of the edge-padded face or mirror image."""
    from onnx import helper, numpy_helper

    nodes, constants = [], {}
    unshifted = {False: ONNX_INPUT, True: "ens_mirror"}  # what a view starts from
    padded = {False: "ens_face_padded", True: "ens_mirror_padded"}
    if any(v.mirror for v in views):
        constants.update(ens_starts=[-1], ens_ends=[np.iinfo(np.int64).min], ens_axes=[3], ens_steps=[-1])
        nodes.append(helper.make_node("Slice", [ONNX_INPUT, "ens_starts", "ens_ends", "ens_axes", "ens_steps"], ["ens_mirror"]))  # x[..., ::-1]
    pad = max(max(abs(v.dy), abs(v.dx)) for v in views)
    if pad:
        constants.update(ens_pads=[0, 0, pad, pad, 0, 0, pad, pad], ens_hw_axes=[2, 3])
        for mirror in sorted({v.mirror for v in views if (v.dy, v.dx) != (0, 0)}):
            nodes.append(helper.make_node("Pad", [unshifted[mirror], "ens_pads"], [padded[mirror]], mode="edge"))
    names = []
    for k, view in enumerate(views):
        if (view.dy, view.dx) == (0, 0):
            names.append(unshifted[view.mirror])
            continue
        top, left = pad - view.dy, pad - view.dx  # view[i, j] = face[i - dy, j - dx], the edge repeated
        constants[f"ens_v{k}_starts"] = [top, left]
        constants[f"ens_v{k}_ends"] = [top + IMAGE_SIZE, left + IMAGE_SIZE]
        nodes.append(helper.make_node("Slice", [padded[view.mirror], f"ens_v{k}_starts", f"ens_v{k}_ends", "ens_hw_axes"], [f"ens_v{k}"]))
        names.append(f"ens_v{k}")
    nodes.append(helper.make_node("Concat", names, [output], axis=0) if len(names) > 1 else helper.make_node("Identity", names, [output]))
    return nodes, [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in constants.items()]


def ensemble_average(models: list, flip: bool = True, weights: list[int] | None = None, views: tuple[View, ...] | None = None):
    """One graph that runs every model on every view of the face (``views``; else, with ``flip``, the face and its
    mirror image, without it the face alone) and outputs the mean of their log-softmax vectors, as
    :func:`flip_average` does for one model. Each member's tensors are renamed ``m<k>_…``; the first model's graph
    input, output and opset are kept. A member of weight ``w`` (an ensemble of ``w`` models itself) counts ``w``
    times, so nesting gives the flat ensemble's predictions. Returns ``(model, steps)``."""
    import onnx
    from onnx import compose, helper, numpy_helper

    base = models[0]
    opsets = {next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None) for m in models}
    if len(opsets) != 1:
        raise OptimizeError(f"the members use different ONNX opsets {sorted(opsets)}; export them with the same fer-train")
    opset = opsets.pop()
    classes = base.graph.output[0].type.tensor_type.shape.dim[-1].dim_value or len(CLASS_NAMES)
    views = tuple(views) if views is not None else (FLIP_VIEWS if flip else (View(),))
    constants = {"ens_shape": [len(views), -1, classes], **({"ens_mean_axes": [0]} if opset >= 18 else {})}  # only what the graph reads
    initializers = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in constants.items()]
    if views == (View(),):
        views_input, nodes = ONNX_INPUT, []
    else:
        views_input = "ens_views"
        nodes, view_constants = _view_nodes(views, views_input)
        initializers += view_constants
    member_outputs = []
    for k, member in enumerate(models):
        prefix = f"m{k}_"
        renamed = compose.add_prefix(copy_model(member), prefix)
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


def load_members(model_path: Path, source, paths, original_meta: dict) -> tuple[list, list[dict], list[int]]:
    """Every model of an ensemble, this one (``source``) first, with a record and a weight each, loaded and
    checked: the fer contract, the same validation split (else the ensemble's validation accuracy would count
    faces a member trained on), and no model twice. A member that is an ensemble itself weighs as many models
    as it holds (its record lists them); when one of them is this model, this model joins only through it."""
    import onnx

    from fer_runtime.classifier import load_classifier

    if not paths:
        raise ValueError("--variants ensemble needs the other models: --with OTHER.onnx (one or more)")
    mine = original_meta.get(META_CONFIG) or {}
    mine_hash = model_sha256(model_path)[:16]
    inner, weight = _ensemble_members(original_meta)
    models, records, weights = [source], [{"file": str(model_path), "sha256": mine_hash, "metrics": without_predictions(original_meta.get(META_METRICS, {}))}], [weight]
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
        record = {"file": str(path), "sha256": model_sha256(path)[:16], "metrics": without_predictions(meta.get(META_METRICS, {}))}
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
    optimization = meta.get(META_OPTIMIZATION) or {}
    if "ensemble" not in optimization:
        return [], 1
    return optimization.get("member_files") or [], int(optimization.get("members", 1))
