"""``fer-train``: train (the default), ``evaluate``, ``export``, ``data``, ``explain``, ``optimize`` and ``report``.

    fer-train --model cnn --epochs 30                 train on FER2013 found on its own
    fer-train --resume runs/cnn-20261127-101500       continue an interrupted run
    fer-train --semi --threshold 0.45                 self-training on half the labels, against that half alone
    fer-train evaluate runs/cnn-... --split test      tables, JSON and a confusion PNG
    fer-train export runs/cnn-... --name cnn          exported/cnn.onnx, checked against torch
    fer-train data [PATH]                             what a data source holds
    fer-train explain runs/cnn-... --out DIR          saliency, filter and layer-output pictures, with an index
    fer-train optimize exported/cnn.onnx              faster variants (fast, int8; tta, ensemble when asked), each behind the accuracy gate
    fer-train report                                  REPORT.md's figures and numbers from exported/ and the real data
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from fer_runtime.contract import EVENT_ERROR, EVENT_MESSAGE
from fer_runtime.io import DataError

from .config import OPTIMIZERS, RECIPES, SCHEDULES, TrainConfig

SUBCOMMANDS = ("evaluate", "export", "data", "explain", "optimize", "report")

SEMI_ONLY_FLAGS = ("--threshold", "--labeled-fraction", "--rounds", "--epochs-per-round", "--first-round-epochs", "--arms", "--class-thresholds",
                   "--fixmatch-threshold", "--fixmatch-mu", "--fixmatch-weight", "--parallel-arms")


def _recipe_default(field: str) -> str:
    """Help text: a flag's value in each recipe, e.g. "default recipe: 40; --recipe study: 20"."""
    def show(value):  # bools before numbers: True == 1 and False == 0
        if isinstance(value, bool):
            return "on" if value else "off"
        if value is None:
            return "as --epochs-per-round"
        return f"{value:g}" if isinstance(value, float) else value
    values = {name: RECIPES[name].get(field, getattr(TrainConfig, field)) for name in RECIPES}
    return "; ".join(f"{'default recipe' if name == 'default' else f'--recipe {name}'}: {show(v)}" for name, v in values.items())


def _apply_recipe(args: argparse.Namespace) -> None:
    """Fill the flags left unset (None) from ``--recipe`` (RECIPES; ``default`` when none is named). ``--bf16`` or
    ``--channels-last`` given by hand turn the recipe's ``--fast`` off."""
    recipe = RECIPES[args.recipe]
    if args.fast is None and (args.bf16 or args.channels_last):  # the path set by hand is not timed away
        args.fast = False
    for name, value in recipe.items():
        if getattr(args, name, value) is None:
            setattr(args, name, value)


