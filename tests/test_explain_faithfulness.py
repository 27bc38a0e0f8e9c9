"""Deletion and insertion curves (fer_runtime.explain.faithfulness) on a "model" whose answer we know, the per-face
score the TUI shows, and the tables of docs/explanations.md against the measurements they are written from."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fer_runtime import explain as rt
from fer_runtime.explain.faithfulness import removed_faces
from fer_train.explain.faithfulness_docs import DOCS, RESULTS, SANITY, between, tables

BOX = (slice(10, 22), slice(14, 34))  # the only pixels the "model" looks at: 240 of 2,304


def _box_model(images: np.ndarray) -> np.ndarray:
    """Class 1's logit rises with the texture (mean step between neighbours) inside BOX; class 0's stays at 0."""
    x = rt.as_batch(images)[:, BOX[0], BOX[1]]
    evidence = (np.abs(np.diff(x, axis=2)).mean(axis=(1, 2)) - 30.0) / 5.0
    return np.stack([np.zeros(len(x)), evidence], axis=1)


@pytest.fixture
def face():
    """Stripes one pixel wide in BOX, which grey removal and blur both wipe out; flat grey elsewhere."""
    image = np.full((48, 48), 100, np.float32)
    image[BOX] = np.where(np.arange(20) % 2, 30, 170)[None, :]
    return image


def test_a_map_on_what_the_model_sees_beats_random_pixels_under_both_removals(face):
    box_map = np.zeros((1, 48, 48), np.float32)
    box_map[0][BOX] = 1
    for removal in rt.REMOVALS:
        good = rt.curves(_box_model, face[None], box_map, 1, removal, steps=8)
        random = rt.curves(_box_model, face[None], rt.random_maps(1), 1, removal, steps=8)
        assert good.fractions.tolist() == [i / 8 for i in range(9)]
        assert good.deletion.shape == good.insertion.shape == (1, 9)
        # both curves start and end at the whole face and the removed face, whatever the order
        assert np.isclose(good.deletion[0, 0], good.insertion[0, -1]) and np.isclose(good.deletion[0, -1], good.insertion[0, 0])
        assert good.deletion_auc[0] < random.deletion_auc[0] - 0.2, removal
        assert good.insertion_auc[0] > random.insertion_auc[0] + 0.1, removal


def test_removed_faces_are_the_mean_grey_or_a_blur():
    image = np.zeros((48, 48), np.float32)
    image[:, 24:] = 200
    grey, blur = removed_faces(image, "grey")[0], removed_faces(image, "blur")[0]
    assert np.allclose(grey, 100)
    assert blur[:, 0].max() < 5 and blur[:, -1].min() > 195 and 50 < blur[24, 24] < 150  # the edge is gone, the sides stay
    with pytest.raises(ValueError, match="removal must be one of grey, blur"):
        removed_faces(image, "noise")


def test_the_face_score_says_how_much_the_map_beats_random(face):
    box_map = np.zeros((48, 48), np.float32)
    box_map[BOX] = 1
    good = rt.face_faithfulness(_box_model, face, box_map, 1)
    backwards = rt.face_faithfulness(_box_model, face, 1 - box_map, 1)  # the pixels the model ignores first
    assert good.score > 0.3 and backwards.score < 0
    assert good.random_deletion == backwards.random_deletion  # the same random order for every map of a face


def test_docs_tables_are_the_measurements():
    """docs/explanations.md holds the tables ``benchmarks/explain_faithfulness.py`` and ``explain_sanity.py`` wrote;
    a table edited by hand, or results measured again without writing the docs, fails here."""
    text = DOCS.read_text()
    result = json.loads(RESULTS.read_text())
    sanity = json.loads(SANITY.read_text())
    for marker, table in tables(result, sanity).items():
        assert between(text, marker) == table, f"{DOCS.name}: the {marker} table differs from {RESULTS.name}/{SANITY.name}"
    assert set(result["models"]) == {"cnn", "dnn", "cnn-semi", "fer-best"}
    assert all(set(entry["methods"]) == set(rt.METHODS) | set(rt.MEASURED_ONLY) | {"random"} for entry in result["models"].values())


def test_an_update_measures_only_the_replaced_models_and_keeps_the_others_and_their_date():
    """``explain_faithfulness.py --update --models fer-best``: the replaced model's numbers, TUI timings and the sweep
    are emptied where they stand (the tables keep their order); the others keep their numbers and the date they were
    measured; results of other faces or settings are refused rather than mixed."""
    import importlib.util

    from fer_train.explain.faithfulness_docs import ROOT

    spec = importlib.util.spec_from_file_location("explain_faithfulness", ROOT / "benchmarks" / "explain_faithfulness.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    settings = {"faces": 150, "split": "val", "steps": 16, "removals": ["grey", "blur"], "methods": {"occlusion": {"patch": 12}}}
    old = {**settings, "date": "2026-12-04", "cpu": "old cpu", "threads": 2,
           "models": {"fer-best": {"methods": {"occlusion": 1}}, "cnn": {"methods": {"occlusion": 2}},
                      "cnn-semi": {"date": "2026-12-05", "methods": {"occlusion": 3}}},
           "tui": {"fer-best occlusion": {"map": 0.1}, "cnn occlusion": {"map": 0.2}},
           "sweep": {"occlusion (chosen)": {}}, "sweep_faces": 60}
    fresh = {**settings, "date": "2026-12-07", "cpu": "new cpu", "threads": 2, "models": {}, "sweep": {}}

    result = bench.updated(old, fresh, ["fer-best"], sweep_again=True)
    assert list(result["models"]) == ["fer-best", "cnn", "cnn-semi"]
    assert result["models"]["fer-best"] == {}
    assert result["models"]["cnn"] == {"date": "2026-12-04", "methods": {"occlusion": 2}}
    assert result["models"]["cnn-semi"]["date"] == "2026-12-05"
    assert list(result["tui"].items()) == [("fer-best occlusion", {}), ("cnn occlusion", {"map": 0.2})]
    assert result["sweep"] == {} and result["sweep_date"] == "2026-12-07"
    assert (result["date"], result["cpu"]) == ("2026-12-07", "new cpu")
    assert old["models"]["fer-best"] == {"methods": {"occlusion": 1}}  # the results read are not changed

    kept = bench.updated(old, fresh, ["cnn"], sweep_again=False)
    assert kept["sweep"] == old["sweep"] and kept["models"]["fer-best"]["methods"] == {"occlusion": 1}

    with pytest.raises(SystemExit, match="faces = 150, this run has 60"):
        bench.updated(old, {**fresh, "faces": 60}, ["fer-best"], sweep_again=False)
    with pytest.raises(SystemExit, match="methods = .*patch.*: 8"):  # a method's settings changed since
        bench.updated(old, {**fresh, "methods": {"occlusion": {"patch": 8}}}, ["fer-best"], sweep_again=False)
