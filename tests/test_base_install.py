"""The base distribution, installed into a fresh virtual environment, runs models and the TUI without torch.

Deployment machines are CPU-only and often have no room for torch, so ``pip install fer-workbench`` (here: the
checkout) must bring only numpy, onnxruntime, pillow, opencv-python-headless (the face detector), rich and textual. This test builds a new environment
without the system's packages, installs the checkout into it from the package index (pip's cache makes this
quick after the first time), and then, with torch absent, runs ``fer-tui --help``, predicts the demo faces with
a shipped model, explains one of them, and checks that ``fer-train`` says how to get the training extra.

The install carries its default model family (``fer-best``, bundled by setup.py from ``exported/``): from an empty
folder outside the checkout, ``fer-predict`` finds the astronaut's one face and calls it Happy, and ``fer-tui
--demo`` opens on a model from inside the package.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
BASE = {"numpy", "onnxruntime", "pillow", "opencv-python-headless", "rich", "textual"}
HEAVY = {"torch", "onnx", "matplotlib"}

PREDICT_AND_EXPLAIN = """
import importlib.util, json, sys
from fer_runtime.classifier import load_classifier
from fer_runtime.explain import Explainer
from fer_runtime.synthetic import make_faces
model = load_classifier(sys.argv[1])
faces, labels = make_faces(16, seed=0)
logits = model.predict_logits(faces)
saliency = Explainer(model.path).saliency(faces[:2])
print(json.dumps({"shape": list(logits.shape), "classes": model.class_names, "saliency": list(saliency.map.shape),
                  "torch": importlib.util.find_spec("torch") is not None, "loaded": sorted(m for m in sys.modules if m.startswith("torch"))}))
"""


TUI_OPENS_ON_A_MODEL = """
import asyncio, json
from fer_runtime.catalog import BUNDLED_DIR
from fer_tui.app import make_app

async def main():
    app = make_app(demo=True)
    async with app.run_test(size=(100, 30)) as pilot:
        while not app.context.models_loaded:
            await pilot.pause(0.05)
        model = app.context.model
        print(json.dumps({"model": str(model.path), "inside_the_package": model.path.parent == BUNDLED_DIR}))

asyncio.run(main())
"""


def _run(args: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900, **kw)


@pytest.mark.slow
def test_base_install_runs_the_tui_and_a_model_without_torch(tmp_path):
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    bin_dir = env_dir / ("Scripts" if sys.platform == "win32" else "bin")
    install = _run([bin_dir / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", ROOT])
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-4000:]

    listed = _run([bin_dir / "python", "-m", "pip", "list", "--format", "json"])
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert BASE <= installed and "fer-workbench" in installed
    assert not HEAVY & installed, f"the base install pulled {sorted(HEAVY & installed)}"

    tui_help = _run([bin_dir / "fer-tui", "--help"])
    assert tui_help.returncode == 0 and "usage: fer-tui" in tui_help.stdout, tui_help.stderr

    run = _run([bin_dir / "python", "-c", PREDICT_AND_EXPLAIN, ROOT / "exported" / "cnn.onnx"], cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["shape"] == [16, 7] and result["classes"][3] == "Happy"
    assert result["saliency"] == [2, 48, 48]
    assert not result["torch"] and not result["loaded"]

    train = _run([bin_dir / "fer-train", "--epochs", "1"], cwd=tmp_path)
    assert train.returncode == 2 and "fer-workbench[train]" in train.stderr.replace("\n", " "), train.stderr

    # the models inside the install, used from a folder that has no exported/ and is not the checkout
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (the dev extra) provides the test photograph")
    Image.fromarray(skimage_data.astronaut()).save(elsewhere / "astronaut.png")
    bundled = _run([bin_dir / "python", "-c", "import json, fer_runtime.catalog as c; e = c.best_model(); "
                    "print(json.dumps([str(c.BUNDLED_DIR), sorted(p.name for p in c.BUNDLED_DIR.iterdir()), str(e.path), e.runner.path.name]))"],
                   cwd=elsewhere)
    assert bundled.returncode == 0, bundled.stderr[-3000:]
    folder, files, best, runner = json.loads(bundled.stdout.strip().splitlines()[-1])
    assert str(env_dir) in folder and all(name.startswith("fer-best.") for name in files), files
    assert "fer-best.weights" in files and "fer-best.grad.onnx" in files and "fer-best.predictions.npz" in files
    assert best.startswith(folder) and runner == "fer-best.tta.int8.onnx"

    predict = _run([bin_dir / "fer-predict", "astronaut.png", "--format", "jsonl"], cwd=elsewhere)
    assert predict.returncode == 0, predict.stdout[-2000:] + predict.stderr[-3000:]
    records = [json.loads(line) for line in predict.stdout.splitlines() if line.startswith("{")]
    assert len(records) == 1 and records[0]["label"] == "Happy", predict.stdout

    tui = _run([bin_dir / "python", "-c", TUI_OPENS_ON_A_MODEL], cwd=elsewhere)
    assert tui.returncode == 0, tui.stderr[-3000:]
    # the TUI opens on the model the tools call the most accurate (a TTA file or its int8, whichever recorded more)
    assert json.loads(tui.stdout.strip().splitlines()[-1]) == {"model": best, "inside_the_package": True}
    assert Path(best).name in ("fer-best.tta.onnx", "fer-best.tta.int8.onnx")