def _train_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    r = _recipe_default
    p = argparse.ArgumentParser(prog="fer-train", description="Train a facial-expression classifier on FER2013 (or any supported data).",
                                epilog="Other commands: fer-train evaluate MODEL | export RUN --name NAME | data [PATH] | explain RUN | optimize MODEL.onnx | report. "
                                       "Add --help after one for its options. "
                                       "On several processes or machines: torchrun --nproc-per-node N -m fer_train ... (docs/distributed.md).")
    p.add_argument("--model", default=d.model, help="registered model name (default: %(default)s)")
    p.add_argument("--data", default=None, help="FER2013 CSV (.csv or .csv.gz), course-format CSV or image folder; default: $FER_DATA or ../shared/data/fer2013")
    p.add_argument("--recipe", choices=tuple(RECIPES), default="default",
                   help="the settings every flag below starts from. default: one-cycle Adam with flips, rotation ±15°, shifts 0.1, "
                        "label smoothing 0.1 and erasing, 40 epochs, on the fastest training path (what trained the shipped cnn); "
                        "study: the study's recipe (Adam 1e-3, batch 64, rotation ±40°, shifts 0.2, no schedule, 20 epochs). "
                        "Flags given override it (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None, help=f"({r('epochs')})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="images per optimizer step (default: %(default)s); under torchrun the global batch: each of the N "
                        "processes takes batch/N, so it must divide by N")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help=f"({r('optimizer')})")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: adam 1e-3, adadelta 1.0, sgd 0.05)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", choices=SCHEDULES, default=None, help=f"learning-rate schedule, stepped per batch ({r('schedule')})")
    p.add_argument("--label-smoothing", type=float, default=None, help=f"({r('label_smoothing')})")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="turn off the study's rotation and shifts")
    p.add_argument("--rotation", type=float, default=None, help=f"max rotation in degrees ({r('rotation')})")
    p.add_argument("--shift", type=float, default=None, help=f"max shift as a fraction of the size ({r('shift')})")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help=f"random horizontal flips ({r('flip')})")
    p.add_argument("--scale", type=float, default=d.scale, metavar="S",
                   help="random zoom by a factor from 1-S to 1+S, like a random resized crop (default: %(default)s, off)")
    p.add_argument("--erase", type=float, default=None, metavar="P",
                   help=f"random erasing: each training image gets a noise rectangle (2-25 %% of it) with probability P ({r('erase')})")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the validation split, and of the training unless --train-seed")
    p.add_argument("--train-seed", type=int, default=None, help="seed of the initial weights, data order, augmentation and dropout "
                   "(default: --seed); another value trains an independent model on the same validation split")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (CPUs with AVX512-BF16/AMX, or CUDA)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory layout for convolutions (faster on most CPUs)")
    p.add_argument("--fast", action=argparse.BooleanOptionalAction, default=None, help="time a few training steps of each path (channels-last; bf16 with and without "
                   "it where the CPU has bf16 instructions, or on CUDA) and train on the fastest, recorded in config.json "
                   f"(docs/training.md#training-speed) ({r('fast')})")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores; under torchrun, per process: the cores shared out)")
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N training images (quick tries)")
    p.add_argument("--limit-val", type=int, default=None, help="use only the first N validation and test images")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed rows (reported) instead of stopping at the first")
    p.add_argument("--export", dest="export_name", default=None, metavar="NAME", help="also export the best model to exported/NAME.onnx")
    p.add_argument("--export-dir", default=d.export_dir)
    p.add_argument("--no-export", action="store_true", help="do not export model.onnx at the end")
    p.add_argument("--run-dir", default=None, help="run folder (default: runs/<model>-<time>)")
    p.add_argument("--runs-root", default="runs")
    p.add_argument("--init-from", metavar="RUN|ONNX", default=None,
                   help="fine-tune: start from this run's best weights, or from an exported .onnx of the same model "
                        "(e.g. exported/cnn.onnx), with a fresh optimizer and schedule")
    p.add_argument("--distill-from", metavar="ONNX", default=None,
                   help="knowledge distillation: also learn the soft predictions of this exported teacher (e.g. exported/fer-best.ensemble.onnx), "
                        "computed once on the training faces")
    p.add_argument("--distill-weight", type=float, default=d.distill_weight,
                   help="share of the teacher's term in the loss, 0 to 1 (default: %(default)s)")
    p.add_argument("--distill-temperature", type=float, default=d.distill_temperature, help="softmax temperature of both sides (default: %(default)s)")
    p.add_argument("--resume", metavar="RUN", default=None, help="continue the run in this folder from its last completed epoch")
    p.add_argument("--progress", choices=("auto", "rich", "plain", "json"), default="auto",
                   help="json: one JSON object per line on stdout, for programs (the TUI)")
    semi = p.add_argument_group("semi-supervised training (--semi)", "hide the labels of part of the training set, train by "
                                "self-training and compare with the labeled part alone; every arm trains first-round-epochs + (rounds - 1) × epochs-per-round epochs")
    semi.add_argument("--semi", action="store_true", help="semi-supervised run (folder runs/semi-<model>-<time>)")
    semi.add_argument("--threshold", dest="semi_threshold", type=float, default=d.semi_threshold,
                      help="admit an unlabeled image when its top softmax probability is strictly greater than this (default: %(default)s)")
    semi.add_argument("--labeled-fraction", dest="semi_labeled_fraction", type=float, default=d.semi_labeled_fraction,
                      help="share of every class that keeps its label, stratified and seeded (default: %(default)s)")
    semi.add_argument("--rounds", dest="semi_rounds", type=int, default=None, help=f"self-training rounds, the first included ({r('semi_rounds')})")
    semi.add_argument("--first-round-epochs", dest="semi_first_round_epochs", type=int, default=None,
                      help=f"epochs before the first selection, so that the model is confident when pseudo-labels start ({r('semi_first_round_epochs')})")
    semi.add_argument("--epochs-per-round", dest="semi_epochs_per_round", type=int, default=None,
                      help=f"epochs between two selections after the first ({r('semi_epochs_per_round')})")
    semi.add_argument("--arms", dest="semi_arms", type=lambda s: [a.strip() for a in s.split(",") if a.strip()], default=",".join(d.semi_arms),
                      help="comma-separated: baseline, self-training, per-class, fixmatch (default: %(default)s)")
    semi.add_argument("--class-thresholds", dest="semi_class_thresholds", default=d.semi_class_thresholds,
                      help="per-class arm: 'auto' (every predicted class admits the share the global threshold admits overall) "
                           "or 7 comma-separated thresholds in class order (default: %(default)s)")
    semi.add_argument("--fixmatch-threshold", type=float, default=d.fixmatch_threshold, help="FixMatch's confidence threshold τ (default: %(default)s)")
    semi.add_argument("--fixmatch-mu", type=int, default=d.fixmatch_mu, help="unlabeled images per labeled image in a step (default: %(default)s)")
    semi.add_argument("--parallel-arms", dest="semi_parallel_arms", action="store_true",
                      help="train the arms at the same time, one process each with --threads threads (default: the cores shared out); "
                           "the same weights as one after the other, in about 1/arms of the wall time on enough cores")
    semi.add_argument("--fixmatch-weight", type=float, default=d.fixmatch_weight, help="weight λ of the consistency loss (default: %(default)s)")
    return p


