"""What fer_tui may import.

The TUI runs exported models with onnxruntime on machines without torch, so importing it must never pull
torch in (a training job imports fer_train and torch in its own process only). Its pure-logic modules must
not need textual either, so they are tested (and reusable) without a terminal. Each check runs in a fresh
interpreter, because this test process has long imported both.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tui_support import template_model

PURE = ["fer_tui.render", "fer_tui.charts", "fer_tui.tiles", "fer_tui.predictions", "fer_tui.catalog", "fer_tui.data",
        "fer_tui.training", "fer_tui.state"]


def _modules_after_import(*names: str, then: str = "") -> set[str]:
    code = (f"import importlib, json, sys\nfor n in {list(names)!r}: importlib.import_module(n)\n{then}\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(out.stdout))


def test_the_whole_tui_imports_and_runs_a_model_without_torch(tmp_path):
    model = template_model(tmp_path / "t.onnx")
    run = (f"from fer_tui.catalog import load_entry\nfrom fer_tui.data import demo_dataset\n"
           f"from fer_tui.predictions import predict_split\nfrom fer_runtime.explain import Explainer\n"
           f"entry = load_entry({str(model)!r}); split = demo_dataset().splits['val']\n"
           f"predict_split(entry, 'val', split); Explainer(entry.path).face_saliency(split.images[0], logits_fn=entry.classifier.predict_logits)")
    loaded = _modules_after_import("fer_tui", "fer_tui.app", "fer_tui.views.filters", "fer_runtime.explain", *PURE, then=run)
    assert "fer_tui.app" in loaded and "textual" in loaded and "onnxruntime" in loaded
    assert not {m for m in loaded if m == "torch" or m.startswith("torch.")}


def test_pure_logic_imports_neither_textual_nor_torch():
    loaded = _modules_after_import(*PURE)
    assert not {m for m in loaded if m.split(".")[0] in ("textual", "torch")}
