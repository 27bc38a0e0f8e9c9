"""``fer-train``: train (the default), ``evaluate``, ``export`` and ``data``.

    fer-train --model cnn --epochs 30                 train on FER2013 found on its own
    fer-train --resume runs/cnn-20261127-101500       continue an interrupted run
    fer-train evaluate runs/cnn-... --split test      tables, JSON and a confusion PNG
    fer-train export runs/cnn-... --name cnn          exported/cnn.onnx, checked against torch
    fer-train data [PATH]                             what a data source holds
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console

from .config import OPTIMIZERS, SCHEDULES, TrainConfig
from .io import DataError

SUBCOMMANDS = ("evaluate", "export", "data")


def _train_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="fer-train", description="Train a facial-expression classifier on FER2013 (or any supported data).",
                                epilog="Other commands: fer-train evaluate MODEL | export RUN --name NAME | data [PATH]. "
                                       "Add --help after one for its options.")
    p.add_argument("--model", default=d.model, help="registered model name (default: %(default)s)")
    p.add_argument("--data", default=None, help="FER2013 CSV (.csv or .csv.gz), course-format CSV or image folder; default: $FER_DATA or ../shared/data/fer2013")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: adam 1e-3, adadelta 1.0, sgd 0.05)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help="learning-rate schedule, stepped per batch")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--no-augment", dest="augment", action="store_false", help="turn off the study's rotation and shifts")
    p.add_argument("--rotation", type=float, default=d.rotation, help="max rotation in degrees (default: %(default)s)")
    p.add_argument("--shift", type=float, default=d.shift, help="max shift as a fraction of the size (default: %(default)s)")
    p.add_argument("--flip", action="store_true", help="random horizontal flips")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CPUs with AVX512-BF16/AMX, or CUDA)")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N training images (quick tries)")
    p.add_argument("--limit-val", type=int, default=None, help="use only the first N validation and test images")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed rows (reported) instead of stopping at the first")
    p.add_argument("--export", dest="export_name", default=None, metavar="NAME", help="also export the best model to exported/NAME.onnx")
    p.add_argument("--export-dir", default=d.export_dir)
    p.add_argument("--no-export", action="store_true", help="do not export model.onnx at the end")
    p.add_argument("--run-dir", default=None, help="run folder (default: runs/<model>-<time>)")
    p.add_argument("--runs-root", default="runs")
    p.add_argument("--resume", metavar="RUN", default=None, help="continue the run in this folder from its last completed epoch")
    p.add_argument("--progress", choices=("auto", "rich", "plain", "json"), default="auto",
                   help="json: one JSON object per line on stdout, for programs (the TUI)")
    return p


def train_main(argv: list[str]) -> int:
    from .progress import Reporter
    from .train import new_run_dir, train

    args = _train_parser().parse_args(argv)
    reporter = Reporter(args.progress)
    try:
        if args.resume:
            run_dir = Path(args.resume)
            saved = run_dir / "config.json"
            if not saved.exists():
                raise DataError(saved, "not a run folder (no config.json)")
            config = TrainConfig.from_dict(json.loads(saved.read_text()))
            if any(a == "--epochs" or a.startswith("--epochs=") for a in argv):  # extend the run
                config.epochs = args.epochs
            result = train(config, run_dir, reporter, resume=True, export=not args.no_export)
        else:
            fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
            config = TrainConfig(**fields)
            run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(config, args.runs_root)
            result = train(config, run_dir, reporter, export=not args.no_export)
    except (DataError, ValueError, FileNotFoundError) as exc:
        reporter.emit("error", message=str(exc))
        return 2
    return 130 if result.interrupted else 0


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
        console.print(f"[red]error:[/] {exc}")
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
        reporter.emit("error", message=str(exc))
        return 2
    print(path)
    return 0


def data_main(argv: list[str]) -> int:
    from rich.table import Table

    from .constants import CLASS_NAMES
    from .io import default_data_path, load_source
    from .splits import make_splits

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
        console.print(f"[red]error:[/] {exc}")
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
            console.print(f"  {bad}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return {"evaluate": evaluate_main, "export": export_main, "data": data_main}[argv[0]](argv[1:])
    return train_main(argv)


if __name__ == "__main__":
    sys.exit(main())