def _given(argv: list[str], flags) -> list[str]:
    """The ``flags`` that appear in ``argv`` (as ``--flag value`` or ``--flag=value``), in command-line order."""
    return [a.split("=")[0] for a in argv if a.split("=")[0] in flags]


def train_main(argv: list[str]) -> int:
    from .progress import Reporter

    args = _train_parser().parse_args(argv)
    reporter = Reporter(args.progress)
    if args.data is not None and not Path(args.data).exists():  # before torch's import, which takes seconds
        reporter.emit(EVENT_ERROR, message=str(DataError(args.data, "no such file or folder")))
        return 2
    from . import distributed
    from .semi import ArmFailed

    with distributed.session():  # under torchrun: join the group (outside it, nothing)
        reporter = distributed.rank_reporter(reporter)  # rank 0 reports for the group; the others only their errors
        try:
            config, run_dir, resume = distributed.from_rank0(lambda: _plan_run(args, argv))
            if config.fast and not resume:  # a resumed run keeps the path its config.json records
                config = _fastest_path(config, reporter)
            if config.semi:
                from .semi import train_semi

                result = train_semi(config, run_dir, reporter, resume=resume, export=not args.no_export)
            else:
                from .train import train

                result = train(config, run_dir, reporter, resume=resume, export=not args.no_export)
        except (DataError, ValueError, FileNotFoundError) as exc:
            reporter.emit(EVENT_ERROR, message=str(exc))
            return 2
        except distributed.FailedOnRank0:  # rank 0 reports it
            return 2
        except ArmFailed as exc:  # every other arm finished or saved its epoch; the message says how to go on
            reporter.emit(EVENT_ERROR, message=str(exc))
            return 1
        except RuntimeError as exc:
            if not distributed.lost_peer(exc):
                raise
            # another rank died or stopped answering; torchrun names it in its report
            who = "rank 0: " if distributed.world().is_main else ""  # the other ranks' reporters name theirs
            reporter.emit(EVENT_ERROR, message=f"{who}lost the other processes of the group "
                                               f"({exc.__class__.__name__}: {str(exc).strip()}); torchrun's report names the rank that failed first")
            return 1
    return 130 if result.interrupted else 0


def _fastest_path(config, reporter):
    """``--fast``: ``config`` on the training path that a few timed steps find fastest here (fer_train.speed). Under
    torchrun every rank times its steps together and rank 0's measurement decides for all."""
    import torch

    from . import distributed
    from .speed import candidate_paths, describe, fastest_path
    from .train import pick_device

    device = distributed.device_for(pick_device(config.device))
    if device.type == "cpu":
        torch.set_num_threads(config.threads or distributed.default_threads())
    paths = distributed.from_rank0(lambda: candidate_paths(device))  # the same on every rank, whatever its CPU
    chosen, rates = fastest_path(config, device, paths)
    chosen, rates = distributed.from_rank0(lambda: (chosen, rates))
    reporter.emit(EVENT_MESSAGE, text=f"--fast: {describe(chosen.bf16, chosen.channels_last)} (training images/s on this machine: "
                                      + ", ".join(f"{path} {rate:,.0f}" for path, rate in rates.items()) + ")")
    return chosen


