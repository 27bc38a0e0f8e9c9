"""Sanity checks of every saliency method (Adebayo et al. 2018) on the real FER2013: does the map change when the
model changes?

    .venv/bin/python benchmarks/explain_sanity.py [--faces 60] [--train 6000] [--epochs 6] [--threads 2]

Randomised weights: each shipped model read back into torch from its own file (``fer_train.explain.remake``)
against a copy whose every layer is drawn again by its initialiser. Randomised labels: a small CNN
(``fer_train.explain.sanity.small_cnn``) trained on ``--train`` training faces with their labels, against the same
CNN trained on the same faces with the labels shuffled (training a shipped model again on shuffled labels takes
hours). The number is Spearman's rank correlation of the two maps of each of ``--faces`` validation faces for the
class the trained model predicts, averaged: near 0, the map is about the model; near 1, it is about the face alone.

Writes ``report/sanity.json`` and the table in docs/explanations.md between its markers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fer_runtime.explain import MEASURED_ONLY, METHODS  # noqa: E402
from fer_runtime.io import default_data_path, load_source  # noqa: E402
from fer_runtime.splits import make_splits  # noqa: E402
from fer_train.explain.faithfulness_docs import DOCS, SANITY, write_tables  # noqa: E402
from fer_train.explain.remake import deployed_model  # noqa: E402
from fer_train.explain.sanity import map_correlations, randomised_weights, train_small  # noqa: E402
from fer_train.explain.saliency import torch_logits_fn  # noqa: E402

MODELS = ("cnn", "dnn", "cnn-semi", "fer-best")
SEED = 36


def _summary(correlations: dict[str, np.ndarray]) -> dict:
    return {name: {"mean": round(float(c.mean()), 3), "sd": round(float(c.std(ddof=1)), 3)} for name, c in correlations.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--faces", type=int, default=60)
    p.add_argument("--train", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    splits = make_splits(load_source(args.data or default_data_path()))
    rng = np.random.default_rng(SEED)
    faces = splits.val.images[np.sort(rng.permutation(len(splits.val.images))[:args.faces])].astype(np.float32)
    result = {"date": datetime.now(timezone.utc).date().isoformat(), "faces": len(faces), "methods": [*METHODS, *MEASURED_ONLY],
              "randomised_weights": {}, "randomised_labels": {}}
    for stem in args.models:
        t0 = time.perf_counter()
        model = deployed_model(ROOT / "exported" / f"{stem}.onnx")
        result["randomised_weights"][stem] = _summary(map_correlations(model, randomised_weights(model, SEED), faces))
        print(stem, result["randomised_weights"][stem], f"({time.perf_counter() - t0:.0f} s)", flush=True)

    rows = rng.permutation(len(splits.train.images))[:args.train]
    images, labels = splits.train.images[rows], splits.train.labels[rows]
    t0 = time.perf_counter()
    trained = train_small(images, labels, args.epochs, widths=(16, 32, 32))
    shuffled = train_small(images, rng.permutation(labels), args.epochs, widths=(16, 32, 32))
    accuracy = {name: round(float((torch_logits_fn(m)(splits.val.images).argmax(1) == splits.val.labels).mean()), 4)
                for name, m in (("true labels", trained), ("shuffled labels", shuffled))}
    result["randomised_labels"] = {"model": f"small CNN (16, 32, 32), {args.train} training faces, {args.epochs} epochs",
                                   "val_accuracy": accuracy, "correlation": _summary(map_correlations(trained, shuffled, faces))}
    print("labels", result["randomised_labels"], f"({time.perf_counter() - t0:.0f} s)", flush=True)
    SANITY.write_text(json.dumps(result, indent=1) + "\n")
    write_tables(None, DOCS, sanity=result)
    print(f"wrote {SANITY.relative_to(ROOT)} and the table in {DOCS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
