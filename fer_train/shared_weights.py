"""One weights file per model family: ``<stem>.weights``, each distinct tensor stored once.

A model ``<stem>.onnx`` has companions (``<stem>.grad.onnx``, ``<stem>.layers.onnx``,
``<stem>.filters.<layer>.onnx``) and variants (``<stem>.fast.onnx``, ``.int8``, ``.tta``, ``.ensemble``), and
each of them holds the model's weights again. :func:`share_family` moves the initializers of every graph of the
family (those of at least :data:`~fer_runtime.contract.WEIGHTS_MIN_BYTES` bytes) into ONNX external data in one
file ``<stem>.weights`` beside them: a tensor whose content (dtype, dims and bytes) appears in several graphs is
stored once and every graph points at that one copy, at an offset that is a multiple of
:data:`~fer_runtime.contract.WEIGHTS_ALIGNMENT`. onnxruntime and ``onnx.load`` find the file by the model's path
alone, so a model deploys as ``<stem>.onnx`` + ``<stem>.weights``.

Safety, in order:

* the whole family is loaded first (external data included), so running it again on a shared family rewrites it
  from scratch: the new weights file holds exactly what the graphs use today, nothing stale;
* the new files are written into a temporary folder beside the family, and onnxruntime must give bit-identical
  outputs there, by path, for every graph, against the graph as it was (inputs ``image`` and, for the
  companions, ``class_index`` / ``filter_index``), before anything in place changes;
* then the files are moved in by atomic renames, in an order where every graph is loadable at every moment: a
  graph that reads the old weights file is first replaced by its self-contained (inline) form, then the weights
  file is replaced, then each graph by its shared form. An interrupted run leaves loadable graphs (some
  inline); running it again finishes the job.

Torch-free: onnx, onnxruntime and numpy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_runtime.contract import (
    CLASS_INDEX,
    FILTER_INDEX,
    META_CLASS_NAMES,
    META_LAYER,
    MODEL_SUFFIX,
    NUM_CLASSES,
    ONNX_INPUT,
    TEMP_MODEL_SUFFIX,
    WEIGHTS_ALIGNMENT,
    WEIGHTS_MIN_BYTES,
    WEIGHTS_SUFFIX,
)
from fer_runtime.family import model_name

CHECK_IMAGES = 3  # faces per graph in the bit-identity check


class SharedWeightsError(RuntimeError):
    """A family that could not be shared (or a graph whose weights file is missing); the message names the file."""


@dataclass
class SharedFamily:
    """What :func:`share_family` did."""

    weights: Path
    graphs: list[Path]
    tensors: int  # initializers that now live in the weights file
    distinct: int  # … stored once each
    tensor_bytes: int  # what those initializers take, counted once per graph
    weights_bytes: int  # the size of the weights file (distinct tensors and alignment padding)
    checked: int  # graphs whose outputs were compared, bit for bit

    def __str__(self) -> str:
        return (f"{self.weights.name}: {len(self.graphs)} graphs, {self.tensors} tensors ({self.tensor_bytes / 1e6:.1f} MB) "
                f"stored as {self.distinct} ({self.weights_bytes / 1e6:.1f} MB); outputs bit-identical on {self.checked} graphs")


# -- names ------------------------------------------------------------------------------------------

def family_stem(path: str | Path) -> str:
    """The family a graph file belongs to: ``cnn.onnx``, ``cnn.fast.onnx``, ``cnn.grad.onnx`` and
    ``cnn.filters.conv2.onnx`` → ``cnn``; ``fer-best.tta.int8.onnx`` → ``fer-best`` (:func:`fer_runtime.family.model_name`)."""
    return model_name(path).stem


def weights_path(model_path: str | Path) -> Path:
    """``exported/cnn.onnx`` (or any graph of its family) → ``exported/cnn.weights``."""
    path = Path(model_path)
    return path.with_name(family_stem(path) + WEIGHTS_SUFFIX)


def family_of(model_path: str | Path) -> list[Path]:
    """The graphs of ``model_path``'s family that exist: ``<stem>.onnx`` first, then the companions and variants
    beside it, by name. Graphs being written (``*.tmp.onnx``) are no member."""
    path = Path(model_path)
    stem, folder = family_stem(path), path.parent
    if not folder.is_dir():
        return []
    members = [p for p in folder.iterdir()
               if p.name.startswith(stem + ".") and p.name.endswith(MODEL_SUFFIX) and not p.name.endswith(TEMP_MODEL_SUFFIX)
               and p.is_file() and family_stem(p) == stem]
    base = folder / (stem + MODEL_SUFFIX)
    return sorted(members, key=lambda p: (p != base, p.name))


# -- reading ----------------------------------------------------------------------------------------

def external_locations(proto) -> set[str]:
    """The external data files a graph reads (as written in it: relative to its folder)."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    return {ExternalDataInfo(t).location for t in _tensors(proto) if uses_external_data(t)}