def _plan_run(args: argparse.Namespace, argv: list[str]) -> tuple[TrainConfig, Path, bool]:
    """The run's config, folder and whether it resumes, from the flags (or the folder's ``config.json`` for
    ``--resume``). Under torchrun rank 0 alone decides (it names the folder) and sends it to the others."""
    from . import distributed
    from .train import new_run_dir

    torchrun = distributed.world().distributed
    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / "config.json"
        if not saved.exists():
            raise DataError(saved, "not a run folder (no config.json)")
        config = TrainConfig.from_dict(json.loads(saved.read_text()))
        epochs_given = bool(_given(argv, ("--epochs",)))
        if args.threads is not None:  # the machine may differ from the one the run started on
            config.threads = args.threads
        if config.semi:  # a semi-supervised run resumes at the start of the epoch in progress of the arm in progress
            if torchrun:
                raise ValueError(f"{run_dir} is a --semi run: not for torchrun; resume it as one process (python -m fer_train --resume ...)")
            if epochs_given:
                raise ValueError("a --semi run's budget is its rounds (--first-round-epochs, --rounds, --epochs-per-round); --epochs does not apply")
            if _given(argv, ("--arms",)):  # more arms for a run that has some: they start from its shared first round
                kept = [arm for arm in config.semi_arms if arm not in args.semi_arms]
                if kept:
                    raise ValueError(f"--resume {run_dir} --arms: arms can be added, not dropped; the run has "
                                     f"{', '.join(config.semi_arms)}, so also name {', '.join(kept)}")
                config.semi_arms = list(args.semi_arms)
        elif epochs_given:  # extend the run (or end it sooner)
            if args.epochs > config.epochs and config.schedule != "none":
                raise ValueError(f"--resume {run_dir} --epochs {args.epochs}: the run has {config.epochs} epochs and its {config.schedule} "
                                 f"schedule was sized for them; to train on, start from its best weights with a new schedule: "
                                 f"fer-train --init-from {run_dir} --epochs N")
            config.epochs = args.epochs
        distributed.check_global_batch(config.batch_size)
        return config, run_dir, True
    _apply_recipe(args)
    fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    config = TrainConfig(**fields)
    stray = _given(argv, SEMI_ONLY_FLAGS)
    if stray and not config.semi:
        raise ValueError(f"{', '.join(stray)}: only for semi-supervised runs; add --semi")
    if config.semi and torchrun:
        raise ValueError("--semi: not under torchrun (its arms are separate models; --parallel-arms trains them at the same time); "
                         "run it as one process: python -m fer_train --semi ...")
    if config.semi and config.distill_from:
        raise ValueError("--distill-from: for ordinary training, not --semi runs")
    loose = _given(argv, ("--distill-weight", "--distill-temperature"))
    if loose and not config.distill_from:
        raise ValueError(f"{', '.join(loose)}: only with --distill-from TEACHER.onnx")
    distributed.check_global_batch(config.batch_size)
    if config.semi:
        from .semi import new_semi_run_dir

        if _given(argv, ("--epochs",)):
            raise ValueError("with --semi every arm trains --first-round-epochs + (--rounds - 1) × --epochs-per-round epochs; drop --epochs")
        return config, Path(args.run_dir) if args.run_dir else new_semi_run_dir(config, args.runs_root), False
    return config, Path(args.run_dir) if args.run_dir else new_run_dir(config, args.runs_root), False


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
        console.print(f"[red]error:[/] {exc}")
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
    p.add_argument("--variants", nargs="+", default=["fast", "int8"], choices=VARIANTS,
                   help="tta: <stem>.tta.onnx, the mean of the model's log-probabilities on several views of the face (its "
                        "mirror image, shifted copies: see --tta; for models trained with --flip); ensemble: <stem>.ensemble.onnx, the mean of this model's "
                        "and the --with models' log-probabilities (default: fast int8)")
    p.add_argument("--with", dest="members", action="append", default=[], metavar="OTHER.onnx",
                   help="ensemble: another exported model (same validation split) to average with; repeat for more")
    p.add_argument("--tta", default="auto", choices=("auto", *TTA_CANDIDATES), help="tta: the views averaged. flip: the face and "
                   "its mirror image (2× the compute); flip+hshiftK: both also shifted K pixels left and right (6×); flip+shiftK: "
                   "also up and down (10×); auto: the one most accurate on validation, the cheaper on a tie (default: %(default)s)")
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
                                 weight_bits=args.weight_bits if args.weight_bits == "auto" else int(args.weight_bits), max_drop=args.max_drop, log=lambda line: console.print(line, soft_wrap=True),
                                 members=args.members, ensemble_flip=args.ensemble_flip, calibration=args.calibration_method,
                                 percentile=args.percentile, per_channel=not args.per_tensor, keep_float=args.keep_float, tta=args.tta)
    except (DataError, ValueError, FileNotFoundError, ModelError, OptimizeError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    for result in results:
        if result.written:
            print(result.path)
    return 0 if all(r.written for r in results) else 1


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
        console.print(f"[red]error:[/] {exc}")
        return 2
    return 0


TRAIN_EXTRA = ("torch", "onnx", "matplotlib")  # what `pip install 'fer-workbench[train]'` adds to the base install


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in SUBCOMMANDS:
            return {"evaluate": evaluate_main, "export": export_main, "data": data_main, "explain": explain_main,
                    "optimize": optimize_main, "report": report_main}[argv[0]](argv[1:])
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
