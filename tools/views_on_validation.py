"""Validation accuracy of runs' best weights under every test-time augmentation `fer-train optimize --variants tta`
chooses from (fer_train.optimize.compose.TTA_CANDIDATES: flips, shifts, corner shifts, which for a model trained on
random 40-pixel crops are its ten-crop testing), straight from the run folders, before anything is exported.

    .venv/bin/python tools/views_on_validation.py RUN [RUN ...] [--checkpoint last|best] [--candidates NAME ...] [--json OUT.json]

One line per run: its model, parameters, the checkpoint's epoch, the single view and each candidate's accuracy (%), on
the run's own validation split. ``last`` (the default) is the trained weights at the run's end; ``best`` is the best
epoch's, which under ``--ema`` are the moving average's. Used for the pilots of issue 34 (REPORT.md); PublicTest is not read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_train.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from fer_train.config import TrainConfig  # noqa: E402
from fer_train.data import load_splits  # noqa: E402
from fer_train.epoch import predict_logits  # noqa: E402
from fer_train.models import count_parameters  # noqa: E402
from fer_train.optimize.compose import TTA_CANDIDATES, View, choose_tta  # noqa: E402


def views_accuracy(run: Path, which: str = "last", candidates: list[str] | None = None) -> dict:
    checkpoint = load_checkpoint(run, which)
    config = TrainConfig.from_dict(checkpoint["config"])
    model = model_from_checkpoint(checkpoint).to(memory_format=torch.channels_last)
    val = load_splits(config).val
    images = val.images[:, None].astype(np.float32)

    def log_probs(view: View) -> np.ndarray:  # on the run's own training path (bf16 where it trained in bf16)
        x = torch.from_numpy(view.apply(images)).contiguous(memory_format=torch.channels_last)
        return torch.log_softmax(predict_logits(model, x, bf16=config.bf16), 1).numpy()

    single = float((log_probs(View()).argmax(1) == val.labels).mean()) * 100
    best, scores = choose_tta(log_probs, val.labels, {k: TTA_CANDIDATES[k] for k in (candidates or TTA_CANDIDATES)})
    return {"run": str(run), "model": checkpoint["model_name"], "model_kwargs": checkpoint.get("model_kwargs", {}),
            "parameters": count_parameters(model), "checkpoint": which, "epoch": checkpoint["epoch"], "single": round(single, 3),
            "views": scores, "chosen": best}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--checkpoint", choices=("last", "best"), default="last", help="which weights of each run (default: %(default)s)")
    p.add_argument("--candidates", nargs="+", choices=tuple(TTA_CANDIDATES), default=None,
                   help="only these test-time augmentations (default: every one; 50 views, minutes per run)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    results = []
    for run in args.runs:
        r = views_accuracy(run, args.checkpoint, args.candidates)
        results.append(r)
        print(f"{run.name}: {r['model']} {r['model_kwargs'] or ''} {r['parameters']:,} parameters, {r['checkpoint']} (epoch {r['epoch']}): "
              f"single {r['single']:.2f} %; " + ", ".join(f"{k} {v:.2f}" for k, v in r["views"].items()) + f" (chosen: {r['chosen']})",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
