"""One ``<stem>.weights`` file per model family: each distinct tensor once, the same outputs bit for bit, and a
model that deploys as ``<stem>.onnx`` + ``<stem>.weights``.

A tiny FerNet made here (four convolutions, widths 8 and 16), its explanation graphs and two variants written
the way ``fer-train export`` and ``fer-train optimize`` write them.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from fer_runtime.classifier import ModelError, load_classifier
from fer_runtime.contract import (
    CLASS_NAMES,
    WEIGHTS_ALIGNMENT,
    WEIGHTS_MIN_BYTES,
    WEIGHTS_SUFFIX,
)
from fer_runtime.io import Split
from fer_runtime.synthetic import make_faces
from fer_train import shared_weights
from fer_train.explain.gradient_onnx import copy_companions, write_companions
from fer_train.export import export_onnx
from fer_train.models import create_model, deployable
from fer_train.optimize import flip_average, optimize_model, simplify
from fer_train.optimize.graph import model_sha256
from fer_train.shared_weights import (
    SharedWeightsError,
    check_feeds,
    copy_graph,
    family_of,
    family_stem,
    load_inline,
    share_family,
    weights_path,
)

STEM = "tiny"


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


def _write_family(folder: Path, stem: str = STEM) -> Path:
    """``<stem>.onnx``, its companions (gradient, layers, four filter graphs) and the variants fast and tta, all
    self-contained, as the exporter and the optimizer write them before sharing."""
    torch.manual_seed(0)
    model = deployable(create_model("fernet", widths=(8, 16)).eval())
    path = folder / f"{stem}.onnx"
    metadata = {"class_names": list(CLASS_NAMES), "architecture": "fernet", "metrics": {}, "train_config": {"model": "fernet"},
                "parameter_count": 1}
    images = make_faces(8, seed=9)[0]
    export_onnx(model, path, metadata=metadata, check_images=images)
    write_companions(model, path, images)
    source = onnx.load(str(path))
    for name, (variant, _) in (("fast", simplify(source)), ("tta", flip_average(source))):
        variant.metadata_props.extend(source.metadata_props)
        onnx.save(variant, str(folder / f"{stem}.{name}.onnx"))
    return path


def _outputs(graph: Path) -> list[np.ndarray]:
    session = shared_weights._session(graph)
    return session.run(None, check_feeds(session, images=4, seed=1))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def inline_family(tmp_path_factory) -> Path:
    """The family before sharing; tests copy it, never change it."""
    return _write_family(tmp_path_factory.mktemp("inline"))


@pytest.fixture
def family(inline_family, tmp_path) -> Path:
    folder = tmp_path / "family"
    shutil.copytree(inline_family.parent, folder)
    return folder / inline_family.name


def _external(graph: Path) -> list[tuple[str, int, int, onnx.TensorProto]]:
    proto = onnx.load(str(graph), load_external_data=False)
    out = []
    for t in proto.graph.initializer:
        if uses_external_data(t):
            info = ExternalDataInfo(t)
            out.append((info.location, info.offset, info.length, t))
    return out


def test_names_of_a_family():
    assert [family_stem(n) for n in ("cnn.onnx", "cnn.fast.onnx", "cnn.ensemble.onnx", "cnn.grad.onnx", "cnn.layers.onnx",
                                     "cnn.filters.conv2.onnx", "cnn.gradcam.onnx", "cnn-semi.onnx", "fer.v2.onnx", "fer.v2.grad.onnx")] == \
        ["cnn"] * 7 + ["cnn-semi", "fer.v2", "fer.v2"]
    assert weights_path("exported/cnn.fast.onnx") == Path("exported/cnn" + WEIGHTS_SUFFIX)


def test_the_family_shares_one_weights_file_that_holds_each_distinct_tensor_once(family):
    folder = family.parent
    (folder / "tiny-other.onnx").write_bytes(family.read_bytes())  # another model beside it: not a member
    (folder / "tiny.tmp.onnx").write_bytes(family.read_bytes())  # a graph being written: not a member
    graphs = family_of(family)
    assert graphs[0] == family and {g.name for g in graphs} == {
        "tiny.onnx", "tiny.fast.onnx", "tiny.tta.onnx", "tiny.grad.onnx", "tiny.gradcam.onnx", "tiny.layers.onnx",
        *(f"tiny.filters.conv{i}.onnx" for i in range(1, 5))}

    distinct, total = {}, 0
    for graph in graphs:
        for t in onnx.load(str(graph)).graph.initializer:
            if t.HasField("raw_data") and len(t.raw_data) >= WEIGHTS_MIN_BYTES:
                distinct[(t.data_type, tuple(t.dims), hashlib.sha256(t.raw_data).digest())] = len(t.raw_data)
                total += 1
    assert total > 2 * len(distinct)  # the same convolutions in every graph: what sharing saves

    result = share_family(family)
    weights = folder / f"tiny{WEIGHTS_SUFFIX}"
    assert result.weights == weights and result.graphs == graphs and result.checked == len(graphs)
    assert (result.tensors, result.distinct) == (total, len(distinct))
    assert sum(distinct.values()) <= weights.stat().st_size < sum(distinct.values()) + WEIGHTS_ALIGNMENT * len(distinct)
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".onnx")) == [weights.name]  # no temporary left

    regions = {}
    for graph in graphs:
        proto = onnx.load(str(graph), load_external_data=False)
        assert not [t.name for t in proto.graph.initializer if t.HasField("raw_data") and len(t.raw_data) >= WEIGHTS_MIN_BYTES]
        for location, offset, length, t in _external(graph):
            assert location == weights.name and offset % WEIGHTS_ALIGNMENT == 0
            regions.setdefault((t.data_type, tuple(t.dims), offset), length)
    assert len(regions) == len(distinct)  # every graph reads the one copy of a tensor
    assert not _external(folder / "tiny-other.onnx")


def test_outputs_are_bit_identical_before_and_after_and_graphs_round_trip(family):
    graphs = family_of(family)
    before = {g: _outputs(g) for g in graphs}
    originals = {g: g.read_bytes() for g in graphs}
    share_family(family)
    for graph in graphs:
        assert graph.stat().st_size <= len(originals[graph])
        for b, a in zip(before[graph], _outputs(graph), strict=True):
            assert b.dtype == a.dtype and b.shape == a.shape and b.tobytes() == a.tobytes(), graph.name
        assert load_inline(graph).SerializeToString() == originals[graph]  # the graph as it was, byte for byte
        loaded = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(graph)).graph.initializer}
        for t in onnx.load_from_string(originals[graph]).graph.initializer:
            np.testing.assert_array_equal(loaded[t.name], numpy_helper.to_array(t))


def test_sharing_again_is_idempotent_and_keeps_no_stale_tensor(family):
    folder = family.parent
    share_family(family)
    shared = _snapshot(folder)
    share_family(folder / "tiny.grad.onnx")  # any graph of the family names it
    assert _snapshot(folder) == shared

    # a member with a tensor of its own joins, then leaves: its tensor leaves the weights file with it
    own = load_inline(family)
    largest = max(own.graph.initializer, key=lambda t: len(t.raw_data))
    largest.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(largest) * 2, largest.name))
    onnx.save(own, str(folder / "tiny.int8.onnx"))
    share_family(family)
    assert (folder / f"tiny{WEIGHTS_SUFFIX}").stat().st_size >= len(shared[f"tiny{WEIGHTS_SUFFIX}"]) + len(largest.raw_data)
    (folder / "tiny.int8.onnx").unlink()
    share_family(family)
    assert _snapshot(folder) == shared

    # and what a family holds after any history is what a fresh sharing of it holds
    fresh = family.parent.parent / "fresh"
    shutil.copytree(folder, fresh)
    for graph in family_of(fresh / "tiny.onnx"):
        copy_graph(graph, graph)  # self-contained again
    (fresh / f"tiny{WEIGHTS_SUFFIX}").unlink()
    share_family(fresh / "tiny.onnx")
    assert _snapshot(fresh) == shared


def test_a_new_member_joins_a_shared_family(family, inline_family):
    share_family(family)
    (family.parent / "tiny.fast.onnx").unlink()
    share_family(family)
    shutil.copyfile(inline_family.parent / "tiny.fast.onnx", family.parent / "tiny.fast.onnx")  # self-contained, as optimize writes it
    before = _outputs(family.parent / "tiny.fast.onnx")
    share_family(family)
    assert {loc for loc, *_ in _external(family.parent / "tiny.fast.onnx")} == {f"tiny{WEIGHTS_SUFFIX}"}
    assert all(b.tobytes() == a.tobytes() for b, a in zip(before, _outputs(family.parent / "tiny.fast.onnx")))


def test_a_copied_model_with_its_weights_loads_and_predicts_elsewhere(family, tmp_path):
    share_family(family)
    faces = make_faces(5, seed=2)[0]
    expected = {name: load_classifier(family.parent / name).predict_logits(faces) for name in ("tiny.onnx", "tiny.tta.onnx")}
    elsewhere = tmp_path / "deploy"
    elsewhere.mkdir()
    for name in ("tiny.onnx", "tiny.tta.onnx", f"tiny{WEIGHTS_SUFFIX}"):
        shutil.copy(family.parent / name, elsewhere / name)
    for name, logits in expected.items():
        got = load_classifier(elsewhere / name).predict_logits(faces)
        assert got.tobytes() == logits.tobytes()
        assert len(onnx.load(str(elsewhere / name)).graph.initializer) > 0  # onnx.load finds the weights too

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(family, alone / "tiny.onnx")
    with pytest.raises(ModelError, match=r"tiny\.weights is missing.*copy both"):
        load_classifier(alone / "tiny.onnx")
    with pytest.raises(SharedWeightsError, match=r"tiny\.weights is missing"):
        load_inline(alone / "tiny.onnx")
    (alone / f"tiny{WEIGHTS_SUFFIX}").write_bytes((family.parent / f"tiny{WEIGHTS_SUFFIX}").read_bytes()[:1000])
    with pytest.raises(ModelError, match=r"tiny\.weights does not hold the tensors"):
        load_classifier(alone / "tiny.onnx")


def test_the_digest_is_the_same_inline_and_shared(family, inline_family, tmp_path):
    share_family(family)
    for name in ("tiny.onnx", "tiny.tta.onnx", "tiny.grad.onnx"):
        inline, shared = inline_family.parent / name, family.parent / name
        assert _external(shared) and not _external(inline)
        assert model_sha256(shared) == model_sha256(inline) == model_sha256(load_inline(shared)) == model_sha256(onnx.load(str(shared)))
    assert model_sha256(family) != model_sha256(family.parent / "tiny.tta.onnx")
    changed = onnx.load(str(family))
    weight = next(t for t in changed.graph.initializer if t.HasField("raw_data") and len(t.raw_data) >= WEIGHTS_MIN_BYTES)
    values = numpy_helper.to_array(weight).copy()
    values.flat[0] += 1
    weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    assert model_sha256(changed) != model_sha256(family)


def test_companions_copy_from_a_shared_family_and_share_again_under_the_target_stem(family, tmp_path):
    share_family(family)
    target = tmp_path / "exported" / "best.onnx"
    copy_graph(family, target)
    copied = copy_companions(family, target)
    assert {p.name for p in copied} == {"best.grad.onnx", "best.gradcam.onnx", "best.layers.onnx",
                                        *(f"best.filters.conv{i}.onnx" for i in range(1, 5))}
    assert not any(_external(p) for p in [target, *copied])  # self-contained until shared
    share_family(target)
    assert {loc for p in [target, *copied] for loc, *_ in _external(p)} == {"best.weights"}
    assert (target.parent / "best.weights").read_bytes() != b""
    for p in [target, *copied]:
        source = family.parent / ("tiny" + p.name[len("best"):])
        assert all(a.tobytes() == b.tobytes() for a, b in zip(_outputs(source), _outputs(p), strict=True)), p.name
    assert copy_companions(target, target) == copied  # onto itself: nothing lost


def test_a_failed_check_changes_nothing(family, monkeypatch):
    share_family(family)
    before = _snapshot(family.parent)
    (family.parent / "tiny.fast.onnx").unlink()  # so that the weights file would change

    def refuse(*args):
        raise SharedWeightsError("refused")

    monkeypatch.setattr(shared_weights, "_check_identical", refuse)
    with pytest.raises(SharedWeightsError, match="refused"):
        share_family(family)
    after = _snapshot(family.parent)
    assert after == {k: v for k, v in before.items() if k != "tiny.fast.onnx"}


def test_a_graph_of_another_family_reading_the_weights_stops_the_rewrite(family):
    share_family(family)
    shutil.copy(family, family.parent / "mine.onnx")  # a shared graph copied by hand: it reads tiny.weights
    with pytest.raises(SharedWeightsError, match=r"mine\.onnx reads tiny\.weights"):
        share_family(family)
    copy_graph(family.parent / "tiny.onnx", family.parent / "mine.onnx")  # the way to copy one
    share_family(family)
    assert load_classifier(family.parent / "mine.onnx").predict_logits(make_faces(2, seed=1)[0]).shape == (2, len(CLASS_NAMES))


def test_optimize_writes_variants_into_the_shared_family(family):
    share_family(family)
    for name in ("tiny.fast.onnx", "tiny.tta.onnx"):
        (family.parent / name).unlink()
    val, test = make_faces(32, seed=4), make_faces(40, seed=3)
    splits = SimpleNamespace(val=Split(*val, list(range(32))), test=Split(*test, list(range(40))))
    results = optimize_model(family, splits, variants=("fast", "tta"), max_drop=100, log=lambda line: None)
    assert all(r.written for r in results)
    for name in ("tiny.fast.onnx", "tiny.tta.onnx"):
        assert {loc for loc, *_ in _external(family.parent / name)} == {f"tiny{WEIGHTS_SUFFIX}"}
        record = load_classifier(family.parent / name).metadata["optimization"]
        assert record["source_sha256"] == model_sha256(family)[:16]
    assert sorted(p.name for p in family.parent.iterdir() if not p.name.endswith(".onnx")) == [f"tiny{WEIGHTS_SUFFIX}"]
