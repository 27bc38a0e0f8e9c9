"""README.md tells the truth: its models table is the one the models' metadata gives, and every Python block in it
runs, from a folder outside the checkout, on a real photograph (scikit-image's astronaut: one smiling face) and
gives the right answer."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_runtime.contract import META_CONFIG, META_EXTRA
from fer_runtime.model_table import BEGIN, END, describe, model_table, replace_table, table_in

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_models_table_is_the_one_the_metadata_gives():
    readme = README.read_text(encoding="utf-8")
    written = model_table(ROOT / "exported")
    assert table_in(readme) == written, "README.md's models table differs from the models: run python -m fer_runtime.model_table --write"


def test_a_changed_model_changes_the_table(tmp_path):
    """The table is read from the files: a folder with one model less gives a table without it."""
    full = model_table(ROOT / "exported")
    assert "| `fer-best` |" in full and "| `dnn` |" in full
    folder = tmp_path / "models"
    folder.mkdir()
    for path in (ROOT / "exported").glob("dnn.*"):
        (folder / path.name).write_bytes(path.read_bytes())
    small = model_table(folder)
    assert "| `dnn` |" in small and "fer-best" not in small
    rewritten = replace_table(f"intro\n{BEGIN}\nold table\n{END}\noutro", small)
    assert table_in(rewritten) == small and rewritten.startswith("intro\n") and rewritten.endswith("\noutro")
    with pytest.raises(ValueError, match="no models table markers"):
        replace_table("no markers here", small, "README.md")


def test_each_arm_of_a_semi_supervised_run_says_which_it_is():
    def arm(name, title=None):
        semi = {"arm": name, "arms": {name: {"title": title}}} if title else {"arm": name}
        return describe({META_CONFIG: {"model": "cnn", "semi": True, "epochs": 50}, META_EXTRA: {"semi": semi}}, "m")

    assert arm("noisy-student") == "`cnn`; noisy student on half the labels (`--noisy-student`); 50 epochs"
    assert arm("baseline") == "`cnn`; the labeled half alone (baseline of a `--semi` run); 50 epochs"
    assert arm("self-training@0.9", "self-training (p > 0.9)") == "`cnn`; self-training (p > 0.9) on half the labels (`--semi`); 50 epochs"
    assert describe({META_CONFIG: {"model": "cnn", "epochs": 50}}, "m") == "`cnn`; 50 epochs"


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """photo.jpg: the astronaut; face.png: her face as the detector crops it (48×48 grey, FER2013's framing)."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (the dev extra) provides the test photograph")
    from fer_runtime.faces import detect_faces

    folder = tmp_path_factory.mktemp("readme")
    astronaut = skimage_data.astronaut()
    Image.fromarray(astronaut).save(folder / "photo.jpg", quality=95)
    faces = detect_faces(astronaut)
    assert len(faces) == 1
    Image.fromarray(np.asarray(faces[0].crop, np.uint8)).save(folder / "face.png")
    return folder


@pytest.mark.parametrize("index", range(len(python_blocks(README.read_text(encoding="utf-8")))))
def test_every_python_block_runs_and_answers_right(index, photo_folder):
    block = python_blocks(README.read_text(encoding="utf-8"))[index]
    run = subprocess.run([sys.executable, "-c", block], cwd=photo_folder, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"README block {index + 1} failed:\n{block}\n{run.stderr[-3000:]}"
    assert "Happy" in run.stdout and not any(name in run.stdout for name in ("Angry", "Sad", "Fear", "Disgust")), run.stdout


def test_the_readme_has_python_blocks():
    assert len(python_blocks(README.read_text(encoding="utf-8"))) >= 2