def _tensors(proto):
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(proto)


def load_inline(path: str | Path):
    """The graph at ``path`` with every tensor inside it (its external data read in), as it was before sharing.

    Raises :class:`SharedWeightsError` naming the weights file when that is missing."""
    import onnx
    from onnx.external_data_helper import (
        load_external_data_for_model,
        uses_external_data,
    )

    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    for location in sorted(external_locations(proto)):
        if not (path.parent / location).is_file():
            raise SharedWeightsError(f"{path}: its weights file {path.parent / location} is missing "
                                     f"(copy {location} beside {path.name})")
    tensors = [t for t in _tensors(proto) if uses_external_data(t)]
    load_external_data_for_model(proto, str(path.parent))
    for tensor in tensors:
        tensor.ClearField("data_location")  # as the exporter wrote it: inline is the default
    return proto


def copy_graph(source: str | Path, target: str | Path) -> Path:
    """Copy one graph as a self-contained (inline) file: a shared graph's tensors come along from its weights file.

    Written atomically; :func:`share_family` on the target's family shares it again."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name[: -len(MODEL_SUFFIX)] + TEMP_MODEL_SUFFIX) if target.name.endswith(MODEL_SUFFIX) \
        else target.with_name(target.name + ".tmp")
    tmp.write_bytes(load_inline(source).SerializeToString())
    tmp.replace(target)
    return target


# -- sharing ----------------------------------------------------------------------------------------

def _tensor_bytes(tensor) -> bytes | None:
    """The tensor's bytes as external data stores them, or None for one that stays inline. Like onnx's own
    ``convert_model_to_external_data``, only tensors stored as ``raw_data`` move (all of the exporter's; the int8
    quantizer keeps a few scales in typed fields, 15 kB in ``dnn.int8.onnx``): so that :func:`load_inline` gives
    back each graph byte for byte as it was."""
    return tensor.raw_data if tensor.HasField("raw_data") else None


def _to_external(tensor, data: bytes, location: str, offset: int) -> None:
    from onnx import TensorProto

    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(data)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def share_family(model_path: str | Path, *, min_bytes: int = WEIGHTS_MIN_BYTES, check: bool = True, log=None) -> SharedFamily:
    """Rewrite every graph of ``model_path``'s family (:func:`family_of`) so that its tensors of at least
    ``min_bytes`` bytes live in ``<stem>.weights``, each distinct one once; see the module docstring.

    ``check`` (on by default) compares onnxruntime's outputs, bit for bit, before and after, for every graph.
    ``log(text)`` hears what was done. Returns a :class:`SharedFamily`."""
    path = Path(model_path)
    graphs = family_of(path)
    if not graphs:
        raise SharedWeightsError(f"{path}: no model graphs of the family {family_stem(path)!r} in {path.parent}")
    folder, weights = path.parent, weights_path(path)
    _refuse_outside_readers(folder, graphs, weights)

    blob = bytearray()
    stored: dict[tuple, int] = {}  # (dtype, dims, sha256) → offset
    shared, inline, references, moved, moved_bytes = {}, {}, {}, 0, 0
    for graph in graphs:
        references[graph] = _reads(graph, weights)
        proto = load_inline(graph)
        inline[graph] = proto.SerializeToString()
        for tensor in proto.graph.initializer:
            data = _tensor_bytes(tensor)
            if data is None or len(data) < max(min_bytes, 1):
                continue
            key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(data).digest())
            if key not in stored:
                blob += bytes(-len(blob) % WEIGHTS_ALIGNMENT)
                stored[key] = len(blob)
                blob += data
            _to_external(tensor, data, weights.name, stored[key])
            moved, moved_bytes = moved + 1, moved_bytes + len(data)
        shared[graph] = proto.SerializeToString()
    blob = bytes(blob)

    work = Path(tempfile.mkdtemp(prefix=f".{weights.stem}.sharing-", dir=folder))
    try:
        (work / weights.name).write_bytes(blob)
        for graph in graphs:
            (work / graph.name).write_bytes(shared[graph])
        checked = _check_identical(graphs, inline, work) if check else 0
        _move_in(graphs, inline, shared, references, blob, weights, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = SharedFamily(weights, graphs, moved, len(stored), moved_bytes, len(blob), checked)
    if log is not None:
        log(str(result))
    return result


def _reads(graph: Path, weights: Path) -> bool:
    """Whether ``graph`` reads ``weights`` now (its graph alone is parsed, not its tensors)."""
    import onnx

    proto = onnx.load(str(graph), load_external_data=False)
    return any(_same_file(graph.parent / location, weights) for location in external_locations(proto))


def _same_file(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _refuse_outside_readers(folder: Path, graphs: list[Path], weights: Path) -> None:
    """A graph of another family that reads ``<stem>.weights`` (a shared graph copied by hand under another
    name) would break when the file is rewritten: refuse, naming it."""
    family = {g.name for g in graphs}
    for other in sorted(folder.glob("*" + MODEL_SUFFIX)):
        if other.name in family or other.name.endswith(TEMP_MODEL_SUFFIX) or not other.is_file():
            continue
        try:
            reads = _reads(other, weights)
        except Exception:  # not an ONNX file: it reads nothing
            continue
        if reads:
            raise SharedWeightsError(f"{other} reads {weights.name}, which belongs to the graphs of {weights.stem!r}; rewriting it "
                                     f"would break {other.name}. Copy it with fer_train.shared_weights.copy_graph (self-contained) "
                                     "or under a name of that family")


def _move_in(graphs, inline, shared, references, blob: bytes, weights: Path, work: Path) -> None:
    """Atomic renames from ``work`` into place, every graph loadable at every moment (module docstring)."""
    unchanged = weights.is_file() and weights.stat().st_size == len(blob) and weights.read_bytes() == blob
    if not unchanged:
        for graph in graphs:  # 1. what reads the old weights file becomes self-contained for a moment
            if references[graph]:
                staged = work / (graph.name + ".inline")
                staged.write_bytes(inline[graph])
                os.replace(staged, graph)
        os.replace(work / weights.name, weights)  # 2. the new weights: nothing reads the old ones any more
    for graph in graphs:  # 3. each graph reads the new weights file
        if not (graph.is_file() and graph.stat().st_size == len(shared[graph]) and graph.read_bytes() == shared[graph]):
            os.replace(work / graph.name, graph)


# -- the check --------------------------------------------------------------------------------------

def _session(model):
    from fer_runtime.sessions import make_session

    return make_session(model, threads=1)  # one thread: the same arithmetic in the same order, run after run


def check_feeds(session, images: int = CHECK_IMAGES, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for any graph of a family: faces of random pixels 0..255 for ``image``; for the companions
    ``class_index`` cycling over the classes and ``filter_index`` over the layer's channels (from the
    metadata); zeros for anything else."""
    rng = np.random.default_rng(seed)
    meta = session.get_modelmeta().custom_metadata_map
    classes = NUM_CLASSES
    try:
        classes = len(json.loads(meta[META_CLASS_NAMES])) or NUM_CLASSES
    except (KeyError, ValueError, TypeError):
        pass
    try:
        channels = int(json.loads(meta[META_LAYER])["channels"])
    except (KeyError, ValueError, TypeError):
        channels = 1
    dtypes = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
              "tensor(uint8)": np.uint8, "tensor(float16)": np.float16, "tensor(bool)": np.bool_}
    feeds = {}
    for spec in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else images for d in spec.shape]
        dtype = dtypes.get(spec.type, np.float32)
        if spec.name == ONNX_INPUT:
            feeds[spec.name] = rng.integers(0, 256, size=shape).astype(dtype)
        elif spec.name in (CLASS_INDEX, FILTER_INDEX):
            count = classes if spec.name == CLASS_INDEX else max(channels, 1)
            feeds[spec.name] = (np.arange(int(np.prod(shape))) % count).reshape(shape).astype(dtype)
        else:
            feeds[spec.name] = np.zeros(shape, dtype)
    return feeds


def _check_identical(graphs: list[Path], inline: dict, work: Path) -> int:
    """onnxruntime on each rewritten graph in ``work`` (by path) against the graph as it was: the same bytes out."""
    for graph in graphs:
        before = _session(inline[graph])
        feeds = check_feeds(before)
        names = [o.name for o in before.get_outputs()]
        expected = before.run(names, feeds)
        try:
            got = _session(work / graph.name).run(names, feeds)
        except Exception as exc:
            raise SharedWeightsError(f"{graph}: the shared graph does not load in onnxruntime ({str(exc).splitlines()[0][:200]})") from exc
        for name, e, g in zip(names, expected, got):
            if e.dtype != g.dtype or e.shape != g.shape or e.tobytes() != g.tobytes():
                raise SharedWeightsError(f"{graph}: output {name!r} differs once the weights are shared; nothing was changed")
    return len(graphs)
