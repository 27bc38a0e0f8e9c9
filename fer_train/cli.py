"""``fer-train``: train (the default), ``evaluate``, ``export``, ``data``, ``explain``, ``optimize``, ``predictions`` and ``report``.

    fer-train --model cnn --epochs 30                 train on FER2013 found on its own
    fer-train --resume runs/cnn-20261127-101500       continue an interrupted run
    fer-train --semi --threshold 0.45                 self-training on half the labels, against that half alone
    fer-train evaluate runs/cnn-... --split test      tables, JSON and a confusion PNG
    fer-train export runs/cnn-... --name cnn          exported/cnn.onnx, checked against torch
    fer-train data [PATH]                             what a data source holds
    fer-train explain runs/cnn-... --out DIR          saliency, filter and layer-output pictures, with an index
    fer-train optimize exported/cnn.onnx              faster variants (fast, int8; tta, ensemble when asked), each behind the accuracy gate
    fer-train predictions                             the default model's predictions on val and test, shipped beside it for fer-tui
    fer-train report                                  REPORT.md's figures and numbers from exported/ and the real data
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from fer_runtime.contract import EVENT_ERROR
from fer_runtime.io import DataError

from .train_cli import train_main

SUBCOMMANDS = ("evaluate", "export", "data", "explain", "optimize", "predictions", "report")

def evaluate_main(argv: list[str]) -> int:
    from .evaluate import evaluate

    p = argparse.ArgumentParser(prog="fer-train evaluate", description="Accuracy, per-class precision/recall/F1 and the confusion matrix.")
    p.add_argument("model", help="run folder, checkpoint (.pt) or exported model (.onnx)")
    p.add_argument("--split", default="val", choices=("train", "val", "test", "privatetest"))
    p.add_argument("--data", default=None, help="data source (default: the one the model was trained on, or FER2013)")
    p.add_argument("--out", default=None, help="folder for eval-<split>.json and confusion-<split>.png")
    args = p.parse_args(argv)
    console = Console(stderr=True)
    try:
        evaluate(args.model, args.split, args.data, args.out, console)
    except (DataError, ValueError, FileNotFoundError) as exc:
        console.print("[red]error:[/] " + escape(str(exc)))
        return 2
    return 0


def export_main(argv: list[str]) -> int:
    from .export import ExportError, export_run
    from .progress import Reporter

    p = argparse.ArgumentParser(prog="fer-train export", description="Export a run's best checkpoint to ONNX, checked against torch.")
    p.add_argument("run", help="run folder or checkpoint (.pt)")
    p.add_argument("--name", default=None, help="also copy to <export-dir>/NAME.onnx")
    p.add_argument("--export-dir", default="exported")
    p.add_argument("--last", action="store_true", help="export last.pt instead of best.pt")
    args = p.parse_args(argv)
    reporter = Reporter("plain")
    try:
        path = export_run(args.run, reporter=reporter, export_name=args.name, export_dir=args.export_dir, prefer="last" if args.last else "best")
    except (DataError, ValueError, FileNotFoundError, ExportError) as exc:
        reporter.emit(EVENT_ERROR, message=str(exc))
        return 2
    print(path)
    return 0


def data_main(argv: list[str]) -> int:
    from rich.table import Table

    from fer_runtime.contract import CLASS_NAMES
    from fer_runtime.io import default_data_path, load_source
    from fer_runtime.splits import make_splits

    p = argparse.ArgumentParser(prog="fer-train data", description="Load a data source and show what it holds, per split and class.")
    p.add_argument("path", nargs="?", default=None)
    p.add_argument("--skip-bad", action="store_true")
    p.add_argument("--no-cache", action="store_true")
    args = p.parse_args(argv)
    console = Console()
    path = args.path or default_data_path()
    if path is None:
        console.print("[red]error:[/] no data found; pass a PATH or set FER_DATA")
        return 2
    try:
        t0 = time.perf_counter()
        source = load_source(path, skip_bad=args.skip_bad, use_cache=not args.no_cache)
        seconds = time.perf_counter() - t0
        splits = make_splits(source)
    except DataError as exc:
        console.print("[red]error:[/] " + escape(str(exc)))
        return 2
    table = Table(title=f"{source.path} ({source.format}, loaded in {seconds:.2f}s)")
    table.add_column("class")
    shown = {"train": splits.train, "val": splits.val, **({"test": splits.test} if splits.test is not None else {})}
    for name in shown:
        table.add_column(name, justify="right")
    counts = {name: s.class_counts() for name, s in shown.items()}
    for i, cls in enumerate(CLASS_NAMES):
        table.add_row(f"{i} {cls}", *[f"{counts[n][i]:,}" for n in shown])
    table.add_row("[bold]total", *[f"[bold]{len(s):,}" for s in shown.values()])
    console.print(table)
    if source.skipped:
        console.print(f"[yellow]skipped {len(source.skipped)} bad rows:[/]")
        for bad in source.skipped:
            console.print(f"  {escape(str(bad))}")
    return 0


def explain_main(argv: list[str]) -> int:
    from fer_runtime.explain import AscentConfig

    from .explain.backward import UnsupportedModelError
    from .explain.report import DEFAULT_LAYERS, DEFAULT_STEPS, explain_model
    from .explain.saliency import METHODS

    p = argparse.ArgumentParser(prog="fer-train explain", description="Saliency maps, filter visualisation by gradient ascent and layer "
                                "outputs of a model, as pictures in one folder with an index (index.md, index.html).")
    p.add_argument("model", help="run folder or checkpoint (.pt)")
    p.add_argument("--out", default=None, help="folder for the pictures (default: <run>/explain)")
    p.add_argument("--data", default=None, help="data source (default: the one the model was trained on, or FER2013)")
    p.add_argument("--split", default="val", choices=("train", "val", "test"), help="where the faces come from (default: %(default)s)")
    p.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS), help="conv layers: conv2, 2 or features.4 (default: %(default)s)")
    p.add_argument("--steps", nargs="+", type=int, default=list(DEFAULT_STEPS), help="ascent step counts to picture (default: %(default)s)")
    p.add_argument("--step-size", type=float, default=AscentConfig.step_size, help="pixels per step (default: %(default)s)")
    p.add_argument("--jitter", type=int, default=0, help="regulariser: random shift up to N pixels before each step")
    p.add_argument("--blur", type=float, default=0.0, help="regulariser: Gaussian blur of this sigma every 4 steps")
    p.add_argument("--l2", type=float, default=0.0, help="regulariser: decay towards gray by this fraction per step")
    p.add_argument("--tv", type=float, default=0.0, help="regulariser: total-variation penalty weight")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting noise")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="saliency methods (default: all)")
    p.add_argument("--hide", type=float, default=0.5, help="fraction of least salient pixels hidden in the masked faces (default: %(default)s)")
    p.add_argument("--face", default="Happy", help="class of the face whose layer outputs are shown (default: %(default)s)")
    p.add_argument("--no-regularisers", action="store_true", help="skip the regulariser comparison")
    p.add_argument("--filters", type=int, default=None, metavar="N", help="visualise only the first N filters of each layer (default: all)")
    p.add_argument("--onnx", action="store_true", help="also write model.onnx and its explanation graphs to OUT/onnx and time them in onnxruntime")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and onnxruntime (default: all cores)")
    args = p.parse_args(argv)
    console = Console(stderr=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else (Path(args.model) if Path(args.model).is_dir() else Path(args.model).parent) / "explain"
    ascent = AscentConfig(step_size=args.step_size, jitter=args.jitter, blur=args.blur, l2=args.l2, tv=args.tv, seed=args.seed)
    try:
        report = explain_model(args.model, out, data=args.data, split=args.split, layers=args.layers, steps=args.steps, ascent=ascent,
                               face_class=args.face, hide=args.hide, regularisers=not args.no_regularisers, methods=args.methods,
                               max_filters=args.filters, onnx=args.onnx, threads=args.threads, console=console)
    except (DataError, ValueError, FileNotFoundError, UnsupportedModelError) as exc:
        console.print("[red]error:[/] " + escape(str(exc)))
        return 2
    for name, seconds in report.timings.items():
        console.print(f"  {name}: {seconds:.3g} s")
    print(report.out_dir / "index.html")
    return 0


def optimize_main(argv: list[str]) -> int:
    from fer_runtime.classifier import ModelError

    from .optimize import MAX_ACCURACY_DROP, VARIANTS, OptimizeError, load_optimize_splits, optimize_model
    from .optimize.int8 import CALIBRATION_METHODS
    from .optimize.compose import TTA_CANDIDATES
    from .optimize.variants import DEFAULT_CALIBRATION, DEFAULT_PERCENTILE

    p = argparse.ArgumentParser(prog="fer-train optimize", description="Faster variants of an exported model beside it: <stem>.fast.onnx "
                                "(fp32, rewritten graph) and <stem>.int8.onnx (static int8, calibrated on validation faces), each "
                                "written only if its PublicTest accuracy stays within --max-drop points of the fp32 model.")
    p.add_argument("model", help="exported model (.onnx)")
    p.add_argument("--data", default=None, help="data source (default: the one the model was trained on, or FER2013)")
    p.add_argument("--out-dir", default=None, help="where to write the variants (default: beside the model)")
    p.add_argument("--variants", nargs="+", default=None, choices=VARIANTS,
                   help="default: fast int8; for a tta model (<stem>.tta.onnx) int8, its int8 model under the same views. tta: <stem>.tta.onnx, the mean of the model's log-probabilities on several views of the face (its "
                        "mirror image, shifted copies: see --tta; for models trained with --flip); ensemble: <stem>.ensemble.onnx, the mean of this model's "
                        "and the --with models' log-probabilities")
    p.add_argument("--with", dest="members", action="append", default=[], metavar="OTHER.onnx",
                   help="ensemble: another exported model (same validation split) to average with; repeat for more")
    p.add_argument("--tta", default="auto", choices=("auto", *TTA_CANDIDATES), help="tta: the views averaged. flip: the face and "
                   "its mirror image (2× the compute); flip+hshiftK: both also shifted K pixels left and right (6×); flip+shiftK: "
                   "also up and down (10×); flip+cornersK: both also shifted K pixels to the four corners (10×; with K=4 the ten-crop testing of a "
                   "--crop 40 model); auto: the one most accurate on validation, the cheaper on a tie (default: %(default)s)")
    p.add_argument("--ensemble-flip", action="store_true", help="ensemble: also run every member on the mirror image (2× the compute)")
    p.add_argument("--calibration", type=int, default=1000, metavar="N", help="validation faces to calibrate int8 on (default: %(default)s)")
    p.add_argument("--weight-bits", default="auto", choices=("auto", "7", "8"), help="int8 weights: 7 bits give the same results on "
                   "every x86 CPU, 8 are finer but only exact on CPUs with VNNI (fer_runtime skips such a file elsewhere); auto: 7 bits, "
                   "else 7 bits with the first and last layers in fp32, else 8 bits, the first that loses at most a quarter point "
                   "of validation accuracy (default: %(default)s)")
    p.add_argument("--calibration-method", default=DEFAULT_CALIBRATION, choices=CALIBRATION_METHODS,
                   help="int8 activation ranges: minmax (the extremes), percentile (clip the rarest outliers, see --percentile) "
                        "or entropy (least KL divergence) (default: %(default)s)")
    p.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE, help="percentile calibration: the share of values "
                   "kept in range, both tails together (default: %(default)s)")
    p.add_argument("--per-tensor", action="store_true", help="int8 weights: one scale per tensor instead of per output channel")
    p.add_argument("--keep-float", nargs="+", default=[], metavar="NODE", help="int8: nodes left in fp32: first (the first conv), "
                   "last (the classifier's last layer) or node names (default: none)")
    p.add_argument("--max-drop", type=float, default=MAX_ACCURACY_DROP, help="accuracy points a variant may lose (default: %(default)s)")
    args = p.parse_args(argv)
    console = Console(stderr=True)
    try:
        splits = load_optimize_splits(Path(args.model), args.data)
        results = optimize_model(args.model, splits, out_dir=args.out_dir, variants=args.variants, calibration_images=args.calibration,
                                 weight_bits=args.weight_bits if args.weight_bits == "auto" else int(args.weight_bits), max_drop=args.max_drop, log=lambda line: console.print(line, soft_wrap=True, markup=False),
                                 members=args.members, ensemble_flip=args.ensemble_flip, calibration=args.calibration_method,
                                 percentile=args.percentile, per_channel=not args.per_tensor, keep_float=args.keep_float, tta=args.tta)
    except (DataError, ValueError, FileNotFoundError, ModelError, OptimizeError) as exc:
        console.print("[red]error:[/] " + escape(str(exc)))
        return 2
    for result in results:
        if result.written:
            print(result.path)
    return 0 if all(r.written for r in results) else 1


def predictions_main(argv: list[str]) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from fer_runtime.classifier import ModelError

    from .record_predictions import SPLITS, record_predictions

    p = argparse.ArgumentParser(prog="fer-train predictions", description="Record a model's predictions on the validation and test "
                                "splits in <stem>.predictions.npz beside it, keyed by the content of the model and of each split, so that "
                                "fer-tui's first start shows them without running the model.")
    p.add_argument("model", nargs="?", default=None, help="exported model (.onnx; default: the most accurate in exported/, as fer-tui opens)")
    p.add_argument("--data", default=None, help="data source (default: $FER_DATA or ../shared/data/fer2013)")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=("train", "val", "test", "privatetest"),
                   help="which splits (default: %(default)s)")
    args = p.parse_args(argv)
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                  transient=True) as bars:
        tasks: dict[str, int] = {}

        def progress(split: str, done: int, total: int) -> None:
            if split not in tasks:
                tasks[split] = bars.add_task(f"predicting {split}", total=total)
            bars.update(tasks[split], completed=done)

        try:
            path, size = record_predictions(args.model, args.data, tuple(args.splits), progress=progress,
                                            log=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
        except (DataError, ValueError, FileNotFoundError, ModelError) as exc:
            console.print("[red]error:[/] " + escape(str(exc)))
            return 2
    console.print(f"{escape(str(path))}: {size / 1024:.0f} KB", highlight=False)
    print(path)
    return 0


def report_main(argv: list[str]) -> int:
    from .study_report import DEFAULT_LAYERS, DEFAULT_STEPS, REPORT_MODELS, build_report

    p = argparse.ArgumentParser(prog="fer-train report", description="The study's figures and numbers from the shipped models and the "
                                "real data: curves, confusion matrices, saliency, filters and layer outputs, numbers.md and summary.json.")
    p.add_argument("--models-dir", default="exported", help="where the .onnx files are (default: %(default)s)")
    p.add_argument("--models", nargs="+", default=list(REPORT_MODELS), help="model names, in order (default: %(default)s)")
    p.add_argument("--out", default="report", help="output folder (default: %(default)s)")
    p.add_argument("--data", default=None, help="data source (default: $FER_DATA or ../shared/data/fer2013)")
    p.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS), help="conv layers for filters and outputs (default: %(default)s)")
    p.add_argument("--steps", nargs="+", type=int, default=list(DEFAULT_STEPS), help="ascent steps to show (default: %(default)s)")
    p.add_argument("--max-filters", type=int, default=None, help="only the first N filters of each layer (default: all)")
    args = p.parse_args(argv)
    console = Console(stderr=True)
    try:
        build_report(args.models_dir, args.out, data=args.data, names=args.models, layers=args.layers, steps=args.steps,
                     max_filters=args.max_filters, console=console)
    except (DataError, ValueError, FileNotFoundError) as exc:
        console.print("[red]error:[/] " + escape(str(exc)))
        return 2
    return 0


TRAIN_EXTRA = ("torch", "onnx", "matplotlib")  # what `pip install 'fer-workbench[train]'` adds to the base install


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return {"evaluate": evaluate_main, "export": export_main, "data": data_main, "explain": explain_main,
                    "optimize": optimize_main, "predictions": predictions_main, "report": report_main}[argv[0]](argv[1:])
        return train_main(argv)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAIN_EXTRA:
            raise
        Console(stderr=True, highlight=False).print("[red]error:[/] " + escape(
            f"fer-train needs {exc.name}, which the base install leaves out (it runs models without torch). "
            "Install the training extra: pip install torch==2.13.0 (CPU) or a CUDA build of torch, then pip install 'fer-workbench[train]' "
            "(from a checkout: pip install '.[train]')."))
        return 2


if __name__ == "__main__":
    sys.exit(main())
